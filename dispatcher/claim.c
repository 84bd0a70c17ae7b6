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
	"FROM outbox.claim($1, $2::int, $3::int)";

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
	int n;

	d->claiming = 0;
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
	if (n == 0) {
		if (!d->idle_marked && d->state == RUN_RUNNING) {
			/* mark idle first, then look once more: a row committed between our claim
			 * and the mark would otherwise wait for the poll */
			claim_set_idle(d, 1);
			claim_kick(d);
		} else {
			d->empty = 1;
		}
		return;
	}
	d->empty = 0;
	if (d->idle_marked)
		claim_set_idle(d, 0);
	if (n >= d->claim_limit)
		claim_kick(d);
}

void claim_on_event(evutil_socket_t fd, short what, void *arg)
{
	struct dispatcher *d = arg;
	const char *p[3];
	char lim[24], lease[24];
	int limit;
	(void)fd;
	(void)what;

	if (d->state != RUN_RUNNING || !d->startup_done || d->claiming || !pg_ready(d->work))
		return;
	limit = job_claim_limit(d->cfg->batch_size, d->cfg->max_in_flight, d->njobs, &d->breaker, clock_mono_ms());
	if (limit <= 0)
		return;
	snprintf(lim, sizeof(lim), "%d", limit);
	dispatcher_lease_seconds(d, lease, sizeof(lease));
	p[0] = d->owner;
	p[1] = lim;
	p[2] = lease;
	if (pg_query(d->work, CLAIM_SQL, 3, p, d->cfg->database_statement_timeout_ms + 5000, on_claim_done, d) == 0) {
		d->claim_sent_ms = clock_mono_ms();
		d->claiming = 1;
		d->claim_limit = limit;
	}
}
