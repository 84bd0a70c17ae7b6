/* Retention on the loop: elect through a session advisory lock (like the Kafka mirror), then
 * run passes of outbox.purge() batches on a connection of its own, spacing the batches so
 * the purge never takes more than about half of the database's time, and stepping aside
 * while the dispatchers have a backlog. The SQL decides what may go (sql/50_retention.sql). */
#include "retention.h"

#include <event2/event.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "config.h"
#include "lockwatch.h"
#include "log.h"
#include "pg.h"
#include "telemetry.h"

/* "outboxrt"; outbox.retention_lock_key() says the same. */
#define RETENTION_LOCK_KEY "8031453476610929268"
#define LOCK_RETRY_TICKS 10 /* a follower asks for the lock again every 10 s */
#define BACKLOG_ROWS 1000   /* due pending messages above which the purge steps aside */
#define BACKLOG_PAUSE_MS 5000
#define ERROR_PAUSE_MS 30000
#define SLOW_BATCH_MS 1000 /* a batch slower than this means the database is busy */
#define MAX_PAUSE_MS 30000

struct retention {
	struct event_base *base;
	struct telemetry *tm;
	struct pgconn *pg;
	struct event *ev_batch;
	/* read at each use: SIGHUP updates the retention.* keys in place */
	const struct config *cfg;
	/* state */
	unsigned ticks, next_lock_tick;
	int leader;
	int querying; /* a lock, unlock or purge query is on the wire */
	int in_pass;  /* a pass started and has not finished */
	int stopping;
	struct lock_watch watch; /* who holds the lock while this replica cannot have it */
	uint64_t next_pass_ms;
	uint64_t batch_started_ms;
	long long pass_removed;
};

static void set_leader(struct retention *r, int leader, const char *why)
{
	if (r->leader != leader)
		log_info(leader ? "retention: this dispatcher purges" : "retention: no longer purging",
			 LOG_S("reason", why));
	r->leader = leader;
	telemetry_retention_leader(r->tm, leader);
	if (!leader) {
		r->in_pass = 0;
		evtimer_del(r->ev_batch);
	}
}

static void schedule_batch(struct retention *r, int64_t delay_ms)
{
	struct timeval tv = { (time_t)(delay_ms / 1000), (suseconds_t)((delay_ms % 1000) * 1000) };
	evtimer_add(r->ev_batch, &tv);
}

static void end_pass(struct retention *r, const char *how)
{
	r->in_pass = 0;
	r->next_pass_ms = clock_mono_ms() + (uint64_t)r->cfg->retention_interval_ms;
	telemetry_retention_pass(r->tm, clock_wall_s());
	log_info("retention: pass finished", LOG_S("result", how), LOG_I("removed", r->pass_removed));
	r->pass_removed = 0;
}

/* Adds one table's {state: n} removals to the metrics; returns their sum. */
static long long count_removed(struct retention *r, const char *table, json_t *states)
{
	const char *state;
	json_t *n;
	long long sum = 0;

	json_object_foreach (states, state, n) {
		long long v = (long long)json_number_value(n);
		if (v > 0) {
			telemetry_retention_removed(r->tm, table, state, (double)v);
			sum += v;
		}
	}
	return sum;
}

static void on_purge_done(void *arg, const struct pg_result *res, const char *err)
{
	struct retention *r = arg;
	uint64_t took = clock_mono_ms() - r->batch_started_ms;
	json_t *o, *removed;
	int more, backlog;
	int64_t pause;

	r->querying = 0;
	if (r->stopping || !r->leader)
		return;
	if (res == NULL || !pg_result_ok(res) || pg_ntuples(res) != 1) {
		const char *why = err ? err : pg_result_error(res);
		/* 55P03 from the purge itself: the lock is not ours (the session was replaced) */
		if (res && strcmp(pg_result_sqlstate(res), "55P03") == 0)
			set_leader(r, 0, why);
		log_warn("retention: batch failed; retrying later", LOG_S("error", why));
		r->in_pass = 0;
		r->next_pass_ms = clock_mono_ms() + ERROR_PAUSE_MS;
		return;
	}
	o = json_loads(pg_value(res, 0, 0), 0, NULL);
	if (o == NULL) {
		end_pass(r, "unreadable result");
		return;
	}
	removed = json_object_get(o, "removed");
	r->pass_removed += count_removed(r, "messages", json_object_get(removed, "messages"));
	r->pass_removed += count_removed(r, "events", json_object_get(removed, "events"));
	telemetry_retention_dropped(r->tm, (unsigned)json_integer_value(json_object_get(o, "dropped")));
	more = json_is_true(json_object_get(o, "more"));
	backlog = (int)json_integer_value(json_object_get(o, "backlog"));
	json_decref(o);
	if (!more) {
		end_pass(r, "done");
		return;
	}
	/* Space batches by at least their own duration (the purge takes at most about half of
	 * one connection's time), much more when the database is slow, and step aside while
	 * the dispatchers are behind: delivery comes first. */
	pause = r->cfg->retention_pause_ms > (int64_t)took ? r->cfg->retention_pause_ms : (int64_t)took;
	if (took > SLOW_BATCH_MS)
		pause = (int64_t)took * 10;
	if (backlog >= BACKLOG_ROWS && pause < BACKLOG_PAUSE_MS)
		pause = BACKLOG_PAUSE_MS;
	if (pause > MAX_PAUSE_MS)
		pause = MAX_PAUSE_MS;
	schedule_batch(r, pause);
}

static void fmt_interval(char *buf, size_t len, int64_t ms)
{
	snprintf(buf, len, "%lld milliseconds", (long long)ms);
}

static void on_batch_timer(evutil_socket_t fd, short what, void *arg)
{
	struct retention *r = arg;
	char sent[48], cancelled[48], failed[48], dead[48], published[48], limit[16];
	const char *params[6] = { sent, cancelled, failed, dead, published, limit };
	(void)fd;
	(void)what;

	if (r->stopping || !r->leader || !r->cfg->retention_enabled || r->querying || !pg_ready(r->pg))
		return;
	fmt_interval(sent, sizeof(sent), r->cfg->retention_sent_ms);
	fmt_interval(cancelled, sizeof(cancelled), r->cfg->retention_cancelled_ms);
	fmt_interval(failed, sizeof(failed), r->cfg->retention_failed_ms);
	fmt_interval(dead, sizeof(dead), r->cfg->retention_dead_ms);
	fmt_interval(published, sizeof(published), r->cfg->retention_published_ms);
	snprintf(limit, sizeof(limit), "%d", r->cfg->retention_batch_size);
	r->batch_started_ms = clock_mono_ms();
	if (pg_query(r->pg,
		     "SELECT outbox.purge($1::interval, $2::interval, $3::interval, $4::interval, $5::interval, "
		     "$6::integer)::text",
		     6, params, 0, on_purge_done, r) == 0)
		r->querying = 1;
	else
		r->in_pass = 0;
}

static void on_lock_done(void *arg, const struct pg_result *res, const char *err)
{
	struct retention *r = arg;

	r->querying = 0;
	if (res == NULL || !pg_result_ok(res) || pg_ntuples(res) != 1) {
		log_warn("retention: lock request failed", LOG_S("error", err ? err : pg_result_error(res)));
		return;
	}
	if (strcmp(pg_value(res, 0, 0), "t") == 0) {
		lock_watch_clear(&r->watch);
		set_leader(r, 1, "lock taken");
	} else {
		lock_watch_ask(&r->watch, r->pg);
	}
}

static void on_unlock_done(void *arg, const struct pg_result *res, const char *err)
{
	struct retention *r = arg;
	(void)res;
	(void)err;
	r->querying = 0;
}

void retention_tick(struct retention *r)
{
	if (r == NULL || r->stopping)
		return;
	r->ticks++;
	if (r->querying || !pg_ready(r->pg))
		return;
	if (!r->cfg->retention_enabled) {
		if (r->watch.foreign_pid != 0)
			lock_watch_clear(&r->watch); /* not this replica's business any more */
		/* switched off by a reload: let another replica (or nobody) have the lock */
		if (r->leader) {
			set_leader(r, 0, "retention.enabled off");
			if (pg_query(r->pg, "SELECT pg_advisory_unlock(" RETENTION_LOCK_KEY ")", 0, NULL, 10000,
				     on_unlock_done, r) == 0)
				r->querying = 1;
		}
		return;
	}
	if (!r->leader) {
		if (r->ticks < r->next_lock_tick)
			return;
		r->next_lock_tick = r->ticks + LOCK_RETRY_TICKS;
		if (pg_query(r->pg, "SELECT pg_try_advisory_lock(" RETENTION_LOCK_KEY ")", 0, NULL, 10000, on_lock_done,
			     r) == 0)
			r->querying = 1;
		return;
	}
	if (!r->in_pass && clock_mono_ms() >= r->next_pass_ms) {
		r->in_pass = 1;
		r->pass_removed = 0;
		schedule_batch(r, 0);
	}
}

static void on_connect(struct pgconn *c, void *arg)
{
	struct retention *r = arg;
	(void)c;
	/* a new session holds no lock: ask at once */
	r->querying = 0;
	r->next_lock_tick = r->ticks;
}

static void on_disconnect(struct pgconn *c, void *arg, const char *reason)
{
	struct retention *r = arg;
	(void)c;
	r->querying = 0;
	/* the lock went with the session */
	set_leader(r, 0, reason);
}

struct retention *retention_new(struct event_base *base, const struct config *cfg, struct telemetry *tm, char *errbuf,
				size_t errlen)
{
	struct retention *r = calloc(1, sizeof(*r));
	struct pg_callbacks cb = { .on_connect = on_connect, .on_disconnect = on_disconnect };

	if (r == NULL || (r->ev_batch = evtimer_new(base, on_batch_timer, r)) == NULL) {
		snprintf(errbuf, errlen, "out of memory");
		free(r);
		return NULL;
	}
	r->base = base;
	r->tm = tm;
	r->cfg = cfg;
	lock_watch_init(&r->watch, "retention", tm);
	/* Statements stay short (small batches); a partition drop waits 100 ms at most for
	 * its lock, set by the SQL itself. */
	r->pg = pg_new(base, "outboxd-retention", cfg->database_url,
		       "-c statement_timeout=60000 -c lock_timeout=5000 -c idle_in_transaction_session_timeout=60000",
		       cfg->database_connect_timeout_ms, cfg->reconnect_max_ms, &cb, r);
	if (r->pg == NULL) {
		snprintf(errbuf, errlen, "cannot create the retention connection");
		event_free(r->ev_batch);
		free(r);
		return NULL;
	}
	return r;
}

void retention_stop(struct retention *r)
{
	if (r == NULL)
		return;
	r->stopping = 1;
	evtimer_del(r->ev_batch);
}

void retention_free(struct retention *r)
{
	if (r == NULL)
		return;
	event_free(r->ev_batch);
	pg_close(r->pg);
	free(r);
}
