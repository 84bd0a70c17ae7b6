/* lockwatch: who holds an advisory lock this dispatcher asked for and did not get. Any login
 * may take outboxd's keys (PostgreSQL checks no privilege on advisory locks), so a holder
 * that is not outboxd is named: logged (a change at once, then every 30 s), counted in
 * outboxd_lock_foreign_holder{lock} and told in /health/ready. */
#ifndef OUTBOXD_LOCKWATCH_H
#define OUTBOXD_LOCKWATCH_H

#include <stddef.h>
#include <stdint.h>

struct pgconn;
struct pg_result;
struct telemetry;

struct lock_watch {
	const char *lock; /* "mirror" or "retention" (static): the name outbox.lock_holders() takes */
	struct telemetry *tm;
	int asking;            /* a lookup is on the wire */
	long long foreign_pid; /* the holder that is not outboxd, 0 = none seen */
	uint64_t asked_ms;     /* when the last lookup was sent (CLOCK_MONOTONIC) */
	uint64_t logged_ms;    /* when the foreign holder was last logged */
};

/* Starts a watch of lock ("mirror" or "retention", a static string) reporting to tm. */
void lock_watch_init(struct lock_watch *w, const char *lock, struct telemetry *tm);

/* Call after pg_try_advisory_lock() answered false on c: looks the holder up on c (one
 * lookup at a time, at most every 5 s). The answer updates the log, metric and readiness. */
void lock_watch_ask(struct lock_watch *w, struct pgconn *c);

/* The lock is ours now, or this duty is off: nothing foreign to report any more. */
void lock_watch_clear(struct lock_watch *w);

/* What a holder row of outbox.lock_holders() means, from its pid, usename, application_name
 * and outboxd ("t"/"f") columns: 1 when the holder is a session that is not outboxd, with
 * "pid N, user U, application 'A'" (printable ASCII) written to out; 0 when pid is empty
 * (no holder) or outboxd is "t" (another replica: the normal standby). Pure. */
int lock_watch_describe(const char *pid, const char *user, const char *app, const char *outboxd, char *out,
			size_t outlen);

#endif
