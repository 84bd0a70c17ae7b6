/* The dispatcher's loop: creates every event source, runs the maintenance tick, starts up
 * on each database session, and drains on SIGTERM. The database is the truth: NOTIFY only
 * wakes us, the poll finds what a lost notification would have left, and start-up
 * releases what a previous run held.
 *
 * Every event source, in the order of a row's life:
 *   1. work connection up (pg.c)      on_work_connect -> send_startup: outbox.release_owner()
 *                                     on the first session, then the idle mark cleared
 *   2. listener connection (pg.c)     on_listen_connect: LISTEN outbox_messages;
 *                                     on_notify -> claim_kick
 *   3. maintenance tick, fallback     every dispatcher.poll_interval -> claim_kick (scheduled
 *      poll                           and retried rows, lost notifications)
 *   4. ev_claim (claim.c)             claim_on_event -> outbox.claim() -> on_claim_done ->
 *                                     deliver_row per row
 *   5. the SMTP sink's own sockets    deliver_row builds the message (mime.c) and calls
 *      and timers (smtp_native.c or   smtp_submit once for all its recipients;
 *      smtp_curl.c behind smtp.c)     on_transfer_done per recipient;
 *                                     job_finish -> job_verdict -> outcome_add/_release
 *   6. ev_flush (outcome.c)           at once or after dispatcher.outcome_delay
 *                                     (job_flush_now): outbox.complete() + outbox.release()
 *                                     in one statement on the outcomes connection
 *                                     -> on_flush_done
 *   7. maintenance tick, leases       every lease/3 -> lease_renew: outbox.renew(), on the
 *                                     outcomes connection behind the writes
 *   8. maintenance tick, each second  start-up retry, outcomes refused for a passing reason
 *                                     written again, listener heartbeat (every 10 s),
 *                                     breaker gauge and probe claim, telemetry_tick (queue
 *                                     figures), retention_tick (election, purge passes on
 *                                     its own connection: retention.c), drain check
 *   9. maintenance tick, 250 ms       kafka_mirror_tick: producer reports, lock campaign,
 *                                     read safety net, delivery results; the mirror's own
 *                                     sources (its connection, NOTIFY outbox_events, read and
 *                                     reset events, the producer's wake pipe and fatal-error
 *                                     timer) live in mirror.c and kafka.c
 *  10. telemetry's HTTP server (http.c) /health, /health/ready, /metrics
 *  11. signals                        SIGHUP -> reload_config (reload.c); SIGTERM/SIGINT ->
 *                                     start_drain; ev_drain (drain_timeout) aborts what is
 *                                     left; a second signal exits at once
 */
#include "dispatcher.h"

#include <event2/event.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "core.h"
#include "log.h"
#include "mirror.h"
#include "pg.h"
#include "retention.h"
#include "smtp.h"
#include "telemetry.h"
#include "wake.h"

/* The maintenance tick's period; a shorter poll interval ticks faster. */
#define TICK_MS 250
#define MIRROR_TICK_MS 250

static struct timeval tv_ms(int64_t ms)
{
	struct timeval tv = { .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)((ms % 1000) * 1000) };
	return tv;
}

static const char *run_state_name(enum run_state s)
{
	static const char *const names[] = { "starting", "running", "draining", "done" };
	return names[s];
}

void dispatcher_set_state(struct dispatcher *d, enum run_state s)
{
	if (d->state == s)
		return;
	log_info("dispatcher state", LOG_S("from", run_state_name(d->state)), LOG_S("to", run_state_name(s)));
	d->state = s;
}

void dispatcher_lease_seconds(const struct dispatcher *d, char *out, size_t outlen)
{
	snprintf(out, outlen, "%lld", (long long)(d->cfg->lease_ms < 1000 ? 1 : d->cfg->lease_ms / 1000));
}

/* ---- start-up on each session --------------------------------------------------------- */

static void on_startup_done(void *arg, const struct pg_result *res, const char *err)
{
	struct dispatcher *d = arg;

	d->startup_inflight = 0;
	if (res == NULL || !pg_result_ok(res)) {
		/* not yet migrated, or a passing error: the tick tries again in a few seconds */
		log_error("start-up query failed (are migrations applied?); retrying",
			  LOG_S("error", pg_failure(res, err)));
		d->startup_retry_ms = clock_mono_ms() + 2000;
		return;
	}
	if (!d->startup_done)
		log_info("released rows left by a previous run", LOG_I("rows", (long long)atoll(pg_value(res, 0, 0))),
			 LOG_S("owner", d->owner));
	d->startup_done = 1;
	d->idle_marked = 0;
	d->empty = 0;
	if (d->state == RUN_STARTING)
		dispatcher_set_state(d, RUN_RUNNING);
	outcome_kick(d);
	claim_kick(d);
}

static void on_lifecycle_off_done(void *arg, const struct pg_result *res, const char *err)
{
	(void)arg;
	if (res == NULL || !pg_result_ok(res))
		log_warn("dispatcher bookkeeping query failed", LOG_S("error", pg_failure(res, err)));
}

/* Rows still leased to this owner id are left from a previous run of this instance (same
 * host and pid after a container restart): put them back. After a reconnect the rows in
 * flight are ours, so only the idle mark is cleared. */
static void send_startup(struct dispatcher *d)
{
	const char *p[1] = { d->owner };
	int rc;

	if (d->startup_inflight || !pg_ready(d->work))
		return;
	if (!d->startup_done) {
		/* Without a Kafka mirror nobody publishes lifecycle events: switch them off so
		 * outbox.events does not grow (the mirror's leader switches them on). */
		if (d->kafka == NULL && pg_query(d->work, "SELECT outbox.set_lifecycle_events(false)", 0, NULL, 30000,
						 on_lifecycle_off_done, d) != 0)
			log_warn("start-up query not sent", LOG_END);
		rc = pg_query(d->work, "SELECT outbox.release_owner($1)", 1, p, 30000, on_startup_done, d);
	} else {
		rc = pg_query(d->work, "SELECT 0", 0, NULL, 30000, on_startup_done, d);
	}
	/* queued behind, on the same connection: a failure shows in the start-up query too */
	if (rc == 0)
		rc = wake_set_idle(d->work, d->owner, WAKE_CHANNEL_MESSAGES, 0, NULL, NULL);
	if (rc == 0)
		d->startup_inflight = 1;
}

/* ---- connections ---------------------------------------------------------------------- */

/* The database is up for readiness and the gauge when both the claims' and the outcomes'
 * connections are: without the second, messages would go out with nothing recorded. */
static void database_up(struct dispatcher *d)
{
	telemetry_database_up(d->tm, pg_ready(d->work) && pg_ready(d->outcomes));
}

static void on_work_connect(struct pgconn *c, void *arg)
{
	struct dispatcher *d = arg;
	(void)c;

	database_up(d);
	d->startup_retry_ms = 0;
	send_startup(d);
}

static void on_work_disconnect(struct pgconn *c, void *arg, const char *reason)
{
	struct dispatcher *d = arg;
	(void)c;
	(void)reason;
	database_up(d);
	d->claiming = 0;
	d->rescued_ms = 0; /* the next session's first claim records it */
}

static void on_outcomes_connect(struct pgconn *c, void *arg)
{
	struct dispatcher *d = arg;
	(void)c;

	database_up(d);
	/* outcomes kept while it was away go first; claims wait for them (outcomes_behind) */
	if (outcome_waiting(d) == 0)
		d->outcomes_behind = 0;
	else
		outcome_kick(d);
	claim_kick(d);
}

static void on_outcomes_disconnect(struct pgconn *c, void *arg, const char *reason)
{
	struct dispatcher *d = arg;
	(void)c;
	(void)reason;
	/* on_flush_done and on_renew_done already got the failure for what was in flight */
	database_up(d);
	d->outcomes_behind = 1;
}

static void on_listen_result(void *arg, const struct pg_result *res, const char *err)
{
	struct dispatcher *d = arg;

	if (res == NULL || !pg_result_ok(res)) {
		log_warn("LISTEN failed", LOG_S("error", pg_failure(res, err)));
		return;
	}
	telemetry_listener_up(d->tm, 1);
	/* notifications sent while we were away are lost: look now */
	d->empty = 0;
	claim_kick(d);
}

static void on_listen_connect(struct pgconn *c, void *arg)
{
	if (pg_query(c, "LISTEN " WAKE_CHANNEL_MESSAGES, 0, NULL, 10000, on_listen_result, arg) != 0)
		log_warn("LISTEN not sent", LOG_END);
}

static void on_listen_disconnect(struct pgconn *c, void *arg, const char *reason)
{
	struct dispatcher *d = arg;
	(void)c;
	(void)reason;
	telemetry_listener_up(d->tm, 0);
}

static void on_notify(struct pgconn *c, void *arg, const char *channel)
{
	struct dispatcher *d = arg;
	(void)c;
	(void)channel;
	d->empty = 0;
	claim_kick(d);
}

/* ---- the maintenance tick ------------------------------------------------------------- */

static int64_t tick_period_ms(const struct config *cfg)
{
	return cfg->poll_interval_ms < TICK_MS ? cfg->poll_interval_ms : TICK_MS;
}

static void on_heartbeat_done(void *arg, const struct pg_result *res, const char *err)
{
	(void)arg;
	(void)res;
	(void)err;
}

/* The duties run once a second. */
static void tick_second(struct dispatcher *d, uint64_t now)
{
	d->seconds++;
	if (d->startup_retry_ms && now >= d->startup_retry_ms && pg_ready(d->work)) {
		d->startup_retry_ms = 0;
		send_startup(d);
	}
	/* outcomes the database refused for a passing reason are written again each second */
	if (outcome_waiting(d))
		outcome_kick(d);
	/* a half-open TCP connection never turns readable: a query with a deadline finds it */
	if (d->seconds % 10 == 0 && pg_ready(d->listen) && pg_pending(d->listen) == 0)
		if (pg_query(d->listen, "SELECT 1", 0, NULL, 10000, on_heartbeat_done, d) != 0)
			log_debug("heartbeat skipped", LOG_END);
	telemetry_breaker(d->tm, "smtp", breaker_state(&d->breaker));
	if (breaker_state(&d->breaker) != BREAKER_CLOSED)
		claim_kick(d);
	telemetry_tick(d->tm, d->seconds);
	retention_tick(d->retention);
	if (d->state == RUN_DRAINING)
		dispatcher_maybe_finish_drain(d);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct dispatcher *d = arg;
	uint64_t now = clock_mono_ms();
	(void)fd;
	(void)what;

	if (now >= d->next_poll_ms) {
		/* the safety net: scheduled and retry rows, and anything a lost NOTIFY left */
		d->next_poll_ms = now + (uint64_t)d->cfg->poll_interval_ms;
		d->empty = 0;
		claim_kick(d);
	}
	if (now >= d->next_renew_ms) {
		d->next_renew_ms = now + (uint64_t)(d->cfg->lease_ms / 3 > 0 ? d->cfg->lease_ms / 3 : 1);
		lease_renew(d);
	}
	lease_check(d);
	if (d->kafka && now >= d->next_mirror_ms) {
		d->next_mirror_ms = now + MIRROR_TICK_MS;
		kafka_mirror_tick(d->kafka);
	}
	if (now >= d->next_second_ms) {
		d->next_second_ms = now + 1000;
		tick_second(d, now);
	}
}

void dispatcher_tick_reschedule(struct dispatcher *d)
{
	struct timeval tv = tv_ms(tick_period_ms(d->cfg));
	uint64_t now = clock_mono_ms();

	d->next_poll_ms = now + (uint64_t)d->cfg->poll_interval_ms;
	evtimer_add(d->ev_tick, &tv);
}

/* ---- draining and signals ------------------------------------------------------------- */

static void stop_loop(struct dispatcher *d)
{
	dispatcher_set_state(d, RUN_DONE);
	event_base_loopexit(d->base, NULL);
}

/* A connection with queries that may still reach the database. */
static int sending(const struct pgconn *c)
{
	return pg_ready(c) && pg_pending(c) > 0;
}

void dispatcher_maybe_finish_drain(struct dispatcher *d)
{
	if (d->state != RUN_DRAINING)
		return;
	if (d->njobs > 0 || d->flushing || !kafka_mirror_stopped(d->kafka))
		return;
	if (outcome_waiting(d)) {
		if (pg_ready(d->outcomes)) {
			outcome_kick(d);
			return;
		}
		if (clock_mono_ms() < d->drain_deadline_ms + 5000)
			return; /* give the database a few seconds to come back */
		log_error("exiting with unwritten outcomes; their leases will expire",
			  LOG_I("count", (long long)outcome_waiting(d)));
		d->exit_code = 1;
	}
	/* let the last bookkeeping (the idle mark's removal, a renewal) reach the database */
	if ((sending(d->work) || sending(d->outcomes)) && clock_mono_ms() < d->drain_deadline_ms + 5000)
		return;
	stop_loop(d);
}

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct dispatcher *d = arg;
	(void)fd;
	(void)what;

	if (d->njobs > 0) {
		log_warn("drain timeout: aborting transfers still running", LOG_I("count", (long long)d->njobs));
		smtp_abort_all(d->smtp);
	}
	dispatcher_maybe_finish_drain(d);
}

static void start_drain(struct dispatcher *d, const char *why)
{
	struct timeval tv = tv_ms(d->cfg->drain_timeout_ms);

	log_info("draining: no new claims, finishing messages in flight", LOG_S("reason", why),
		 LOG_I("in_flight", (long long)d->njobs));
	dispatcher_set_state(d, RUN_DRAINING);
	d->drain_deadline_ms = clock_mono_ms() + (uint64_t)d->cfg->drain_timeout_ms;
	/* a stopped dispatcher is not idle: producers need not wake it any more */
	if (d->idle_marked && pg_ready(d->work))
		claim_set_idle(d, 0);
	smtp_cancel_queued(d->smtp);
	if (d->kafka)
		kafka_mirror_stop(d->kafka);
	retention_stop(d->retention);
	evtimer_add(d->ev_drain, &tv);
	outcome_kick(d);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct dispatcher *d = arg;
	(void)what;

	if (sig == SIGHUP) {
		reload_config(d);
		return;
	}
	if (++d->signals > 1) {
		log_warn("second signal: exiting now; leased rows return when their leases expire", LOG_END);
		d->exit_code = 1;
		stop_loop(d);
		return;
	}
	start_drain(d, sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ---- main ----------------------------------------------------------------------------- */

static void make_owner(struct dispatcher *d)
{
	char host[200] = "localhost";

	if (d->cfg->owner && d->cfg->owner[0]) {
		snprintf(d->owner, sizeof(d->owner), "%s", d->cfg->owner);
		return;
	}
	gethostname(host, sizeof(host) - 1);
	snprintf(d->owner, sizeof(d->owner), "%s:%ld", host, (long)getpid());
}

static int parse_args(int argc, char **argv, const char **config_path)
{
	static const struct option opts[] = { { "config", required_argument, NULL, 'c' },
					      { "help", no_argument, NULL, 'h' },
					      { NULL, 0, NULL, 0 } };
	int ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			*config_path = optarg;
			break;
		case 'h':
			printf("usage: outboxd run [--config FILE]\n");
			return 0;
		default:
			fprintf(stderr, "usage: outboxd run [--config FILE]\n");
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "outboxd run: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	return -1;
}

static void connect_database(struct dispatcher *d)
{
	const struct config *cfg = d->cfg;
	struct pg_callbacks wcb = { .on_connect = on_work_connect, .on_disconnect = on_work_disconnect };
	struct pg_callbacks ocb = { .on_connect = on_outcomes_connect, .on_disconnect = on_outcomes_disconnect };
	struct pg_callbacks lcb = { .on_connect = on_listen_connect,
				    .on_disconnect = on_listen_disconnect,
				    .on_notify = on_notify };
	char opts[160];

	snprintf(opts, sizeof(opts),
		 "-c statement_timeout=%lld -c lock_timeout=5000 -c idle_in_transaction_session_timeout=60000",
		 (long long)cfg->database_statement_timeout_ms);
	d->work = pg_new(d->base, "outboxd-worker", cfg->database_url, opts, cfg->database_connect_timeout_ms,
			 cfg->reconnect_max_ms, &wcb, d);
	d->outcomes = pg_new(d->base, "outboxd-outcomes", cfg->database_url, opts, cfg->database_connect_timeout_ms,
			     cfg->reconnect_max_ms, &ocb, d);
	d->listen = pg_new(d->base, "outboxd-listener", cfg->database_url,
			   "-c idle_session_timeout=0 -c statement_timeout=10000", cfg->database_connect_timeout_ms,
			   cfg->reconnect_max_ms, &lcb, d);
}

static void add_events(struct dispatcher *d)
{
	d->ev_claim = event_new(d->base, -1, 0, claim_on_event, d);
	d->ev_flush = event_new(d->base, -1, 0, outcome_on_flush_event, d);
	d->ev_tick = event_new(d->base, -1, EV_PERSIST, on_tick, d);
	d->ev_drain = evtimer_new(d->base, on_drain_timeout, d);
	d->ev_sigterm = evsignal_new(d->base, SIGTERM, on_signal, d);
	d->ev_sigint = evsignal_new(d->base, SIGINT, on_signal, d);
	d->ev_sighup = evsignal_new(d->base, SIGHUP, on_signal, d);
	/* the first poll, renewal and second come one period after start, as timers would */
	d->next_renew_ms = clock_mono_ms() + (uint64_t)(d->cfg->lease_ms / 3 > 0 ? d->cfg->lease_ms / 3 : 1);
	d->next_second_ms = clock_mono_ms() + 1000;
	dispatcher_tick_reschedule(d);
	evsignal_add(d->ev_sigterm, NULL);
	evsignal_add(d->ev_sigint, NULL);
	evsignal_add(d->ev_sighup, NULL);
}

static void free_events(struct dispatcher *d)
{
	struct event *evs[] = { d->ev_claim,   d->ev_flush,  d->ev_tick,  d->ev_drain,
				d->ev_sigterm, d->ev_sigint, d->ev_sighup };

	for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
		if (evs[i])
			event_free(evs[i]);
}

int dispatcher_main(int argc, char **argv)
{
	struct dispatcher dd, *d = &dd;
	struct config cfg;
	const char *config_path = NULL;
	char err[512];
	int rc;
	enum log_level level;

	rc = parse_args(argc, argv, &config_path);
	if (rc >= 0)
		return rc;
	if (config_load(&cfg, config_path, stderr) != 0 || config_require(&cfg, stderr) != 0) {
		config_free(&cfg);
		return 2;
	}
	pg_set_password(cfg.database_password);
	if (log_level_parse(cfg.log_level, &level) == 0)
		log_set_level(level);
	signal(SIGPIPE, SIG_IGN);

	memset(d, 0, sizeof(*d));
	d->cfg = &cfg;
	d->config_path = config_path;
	d->exit_code = 0;
	d->results = json_array();
	d->releases = json_array();
	make_owner(d);
	d->base = event_base_new();
	if (d->base == NULL) {
		fprintf(stderr, "outboxd: cannot create event loop\n");
		config_free(&cfg);
		return 1;
	}
	breaker_init(&d->breaker, (unsigned)cfg.smtp_breaker_threshold, (uint64_t)cfg.smtp_breaker_open_ms,
		     (uint64_t)cfg.smtp_breaker_open_ms * 8);
	d->smtp = smtp_new(d->base, &cfg, err, sizeof(err));
	if (d->smtp == NULL) {
		fprintf(stderr, "outboxd: smtp: %s\n", err);
		rc = 1;
		goto out;
	}
	d->tm = telemetry_new(d->base, &cfg, &d->breaker, err, sizeof(err));
	if (d->tm == NULL) {
		log_error("cannot start telemetry", LOG_S("error", err));
		rc = 1;
		goto out;
	}
	breaker_set_on_change(&d->breaker, telemetry_breaker_changed, d->tm);
	log_info("outboxd starting", LOG_S("version", OUTBOXD_VERSION), LOG_S("owner", d->owner),
		 LOG_I("batch", (long long)cfg.batch_size), LOG_I("max_in_flight", (long long)cfg.max_in_flight));

	add_events(d);
	connect_database(d);
	/* the figures take milliseconds: not on the claims' connection */
	telemetry_attach(d->tm, d->outcomes);
	if (cfg.kafka_brokers && cfg.kafka_brokers[0]) {
		d->kafka = kafka_mirror_new(d->base, &cfg, d->tm, d->owner, err, sizeof(err));
		if (d->kafka == NULL) {
			log_error("cannot start the kafka mirror", LOG_S("error", err));
			rc = 2;
			goto out;
		}
	}
	d->retention = retention_new(d->base, &cfg, d->tm, err, sizeof(err));
	if (d->retention == NULL) {
		log_error("cannot start retention", LOG_S("error", err));
		rc = 1;
		goto out;
	}
	event_base_dispatch(d->base);
	rc = d->exit_code;
	log_info("outboxd stopped", LOG_I("exit", (long long)rc));

out:
	pg_close(d->listen);
	pg_close(d->outcomes);
	pg_close(d->work);
	/* workers may still read a job's message: stop them before any job is freed */
	smtp_free(d->smtp);
	deliver_free_all(d);
	kafka_mirror_free(d->kafka);
	retention_free(d->retention);
	telemetry_free(d->tm);
	free_events(d);
	json_decref(d->results);
	json_decref(d->releases);
	json_decref(d->flushing_results);
	json_decref(d->flushing_releases);
	event_base_free(d->base);
	pg_set_password(NULL);
	config_free(&cfg);
	return rc;
}
