/* The dispatcher's shared state, private to the modules of a row's path: dispatcher.c (the
 * loop), claim.c, deliver.c, outcome.c, lease.c and reload.c. Nothing else includes it. */
#ifndef OUTBOXD_CORE_H
#define OUTBOXD_CORE_H

#include <event2/util.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "breaker.h"
#include "buf.h"
#include "job.h"

struct config;
struct event;
struct event_base;
struct pgconn;
struct pg_result;
struct smtp_sink;
struct kafka_mirror;
struct telemetry;

/* A claimed row being delivered: one message, one reply slot per chosen recipient. */
struct job {
	struct job *next, *prev;
	struct dispatcher *d;
	int64_t id;
	int attempt;
	char *message_id;
	char *mail_from;
	double created_at; /* epoch seconds, for commit -> delivered latency */
	struct buf msg;
	char **addr; /* owned */
	enum rcpt_kind *kind;
	struct rcpt_reply *reply; /* reply[i].text is owned */
	size_t nrc;
	size_t outstanding;      /* transfers not yet reported */
	uint64_t lease_until_ms; /* monotonic: when the lease as this process last confirmed it
				    ends (from when the claim or renewal was sent); 0 = lost */
	unsigned renew_gen;      /* the last renewal that asked for this row (lease.c) */
};

enum run_state { RUN_STARTING, RUN_RUNNING, RUN_DRAINING, RUN_DONE };

struct dispatcher {
	struct config *cfg;
	const char *config_path;
	struct event_base *base;
	struct pgconn *work;     /* claims and the idle mark: nothing else may delay a claim */
	struct pgconn *outcomes; /* outcome writes, releases, lease renewals, telemetry figures */
	struct pgconn *listen;
	struct smtp_sink *smtp;
	struct kafka_mirror *kafka;  /* NULL when kafka.brokers is empty */
	struct retention *retention; /* elected purger of finished rows (retention.c) */
	struct breaker breaker;
	struct telemetry *tm;
	char owner[256];
	enum run_state state;
	int exit_code;

	struct job *jobs;
	int njobs;

	/* claim.c */
	int claiming;
	int claim_woken; /* a wake-up came while the claim was in flight: claim again after it */
	int claim_limit;
	int empty;           /* last claim found nothing: wait for a wake-up */
	int idle_marked;     /* our row in outbox.dispatcher_idle exists */
	uint64_t rescued_ms; /* monotonic: the last claim that rescued (0: none on this session) */

	/* outcome.c */
	json_t *results;  /* outcomes waiting to be written */
	json_t *releases; /* [id, attempt] pairs to put back without charging an attempt */
	json_t *flushing_results;
	json_t *flushing_releases;
	int flushing;
	int flush_errors;    /* consecutive refusals of the same outcomes by the server */
	int outcomes_behind; /* outcomes connection lost with outcomes unwritten: no claim until
				they are written (their leases could run out, and a claim would
				take those rows back and send them again) */

	/* dispatcher.c */
	int startup_done; /* outbox.release_owner() ran on this database */
	int startup_inflight;
	uint64_t startup_retry_ms; /* when to send a failed start-up query again */
	unsigned seconds;          /* maintenance tick: whole seconds since start */
	uint64_t next_second_ms, next_poll_ms, next_renew_ms, next_mirror_ms;
	uint64_t claim_sent_ms, renew_sent_ms; /* monotonic: the claim / renewal in flight */
	size_t renew_sent_n;                   /* rows that renewal asked for */
	unsigned renew_gen;                    /* counts renewals sent */
	int renewing;                          /* a renewal is in flight */
	struct event *ev_claim;
	struct event *ev_flush;
	struct event *ev_tick;
	struct event *ev_drain;
	struct event *ev_sigterm, *ev_sigint, *ev_sighup;
	int signals;
	uint64_t drain_deadline_ms;
};

/* Columns of the claim's result (claim.c's CLAIM_SQL). */
enum claim_col {
	C_ID,
	C_ATTEMPT,
	C_MESSAGE_ID,
	C_SENDER,
	C_TO,
	C_CC,
	C_BCC,
	C_REPLY_TO,
	C_SUBJECT,
	C_BODY_TEXT,
	C_BODY_HTML,
	C_HEADERS,
	C_CREATED,
	C_DONE
};

/* dispatcher.c */
void dispatcher_set_state(struct dispatcher *d, enum run_state s);
/* Ends the loop once a drain has nothing left to wait for. */
void dispatcher_maybe_finish_drain(struct dispatcher *d);
/* Restarts the maintenance tick and the fallback poll with the configuration's periods
 * (start-up and reload). */
void dispatcher_tick_reschedule(struct dispatcher *d);
/* The lease length in whole seconds, as the SQL functions take it (text). */
void dispatcher_lease_seconds(const struct dispatcher *d, char *out, size_t outlen);

/* claim.c */
void claim_kick(struct dispatcher *d);
void claim_on_event(evutil_socket_t fd, short what, void *arg);
/* Marks this dispatcher idle (producers NOTIFY it) or busy, in outbox.dispatcher_idle. */
void claim_set_idle(struct dispatcher *d, int idle);

/* deliver.c */
/* Builds row `row` of a claim's result into a message and hands it to the SMTP sink. */
void deliver_row(struct dispatcher *d, const struct pg_result *res, int row);
/* Frees every job (at exit, after the sink is gone). */
void deliver_free_all(struct dispatcher *d);

/* outcome.c */
/* Queues a verdict for the database; code 0 and error NULL are written as NULL. */
void outcome_add(struct dispatcher *d, const struct job *j, enum outcome o, int code, const char *error, int unknown);
/* Queues a leased row to be given back untouched, fenced on the attempt its claim returned. */
void outcome_release(struct dispatcher *d, long long id, long long attempt);
/* Writes waiting outcomes now or after outcome_delay (job_flush_now). */
void outcome_kick(struct dispatcher *d);
void outcome_on_flush_event(evutil_socket_t fd, short what, void *arg);
/* Outcomes and releases waiting to be written (not counting a write in flight). */
size_t outcome_waiting(const struct dispatcher *d);

/* lease.c */
/* Extends the leases of every row this dispatcher holds (in flight or outcome unwritten). */
void lease_renew(struct dispatcher *d);
/* Never send on a lost lease: when a job's lease has run out by this process's clock (a
 * pause, a renewal that failed or came back short), the messages still queued in the SMTP
 * sink are taken back unsent (their rows are released, fenced). Those already on the wire
 * finish. Called before the sink may start the next message and from the tick. */
void lease_check(struct dispatcher *d);

/* reload.c */
/* SIGHUP: loads the configuration file again and applies the keys that may change. */
void reload_config(struct dispatcher *d);

#endif
