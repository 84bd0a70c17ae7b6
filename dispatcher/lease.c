/* lease: keeps the rows this dispatcher holds leased while it delivers them and until
 * their outcomes are written (outbox.renew(), fenced on the claim's attempt). */
#include <stdlib.h>

#include "config.h"
#include "core.h"
#include "log.h"
#include "pg.h"
#include "pgarray.h"

static void on_renew_done(void *arg, const struct pg_result *res, const char *err)
{
	struct dispatcher *d = arg;

	if (res == NULL || !pg_result_ok(res)) {
		log_warn("lease renewal failed", "serror", pg_failure(res, err), NULL);
		return;
	}
	if (atoi(pg_value(res, 0, 0)) < d->njobs)
		log_debug("some leases were not renewed: taken over", "irenewed", (long long)atoi(pg_value(res, 0, 0)),
			  "iin_flight", (long long)d->njobs, NULL);
}

void lease_renew(struct dispatcher *d)
{
	struct pgarray_lit ids, attempts;
	const char *ids_text, *attempts_text;
	json_t *lists[2] = { d->results, d->flushing_results }, *v;
	char lease[24];
	size_t i;

	if (!pg_ready(d->work))
		return;
	pgarray_lit_init(&ids);
	pgarray_lit_init(&attempts);
	for (struct job *j = d->jobs; j; j = j->next) {
		pgarray_lit_int(&ids, j->id);
		pgarray_lit_int(&attempts, j->attempt);
	}
	/* finished rows whose outcome is not written yet keep their lease too */
	for (int l = 0; l < 2; l++)
		json_array_foreach (lists[l], i, v) {
			pgarray_lit_int(&ids, (long long)json_integer_value(json_object_get(v, "id")));
			pgarray_lit_int(&attempts, (long long)json_integer_value(json_object_get(v, "attempt")));
		}
	ids_text = pgarray_lit_close(&ids);
	attempts_text = pgarray_lit_close(&attempts);
	/* nothing leased, or out of memory: the next renewal tries again */
	if (ids.n > 0 && ids_text && attempts_text) {
		const char *p[4] = { d->owner, ids_text, attempts_text, lease };
		dispatcher_lease_seconds(d, lease, sizeof(lease));
		if (pg_query(d->work, "SELECT outbox.renew($1, $2::bigint[], $3::int[], $4::int)", 4, p, 10000,
			     on_renew_done, d) != 0)
			log_debug("lease renewal skipped: database not ready", NULL);
	}
	pgarray_lit_free(&ids);
	pgarray_lit_free(&attempts);
}
