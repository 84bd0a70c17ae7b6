/* deliver: turns a claimed row into a message (mime.c), sends it to its recipients through
 * the SMTP sink, gathers one reply per recipient and hands the job's verdict (job_verdict)
 * to outcome.c. Owns the jobs in flight. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "address.h"
#include "clock.h"
#include "config.h"
#include "core.h"
#include "log.h"
#include "mime.h"
#include "pg.h"
#include "pgarray.h"
#include "relaytext.h"
#include "smtp.h"
#include "telemetry.h"

/* ---- jobs in flight ------------------------------------------------------------------- */

static void job_free(struct job *j)
{
	for (size_t i = 0; i < j->nrc; i++) {
		free(j->addr[i]);
		free((char *)j->reply[i].text);
	}
	free(j->addr);
	free(j->kind);
	free(j->reply);
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

static void job_drop(struct dispatcher *d, struct job *j)
{
	job_unlink(d, j);
	job_free(j);
}

void deliver_free_all(struct dispatcher *d)
{
	while (d->jobs)
		job_drop(d, d->jobs);
}

/* ---- replies and the verdict ---------------------------------------------------------- */

/* Decides the message's outcome from its recipients' and queues it for the database. */
static void job_finish(struct dispatcher *d, struct job *j)
{
	struct job_verdict v;

	job_verdict(j->reply, j->nrc, NULL, &v);
	switch (v.outcome) {
	case OUTCOME_RELEASED:
		outcome_release(d, j->id, j->attempt);
		telemetry_outcome(d->tm, v.counted, 0);
		log_info("message released", LOG_I("id", (long long)j->id), LOG_I("attempt", (long long)j->attempt));
		break;
	case OUTCOME_RETRY:
		outcome_add(d, j, v.outcome, v.code, v.error, v.unknown);
		telemetry_outcome(d->tm, v.counted, 0);
		log_info("message retry", LOG_I("id", (long long)j->id), LOG_I("attempt", (long long)j->attempt),
			 LOG_I("smtp", (long long)v.code), LOG_S("error", v.error));
		break;
	case OUTCOME_FAILED:
		outcome_add(d, j, v.outcome, v.code, v.error, 0);
		telemetry_outcome(d->tm, v.counted, 0);
		log_warn("message failed", LOG_I("id", (long long)j->id), LOG_I("attempt", (long long)j->attempt),
			 LOG_I("smtp", (long long)v.code), LOG_S("error", v.error));
		break;
	default:
		outcome_add(d, j, OUTCOME_SENT, v.code, NULL, 0);
		telemetry_outcome(d->tm, OUTCOME_SENT, j->created_at > 0 ? clock_wall_s() - j->created_at : 0);
		log_debug("message sent", LOG_I("id", (long long)j->id), LOG_I("attempt", (long long)j->attempt));
		break;
	}
	job_drop(d, j);
	outcome_kick(d);
	if (!d->empty)
		claim_kick(d);
}

/* Records one recipient's reply, tells the breaker what it says about the relay, and
 * finishes the job with its last reply. */
static void on_transfer_done(void *arg, size_t index, const struct smtp_result *r)
{
	struct job *j = arg;
	struct dispatcher *d = j->d;
	struct rcpt_reply *rc = &j->reply[index];
	uint64_t now = clock_mono_ms();

	lease_check(d); /* before the sink starts its next message */

	free((char *)rc->text);
	/* the relay's words, made storable: invalid UTF-8 would make last_error NULL */
	rc->text = relay_text_dup(r->text, RELAY_TEXT_MAX);
	rc->code = r->outcome.code;
	if (r->not_attempted) {
		rc->state = RCPT_PENDING;
		if (!r->shared)
			breaker_cancel(&d->breaker);
	} else {
		if (!r->shared)
			telemetry_smtp_reply(d->tm, r->outcome.code, r->duration_s);
		if (r->shared)
			; /* the transaction's outcome was told to the breaker with its first recipient */
		else if (r->outcome.breaker_failure)
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
				  LOG_I("id", (long long)j->id), LOG_I("smtp", (long long)r->outcome.code),
				  LOG_S("error", rc->text ? rc->text : ""));
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

/* ---- building the message ------------------------------------------------------------- */

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

/* The envelope sender: the addr-spec of the From mailbox (a malformed one is copied as it
 * is; mime_build() refuses it with the reason). */
static char *addr_spec(const char *s)
{
	struct address_mailbox mb;

	if (address_mailbox_parse(s, &mb) != NULL)
		return strdup(s);
	return strndup(mb.addr, mb.addr_len);
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
	json_object_foreach (hdrs, hk, hval) {
		hv[k].name = hk;
		hv[k].value = json_is_string(hval) ? json_string_value(hval) : "";
		k++;
	}
	/* bcc is in no header, but it goes to the relay: the grammar INSERT checks holds for it too */
	for (size_t i = 0; i < c->bcc.n; i++) {
		const char *b = c->bcc.items[i], *why = address_spec_problem(b, b ? strlen(b) : 0);
		if (why != NULL) {
			if (c->bcc.n == 1)
				snprintf(err, errlen, "bcc: %s", why);
			else
				snprintf(err, errlen, "bcc[%zu]: %s", i + 1, why);
			goto out;
		}
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

/* Chooses the recipients of this attempt and copies them into the job. Returns 0, or -1
 * when out of memory. */
static int job_recipients(struct job *j, const struct claimed *c)
{
	size_t max = c->to.n + c->cc.n + c->bcc.n + 1, n;
	struct rcpt_pick *pick = calloc(max, sizeof(*pick));
	int rc = 0;

	j->addr = calloc(max, sizeof(*j->addr));
	j->kind = calloc(max, sizeof(*j->kind));
	j->reply = calloc(max, sizeof(*j->reply));
	if (!pick || !j->addr || !j->kind || !j->reply) {
		free(pick);
		return -1;
	}
	n = job_pick_recipients(&c->to, &c->cc, &c->bcc, &c->done, pick);
	for (size_t i = 0; i < n; i++) {
		j->addr[i] = strdup(pick[i].addr);
		j->kind[i] = pick[i].kind;
		if (j->addr[i] == NULL) {
			rc = -1;
			break;
		}
		j->nrc++;
	}
	free(pick);
	return rc;
}

void deliver_row(struct dispatcher *d, const struct pg_result *res, int row)
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
	j->lease_until_ms = d->claim_sent_ms + (uint64_t)d->cfg->lease_ms;
	buf_init(&j->msg);
	job_link(d, j);
	parsed = pgarray_parse(col(&c, C_TO), &c.to) == 0 && pgarray_parse(col(&c, C_CC), &c.cc) == 0 &&
		 pgarray_parse(col(&c, C_BCC), &c.bcc) == 0 && pgarray_parse(col(&c, C_DONE), &c.done) == 0;
	if (!parsed || j->message_id == NULL || job_recipients(j, &c) != 0) {
		/* out of memory: give it back untouched */
		outcome_release(d, j->id, j->attempt);
		job_drop(d, j);
		goto out;
	}
	if (job_build(d, j, &c, err, sizeof(err)) != 0) {
		for (size_t i = 0; i < j->nrc; i++)
			j->reply[i].charged = 0;
		outcome_add(d, j, OUTCOME_FAILED, 0, err, 0);
		telemetry_outcome(d->tm, OUTCOME_FAILED, 0);
		log_warn("message cannot be built", LOG_I("id", (long long)j->id), LOG_S("error", err));
		job_drop(d, j);
		outcome_kick(d);
		goto out;
	}
	if (j->nrc == 0) {
		/* every recipient already accepted it in an earlier attempt */
		outcome_add(d, j, OUTCOME_SENT, 250, NULL, 0);
		job_drop(d, j);
		outcome_kick(d);
		goto out;
	}
	j->outstanding = j->nrc;
	/* every recipient in one submission: the native engine sends the body once */
	if (smtp_submit(d->smtp, j->mail_from, (const char *const *)j->addr, j->nrc, &j->msg, on_transfer_done, j) !=
	    0) {
		/* count them as not attempted right away; n, not j->nrc: the last report frees j */
		for (size_t i = 0, n = j->nrc; i < n; i++) {
			struct smtp_result r = { .not_attempted = 1, .shared = i > 0, .text = "cannot queue transfer" };
			on_transfer_done(j, i, &r);
		}
	}
out:
	pgarray_free(&c.to);
	pgarray_free(&c.cc);
	pgarray_free(&c.bcc);
	pgarray_free(&c.done);
}
