/* Telemetry: owns the metrics registry and the HTTP server, maps dispatcher events onto
 * metric families, and every few seconds reads the queue's figures (depth, oldest due
 * age, mirror lag, dead tuples, oldest transaction) from PostgreSQL. */
#include "telemetry.h"

#include <event2/event.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "config.h"
#include "console.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"

struct telemetry {
	struct event_base *base;
	struct metrics *reg;
	struct outboxd_metrics *om;
	struct http_server *http;
	struct console *console; /* the web console on the HTTP port, or NULL */
	json_t *figures;         /* the last queue figures read (STATS_SQL), or NULL */
	double figures_at;       /* when, CLOCK_MONOTONIC seconds */
	struct pgconn *conn;     /* where the figures are read: not the claims' connection */
	const struct breaker *smtp_breaker;
	enum breaker_state last_smtp; /* last state reported per sink, to count transitions */
	enum breaker_state last_kafka;
	int stats_running;
	long schema_version; /* applied in the database; -1 unknown */
	int db_up;
	char foreign_mirror[320]; /* a holder of the mirror lock that is not outboxd, "" = none */
	char foreign_retention[320];
};

/* Figures from SQL, all in one round trip, as one JSON document. */
static const char *const STATS_SQL =
	"SELECT json_build_object("
	" 'depth', (SELECT json_object_agg(state, n) FROM outbox.queue_depth_estimate AS q(state, n, exact)),"
	" 'oldest', (SELECT oldest_due_pending_age_seconds FROM outbox.queue_health),"
	" 'lag_rows', (SELECT unpublished FROM outbox.mirror_lag),"
	" 'lag_seconds', (SELECT oldest_unpublished_age_seconds FROM outbox.mirror_lag),"
	" 'tables', (SELECT json_agg(json_build_object('t', relname, 'dead', n_dead_tup,"
	"      'vac', extract(epoch FROM greatest(last_autovacuum, last_vacuum))))"
	"      FROM pg_stat_user_tables WHERE schemaname = 'outbox'"
	"       AND relname IN ('messages', 'message_recipients', 'events')),"
	" 'xact_age', (SELECT coalesce(max(extract(epoch FROM now() - xact_start)), 0)"
	"      FROM pg_stat_activity WHERE xact_start IS NOT NULL AND datname = current_database()),"
	" 'schema', (SELECT max(version) FROM outbox.schema_migrations))::text";

static void on_scrape(void *arg);

static int ready_cb(void *arg, char *reason, size_t len)
{
	struct telemetry *t = arg;

	if (t->conn == NULL || !pg_ready(t->conn) || !t->db_up) {
		snprintf(reason, len, "database not connected");
		return 0;
	}
	if (t->schema_version < 0) {
		snprintf(reason, len, "schema version not read yet");
		return 0;
	}
	if (t->schema_version < OUTBOXD_SCHEMA_VERSION) {
		snprintf(reason, len,
			 "migrations not current: database at %ld, this build needs %d (run outboxd migrate)",
			 t->schema_version, OUTBOXD_SCHEMA_VERSION);
		return 0;
	}
	if (t->smtp_breaker && breaker_state(t->smtp_breaker) == BREAKER_OPEN) {
		snprintf(reason, len, "smtp circuit breaker open");
		return 0;
	}
	/* Ready all the same, with the reason: email delivery goes on, and neither a restart
	 * nor taking replicas out of service frees a lock another login holds. */
	if (t->foreign_mirror[0])
		snprintf(reason, len, "kafka mirror lock held by %s, not outboxd: no replica publishes events",
			 t->foreign_mirror);
	if (t->foreign_retention[0]) {
		size_t n = strlen(reason);
		snprintf(reason + n, len - n, "%sretention lock held by %s, not outboxd: no replica purges",
			 n ? "; " : "", t->foreign_retention);
	}
	return 1;
}

struct telemetry *telemetry_new(struct event_base *base, const struct config *cfg, const struct breaker *smtp_breaker,
				char *errbuf, size_t errlen)
{
	struct telemetry *t = calloc(1, sizeof(*t));

	if (t == NULL) {
		snprintf(errbuf, errlen, "out of memory");
		return NULL;
	}
	t->base = base;
	t->smtp_breaker = smtp_breaker;
	t->schema_version = -1;
	t->reg = metrics_new();
	if (t->reg == NULL || (t->om = outboxd_metrics_new(t->reg, OUTBOXD_VERSION)) == NULL) {
		snprintf(errbuf, errlen, "cannot register metrics");
		telemetry_free(t);
		return NULL;
	}
	metrics_set(t->om->kafka_mirror_enabled, cfg->kafka_brokers && cfg->kafka_brokers[0] ? 1 : 0);
	if (metrics_on_scrape(t->reg, on_scrape, t) != 0) {
		snprintf(errbuf, errlen, "out of memory");
		telemetry_free(t);
		return NULL;
	}
	if (cfg->http_listen && cfg->http_listen[0]) {
		t->http = http_start(base, cfg->http_listen, t->reg, ready_cb, t, errbuf, errlen);
		if (t->http == NULL) {
			telemetry_free(t);
			return NULL;
		}
		http_set_limits(t->http, cfg->http_max_connections, (long long)cfg->http_request_timeout_ms);
		log_info("http listening", LOG_S("listen", cfg->http_listen));
		if (cfg->http_console) {
			t->console = console_new(base, cfg, t, errbuf, errlen);
			if (t->console == NULL) {
				telemetry_free(t);
				return NULL;
			}
			http_set_routes(t->http, console_route, t->console);
		}
	}
	return t;
}

void telemetry_attach(struct telemetry *t, struct pgconn *conn)
{
	t->conn = conn;
}

void telemetry_free(struct telemetry *t)
{
	if (t == NULL)
		return;
	/* the console answers the requests still waiting for it while the server is up */
	console_free(t->console);
	if (t->http)
		http_stop(t->http);
	json_decref(t->figures);
	outboxd_metrics_free(t->om);
	metrics_free(t->reg);
	free(t);
}

void telemetry_outcome(struct telemetry *t, enum outcome o, double latency_s)
{
	struct outboxd_metrics *om = t->om;

	switch (o) {
	case OUTCOME_SENT:
		metrics_inc(om->msg_sent);
		if (latency_s > 0)
			metrics_observe(om->delivery_latency, latency_s);
		break;
	case OUTCOME_RETRY:
		metrics_inc(om->msg_retry);
		break;
	case OUTCOME_FAILED:
		metrics_inc(om->msg_failed);
		break;
	case OUTCOME_DEAD:
		metrics_inc(om->msg_dead);
		break;
	case OUTCOME_UNKNOWN:
		metrics_inc(om->msg_unknown);
		break;
	case OUTCOME_RELEASED:
		metrics_inc(om->msg_released);
		break;
	}
}

void telemetry_smtp_reply(struct telemetry *t, int code, double duration_s)
{
	struct outboxd_metrics *om = t->om;

	if (code >= 200 && code < 300)
		metrics_inc(om->smtp_2xx);
	else if (code >= 400 && code < 500)
		metrics_inc(om->smtp_4xx);
	else if (code >= 500 && code < 600)
		metrics_inc(om->smtp_5xx);
	else
		metrics_inc(om->smtp_none);
	metrics_observe(om->smtp_send_duration, duration_s);
}

void telemetry_claim(struct telemetry *t, int rows)
{
	metrics_observe(t->om->claim_batch_size, rows);
}

void telemetry_in_flight(struct telemetry *t, int n)
{
	if (t)
		metrics_set(t->om->in_flight, n);
}

void telemetry_database_up(struct telemetry *t, int up)
{
	t->db_up = up;
	metrics_set(t->om->database_up, up);
}

void telemetry_listener_up(struct telemetry *t, int up)
{
	metrics_set(t->om->listener_up, up);
}

void telemetry_breaker(struct telemetry *t, const char *sink, enum breaker_state s)
{
	int kafka = strcmp(sink, "kafka") == 0;
	struct metrics_child *c = kafka ? t->om->breaker_kafka : t->om->breaker_smtp;
	enum breaker_state *last = kafka ? &t->last_kafka : &t->last_smtp;
	double v = s == BREAKER_CLOSED ? 0 : s == BREAKER_HALF_OPEN ? 1 : 2;

	metrics_set(c, v);
	if (s == *last)
		return;
	metrics_inc(metrics_child(t->om->breaker_transitions, kafka ? "kafka" : "smtp", breaker_state_name(s), NULL));
	log_warn("circuit breaker", LOG_S("sink", kafka ? "kafka" : "smtp"), LOG_S("from", breaker_state_name(*last)),
		 LOG_S("to", breaker_state_name(s)));
	*last = s;
}

void telemetry_breaker_changed(void *arg, enum breaker_state from, enum breaker_state to)
{
	(void)from;
	telemetry_breaker(arg, "smtp", to);
}

/* A scrape sees the SMTP breaker as it is now, not as of the last tick. */
static void on_scrape(void *arg)
{
	struct telemetry *t = arg;

	if (t->smtp_breaker)
		telemetry_breaker(t, "smtp", breaker_state(t->smtp_breaker));
}

void telemetry_kafka_publish(struct telemetry *t, const char *outcome, unsigned n)
{
	struct outboxd_metrics *om = t->om;
	struct metrics_child *c = strcmp(outcome, "published") == 0 ? om->kafka_published
				  : strcmp(outcome, "failed") == 0  ? om->kafka_failed
								    : om->kafka_retry;
	metrics_add(c, n);
}

void telemetry_retention_removed(struct telemetry *t, const char *table, const char *state, double n)
{
	metrics_add(metrics_child(t->om->retention_removed, table, state, NULL), n);
}

void telemetry_retention_dropped(struct telemetry *t, unsigned n)
{
	metrics_add(t->om->retention_dropped, n);
}

void telemetry_retention_pass(struct telemetry *t, double unix_time)
{
	metrics_set(t->om->retention_last_pass, unix_time);
}

void telemetry_retention_leader(struct telemetry *t, int leader)
{
	metrics_set(t->om->retention_leader, leader ? 1 : 0);
}

void telemetry_lock_foreign(struct telemetry *t, const char *lock, const char *holder)
{
	int mirror = strcmp(lock, "mirror") == 0;
	char *note = mirror ? t->foreign_mirror : t->foreign_retention;

	snprintf(note, sizeof(t->foreign_mirror), "%s", holder ? holder : "");
	metrics_set(mirror ? t->om->lock_foreign_mirror : t->om->lock_foreign_retention, holder ? 1 : 0);
}

static void apply_stats(struct telemetry *t, json_t *o)
{
	struct outboxd_metrics *om = t->om;
	json_t *depth = json_object_get(o, "depth"), *tables = json_object_get(o, "tables"), *v;
	size_t i;

	metrics_set(om->depth_pending, json_number_value(json_object_get(depth, "pending")));
	metrics_set(om->depth_sending, json_number_value(json_object_get(depth, "sending")));
	metrics_set(om->depth_sent, json_number_value(json_object_get(depth, "sent")));
	metrics_set(om->depth_failed, json_number_value(json_object_get(depth, "failed")));
	metrics_set(om->depth_dead, json_number_value(json_object_get(depth, "dead")));
	metrics_set(om->depth_cancelled, json_number_value(json_object_get(depth, "cancelled")));
	metrics_set(om->oldest_pending_age, json_number_value(json_object_get(o, "oldest")));
	metrics_set(om->kafka_lag_rows, json_number_value(json_object_get(o, "lag_rows")));
	metrics_set(om->kafka_lag_seconds, json_number_value(json_object_get(o, "lag_seconds")));
	metrics_set(om->oldest_xact_age, json_number_value(json_object_get(o, "xact_age")));
	json_array_foreach (tables, i, v) {
		const char *name = json_string_value(json_object_get(v, "t"));
		if (name == NULL)
			continue;
		metrics_set(metrics_child(om->table_dead_tuples, name, NULL),
			    json_number_value(json_object_get(v, "dead")));
		metrics_set(metrics_child(om->table_last_autovacuum, name, NULL),
			    json_number_value(json_object_get(v, "vac")));
	}
	v = json_object_get(o, "schema");
	t->schema_version = json_is_integer(v) ? (long)json_integer_value(v) : 0;
}

static void on_stats(void *arg, const struct pg_result *res, const char *err)
{
	struct telemetry *t = arg;
	json_t *o;

	t->stats_running = 0;
	if (res == NULL || !pg_result_ok(res) || pg_ntuples(res) != 1) {
		log_warn("reading queue figures failed", LOG_S("error", pg_failure(res, err)));
		return;
	}
	o = json_loads(pg_value(res, 0, 0), 0, NULL);
	if (o) {
		apply_stats(t, o);
		json_decref(t->figures);
		t->figures = o;
		t->figures_at = clock_mono_s();
	}
}

void telemetry_tick(struct telemetry *t, unsigned ticks)
{
	/* right after connecting (schema unknown), then every 5 s */
	if (t->stats_running || t->conn == NULL || !pg_ready(t->conn))
		return;
	if (t->schema_version >= 0 && ticks % 5 != 0)
		return;
	if (pg_query(t->conn, STATS_SQL, 0, NULL, 10000, on_stats, t) == 0)
		t->stats_running = 1;
}

json_t *telemetry_figures(const struct telemetry *t, double *at)
{
	*at = t->figures_at;
	return t->figures;
}

enum breaker_state telemetry_breaker_state(const struct telemetry *t, const char *sink)
{
	if (strcmp(sink, "kafka") == 0)
		return t->last_kafka;
	return t->smtp_breaker ? breaker_state(t->smtp_breaker) : t->last_smtp;
}
