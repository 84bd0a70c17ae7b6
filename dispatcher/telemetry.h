/* Telemetry: the dispatcher's metrics, the HTTP endpoints (/health, /health/ready,
 * /metrics) and the periodic read of queue figures from PostgreSQL. The core reports
 * events here and never touches the registry directly. */
#ifndef OUTBOXD_TELEMETRY_H
#define OUTBOXD_TELEMETRY_H

#include <stddef.h>

#include "breaker.h"
#include "job.h"

struct event_base;
struct config;
struct pgconn;
struct telemetry;

/* Creates the registry and starts the HTTP server on http.listen ("" = no server).
 * Returns NULL with errbuf set (for example when the port is taken). */
struct telemetry *telemetry_new(struct event_base *base, const struct config *cfg, const struct breaker *smtp_breaker,
				char *errbuf, size_t errlen);
/* Gives the connection used to read queue figures and readiness (schema version); the
 * dispatcher passes its outcomes connection, so the figures never delay a claim. */
void telemetry_attach(struct telemetry *t, struct pgconn *conn);
void telemetry_free(struct telemetry *t);

/* Counts one message's outcome; latency_s is commit -> delivered for OUTCOME_SENT
 * (0 = unknown). */
void telemetry_outcome(struct telemetry *t, enum outcome o, double latency_s);
/* One SMTP transaction's final reply (0 = no reply) and duration. */
void telemetry_smtp_reply(struct telemetry *t, int code, double duration_s);
void telemetry_claim(struct telemetry *t, int rows);
void telemetry_in_flight(struct telemetry *t, int n);
void telemetry_database_up(struct telemetry *t, int up);
void telemetry_listener_up(struct telemetry *t, int up);
/* Sets the breaker gauge of sink ("smtp" or "kafka") and counts and logs a change of
 * state. Transitions quicker than the calls are not seen: prefer the hook below. */
void telemetry_breaker(struct telemetry *t, const char *sink, enum breaker_state s);
/* A breaker_change_fn for the SMTP breaker (arg = the telemetry): register it with
 * breaker_set_on_change() so every transition is counted, however brief. */
void telemetry_breaker_changed(void *arg, enum breaker_state from, enum breaker_state to);
/* Kafka mirror: n records with outcome "published", "failed" or "retry". */
void telemetry_kafka_publish(struct telemetry *t, const char *outcome, unsigned n);
/* Retention: n rows of table removed in state; partitions dropped; the end of a pass
 * (unix time); whether this process holds the retention lock. */
void telemetry_retention_removed(struct telemetry *t, const char *table, const char *state, double n);
void telemetry_retention_dropped(struct telemetry *t, unsigned n);
void telemetry_retention_pass(struct telemetry *t, double unix_time);
void telemetry_retention_leader(struct telemetry *t, int leader);
/* A session that is not outboxd holds lock ("mirror" or "retention"): holder names it
 * ("pid N, user U, application 'A'", copied), NULL once it is gone. Sets
 * outboxd_lock_foreign_holder{lock} and the note /health/ready gives (still ready: SMTP
 * delivery goes on, and restarting or unrouting outboxd would not free the lock). */
void telemetry_lock_foreign(struct telemetry *t, const char *lock, const char *holder);
/* The queue figures read last (object: depth, oldest, lag_rows, lag_seconds, ...), borrowed
 * until the next read, with when they were read (CLOCK_MONOTONIC seconds) in *at; NULL before
 * the first read. */
struct json_t *telemetry_figures(const struct telemetry *t, double *at);
/* The breaker of sink ("smtp" or "kafka") as last seen. */
enum breaker_state telemetry_breaker_state(const struct telemetry *t, const char *sink);
/* Called once a second by the dispatcher's maintenance tick. */
void telemetry_tick(struct telemetry *t, unsigned ticks);

#endif
