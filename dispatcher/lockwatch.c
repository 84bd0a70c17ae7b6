/* lockwatch: looks up who holds an advisory lock the dispatcher did not get (through
 * outbox.lock_holders(), sql/55_locks.sql) and reports a holder that is not outboxd. */
#include "lockwatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "pg.h"
#include "telemetry.h"

#define ASK_EVERY_MS 5000
#define LOG_EVERY_MS 30000

static const char *const HOLDER_SQL = "SELECT pid, usename, application_name, "
				      "to_char(backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
				      "client_addr, outboxd FROM outbox.lock_holders($1)";

void lock_watch_init(struct lock_watch *w, const char *lock, struct telemetry *tm)
{
	memset(w, 0, sizeof(*w));
	w->lock = lock;
	w->tm = tm;
}

/* What a foreign holder of each lock stops, for the log. */
static const char *effect(const char *lock)
{
	return strcmp(lock, "mirror") == 0 ? "no replica publishes Kafka events until that session lets go"
					   : "no replica removes finished rows until that session lets go";
}

int lock_watch_describe(const char *pid, const char *user, const char *app, const char *outboxd, char *out,
			size_t outlen)
{
	size_t i, n;

	if (pid == NULL || pid[0] == '\0' || (outboxd != NULL && strcmp(outboxd, "t") == 0))
		return 0;
	snprintf(out, outlen, "pid %s, user %s, application '%s'", pid, user && user[0] ? user : "?", app ? app : "");
	/* a login or application name is the holder's choice: keep it printable ASCII */
	n = strlen(out);
	for (i = 0; i < n; i++)
		if ((unsigned char)out[i] < 0x20 || (unsigned char)out[i] >= 0x7f)
			out[i] = '?';
	return 1;
}

void lock_watch_clear(struct lock_watch *w)
{
	if (w->foreign_pid != 0)
		log_info("advisory lock: the session that is not outboxd let go", LOG_S("lock", w->lock),
			 LOG_I("holder_pid", w->foreign_pid));
	w->foreign_pid = 0;
	telemetry_lock_foreign(w->tm, w->lock, NULL);
}

static void on_holder(void *arg, const struct pg_result *res, const char *err)
{
	struct lock_watch *w = arg;
	char desc[320];
	long long pid;
	uint64_t now = clock_mono_ms();

	w->asking = 0;
	if (res == NULL)
		return; /* the connection went; the next campaign asks again */
	if (!pg_result_ok(res)) {
		log_debug("advisory lock: looking up the holder failed", LOG_S("lock", w->lock),
			  LOG_S("error", pg_failure(res, err)));
		return;
	}
	if (pg_ntuples(res) < 1 || !lock_watch_describe(pg_value(res, 0, 0), pg_value(res, 0, 1), pg_value(res, 0, 2),
							pg_value(res, 0, 5), desc, sizeof(desc))) {
		lock_watch_clear(w); /* free by now, or another replica: the normal standby */
		return;
	}
	pid = atoll(pg_value(res, 0, 0));
	if (pid != w->foreign_pid || w->logged_ms == 0 || now - w->logged_ms >= LOG_EVERY_MS) {
		log_warn("advisory lock held by a session that is not outboxd", LOG_S("lock", w->lock),
			 LOG_I("holder_pid", pid), LOG_S("holder_user", pg_value(res, 0, 1)),
			 LOG_S("holder_application", pg_value(res, 0, 2)), LOG_S("holder_since", pg_value(res, 0, 3)),
			 LOG_S("holder_client", pg_value(res, 0, 4)), LOG_S("effect", effect(w->lock)));
		w->logged_ms = now;
	}
	w->foreign_pid = pid;
	telemetry_lock_foreign(w->tm, w->lock, desc);
}

void lock_watch_ask(struct lock_watch *w, struct pgconn *c)
{
	const char *p[1] = { w->lock };
	uint64_t now = clock_mono_ms();

	if (w->asking || (w->asked_ms != 0 && now - w->asked_ms < ASK_EVERY_MS))
		return;
	if (pg_query(c, HOLDER_SQL, 1, p, 10000, on_holder, w) == 0) {
		w->asking = 1;
		w->asked_ms = now;
	}
}
