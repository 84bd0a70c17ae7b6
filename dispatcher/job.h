/* job: the decisions made about a claimed row and the mirror's reads, as pure functions
 * (no I/O, no clock, no allocation unless stated), so each is table-tested in C:
 * the outcome of a message from its recipients' replies, which recipients to send to,
 * how many rows a claim may take, when an outcome batch is written, how far the mirror's
 * cursor moves. */
#ifndef OUTBOXD_JOB_H
#define OUTBOXD_JOB_H

#include <stddef.h>
#include <stdint.h>

#include "breaker.h"
#include "pgarray.h"

/* What became of a message, as counted in metrics and written to the log. SENT, RETRY,
 * FAILED and RELEASED are verdicts; UNKNOWN is a RETRY whose previous try may have been
 * accepted; DEAD is decided by the database (attempts exhausted). */
enum outcome {
	OUTCOME_SENT,
	OUTCOME_RETRY,
	OUTCOME_FAILED,
	OUTCOME_RELEASED,
	OUTCOME_UNKNOWN,
	OUTCOME_DEAD,
};
#define OUTCOME_COUNT 6

/* "sent", "retry", "failed", "released", "unknown", "dead" (static string): the names the
 * database, the metrics and the logs use. */
const char *outcome_name(enum outcome o);

/* ---- recipients ---------------------------------------------------------------------- */

enum rcpt_kind { RCPT_TO, RCPT_CC, RCPT_BCC };

/* "to", "cc" or "bcc" (static string). */
const char *rcpt_kind_name(enum rcpt_kind k);

/* One envelope recipient chosen for this attempt; addr points into the input arrays. */
struct rcpt_pick {
	const char *addr;
	enum rcpt_kind kind;
};

/* Chooses the recipients of an attempt: to, then cc, then bcc, in order, leaving out SQL
 * NULLs, addresses already in done (accepted by an earlier attempt) and repeats (the same
 * address in to and cc gets one copy). out needs room for to->n + cc->n + bcc->n entries.
 * Returns how many were chosen. */
size_t job_pick_recipients(const struct pgarray *to, const struct pgarray *cc, const struct pgarray *bcc,
			   const struct pgarray *done, struct rcpt_pick *out);

/* ---- a message's verdict -------------------------------------------------------------- */

enum rcpt_state { RCPT_PENDING, RCPT_SENT, RCPT_FAILED };

/* "pending", "sent" or "failed" (static string). */
const char *rcpt_state_name(enum rcpt_state s);

/* What the relay said about one recipient (or, for the data phase, about the message). */
struct rcpt_reply {
	enum rcpt_state state;
	int code;         /* SMTP reply code, 0 = none */
	const char *text; /* reply or error text, may be NULL */
	int charged;      /* the attempt reached the relay for this recipient */
	int unknown;      /* outcome ambiguous (connection lost after DATA) */
};

/* The reply that decides recipient r when the whole message went in one transaction: a
 * recipient the relay accepted at RCPT takes the data phase's reply; a refused or pending
 * one keeps its own. data == NULL (one transaction per recipient, each reply covering the
 * data phase already) returns r. */
const struct rcpt_reply *job_rcpt_effective(const struct rcpt_reply *r, const struct rcpt_reply *data);

struct job_verdict {
	enum outcome outcome; /* SENT, RETRY, FAILED or RELEASED */
	enum outcome counted; /* as metrics count it: UNKNOWN for a RETRY that may have gone */
	int unknown;          /* some recipient's outcome is ambiguous */
	int code;             /* the reply code to record, 0 = none */
	char error[600];      /* the error to record, "" for SENT and RELEASED */
	size_t sent, failed, pending;
};

/* Decides a message's outcome from its n recipients' replies and, when the message went
 * in one transaction, the data phase's reply (NULL otherwise; see job_rcpt_effective):
 * any recipient still pending makes it RETRY, or RELEASED when nothing reached the relay
 * (no attempt is charged); else any refusal makes it FAILED; else SENT. */
void job_verdict(const struct rcpt_reply *r, size_t n, const struct rcpt_reply *data, struct job_verdict *v);

/* ---- claiming ------------------------------------------------------------------------- */

/* The most rows one claim brings: a batch, or everything allowed in flight if less. */
int job_claim_span(int batch_size, int max_in_flight);

/* How many rows to claim now with in_flight messages being sent, or 0 for none. With the
 * relay's breaker closed, claims come in large batches (one per half batch of finished
 * messages); open or half-open, one row probes the relay once nothing is in flight, which
 * asks b (breaker_allow/breaker_cancel) at time now_ms. */
int job_claim_limit(int batch_size, int max_in_flight, int in_flight, struct breaker *b, uint64_t now_ms);

/* What the loop does after a claim came back with n rows of the `limit` it asked for. */
struct claim_next {
	int set_idle; /* -1 leave the idle mark, 0 mark busy, 1 mark idle */
	int again;    /* claim again at once */
	int empty;    /* nothing left to find: wait for a wake-up instead of claiming after each send */
};

/* The decision after a claim: idle_marked says whether this dispatcher's idle mark is set
 * (producers NOTIFY it at commit), woken whether a wake-up (NOTIFY, poll, a finished send)
 * came while the claim was in flight: the claim may have taken its snapshot before that row
 * committed, so it is looked for again rather than left to the fallback poll. A claim that
 * came back short took every due row; while the idle mark stands each later commit wakes the
 * dispatcher, so it keeps the mark and waits (no busy/idle flip and no empty claim per
 * message at a steady rate). A full claim means a backlog: busy (producers stop notifying)
 * and claim on. An empty claim while busy marks idle and looks once more, so a row that
 * committed in between is not missed. */
void job_after_claim(int n, int limit, int idle_marked, int woken, struct claim_next *next);

/* ---- writing outcomes ----------------------------------------------------------------- */

/* Whether the outcomes waiting should be written now (1) or may wait up to outcome_delay_ms
 * for more (0), like a group commit. running: not starting or stopping. */
int job_flush_now(int running, int64_t outcome_delay_ms, size_t waiting, size_t in_flight, int claim_span);

/* ---- the Kafka mirror's reads --------------------------------------------------------- */

/* What one read of outbox.events found and did. */
struct mirror_read {
	int rows;   /* rows returned */
	int limit;  /* the read's limit */
	int behind; /* rows with id <= the cursor the read started from */
	int produced, skipped, fresh;
	int stopped;             /* the read stopped early (queue full, fatal, out of memory) */
	int first_has_id;        /* the first result row carries an id (not the guard-only row) */
	int has_xmin;            /* the first result row carries the snapshot's xmin */
	int64_t cursor;          /* the cursor the read started from */
	int64_t max_id;          /* the largest id seen (>= cursor) */
	int64_t first_unhandled; /* the first row left for a later read, 0 = none */
};

enum mirror_next {
	MIRROR_NEXT_NOTHING, /* delivery reports wake the reader */
	MIRROR_NEXT_READ,    /* read again now */
	MIRROR_NEXT_WAIT,    /* wait for delivery reports (or the tick) */
	MIRROR_NEXT_IDLE,    /* nothing to do: register as idle */
};

struct mirror_advance {
	int64_t cursor;  /* the next read starts after this id */
	int guard_moves; /* take the read's snapshot xmin as the new guard */
	enum mirror_next next;
};

/* Decides the cursor, the guard and the next step after a read. */
void job_mirror_advance(const struct mirror_read *r, struct mirror_advance *a);

#endif
