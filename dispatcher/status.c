/* `outboxd status`: reads the queue's health from PostgreSQL (depth by state, oldest due
 * age, rates over the last minute, mirror lag, recent failures, who holds outboxd's advisory
 * locks) and prints a table or JSON; the exit code says whether the configured thresholds
 * hold and no foreign session holds one of the locks. */
#include "status.h"

#include <getopt.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "pg.h"

/* One SECURITY DEFINER function (sql/56_status.sql), so the dispatcher's own login, which
 * may not read outbox.messages, can run status. */
static const char *const STATUS_SQL = "SELECT outbox.status_report()::text";

static int mirror_enabled(const struct config *cfg)
{
	return cfg->kafka_brokers != NULL && cfg->kafka_brokers[0] != '\0';
}

static double num(json_t *o, const char *k)
{
	return json_number_value(json_object_get(o, k));
}

/* One line per table: when the last pass ended, what it and all passes removed. */
static void print_retention(json_t *r, const char *layout, int on)
{
	static const char *const tables[] = { "messages", "events" };
	size_t i;

	printf("%-34s %s layout%s\n", "retention", layout ? layout : "?", on ? "" : ", off in this configuration");
	for (i = 0; i < 2; i++) {
		json_t *t = json_object_get(r, tables[i]), *age = json_object_get(t, "last_pass_age_seconds");
		char when[64];

		if (json_is_number(age))
			snprintf(when, sizeof(when), "last pass %.0f s ago", json_number_value(age));
		else
			snprintf(when, sizeof(when), "no pass yet");
		printf("  %-32s %s, removed %.0f (last pass %.0f), %.0f partitions dropped\n", tables[i], when,
		       num(t, "removed_total"), num(t, "last_pass_removed"), num(t, "partitions_dropped"));
	}
}

/* What each lock stops while a foreign session holds it. */
static const struct {
	const char *lock;
	const char *stops;
} status_locks[] = {
	{ "mirror", "the Kafka mirror publishes nothing" },
	{ "retention", "no dispatcher removes finished rows" },
	{ "migrate", "outboxd migrate cannot run" },
};

/* One line per advisory lock: free, held by outboxd, or held by a foreign session. */
static void print_locks(json_t *locks)
{
	size_t i;

	printf("%-34s %s\n", "advisory locks", "holder");
	for (i = 0; i < sizeof(status_locks) / sizeof(status_locks[0]); i++) {
		json_t *h = json_object_get(locks, status_locks[i].lock);
		const char *user = json_string_value(json_object_get(h, "user"));
		const char *app = json_string_value(json_object_get(h, "application_name"));

		if (h == NULL)
			printf("  %-32s free\n", status_locks[i].lock);
		else
			printf("  %-32s %s pid %lld, user %s, application '%s'\n", status_locks[i].lock,
			       json_is_true(json_object_get(h, "outboxd")) ? "outboxd" : "FOREIGN session",
			       (long long)json_integer_value(json_object_get(h, "pid")), user ? user : "?",
			       app ? app : "");
	}
}

static void print_table(json_t *s, int mirror_on, int retention_on)
{
	json_t *depth = json_object_get(s, "depth"), *h = json_object_get(s, "health"),
	       *m = json_object_get(s, "mirror"), *f = json_object_get(s, "recent_failures"), *v;
	static const char *const states[] = { "pending", "sending", "sent", "failed", "dead", "cancelled" };
	size_t i;

	printf("%-34s %s\n", "queue", "messages");
	for (i = 0; i < sizeof(states) / sizeof(states[0]); i++)
		printf("  %-32s %.0f\n", states[i], num(depth, states[i]));
	printf("%-34s %.0f\n", "pending, due now", num(h, "pending_due"));
	printf("%-34s %.0f\n", "pending, scheduled later", num(h, "pending_scheduled"));
	printf("%-34s %.1f s\n", "oldest due pending age", num(h, "oldest_due_pending_age_seconds"));
	printf("%-34s %.0f\n", "leases expired (sending)", num(h, "sending_lease_expired"));
	printf("%-34s %.0f / min\n", "sent, last minute", num(s, "sent_last_minute"));
	printf("%-34s %.0f / min\n", "created, last minute", num(s, "created_last_minute"));
	printf("%-34s %.0f failed, %.0f dead\n", "last hour", num(h, "failed_last_hour"), num(h, "dead_last_hour"));
	printf("%-34s %.0f events, oldest %.1f s, %.0f failed%s\n", "kafka mirror lag", num(m, "unpublished"),
	       num(m, "oldest_unpublished_age_seconds"), num(m, "failed"),
	       mirror_on ? "" : " (mirror off: not checked)");
	print_retention(json_object_get(s, "retention"), json_string_value(json_object_get(s, "layout")), retention_on);
	print_locks(json_object_get(s, "locks"));
	if (json_array_size(f) > 0) {
		printf("recent failures:\n");
		json_array_foreach (f, i, v) {
			printf("  #%-8lld %-6s smtp %3lld  %s\n",
			       (long long)json_integer_value(json_object_get(v, "id")),
			       json_string_value(json_object_get(v, "state")),
			       (long long)json_integer_value(json_object_get(v, "last_smtp_code")),
			       json_string_value(json_object_get(v, "last_error")) ?: "");
		}
	}
}

/* Appends one problem to the list and says it on stderr. */
static void problem(json_t *problems, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(json_t *problems, const char *fmt, ...)
{
	char text[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	fprintf(stderr, "unhealthy: %s\n", text);
	json_array_append_new(problems, json_string(text));
}

/* Returns the thresholds exceeded, one sentence each (the caller owns the array). The
 * mirror lag is only judged when this configuration runs the mirror: without Kafka the
 * lifecycle events simply wait and their age says nothing about health. A lock held by a
 * session that is not outboxd is always a problem. */
static json_t *check_thresholds(const struct config *cfg, json_t *s)
{
	json_t *h = json_object_get(s, "health"), *m = json_object_get(s, "mirror");
	double oldest = num(h, "oldest_due_pending_age_seconds");
	double failed = num(h, "failed_last_hour") + num(h, "dead_last_hour");
	double lag = num(m, "oldest_unpublished_age_seconds");
	json_t *problems = json_array();

	if (oldest * 1000 > (double)cfg->status_max_oldest_pending_ms)
		problem(problems, "oldest due pending message is %.1f s old (status.max_oldest_pending %.1f s)", oldest,
			(double)cfg->status_max_oldest_pending_ms / 1000);
	if (failed > (double)cfg->status_max_failed_last_hour)
		problem(problems, "%.0f messages failed or dead in the last hour (status.max_failed_last_hour %lld)",
			failed, (long long)cfg->status_max_failed_last_hour);
	if (mirror_enabled(cfg) && lag * 1000 > (double)cfg->status_max_mirror_lag_ms)
		problem(problems, "kafka mirror is %.1f s behind (status.max_mirror_lag %.1f s)", lag,
			(double)cfg->status_max_mirror_lag_ms / 1000);
	/* PostgreSQL lets any login take an advisory lock: one not held by outboxd is sabotage
	 * or a mistake, and stops that duty on every replica until the session lets go. */
	for (size_t i = 0; i < sizeof(status_locks) / sizeof(status_locks[0]); i++) {
		json_t *hl = json_object_get(json_object_get(s, "locks"), status_locks[i].lock);
		const char *user = json_string_value(json_object_get(hl, "user"));
		const char *app = json_string_value(json_object_get(hl, "application_name"));

		if (hl != NULL && !json_is_true(json_object_get(hl, "outboxd")))
			problem(problems,
				"the %s lock is held by a session that is not outboxd: pid %lld, user %s, "
				"application '%s'; %s until it lets go",
				status_locks[i].lock, (long long)json_integer_value(json_object_get(hl, "pid")),
				user ? user : "?", app ? app : "", status_locks[i].stops);
	}
	return problems;
}

int status_main(int argc, char **argv)
{
	static const struct option opts[] = { { "config", required_argument, NULL, 'c' },
					      { "json", no_argument, NULL, 'j' },
					      { "database-url", required_argument, NULL, 'd' },
					      { "help", no_argument, NULL, 'h' },
					      { NULL, 0, NULL, 0 } };
	const char *path = NULL, *url = NULL;
	int json = 0, ch, rc = 1;
	struct config cfg;
	char err[512];
	struct pg_sync *db = NULL;
	struct pg_result *res = NULL;
	json_t *s = NULL, *problems = NULL;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "c:jd:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'j':
			json = 1;
			break;
		case 'd':
			url = optarg;
			break;
		case 'h':
			printf("usage: outboxd status [--config FILE] [--database-url URL] [--json]\n");
			return 0;
		default:
			fprintf(stderr, "usage: outboxd status [--config FILE] [--database-url URL] [--json]\n");
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "outboxd status: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (config_load(&cfg, path, stderr) != 0 || (url == NULL && config_require(&cfg, stderr) != 0)) {
		config_free(&cfg);
		return 2;
	}
	pg_set_password(cfg.database_password);
	db = pg_sync_connect(url ? url : cfg.database_url, "outboxd-status", err, sizeof(err));
	if (db == NULL) {
		fprintf(stderr, "outboxd status: cannot connect: %s\n", err);
		goto out;
	}
	res = pg_sync_query(db, STATUS_SQL, 0, NULL, err, sizeof(err));
	if (res == NULL) {
		fprintf(stderr, "outboxd status: %s\n", err);
		goto out;
	}
	s = json_loads(pg_value(res, 0, 0), 0, NULL);
	if (s == NULL) {
		fprintf(stderr, "outboxd status: unreadable answer\n");
		goto out;
	}
	problems = check_thresholds(&cfg, s);
	rc = json_array_size(problems) ? 1 : 0;
	if (json) {
		json_object_set_new(s, "healthy", json_boolean(rc == 0));
		json_object_set(s, "problems", problems);
		json_object_set_new(s, "thresholds",
				    json_pack("{s:f,s:I,s:f,s:b}", "max_oldest_pending_seconds",
					      (double)cfg.status_max_oldest_pending_ms / 1000, "max_failed_last_hour",
					      (json_int_t)cfg.status_max_failed_last_hour, "max_mirror_lag_seconds",
					      (double)cfg.status_max_mirror_lag_ms / 1000, "mirror_checked",
					      mirror_enabled(&cfg)));
		/* 15 significant digits: PostgreSQL's microsecond ages print as they were
		 * computed (33.292561), not as their nearest double (33.292560999999999). */
		json_dumpf(s, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
		printf("\n");
	} else {
		print_table(s, mirror_enabled(&cfg), cfg.retention_enabled);
		printf("%s\n", rc == 0 ? "healthy" : "UNHEALTHY");
	}
out:
	json_decref(problems);
	json_decref(s);
	if (res)
		pg_sync_free_result(res);
	pg_sync_close(db);
	pg_set_password(NULL);
	config_free(&cfg);
	return rc;
}
