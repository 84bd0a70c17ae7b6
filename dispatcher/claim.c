/* claim: leases due rows with outbox.claim() when there is room in flight (job_claim_limit),
 * keeps this dispatcher's idle mark so producers wake it, and hands each row to deliver.c. */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>

#include "clock.h"
#include "config.h"
#include "core.h"
#include "log.h"
#include "pg.h"
#include "telemetry.h"
#include "wake.h"

static const char *const CLAIM_SQL =
	"SELECT id, attempt, message_id, sender, recipients, cc, bcc, reply_to, subject, body_text, "
	"body_html, headers, extract(epoch FROM created_at)::float8, done_recipients "
	"FROM outbox.claim($1, $2::int, $3::int, $4::boolean)";

/* The rescue of gone sessions and expired leases is a third of a claim's cost; one claim a
 * second carries it (and the first of each session, which records it). */
#define RESCUE_EVERY_MS 1000

void claim_kick(struct dispatcher *d)
{
	event_active(d->ev_claim, 0, 0);
}

static void on_set_idle_done(void *arg, const struct pg_result *res, const char *err)
{
	struct dispatcher *d = arg;

	if (res == NULL || !pg_result_ok(res))
		log_warn("dispatcher bookkeeping query failed", LOG_S("error", pg_failure(res, err)));
	dispatcher_maybe_finish_drain(d);
}

void claim_set_idle(struct dispatcher *d, int idle)
{
	if (wake_set_idle(d->work, d->owner, WAKE_CHANNEL_MESSAGES, idle, on_set_idle_done, d) == 0)
		d->idle_marked = idle;
}

static void on_claim_done(void *arg, const struct pg_result *res, const char *err)
{
	struct dispatcher *d = arg;
	struct claim_next next;
	int n, woken = d->claim_woken;

	d->claiming = 0;
	d->claim_woken = 0;
	if (res == NULL || !pg_result_ok(res)) {
		log_warn("claim failed", LOG_S("error", pg_failure(res, err)),
			 LOG_S("sqlstate", pg_result_sqlstate(res)));
		return; /* the poll or the reconnect tries again */
	}
	n = pg_ntuples(res);
	telemetry_claim(d->tm, n);
	if (d->state != RUN_RUNNING) {
		/* the claim crossed a SIGTERM: give the rows back untouched */
		for (int i = 0; i < n; i++)
			outcome_release(d, atoll(pg_value(res, i, C_ID)), atoll(pg_value(res, i, C_ATTEMPT)));
		outcome_kick(d);
		return;
	}
	for (int i = 0; i < n; i++)
		deliver_row(d, res, i);
	job_after_claim(n, d->claim_limit, d->idle_marked, woken, &next);
	if (next.set_idle >= 0)
		claim_set_idle(d, next.set_idle);
	d->empty = next.empty;
	if (next.again)
		claim_kick(d);
}

void claim_on_event(evutil_socket_t fd, short what, void *arg)
{
	struct dispatcher *d = arg;
	const char *p[4];
	char lim[24], lease[24];
	int limit, rescue;
	uint64_t now;
	(void)fd;
	(void)what;

	if (d->claiming) {
		/* the claim in flight may have looked before the row that woke us committed */
		d->claim_woken = 1;
		return;
	}
	/* nothing is claimed that could not be recorded: outcomes and renewals go on their own
	 * connection, and rows sent with no outcome written go out again after their lease */
	if (d->state != RUN_RUNNING || !d->startup_done || !pg_ready(d->work) || !pg_ready(d->outcomes) ||
	    d->outcomes_behind)
		return;
	now = clock_mono_ms();
	limit = job_claim_limit(d->cfg->batch_size, d->cfg->max_in_flight, d->njobs, &d->breaker, now);
	if (limit <= 0)
		return;
	snprintf(lim, sizeof(lim), "%d", limit);
	dispatcher_lease_seconds(d, lease, sizeof(lease));
	rescue = d->rescued_ms == 0 || now - d->rescued_ms >= RESCUE_EVERY_MS;
	p[0] = d->owner;
	p[1] = lim;
	p[2] = lease;
	p[3] = rescue ? "true" : "false";
	if (pg_query(d->work, CLAIM_SQL, 4, p, d->cfg->database_statement_timeout_ms + 5000, on_claim_done, d) == 0) {
		d->claim_sent_ms = now;
		d->claiming = 1;
		d->claim_limit = limit;
		if (rescue)
			d->rescued_ms = now;
	}
}
