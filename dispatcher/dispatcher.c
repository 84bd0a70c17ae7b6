/* The dispatcher loop: claims leased batches, turns rows into messages, hands them to the
 * SMTP sink, and writes outcomes back in batches, fenced on (owner, attempt). The
 * database is the truth: NOTIFY only wakes us, the poll timer finds what a lost
 * notification would have left, and start-up releases what a previous run held. */
#include "dispatcher.h"

#include <errno.h>
#include <event2/event.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backoff.h"
#include "breaker.h"
#include "buf.h"
#include "config.h"
#include "kafka.h"
#include "log.h"
#include "mime.h"
#include "pg.h"
#include "pgarray.h"
#include "smtp.h"
#include "telemetry.h"

enum rcpt_state { RCPT_PENDING, RCPT_SENT, RCPT_FAILED };

struct rcpt {
	char *addr;
	const char *kind; /* "to", "cc", "bcc" */
	enum rcpt_state state;
	int code;
	char *text;
	int charged;     /* the attempt reached the relay for this recipient */
	int unknown;     /* outcome ambiguous (connection lost after DATA) */
};

struct job {
	struct job *next, *prev;
	struct dispatcher *d;
	int64_t id;
	int attempt;
	char *message_id;
	char *mail_from;
	double created_at;  /* epoch seconds, for commit -> delivered latency */
	struct buf msg;
	struct rcpt *rc;
	size_t nrc;
	size_t outstanding; /* transfers not yet reported */
};

enum run_state { RUN_STARTING, RUN_RUNNING, RUN_DRAINING, RUN_DONE };

struct dispatcher {
	struct config *cfg;
	const char *config_path;
	struct event_base *base;
	struct pgconn *work;
	struct pgconn *listen;
	struct smtp_sink *smtp;
	struct kafka_mirror *kafka; /* NULL when kafka.brokers is empty */
	struct breaker breaker;
	struct telemetry *tm;
	char owner[256];
	enum run_state state;
	int exit_code;

	struct job *jobs;
	int njobs;

	json_t *results;   /* outcomes waiting to be written */
	json_t *releases;  /* ids to put back without charging an attempt */
	json_t *flushing_results;
	json_t *flushing_releases;
	int flushing;
	int flush_errors; /* consecutive refusals of the same outcomes by the server */
	int claiming;
	int claim_limit;
	int empty;         /* last claim found nothing: wait for a wake-up */
	int idle_marked;   /* our row in outbox.dispatcher_idle exists */
	int startup_done;  /* outbox.release_owner() ran on this database */
	int startup_inflight;
	uint64_t startup_retry_ms; /* when to send a failed start-up query again */

	struct event *ev_claim;
	struct event *ev_flush;
	struct event *ev_poll;
	struct event *ev_renew;
	struct event *ev_tick;
	struct event *ev_drain;
	struct event *ev_sigterm, *ev_sigint, *ev_sighup;
	int signals;
	uint64_t drain_deadline_ms;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static double wall_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct timeval tv_ms(int64_t ms)
{
	struct timeval tv = { .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)((ms % 1000) * 1000) };
	return tv;
}

static void claim_kick(struct dispatcher *d)
{
	event_active(d->ev_claim, 0, 0);
}

/* Under a backlog, outcomes are written in groups, like a group commit: a write waits at
 * most outcome_delay for half a batch of outcomes, so that one statement carries many (it
 * costs the database about as much for one outcome as for fifty). With fewer sends in
 * flight than that, more outcomes are not coming soon: write at once, and while stopping. */
static int claim_span(const struct dispatcher *d);

static void flush_kick(struct dispatcher *d)
{
	size_t waiting = json_array_size(d->results) + json_array_size(d->releases);
	size_t group = (size_t)claim_span(d) / 2;

	if (d->state != RUN_RUNNING || d->cfg->outcome_delay_ms <= 0 || waiting >= group ||
	    (size_t)d->njobs < group) {
		event_active(d->ev_flush, 0, 0);
		return;
	}
	if (!event_pending(d->ev_flush, EV_TIMEOUT, NULL)) {
		struct timeval tv = tv_ms(d->cfg->outcome_delay_ms);
		event_add(d->ev_flush, &tv);
	}
}

/* Queues a leased row to be given back untouched, with the attempt its claim returned:
 * the release is fenced on it, like every write about a claim. */
static void release_add(struct dispatcher *d, long long id, long long attempt)
{
	json_t *pair = json_pack("[II]", (json_int_t)id, (json_int_t)attempt);

	if (pair)
		json_array_append_new(d->releases, pair);
}

/* Leased rows as two PostgreSQL array literals side by side: the ids and the attempts
 * their claims returned, for outbox.renew() and outbox.release(). */
struct lease_arrays {
	struct buf ids;
	struct buf attempts;
	int failed;
};

static void lease_arrays_init(struct lease_arrays *l)
{
	buf_init(&l->ids);
	buf_init(&l->attempts);
	l->failed = 0;
}

static void lease_arrays_add(struct lease_arrays *l, long long id, long long attempt)
{
	if (buf_printf(&l->ids, "%s%lld", l->ids.len ? "," : "{", id) != 0 ||
	    buf_printf(&l->attempts, "%s%lld", l->attempts.len ? "," : "{", attempt) != 0)
		l->failed = 1;
}

/* Closes both literals; returns 0, or -1 when out of memory. */
static int lease_arrays_close(struct lease_arrays *l)
{
	if (buf_puts(&l->ids, l->ids.len ? "}" : "{}") != 0 ||
	    buf_puts(&l->attempts, l->attempts.len ? "}" : "{}") != 0)
		l->failed = 1;
	return l->failed ? -1 : 0;
}

static void lease_arrays_free(struct lease_arrays *l)
{
	buf_free(&l->ids);
	buf_free(&l->attempts);
}

static const char *run_state_name(enum run_state s)
{
	static const char *const names[] = { "starting", "running", "draining", "done" };
	return names[s];
}

static void set_run_state(struct dispatcher *d, enum run_state s)
{
	if (d->state == s)
		return;
	log_info("dispatcher state", "sfrom", run_state_name(d->state), "sto", run_state_name(s), NULL);
	d->state = s;
}

/* ---- jobs ---------------------------------------------------------------------------- */

static void job_free(struct job *j)
{
	for (size_t i = 0; i < j->nrc; i++) {
		free(j->rc[i].addr);
		free(j->rc[i].text);
	}
	free(j->rc);
	free(j->message_id);
	free(j->mail_from);
	buf_free(&j->msg);
	free(j);
}

static void job_unlink(struct dispatcher *d, struct job *j)
{
	if (j->prev)
		j->prev->next = j->next;
	else
		d->jobs = j->next;
	if (j->next)
		j->next->prev = j->prev;
	d->njobs--;
	telemetry_in_flight(d->tm, d->njobs);
}

static void job_link(struct dispatcher *d, struct job *j)
{
	j->next = d->jobs;
	j->prev = NULL;
	if (d->jobs)
		d->jobs->prev = j;
	d->jobs = j;
	d->njobs++;
	telemetry_in_flight(d->tm, d->njobs);
}

/* Extracts the addr-spec from "Display Name <addr>" or returns a copy of a bare address. */
static char *addr_spec(const char *s)
{
	const char *lt = strrchr(s, '<');
	const char *gt = lt ? strchr(lt, '>') : NULL;

	if (lt && gt && gt > lt)
		return strndup(lt + 1, (size_t)(gt - lt - 1));
	return strdup(s);
}

static void result_add(struct dispatcher *d, struct job *j, const char *outcome, int code,
		       const char *error, int unknown)
{
	json_t *r = json_object();
	json_t *rcpts = json_array();

	json_object_set_new(r, "id", json_integer(j->id));
	json_object_set_new(r, "attempt", json_integer(j->attempt));
	json_object_set_new(r, "outcome", json_string(outcome));
	json_object_set_new(r, "code", code > 0 ? json_integer(code) : json_null());
	json_object_set_new(r, "error", error ? json_string(error) : json_null());
	json_object_set_new(r, "unknown", json_boolean(unknown));
	if (strcmp(outcome, "retry") == 0) {
		uint64_t delay = backoff_full_jitter_ms((unsigned)j->attempt, (uint64_t)d->cfg->retry_base_ms,
							(uint64_t)d->cfg->retry_cap_ms, backoff_random64());
		json_object_set_new(r, "retry_in_ms", json_integer((json_int_t)delay));
	}
	/* A first attempt that reached everyone needs no recipient rows: outbox.recipient_status
	 * derives them from the message. Saves a row per message on the hot path. */
	if (strcmp(outcome, "sent") == 0 && j->attempt == 1) {
		json_decref(rcpts);
		json_array_append_new(d->results, r);
		return;
	}
	for (size_t i = 0; i < j->nrc; i++) {
		struct rcpt *rc = &j->rc[i];
		json_t *o;
		if (!rc->charged && rc->state == RCPT_PENDING)
			continue; /* nothing happened for this recipient */
		o = json_object();
		json_object_set_new(o, "address", json_string(rc->addr));
		json_object_set_new(o, "kind", json_string(rc->kind));
		json_object_set_new(o, "state", json_string(rc->state == RCPT_SENT     ? "sent"
							    : rc->state == RCPT_FAILED ? "failed"
										       : "pending"));
		json_object_set_new(o, "code", rc->code > 0 ? json_integer(rc->code) : json_null());
		json_object_set_new(o, "error", rc->text && rc->state != RCPT_SENT ? json_string(rc->text) : json_null());
		json_array_append_new(rcpts, o);
	}
	json_object_set_new(r, "recipients", rcpts);
	json_array_append_new(d->results, r);
}

/* Decides the message's outcome from its recipients' and queues it for the database. */
static void job_finish(struct dispatcher *d, struct job *j)
{
	size_t sent = 0, failed = 0, pending = 0, charged = 0, unknown = 0;
	struct rcpt *first_pending = NULL, *first_failed = NULL;
	char err[600];

	for (size_t i = 0; i < j->nrc; i++) {
		struct rcpt *rc = &j->rc[i];
		if (rc->charged)
			charged++;
		if (rc->unknown)
			unknown++;
		switch (rc->state) {
		case RCPT_SENT:
			sent++;
			break;
		case RCPT_FAILED:
			failed++;
			if (!first_failed)
				first_failed = rc;
			break;
		case RCPT_PENDING:
			pending++;
			if (!first_pending && rc->charged)
				first_pending = rc;
			break;
		}
	}
	if (pending > 0 && charged == 0) {
		/* nothing reached the relay (paused, shutting down, our configuration): put the
		 * row back without burning an attempt */
		release_add(d, j->id, j->attempt);
		telemetry_outcome(d->tm, "released", 0);
		log_info("message released", "iid", (long long)j->id, "iattempt", (long long)j->attempt, NULL);
	} else if (pending > 0) {
		struct rcpt *p = first_pending ? first_pending : first_failed;
		snprintf(err, sizeof(err), "%s%s", p && p->text ? p->text : "temporary failure",
			 unknown ? " (outcome unknown: the relay may have accepted it)" : "");
		result_add(d, j, "retry", p ? p->code : 0, err, unknown > 0);
		telemetry_outcome(d->tm, unknown ? "unknown" : "retry", 0);
		log_info("message retry", "iid", (long long)j->id, "iattempt", (long long)j->attempt,
			 "ismtp", (long long)(p ? p->code : 0), "serror", err, NULL);
	} else if (failed > 0) {
		if (sent > 0)
			snprintf(err, sizeof(err), "%zu of %zu recipients refused: %s", failed, failed + sent,
				 first_failed->text ? first_failed->text : "");
		else
			snprintf(err, sizeof(err), "%s", first_failed->text ? first_failed->text : "refused");
		result_add(d, j, "failed", first_failed->code, err, 0);
		telemetry_outcome(d->tm, "failed", 0);
		log_warn("message failed", "iid", (long long)j->id, "iattempt", (long long)j->attempt, "ismtp",
			 (long long)first_failed->code, "serror", err, NULL);
	} else {
		result_add(d, j, "sent", 250, NULL, 0);
		telemetry_outcome(d->tm, "sent", j->created_at > 0 ? wall_s() - j->created_at : 0);
		log_debug("message sent", "iid", (long long)j->id, "iattempt", (long long)j->attempt, NULL);
	}
	job_unlink(d, j);
	job_free(j);
	flush_kick(d);
	if (!d->empty)
		claim_kick(d);
}

static void on_transfer_done(void *arg, size_t index, const struct smtp_result *r)
{
	struct job *j = arg;
	struct dispatcher *d = j->d;
	struct rcpt *rc = &j->rc[index];
	uint64_t now = mono_ms();

	free(rc->text);
	rc->text = r->text ? strdup(r->text) : NULL;
	rc->code = r->outcome.code;
	if (r->not_attempted) {
		rc->state = RCPT_PENDING;
		breaker_cancel(&d->breaker);
	} else {
		telemetry_smtp_reply(d->tm, r->outcome.code, r->duration_s);
		if (r->outcome.breaker_failure)
			breaker_failure(&d->breaker, now);
		else if (r->outcome.relay_answered)
			breaker_success(&d->breaker, now);
		else
			breaker_cancel(&d->breaker);
		rc->charged = r->outcome.charge_attempt;
		switch (r->outcome.verdict) {
		case SMTP_OK:
			rc->state = RCPT_SENT;
			rc->charged = 1;
			break;
		case SMTP_PERMANENT:
			rc->state = RCPT_FAILED;
			break;
		case SMTP_UNKNOWN:
			rc->unknown = 1;
			rc->state = RCPT_PENDING;
			break;
		case SMTP_CONFIG:
			log_error("relay refused our configuration (authentication or TLS); pausing",
				  "iid", (long long)j->id, "ismtp", (long long)r->outcome.code, "serror",
				  r->text ? r->text : "", NULL);
			rc->state = RCPT_PENDING;
			break;
		case SMTP_RETRY:
		case SMTP_RETRY_NOW:
		default:
			rc->state = RCPT_PENDING;
			break;
		}
		if (breaker_state(&d->breaker) == BREAKER_OPEN)
			smtp_cancel_queued(d->smtp);
	}
	if (--j->outstanding == 0)
		job_finish(d, j);
}

/* Columns of CLAIM_SQL. */
enum { C_ID, C_ATTEMPT, C_MESSAGE_ID, C_SENDER, C_TO, C_CC, C_BCC, C_REPLY_TO, C_SUBJECT,
       C_BODY_TEXT, C_BODY_HTML, C_HEADERS, C_CREATED, C_DONE };

/* A claimed row as the claim returned it; strings point into the result. */
struct claimed {
	const struct pg_result *res;
	int row;
	struct pgarray to, cc, bcc, done;
};

static const char *col(const struct claimed *c, int k)
{
	return pg_isnull(c->res, c->row, k) ? NULL : pg_value(c->res, c->row, k);
}

/* Builds the message of a claimed row. Returns 0, or -1 with the reason in err (the row
 * is then failed: it cannot be turned into a message). */
static int job_build(struct dispatcher *d, struct job *j, const struct claimed *c, char *err, size_t errlen)
{
	const char *sender = col(c, C_SENDER), *hdrs_text = col(c, C_HEADERS);
	json_t *hdrs = NULL;
	struct mime_msg m;
	struct mime_header *hv = NULL;
	size_t k = 0;
	const char *hk;
	json_t *hval;
	int rc = -1;

	if (sender == NULL || sender[0] == '\0')
		sender = d->cfg->smtp_from;
	if (sender == NULL || sender[0] == '\0') {
		snprintf(err, errlen, "no sender: the row has none and smtp.from is not set");
		return -1;
	}
	/* most rows carry no extra headers: skip the JSON parser for "{}" */
	if (hdrs_text && strcmp(hdrs_text, "{}") != 0) {
		json_error_t jerr;
		hdrs = json_loads(hdrs_text, 0, &jerr);
		if (!json_is_object(hdrs)) {
			snprintf(err, errlen, "headers: not a JSON object (%s)", jerr.text);
			goto out;
		}
	}
	j->mail_from = addr_spec(sender);
	hv = calloc(json_object_size(hdrs) + 1, sizeof(*hv));
	if (!j->mail_from || !hv) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	json_object_foreach(hdrs, hk, hval)
	{
		hv[k].name = hk;
		hv[k].value = json_is_string(hval) ? json_string_value(hval) : "";
		k++;
	}
	memset(&m, 0, sizeof(m));
	m.message_id = j->message_id;
	m.from = sender;
	m.to = (const char *const *)c->to.items;
	m.n_to = c->to.n;
	m.cc = (const char *const *)c->cc.items;
	m.n_cc = c->cc.n;
	m.reply_to = col(c, C_REPLY_TO);
	m.subject = col(c, C_SUBJECT);
	m.body_text = col(c, C_BODY_TEXT);
	m.body_html = col(c, C_BODY_HTML);
	m.headers = hv;
	m.n_headers = k;
	m.date = time(NULL);
	m.boundary_seed = j->message_id;
	rc = mime_build(&m, &j->msg, err, errlen);
out:
	json_decref(hdrs);
	free(hv);
	return rc;
}

static int rcpt_add(struct job *j, const struct pgarray *arr, const char *kind, const struct pgarray *done)
{
	for (size_t i = 0; i < arr->n; i++) {
		const char *a = arr->items[i];
		int skip = 0;

		if (a == NULL)
			continue;
		for (size_t k = 0; k < done->n && !skip; k++)
			if (done->items[k] && strcmp(done->items[k], a) == 0)
				skip = 1;
		/* the same address twice (to and cc) gets one copy */
		for (size_t n = 0; n < j->nrc && !skip; n++)
			if (strcmp(j->rc[n].addr, a) == 0)
				skip = 1;
		if (skip)
			continue;
		j->rc[j->nrc].addr = strdup(a);
		j->rc[j->nrc].kind = kind;
		if (j->rc[j->nrc].addr == NULL)
			return -1;
		j->nrc++;
	}
	return 0;
}

static void job_start(struct dispatcher *d, const struct pg_result *res, int row)
{
	struct job *j = calloc(1, sizeof(*j));
	struct claimed c = { .res = res, .row = row };
	char err[512];
	int parsed;

	if (j == NULL)
		return; /* the lease expires and another claim takes it */
	j->d = d;
	j->id = atoll(pg_value(res, row, C_ID));
	j->attempt = atoi(pg_value(res, row, C_ATTEMPT));
	j->message_id = strdup(pg_value(res, row, C_MESSAGE_ID));
	j->created_at = atof(pg_value(res, row, C_CREATED));
	buf_init(&j->msg);
	job_link(d, j);
	parsed = pgarray_parse(col(&c, C_TO), &c.to) == 0 && pgarray_parse(col(&c, C_CC), &c.cc) == 0 &&
		 pgarray_parse(col(&c, C_BCC), &c.bcc) == 0 && pgarray_parse(col(&c, C_DONE), &c.done) == 0;
	if (parsed)
		j->rc = calloc(c.to.n + c.cc.n + c.bcc.n + 1, sizeof(*j->rc));
	if (!parsed || j->message_id == NULL || j->rc == NULL || rcpt_add(j, &c.to, "to", &c.done) ||
	    rcpt_add(j, &c.cc, "cc", &c.done) || rcpt_add(j, &c.bcc, "bcc", &c.done)) {
		/* out of memory: give it back untouched */
		release_add(d, j->id, j->attempt);
		job_unlink(d, j);
		job_free(j);
		goto out;
	}
	if (job_build(d, j, &c, err, sizeof(err)) != 0) {
		for (size_t i = 0; i < j->nrc; i++)
			j->rc[i].charged = 0;
		result_add(d, j, "failed", 0, err, 0);
		telemetry_outcome(d->tm, "failed", 0);
		log_warn("message cannot be built", "iid", (long long)j->id, "serror", err, NULL);
		job_unlink(d, j);
		job_free(j);
		flush_kick(d);
		goto out;
	}
	if (j->nrc == 0) {
		/* every recipient already accepted it in an earlier attempt */
		result_add(d, j, "sent", 250, NULL, 0);
		job_unlink(d, j);
		job_free(j);
		flush_kick(d);
		goto out;
	}
	j->outstanding = j->nrc;
	/* n, not j->nrc: when every send fails, the last report finishes and frees j */
	for (size_t i = 0, n = j->nrc; i < n; i++) {
		if (smtp_send(d->smtp, j->mail_from, j->rc[i].addr, &j->msg, on_transfer_done, j, i) != 0) {
			/* count it as not attempted right away */
			struct smtp_result r = { .not_attempted = 1, .text = "cannot queue transfer" };
			on_transfer_done(j, i, &r);
		}
	}
out:
	pgarray_free(&c.to);
	pgarray_free(&c.cc);
	pgarray_free(&c.bcc);
	pgarray_free(&c.done);
}

/* ---- claiming ------------------------------------------------------------------------ */

static const char *const CLAIM_SQL =
	"SELECT id, attempt, message_id, sender, recipients, cc, bcc, reply_to, subject, body_text, "
	"body_html, headers, extract(epoch FROM created_at)::float8, done_recipients "
	"FROM outbox.claim($1, $2::int, $3::int)";

/* The most messages one claim brings: a batch, or everything allowed in flight if less. */
static int claim_span(const struct dispatcher *d)
{
	return d->cfg->batch_size < d->cfg->max_in_flight ? d->cfg->batch_size : d->cfg->max_in_flight;
}

static int claim_allowed(struct dispatcher *d, int *limit)
{
	int room = d->cfg->max_in_flight - d->njobs;
	uint64_t now = mono_ms();

	if (d->state != RUN_RUNNING || !d->startup_done || d->claiming || !pg_ready(d->work))
		return 0;
	if (room <= 0)
		return 0;
	*limit = room < d->cfg->batch_size ? room : d->cfg->batch_size;
	switch (breaker_state(&d->breaker)) {
	case BREAKER_CLOSED: {
		/* claim in large batches: one claim per half batch, not one per finished message */
		if (d->njobs > 0 && room < (claim_span(d) + 1) / 2)
			return 0;
		return 1;
	}
	case BREAKER_HALF_OPEN:
		if (d->njobs > 0)
			return 0;
		/* nothing in flight, so no probe is outstanding (the last claim was empty or its
		 * row never reached the relay): allow another one */
		breaker_cancel(&d->breaker);
		__attribute__((fallthrough));
	case BREAKER_OPEN:
		/* one message probes the relay once the open period is over; its outcome closes
		 * the breaker or opens it again for longer */
		if (d->njobs > 0 || !breaker_allow(&d->breaker, now))
			return 0;
		*limit = 1;
		return 1;
	}
	return 0;
}

static void maybe_finish_drain(struct dispatcher *d);

static void on_set_idle_done(void *arg, const struct pg_result *res, const char *err)
{
	struct dispatcher *d = arg;

	if (res == NULL || !pg_result_ok(res))
		log_warn("dispatcher bookkeeping query failed", "serror", err ? err : pg_result_error(res), NULL);
	maybe_finish_drain(d);
}

static void set_idle(struct dispatcher *d, int idle)
{
	const char *p[2] = { d->owner, idle ? "true" : "false" };

	if (pg_query(d->work, "SELECT outbox.set_idle($1, $2::boolean)", 2, p, 10000, on_set_idle_done, d) == 0)
		d->idle_marked = idle;
}

static void on_claim_done(void *arg, const struct pg_result *res, const char *err)
{
	struct dispatcher *d = arg;
	int n;

	d->claiming = 0;
	if (res == NULL || !pg_result_ok(res)) {
		log_warn("claim failed", "serror", err ? err : pg_result_error(res), "ssqlstate",
			 pg_result_sqlstate(res), NULL);
		return; /* the poll timer or the reconnect tries again */
	}
	n = pg_ntuples(res);
	telemetry_claim(d->tm, n);
	if (d->state != RUN_RUNNING) {
		/* the claim crossed a SIGTERM: give the rows back untouched */
		for (int i = 0; i < n; i++)
			release_add(d, atoll(pg_value(res, i, C_ID)), atoll(pg_value(res, i, C_ATTEMPT)));
		flush_kick(d);
		return;
	}
	for (int i = 0; i < n; i++)
		job_start(d, res, i);
	if (n == 0) {
		if (!d->idle_marked && d->state == RUN_RUNNING) {
			/* mark idle first, then look once more: a row committed between our claim
			 * and the mark would otherwise wait for the poll */
			set_idle(d, 1);
			claim_kick(d);
		} else {
			d->empty = 1;
		}
		return;
	}
	d->empty = 0;
	if (d->idle_marked)
		set_idle(d, 0);
	if (n >= d->claim_limit)
		claim_kick(d);
}

static void on_claim_event(evutil_socket_t fd, short what, void *arg)
{
	struct dispatcher *d = arg;
	const char *p[3];
	char lim[24], lease[24];
	int limit = 0;
	(void)fd;
	(void)what;

	if (!claim_allowed(d, &limit))
		return;
	snprintf(lim, sizeof(lim), "%d", limit);
	snprintf(lease, sizeof(lease), "%lld", (long long)(d->cfg->lease_ms < 1000 ? 1 : d->cfg->lease_ms / 1000));
	p[0] = d->owner;
	p[1] = lim;
	p[2] = lease;
	if (pg_query(d->work, CLAIM_SQL, 3, p, d->cfg->database_statement_timeout_ms + 5000, on_claim_done, d) == 0) {
		d->claiming = 1;
		d->claim_limit = limit;
	}
}

/* ---- writing outcomes ---------------------------------------------------------------- */

static void requeue_unflushed(struct dispatcher *d)
{
	/* the write failed (connection lost): keep the outcomes for the next connection;
	 * completion is fenced, so writing one twice changes nothing */
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

/* SQLSTATEs worth retrying as they are (PITFALLS §1.5). */
static int sqlstate_transient(const char *st)
{
	static const char *const codes[] = { "40001", "40P01", "55P03", "57014", "53300", "57P01", "57P02",
					     "57P03" };

	if (strncmp(st, "08", 2) == 0)
		return 1;
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
		if (strcmp(st, codes[i]) == 0)
			return 1;
	return 0;
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
				  "serror", pg_result_error(res), "ssqlstate", pg_result_sqlstate(res), "icount",
				  (long long)json_array_size(d->flushing_results), NULL);
			json_decref(d->flushing_results);
			json_decref(d->flushing_releases);
			d->flushing_results = d->flushing_releases = NULL;
			d->flush_errors = 0;
			maybe_finish_drain(d);
			return;
		}
		log_warn("writing outcomes failed; will retry", "serror", err ? err : pg_result_error(res),
			 "ssqlstate", pg_result_sqlstate(res), NULL);
		if (d->flushing == 0)
			requeue_unflushed(d);
		return;
	}
	d->flush_errors = 0;
	if (d->flushing == 0) {
		size_t applied = (size_t)atoll(pg_value(res, 0, 0));
		size_t sent = json_array_size(d->flushing_results);
		if (d->flushing_results && applied < sent)
			log_warn("some outcomes were fenced off: their leases were taken over", "iwritten",
				 (long long)applied, "ioutcomes", (long long)sent, NULL);
		json_decref(d->flushing_results);
		json_decref(d->flushing_releases);
		d->flushing_results = d->flushing_releases = NULL;
		if (json_array_size(d->results) || json_array_size(d->releases))
			flush_kick(d);
		maybe_finish_drain(d);
	}
}

static void on_flush_event(evutil_socket_t fd, short what, void *arg)
{
	struct dispatcher *d = arg;
	(void)fd;
	(void)what;

	if (d->flushing || !pg_ready(d->work))
		return;
	if (json_array_size(d->results) == 0 && json_array_size(d->releases) == 0) {
		maybe_finish_drain(d);
		return;
	}
	d->flushing_results = d->results;
	d->flushing_releases = d->releases;
	d->results = json_array();
	d->releases = json_array();
	/* outcomes and releases travel in one statement: one round trip, one transaction */
	{
		char *rj = json_dumps(d->flushing_results, JSON_COMPACT);
		struct lease_arrays rel;
		json_t *v;
		size_t i;
		int rc = -1;

		lease_arrays_init(&rel);
		json_array_foreach(d->flushing_releases, i, v)
			lease_arrays_add(&rel, (long long)json_integer_value(json_array_get(v, 0)),
					 (long long)json_integer_value(json_array_get(v, 1)));
		if (rj && lease_arrays_close(&rel) == 0) {
			const char *p[4] = { d->owner, rj, rel.ids.data, rel.attempts.data };
			rc = pg_query(d->work,
				      "SELECT (SELECT count(*) FROM outbox.complete($1, $2::jsonb)), "
				      "outbox.release($1, $3::bigint[], $4::int[])",
				      4, p, d->cfg->database_statement_timeout_ms + 5000, on_flush_done, d);
		}
		free(rj);
		lease_arrays_free(&rel);
		if (rc == 0)
			d->flushing = 1;
		else
			requeue_unflushed(d);
	}
}

/* ---- leases -------------------------------------------------------------------------- */

static void on_renew_done(void *arg, const struct pg_result *res, const char *err)
{
	struct dispatcher *d = arg;

	if (res == NULL || !pg_result_ok(res)) {
		log_warn("lease renewal failed", "serror", err ? err : pg_result_error(res), NULL);
		return;
	}
	if (atoi(pg_value(res, 0, 0)) < d->njobs)
		log_debug("some leases were not renewed: taken over", "irenewed", (long long)atoi(pg_value(res, 0, 0)),
			  "iin_flight", (long long)d->njobs, NULL);
}

static void on_renew_timer(evutil_socket_t fd, short what, void *arg)
{
	struct dispatcher *d = arg;
	struct lease_arrays held;
	char lease[24];
	(void)fd;
	(void)what;

	if (!pg_ready(d->work))
		return;
	lease_arrays_init(&held);
	for (struct job *j = d->jobs; j; j = j->next)
		lease_arrays_add(&held, j->id, j->attempt);
	/* finished rows whose outcome is not written yet keep their lease too */
	{
		json_t *lists[2] = { d->results, d->flushing_results }, *v;
		size_t i;
		for (int l = 0; l < 2; l++)
			json_array_foreach(lists[l], i, v)
				lease_arrays_add(&held, (long long)json_integer_value(json_object_get(v, "id")),
						 (long long)json_integer_value(json_object_get(v, "attempt")));
	}
	if (held.ids.len == 0 || lease_arrays_close(&held) != 0)
		goto out; /* nothing leased, or out of memory: the next tick tries again */
	snprintf(lease, sizeof(lease), "%lld", (long long)(d->cfg->lease_ms < 1000 ? 1 : d->cfg->lease_ms / 1000));
	{
		const char *p[4] = { d->owner, held.ids.data, held.attempts.data, lease };
		if (pg_query(d->work, "SELECT outbox.renew($1, $2::bigint[], $3::int[], $4::int)", 4, p, 10000,
			     on_renew_done, d) != 0)
			log_debug("lease renewal skipped: database not ready", NULL);
	}
out:
	lease_arrays_free(&held);
}

/* ---- connections --------------------------------------------------------------------- */

static void on_startup_done(void *arg, const struct pg_result *res, const char *err)
{
	struct dispatcher *d = arg;

	d->startup_inflight = 0;
	if (res == NULL || !pg_result_ok(res)) {
		/* not yet migrated, or a passing error: the tick tries again in a few seconds */
		log_error("start-up query failed (are migrations applied?); retrying", "serror",
			  err ? err : pg_result_error(res), NULL);
		d->startup_retry_ms = mono_ms() + 2000;
		return;
	}
	if (!d->startup_done)
		log_info("released rows left by a previous run", "irows",
			 (long long)atoll(pg_value(res, 0, 0)), "sowner", d->owner, NULL);
	d->startup_done = 1;
	d->idle_marked = 0;
	d->empty = 0;
	if (d->state == RUN_STARTING)
		set_run_state(d, RUN_RUNNING);
	flush_kick(d);
	claim_kick(d);
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
		if (d->kafka == NULL &&
		    pg_query(d->work, "SELECT outbox.set_lifecycle_events(false)", 0, NULL, 30000, on_set_idle_done,
			     d) != 0)
			log_warn("start-up query not sent", NULL);
		rc = pg_query(d->work, "SELECT outbox.release_owner($1), outbox.set_idle($1, false)", 1, p, 30000,
			      on_startup_done, d);
	} else {
		rc = pg_query(d->work, "SELECT 0, outbox.set_idle($1, false)", 1, p, 30000, on_startup_done, d);
	}
	if (rc == 0)
		d->startup_inflight = 1;
}

static void on_work_connect(struct pgconn *c, void *arg)
{
	struct dispatcher *d = arg;
	(void)c;

	telemetry_database_up(d->tm, 1);
	d->startup_retry_ms = 0;
	send_startup(d);
}

static void on_work_disconnect(struct pgconn *c, void *arg, const char *reason)
{
	struct dispatcher *d = arg;
	(void)c;
	(void)reason;
	telemetry_database_up(d->tm, 0);
	d->claiming = 0;
	/* on_flush_done already got the failure for a write in progress */
}

static void on_listen_result(void *arg, const struct pg_result *res, const char *err)
{
	struct dispatcher *d = arg;

	if (res == NULL || !pg_result_ok(res)) {
		log_warn("LISTEN failed", "serror", err ? err : pg_result_error(res), NULL);
		return;
	}
	telemetry_listener_up(d->tm, 1);
	/* notifications sent while we were away are lost: look now */
	d->empty = 0;
	claim_kick(d);
}

static void on_listen_connect(struct pgconn *c, void *arg)
{
	if (pg_query(c, "LISTEN outbox_messages", 0, NULL, 10000, on_listen_result, arg) != 0)
		log_warn("LISTEN not sent", NULL);
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

/* ---- timers and signals -------------------------------------------------------------- */

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
	struct dispatcher *d = arg;
	(void)fd;
	(void)what;
	/* the safety net: scheduled and retry rows, and anything a lost NOTIFY left */
	d->empty = 0;
	claim_kick(d);
}

static void on_heartbeat_done(void *arg, const struct pg_result *res, const char *err)
{
	(void)arg;
	(void)res;
	(void)err;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct dispatcher *d = arg;
	static unsigned ticks;
	(void)fd;
	(void)what;

	ticks++;
	if (d->startup_retry_ms && mono_ms() >= d->startup_retry_ms && pg_ready(d->work)) {
		d->startup_retry_ms = 0;
		send_startup(d);
	}
	/* outcomes the database refused for a passing reason are written again each second */
	if (json_array_size(d->results) || json_array_size(d->releases))
		flush_kick(d);
	/* a half-open TCP connection never turns readable: a query with a deadline finds it */
	if (ticks % 10 == 0 && pg_ready(d->listen) && pg_pending(d->listen) == 0)
		if (pg_query(d->listen, "SELECT 1", 0, NULL, 10000, on_heartbeat_done, d) != 0)
			log_debug("heartbeat skipped", NULL);
	telemetry_breaker(d->tm, "smtp", breaker_state(&d->breaker));
	if (breaker_state(&d->breaker) != BREAKER_CLOSED)
		claim_kick(d);
	telemetry_tick(d->tm, ticks);
	if (d->state == RUN_DRAINING)
		maybe_finish_drain(d);
}

static void stop_loop(struct dispatcher *d)
{
	set_run_state(d, RUN_DONE);
	event_base_loopexit(d->base, NULL);
}

static void maybe_finish_drain(struct dispatcher *d)
{
	if (d->state != RUN_DRAINING)
		return;
	if (d->njobs > 0 || d->flushing || !kafka_mirror_stopped(d->kafka))
		return;
	if (json_array_size(d->results) || json_array_size(d->releases)) {
		if (pg_ready(d->work)) {
			flush_kick(d);
			return;
		}
		if (mono_ms() < d->drain_deadline_ms + 5000)
			return; /* give the database a few seconds to come back */
		log_error("exiting with unwritten outcomes; their leases will expire", "icount",
			  (long long)(json_array_size(d->results) + json_array_size(d->releases)), NULL);
		d->exit_code = 1;
	}
	/* let the last bookkeeping (the idle mark's removal) reach the database */
	if (pg_ready(d->work) && pg_pending(d->work) > 0 && mono_ms() < d->drain_deadline_ms + 5000)
		return;
	stop_loop(d);
}

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct dispatcher *d = arg;
	(void)fd;
	(void)what;

	if (d->njobs > 0) {
		log_warn("drain timeout: aborting transfers still running", "icount", (long long)d->njobs, NULL);
		smtp_abort_all(d->smtp);
	}
	maybe_finish_drain(d);
}

static void start_drain(struct dispatcher *d, const char *why)
{
	struct timeval tv = tv_ms(d->cfg->drain_timeout_ms);

	log_info("draining: no new claims, finishing messages in flight", "sreason", why, "iin_flight",
		 (long long)d->njobs, NULL);
	set_run_state(d, RUN_DRAINING);
	d->drain_deadline_ms = mono_ms() + (uint64_t)d->cfg->drain_timeout_ms;
	/* a stopped dispatcher is not idle: producers need not wake it any more */
	if (d->idle_marked && pg_ready(d->work))
		set_idle(d, 0);
	smtp_cancel_queued(d->smtp);
	if (d->kafka)
		kafka_mirror_stop(d->kafka);
	evtimer_add(d->ev_drain, &tv);
	flush_kick(d);
}

/* SIGHUP: load the configuration again; apply the keys that may change at runtime, keep
 * the old configuration whole when the new one is invalid. */
static void reload_config(struct dispatcher *d)
{
	struct config nc;
	enum log_level level;
	char *errtext = NULL;
	size_t errsize = 0;
	FILE *errs = open_memstream(&errtext, &errsize);
	int errors = config_load(&nc, d->config_path, errs ? errs : stderr);

	if (errs != NULL) {
		/* each error becomes one JSON log line: stderr carries nothing else */
		char *line, *save = NULL;
		fclose(errs);
		for (line = strtok_r(errtext, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
			log_error("configuration error", "serror", line, NULL);
		free(errtext);
	}
	if (errors != 0) {
		log_error("configuration reload refused: keeping the running configuration", "ierrors",
			  (long long)errors, NULL);
		config_free(&nc);
		return;
	}
	if (log_level_parse(nc.log_level, &level) == 0)
		log_set_level(level);
	{
		char *tmp = d->cfg->log_level;
		d->cfg->log_level = nc.log_level;
		nc.log_level = tmp;
	}
	d->cfg->batch_size = nc.batch_size;
	d->cfg->poll_interval_ms = nc.poll_interval_ms;
	d->cfg->outcome_delay_ms = nc.outcome_delay_ms;
	d->cfg->smtp_rate_limit = nc.smtp_rate_limit;
	d->cfg->status_max_oldest_pending_ms = nc.status_max_oldest_pending_ms;
	d->cfg->status_max_failed_last_hour = nc.status_max_failed_last_hour;
	d->cfg->status_max_mirror_lag_ms = nc.status_max_mirror_lag_ms;
	smtp_set_rate(d->smtp, nc.smtp_rate_limit);
	d->cfg->smtp_breaker_threshold = nc.smtp_breaker_threshold;
	d->cfg->smtp_breaker_open_ms = nc.smtp_breaker_open_ms;
	breaker_set_limits(&d->breaker, (unsigned)nc.smtp_breaker_threshold, (uint64_t)nc.smtp_breaker_open_ms,
			   (uint64_t)nc.smtp_breaker_open_ms * 8);
	{
		struct timeval tv = tv_ms(nc.poll_interval_ms);
		evtimer_add(d->ev_poll, &tv);
	}
	log_info("configuration reloaded", "slog_level", d->cfg->log_level, "ibatch",
		 (long long)d->cfg->batch_size, "dsmtp_rate_limit", d->cfg->smtp_rate_limit, NULL);
	config_free(&nc);
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
		log_warn("second signal: exiting now; leased rows return when their leases expire", NULL);
		d->exit_code = 1;
		stop_loop(d);
		return;
	}
	start_drain(d, sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ---- main ---------------------------------------------------------------------------- */

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

int dispatcher_main(int argc, char **argv)
{
	struct dispatcher dd, *d = &dd;
	struct config cfg;
	const char *config_path = NULL;
	char err[512];
	int rc;
	struct timeval tv;
	enum log_level level;

	rc = parse_args(argc, argv, &config_path);
	if (rc >= 0)
		return rc;
	if (config_load(&cfg, config_path, stderr) != 0) {
		config_free(&cfg);
		return 2;
	}
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
		log_error("cannot start telemetry", "serror", err, NULL);
		rc = 1;
		goto out;
	}
	breaker_set_on_change(&d->breaker, telemetry_breaker_changed, d->tm);
	log_info("outboxd starting", "sversion", OUTBOXD_VERSION, "sowner", d->owner, "ibatch",
		 (long long)cfg.batch_size, "imax_in_flight", (long long)cfg.max_in_flight, NULL);

	d->ev_claim = event_new(d->base, -1, 0, on_claim_event, d);
	d->ev_flush = event_new(d->base, -1, 0, on_flush_event, d);
	d->ev_poll = event_new(d->base, -1, EV_PERSIST, on_poll, d);
	d->ev_renew = event_new(d->base, -1, EV_PERSIST, on_renew_timer, d);
	d->ev_tick = event_new(d->base, -1, EV_PERSIST, on_tick, d);
	d->ev_drain = evtimer_new(d->base, on_drain_timeout, d);
	d->ev_sigterm = evsignal_new(d->base, SIGTERM, on_signal, d);
	d->ev_sigint = evsignal_new(d->base, SIGINT, on_signal, d);
	d->ev_sighup = evsignal_new(d->base, SIGHUP, on_signal, d);
	tv = tv_ms(cfg.poll_interval_ms);
	evtimer_add(d->ev_poll, &tv);
	tv = tv_ms(cfg.lease_ms / 3 > 0 ? cfg.lease_ms / 3 : 1);
	evtimer_add(d->ev_renew, &tv);
	tv = tv_ms(1000);
	evtimer_add(d->ev_tick, &tv);
	evsignal_add(d->ev_sigterm, NULL);
	evsignal_add(d->ev_sigint, NULL);
	evsignal_add(d->ev_sighup, NULL);

	{
		struct pg_callbacks wcb = { .on_connect = on_work_connect, .on_disconnect = on_work_disconnect };
		struct pg_callbacks lcb = { .on_connect = on_listen_connect,
					    .on_disconnect = on_listen_disconnect,
					    .on_notify = on_notify };
		char opts[160];
		snprintf(opts, sizeof(opts), "-c statement_timeout=%lld -c lock_timeout=5000 -c idle_in_transaction_session_timeout=60000",
			 (long long)cfg.database_statement_timeout_ms);
		d->work = pg_new(d->base, "outboxd-worker", cfg.database_url, opts, cfg.database_connect_timeout_ms,
				 cfg.reconnect_max_ms, &wcb, d);
		d->listen = pg_new(d->base, "outboxd-listener", cfg.database_url,
				   "-c idle_session_timeout=0 -c statement_timeout=10000", cfg.database_connect_timeout_ms,
				   cfg.reconnect_max_ms, &lcb, d);
	}
	telemetry_attach(d->tm, d->work);
	if (cfg.kafka_brokers && cfg.kafka_brokers[0]) {
		d->kafka = kafka_mirror_new(d->base, &cfg, d->tm, err, sizeof(err));
		if (d->kafka == NULL) {
			log_error("cannot start the kafka mirror", "serror", err, NULL);
			rc = 2;
			goto out;
		}
	}
	event_base_dispatch(d->base);
	rc = d->exit_code;
	log_info("outboxd stopped", "iexit", (long long)rc, NULL);

out:
	pg_close(d->listen);
	pg_close(d->work);
	/* workers may still read a job's message: stop them before any job is freed */
	smtp_free(d->smtp);
	while (d->jobs) {
		struct job *j = d->jobs;
		job_unlink(d, j);
		job_free(j);
	}
	kafka_mirror_free(d->kafka);
	telemetry_free(d->tm);
	if (d->ev_claim) {
		event_free(d->ev_claim);
		event_free(d->ev_flush);
		event_free(d->ev_poll);
		event_free(d->ev_renew);
		event_free(d->ev_tick);
		event_free(d->ev_drain);
		event_free(d->ev_sigterm);
		event_free(d->ev_sigint);
		event_free(d->ev_sighup);
	}
	json_decref(d->results);
	json_decref(d->releases);
	json_decref(d->flushing_results);
	json_decref(d->flushing_releases);
	event_base_free(d->base);
	config_free(&cfg);
	return rc;
}
