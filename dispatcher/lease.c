/* lease: keeps the rows this dispatcher holds leased while it delivers them and until
 * their outcomes are written (outbox.renew(), fenced on the claim's attempt).
 *
 * Renewals go on the outcomes connection, behind the outcome writes already sent: a row
 * whose outcome is being written is finished by the time the renewal runs, so it is left
 * out, and the count that comes back is exact. One renewal is in flight at a time. */
#include <stdlib.h>

#include "clock.h"
#include "config.h"
#include "core.h"
#include "log.h"
#include "pg.h"
#include "pgarray.h"
#include "smtp.h"

/* Jobs the renewal in flight asked for and that are neither lost nor being taken back. */
static int covered(const struct dispatcher *d, const struct job *j)
{
	return j->renew_gen == d->renew_gen && j->lease_until_ms != 0 && j->lease_until_ms != UINT64_MAX;
}

static void on_renew_done(void *arg, const struct pg_result *res, const char *err)
{
	struct dispatcher *d = arg;
	size_t renewed;

	d->renewing = 0;
	if (res == NULL || !pg_result_ok(res)) {
		/* the leases run on by the clock; lease_check stops sending when they end */
		log_warn("lease renewal failed", LOG_S("error", pg_failure(res, err)));
		return;
	}
	renewed = (size_t)atoll(pg_value(res, 0, 0));
	for (struct job *j = d->jobs; j; j = j->next) {
		if (!covered(d, j))
			continue;
		/* short: some row was taken over, and the count does not say which; take back
		 * every queued one (those still ours are released and claimed again) */
		j->lease_until_ms = renewed < d->renew_sent_n ? 0 : d->renew_sent_ms + (uint64_t)d->cfg->lease_ms;
	}
	if (renewed < d->renew_sent_n)
		log_warn("some leases were taken over: not sending the messages still queued",
			 LOG_I("renewed", (long long)renewed), LOG_I("held", (long long)d->renew_sent_n));
	lease_check(d);
}

void lease_check(struct dispatcher *d)
{
	/* a margin for the clocks and the time a message takes to start */
	uint64_t margin = (uint64_t)(d->cfg->lease_ms / 10 < 2000 ? d->cfg->lease_ms / 10 : 2000);
	uint64_t now = clock_mono_ms();
	int lost = 0;

	for (struct job *j = d->jobs; j; j = j->next)
		if (j->lease_until_ms <= now + margin)
			lost++;
	if (lost == 0 || d->smtp == NULL)
		return;
	log_warn("lease lost or ending: messages still queued go back unsent", LOG_I("jobs", (long long)lost));
	/* mark them now: the cancel reports them (and may free them) */
	for (struct job *j = d->jobs; j; j = j->next)
		if (j->lease_until_ms <= now + margin)
			j->lease_until_ms = UINT64_MAX;
	smtp_cancel_queued(d->smtp);
}

void lease_renew(struct dispatcher *d)
{
	struct pgarray_lit ids, attempts;
	const char *ids_text, *attempts_text;
	json_t *v;
	char lease[24];
	unsigned gen = d->renew_gen + 1;
	size_t i;

	if (d->renewing || !pg_ready(d->outcomes))
		return;
	pgarray_lit_init(&ids);
	pgarray_lit_init(&attempts);
	for (struct job *j = d->jobs; j; j = j->next) {
		pgarray_lit_int(&ids, j->id);
		pgarray_lit_int(&attempts, j->attempt);
	}
	/* finished rows whose outcome waits to be sent keep their lease too; those in the
	 * write in flight do not need it (see above) */
	json_array_foreach (d->results, i, v) {
		pgarray_lit_int(&ids, (long long)json_integer_value(json_object_get(v, "id")));
		pgarray_lit_int(&attempts, (long long)json_integer_value(json_object_get(v, "attempt")));
	}
	ids_text = pgarray_lit_close(&ids);
	attempts_text = pgarray_lit_close(&attempts);
	/* nothing leased, or out of memory: the next renewal tries again */
	if (ids.n > 0 && ids_text && attempts_text) {
		const char *p[4] = { d->owner, ids_text, attempts_text, lease };
		dispatcher_lease_seconds(d, lease, sizeof(lease));
		if (pg_query(d->outcomes, "SELECT outbox.renew($1, $2::bigint[], $3::int[], $4::int)", 4, p, 10000,
			     on_renew_done, d) != 0) {
			log_debug("lease renewal skipped: database not ready", LOG_END);
		} else {
			d->renew_gen = gen;
			d->renew_sent_ms = clock_mono_ms();
			d->renew_sent_n = ids.n;
			d->renewing = 1;
			for (struct job *j = d->jobs; j; j = j->next)
				j->renew_gen = gen;
			log_debug("lease renewal sent", LOG_I("rows", (long long)ids.n));
		}
	}
	pgarray_lit_free(&ids);
	pgarray_lit_free(&attempts);
}
