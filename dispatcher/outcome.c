/* outcome: queues each message's verdict and each row given back, and writes them in
 * batches (job_flush_now) with outbox.complete() and outbox.release() in one statement,
 * fenced on (owner, attempt). Outcomes the database refuses for a passing reason are kept
 * and written again. The writes have a connection of their own: on the claim's connection
 * the next claim waited for each write (0.3-0.8 ms), and so did the message it would take. */
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "config.h"
#include "core.h"
#include "log.h"
#include "pg.h"
#include "pgarray.h"

void outcome_add(struct dispatcher *d, const struct job *j, enum outcome o, int code, const char *error, int unknown)
{
	json_t *r = json_object();
	json_t *rcpts;

	json_object_set_new(r, "id", json_integer(j->id));
	json_object_set_new(r, "attempt", json_integer(j->attempt));
	json_object_set_new(r, "outcome", json_string(outcome_name(o)));
	json_object_set_new(r, "code", code > 0 ? json_integer(code) : json_null());
	json_object_set_new(r, "error", error ? json_string(error) : json_null());
	json_object_set_new(r, "unknown", json_boolean(unknown));
	if (o == OUTCOME_RETRY) {
		uint64_t delay = backoff_full_jitter_ms((unsigned)j->attempt, (uint64_t)d->cfg->retry_base_ms,
							(uint64_t)d->cfg->retry_cap_ms, backoff_random64());
		json_object_set_new(r, "retry_in_ms", json_integer((json_int_t)delay));
	}
	/* A first attempt that reached everyone needs no recipient rows: outbox.recipient_status
	 * derives them from the message. Saves a row per message on the hot path. */
	if (o == OUTCOME_SENT && j->attempt == 1) {
		json_array_append_new(d->results, r);
		return;
	}
	rcpts = json_array();
	for (size_t i = 0; i < j->nrc; i++) {
		const struct rcpt_reply *rc = &j->reply[i];
		json_t *x;
		if (!rc->charged && rc->state == RCPT_PENDING)
			continue; /* nothing happened for this recipient */
		x = json_object();
		json_object_set_new(x, "address", json_string(j->addr[i]));
		json_object_set_new(x, "kind", json_string(rcpt_kind_name(j->kind[i])));
		json_object_set_new(x, "state", json_string(rcpt_state_name(rc->state)));
		json_object_set_new(x, "code", rc->code > 0 ? json_integer(rc->code) : json_null());
		json_object_set_new(x, "error",
				    rc->text && rc->state != RCPT_SENT ? json_string(rc->text) : json_null());
		json_array_append_new(rcpts, x);
	}
	json_object_set_new(r, "recipients", rcpts);
	json_array_append_new(d->results, r);
}

void outcome_release(struct dispatcher *d, long long id, long long attempt)
{
	json_t *pair = json_pack("[II]", (json_int_t)id, (json_int_t)attempt);

	if (pair)
		json_array_append_new(d->releases, pair);
}

size_t outcome_waiting(const struct dispatcher *d)
{
	return json_array_size(d->results) + json_array_size(d->releases);
}

void outcome_kick(struct dispatcher *d)
{
	if (job_flush_now(d->state == RUN_RUNNING, d->cfg->outcome_delay_ms, outcome_waiting(d), (size_t)d->njobs,
			  job_claim_span(d->cfg->batch_size, d->cfg->max_in_flight))) {
		event_active(d->ev_flush, 0, 0);
		return;
	}
	if (!event_pending(d->ev_flush, EV_TIMEOUT, NULL)) {
		struct timeval tv = { .tv_sec = (time_t)(d->cfg->outcome_delay_ms / 1000),
				      .tv_usec = (suseconds_t)((d->cfg->outcome_delay_ms % 1000) * 1000) };
		event_add(d->ev_flush, &tv);
	}
}

/* The write failed (connection lost): keep the outcomes for the next connection;
 * completion is fenced, so writing one twice changes nothing. */
static void requeue_unflushed(struct dispatcher *d)
{
	if (d->flushing_results) {
		json_array_extend(d->flushing_results, d->results);
		json_decref(d->results);
		d->results = d->flushing_results;
		d->flushing_results = NULL;
	}
	if (d->flushing_releases) {
		json_array_extend(d->flushing_releases, d->releases);
		json_decref(d->releases);
		d->releases = d->flushing_releases;
		d->flushing_releases = NULL;
	}
}

/* SQLSTATEs worth retrying as they are: connection exceptions (08), serialisation and
 * deadlock, lock and statement timeouts, too many connections, server shutdown. */
static int sqlstate_transient(const char *st)
{
	static const char *const codes[] = { "40001", "40P01", "55P03", "57014", "53300", "57P01", "57P02", "57P03" };

	if (strncmp(st, "08", 2) == 0)
		return 1;
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
		if (strcmp(st, codes[i]) == 0)
			return 1;
	return 0;
}

/* Nothing owed from before a reconnect any more (written, or given up): claims resume. */
static void caught_up(struct dispatcher *d)
{
	if (!d->outcomes_behind)
		return;
	d->outcomes_behind = 0;
	claim_kick(d);
}

static void on_flush_done(void *arg, const struct pg_result *res, const char *err)
{
	struct dispatcher *d = arg;

	d->flushing--;
	if (res == NULL || !pg_result_ok(res)) {
		/* Connection lost (res == NULL) or a passing server error (timeouts, lock waits,
		 * deadlocks, serialisation, too many connections, shutdown): keep the outcomes and
		 * write them again from the tick. A refusal for any other reason is retried a few
		 * times, then dropped rather than looped on: those rows' leases expire and they
		 * are delivered again (at least once). */
		if (res != NULL && !sqlstate_transient(pg_result_sqlstate(res)) && ++d->flush_errors >= 3) {
			log_error("dropping outcomes the database keeps refusing; their leases will expire",
				  LOG_S("error", pg_result_error(res)), LOG_S("sqlstate", pg_result_sqlstate(res)),
				  LOG_I("count", (long long)json_array_size(d->flushing_results)));
			json_decref(d->flushing_results);
			json_decref(d->flushing_releases);
			d->flushing_results = d->flushing_releases = NULL;
			d->flush_errors = 0;
			caught_up(d);
			dispatcher_maybe_finish_drain(d);
			return;
		}
		log_warn("writing outcomes failed; will retry", LOG_S("error", pg_failure(res, err)),
			 LOG_S("sqlstate", pg_result_sqlstate(res)));
		if (d->flushing == 0)
			requeue_unflushed(d);
		return;
	}
	d->flush_errors = 0;
	if (d->flushing == 0) {
		size_t applied = (size_t)atoll(pg_value(res, 0, 0));
		size_t sent = json_array_size(d->flushing_results);
		if (d->flushing_results && applied < sent)
			log_warn("some outcomes were fenced off: their leases were taken over",
				 LOG_I("written", (long long)applied), LOG_I("outcomes", (long long)sent));
		json_decref(d->flushing_results);
		json_decref(d->flushing_releases);
		d->flushing_results = d->flushing_releases = NULL;
		caught_up(d);
		if (outcome_waiting(d))
			outcome_kick(d);
		dispatcher_maybe_finish_drain(d);
	}
}

/* Outcomes and releases in one statement. Each function is called only when it has work:
 * almost every write carries outcomes and no releases, and outbox.release() with an empty
 * array cost half as much again as the outcomes (0.4 ms against 0.7 ms per write), on the
 * connection the next claim waits for. */
static const char *const FLUSH_SQL =
	"SELECT CASE WHEN jsonb_array_length($2::jsonb) > 0"
	" THEN (SELECT count(*) FROM outbox.complete($1, $2::jsonb)) ELSE 0 END, "
	"CASE WHEN cardinality($3::bigint[]) > 0 THEN outbox.release($1, $3::bigint[], $4::int[]) ELSE 0 END";

/* Sends the batch in flushing_*: outcomes and releases in one statement, one round trip,
 * one transaction. Returns 0, or -1 when it could not be sent. */
static int flush_send(struct dispatcher *d)
{
	char *rj = json_dumps(d->flushing_results, JSON_COMPACT);
	struct pgarray_lit ids, attempts;
	const char *ids_text, *attempts_text;
	json_t *v;
	size_t i;
	int rc = -1;

	pgarray_lit_init(&ids);
	pgarray_lit_init(&attempts);
	json_array_foreach (d->flushing_releases, i, v) {
		pgarray_lit_int(&ids, (long long)json_integer_value(json_array_get(v, 0)));
		pgarray_lit_int(&attempts, (long long)json_integer_value(json_array_get(v, 1)));
	}
	ids_text = pgarray_lit_close(&ids);
	attempts_text = pgarray_lit_close(&attempts);
	if (rj && ids_text && attempts_text) {
		const char *p[4] = { d->owner, rj, ids_text, attempts_text };
		rc = pg_query(d->outcomes, FLUSH_SQL, 4, p, d->cfg->database_statement_timeout_ms + 5000, on_flush_done,
			      d);
	}
	free(rj);
	pgarray_lit_free(&ids);
	pgarray_lit_free(&attempts);
	return rc;
}

void outcome_on_flush_event(evutil_socket_t fd, short what, void *arg)
{
	struct dispatcher *d = arg;
	(void)fd;
	(void)what;

	if (d->flushing || !pg_ready(d->outcomes))
		return;
	if (outcome_waiting(d) == 0) {
		dispatcher_maybe_finish_drain(d);
		return;
	}
	d->flushing_results = d->results;
	d->flushing_releases = d->releases;
	d->results = json_array();
	d->releases = json_array();
	if (flush_send(d) == 0)
		d->flushing = 1;
	else
		requeue_unflushed(d);
}
