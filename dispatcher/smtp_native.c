/* smtp_native: the SMTP client on the libevent loop (smtp.engine: native). A bounded pool
 * of connections, each a state machine with one setter (conn_set_state); every recipient
 * of a message in one transaction, with PIPELINING (RFC 2920), CHUNKING (RFC 3030),
 * STARTTLS or implicit TLS through libevent's OpenSSL bufferevents, AUTH PLAIN, LOGIN and
 * XOAUTH2, connection reuse with RSET and the RFC 5321 §4.5.3.2 timeouts. No threads. */
#include "smtp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "buf.h"
#include "clock.h"
#include "config.h"
#include "file.h"
#include "hostport.h"
#include "log.h"
#include "mime.h"
#include "ratelimit.h"
#include "smtp_proto.h"

/* RFC 5321 §4.5.3.2 minimum timeouts; smtp.timeout caps each of them. */
#define T_COMMAND_MS (5 * 60 * 1000) /* greeting, EHLO, MAIL, RCPT, AUTH */
#define T_DATA_INIT_MS (2 * 60 * 1000)
#define T_DOT_MS (10 * 60 * 1000) /* the reply to the final "." or BDAT LAST */
#define T_QUIT_MS 5000            /* nothing depends on the reply to QUIT */
#define T_IDLE_MS 60000           /* relays drop idle sessions after a few minutes */

enum conn_state {
	CS_CONNECT, /* TCP connect (and the handshake of implicit TLS) */
	CS_GREETING,
	CS_EHLO,
	CS_HELO,     /* EHLO refused: plain SMTP */
	CS_STARTTLS, /* STARTTLS sent, waiting for 220 */
	CS_TLS,      /* TLS handshake after STARTTLS */
	CS_AUTH,
	CS_READY, /* idle, may take a message */
	CS_TXN,   /* transaction commands sent, replies being read */
	CS_BODY,  /* body and "." sent, waiting for the reply */
	CS_QUIT,
	CS_DEAD, /* closed; freed at the loop tail */
};

static const char *const state_names[] = { "connect", "greeting", "ehlo", "helo", "starttls", "tls",
					   "auth",    "ready",    "txn",  "body", "quit",     "dead" };

enum step { ST_RSET, ST_MAIL, ST_RCPT, ST_DATA, ST_BDAT };

/* One submitted message and what each recipient's RCPT got. */
struct nmsg {
	struct nmsg *next;
	char *from;
	char **rcpt;
	int *rcode;   /* RCPT reply per recipient; 0 = none yet */
	char **rtext; /* the refusal line of a refused recipient */
	size_t n;
	const struct buf *msg;
	smtp_done_fn done;
	void *arg;
	uint64_t queued_ms;
	int retried;
};

struct native;

struct conn {
	struct native *s;
	unsigned id;
	enum conn_state state;
	struct bufferevent *bev;
	struct event *timer;
	struct smtp_reply reply;
	struct smtp_ext ext;
	int tls; /* the session is encrypted */
	int auth_step;
	unsigned auth_mech;
	int done_txns; /* transactions completed on this connection */
	int need_rset; /* the last transaction ended half-way */
	int doomed;    /* the relay said 421: no further use */
	/* the transaction, when m != NULL */
	struct nmsg *m;
	int rset_first;
	int pipelining, bdat;
	size_t nsteps, sent, answered;
	int mail_code;
	char *fail_text; /* MAIL or DATA refusal line */
	size_t rcpt_ok;
	int body_sent; /* the body and its end were handed to the socket */
	int any_reply;
	int voided;                 /* nobody can receive it: replies are read and ignored */
	struct smtp_body_info body; /* the message's scan, for MAIL's parameters */
	struct conn *next_dead;
};

struct native {
	struct event_base *base;
	struct evdns_base *dns;
	SSL_CTX *ssl_ctx;
	struct event *ev_pump, *ev_kick, *ev_rl, *ev_reap;
	char *host;
	int port;
	int implicit_tls;
	enum smtp_tls_mode tls;
	char *helo;
	char *username, *password, *token_file;
	char *token; /* cached XOAUTH2 token and the file state it came from */
	struct stat token_st;
	int max_msgs;
	uint64_t connect_ms, timeout_ms;
	struct ratelimit rl;
	struct nmsg *qhead, *qtail;
	struct conn **conns;
	int pool, nconns;
	unsigned next_id;
	int aborting, cancel_pending;
	struct conn *dead;
};

static uint64_t cap_ms(const struct native *s, uint64_t rfc)
{
	return s->timeout_ms > 0 && s->timeout_ms < rfc ? s->timeout_ms : rfc;
}

/* ---- messages ------------------------------------------------------------------------ */

static void nmsg_free(struct nmsg *m)
{
	for (size_t i = 0; i < m->n; i++) {
		free(m->rcpt[i]);
		free(m->rtext[i]);
	}
	free(m->rcpt);
	free(m->rtext);
	free(m->rcode);
	free(m->from);
	free(m);
}

static struct nmsg *nmsg_new(const char *from, const char *const *rcpt, size_t n, const struct buf *msg,
			     smtp_done_fn done, void *arg)
{
	struct nmsg *m = calloc(1, sizeof(*m));

	if (m == NULL)
		return NULL;
	m->from = strdup(from ? from : "");
	m->rcpt = calloc(n, sizeof(*m->rcpt));
	m->rtext = calloc(n, sizeof(*m->rtext));
	m->rcode = calloc(n, sizeof(*m->rcode));
	m->n = n;
	if (m->from == NULL || m->rcpt == NULL || m->rtext == NULL || m->rcode == NULL) {
		m->n = 0;
		nmsg_free(m);
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
		if ((m->rcpt[i] = strdup(rcpt[i])) == NULL) {
			nmsg_free(m);
			return NULL;
		}
	m->msg = msg;
	m->done = done;
	m->arg = arg;
	m->queued_ms = clock_mono_ms();
	return m;
}

/* Reports one recipient and nothing else. */
static void report(struct nmsg *m, size_t i, const struct smtp_outcome *o, const char *text, int not_attempted,
		   int shared)
{
	struct smtp_result r;

	memset(&r, 0, sizeof(r));
	r.outcome = *o;
	r.text = text;
	r.not_attempted = not_attempted;
	r.shared = shared;
	r.duration_s = (double)(clock_mono_ms() - m->queued_ms) / 1000.0;
	m->done(m->arg, i, &r);
}

/* Reports every recipient as not attempted and frees m. */
static void nmsg_not_attempted(struct nmsg *m, const char *why)
{
	struct smtp_outcome o = { SMTP_RETRY, 0, 0, 0, 0, why };

	for (size_t i = 0; i < m->n; i++)
		report(m, i, &o, why, 1, i > 0);
	nmsg_free(m);
}

static void queue_push(struct native *s, struct nmsg *m, int front)
{
	if (front) {
		m->next = s->qhead;
		s->qhead = m;
		if (s->qtail == NULL)
			s->qtail = m;
		return;
	}
	m->next = NULL;
	if (s->qtail)
		s->qtail->next = m;
	else
		s->qhead = m;
	s->qtail = m;
}

static struct nmsg *queue_pop(struct native *s)
{
	struct nmsg *m = s->qhead;

	if (m) {
		s->qhead = m->next;
		if (s->qhead == NULL)
			s->qtail = NULL;
		m->next = NULL;
	}
	return m;
}

/* ---- connection state ---------------------------------------------------------------- */

static void conn_set_state(struct conn *c, enum conn_state st)
{
	struct native *s = c->s;
	uint64_t ms = 0;

	if (log_enabled(LOG_DEBUG))
		log_debug("smtp connection state", LOG_I("conn", (long long)c->id),
			  LOG_S("from", state_names[c->state]), LOG_S("to", state_names[st]));
	c->state = st;
	switch (st) {
	case CS_CONNECT:
	case CS_TLS:
	case CS_GREETING:
		ms = s->connect_ms;
		break;
	case CS_EHLO:
	case CS_HELO:
	case CS_STARTTLS:
	case CS_AUTH:
	case CS_TXN:
		ms = cap_ms(s, T_COMMAND_MS);
		break;
	case CS_BODY:
		ms = cap_ms(s, T_DOT_MS);
		break;
	case CS_READY:
		ms = T_IDLE_MS;
		break;
	case CS_QUIT:
		ms = T_QUIT_MS;
		break;
	case CS_DEAD:
		break;
	}
	if (ms > 0) {
		struct timeval tv = { .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000 };
		evtimer_add(c->timer, &tv);
	} else {
		evtimer_del(c->timer);
	}
}

static void pump_soon(struct native *s)
{
	event_active(s->ev_pump, 0, 0);
}

/* Closes the connection; the struct is freed at the loop tail (we may be inside one of
 * its callbacks). The message it carried, if any, must have been taken off already. */
static void conn_close(struct conn *c)
{
	struct native *s = c->s;

	if (c->state == CS_DEAD)
		return;
	conn_set_state(c, CS_DEAD);
	if (c->bev) {
		bufferevent_free(c->bev);
		c->bev = NULL;
	}
	for (int i = 0; i < s->pool; i++)
		if (s->conns[i] == c) {
			s->conns[i] = NULL;
			s->nconns--;
			break;
		}
	c->next_dead = s->dead;
	s->dead = c;
	event_active(s->ev_reap, 0, 0);
	pump_soon(s);
}

static void conn_free(struct conn *c)
{
	if (c->bev)
		bufferevent_free(c->bev);
	if (c->timer)
		event_free(c->timer);
	free(c->fail_text);
	free(c);
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
	struct native *s = arg;
	(void)fd;
	(void)what;

	while (s->dead) {
		struct conn *c = s->dead;
		s->dead = c->next_dead;
		conn_free(c);
	}
}

static int conn_write(struct conn *c, const char *p, size_t n)
{
	return bufferevent_write(c->bev, p, n);
}

static int conn_printf(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int conn_printf(struct conn *c, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = evbuffer_add_vprintf(bufferevent_get_output(c->bev), fmt, ap);
	va_end(ap);
	return rc < 0 ? -1 : 0;
}

/* ---- ending a transaction ------------------------------------------------------------ */

static int refused(int code)
{
	return code != 0 && code / 100 != 2;
}

/* Takes the message off the connection and reports every recipient: a refused RCPT keeps
 * its own reply, every other recipient gets (ev, code, text). */
static void txn_report(struct conn *c, enum smtp_event ev, int code, const char *text)
{
	struct native *s = c->s;
	struct nmsg *m = c->m;
	int flags = 0;
	struct smtp_outcome common;
	int all_retry_now = 1;

	if (m == NULL)
		return;
	c->m = NULL;
	if (c->done_txns > 0 && !c->any_reply)
		flags |= SMTP_F_REUSED;
	if (c->body_sent)
		flags |= SMTP_F_DATA_SENT;
	common = smtp_classify_event(ev, code, flags);
	all_retry_now = common.verdict == SMTP_RETRY_NOW;
	for (size_t i = 0; i < m->n; i++)
		if (refused(m->rcode[i]))
			all_retry_now = 0;
	if (all_retry_now && !m->retried && !s->aborting) {
		/* the relay had silently closed a cached connection: resend at once, uncharged */
		m->retried = 1;
		memset(m->rcode, 0, m->n * sizeof(*m->rcode));
		queue_push(s, m, 1);
		pump_soon(s);
		return;
	}
	for (size_t i = 0, told = 0; i < m->n; i++) {
		if (refused(m->rcode[i])) {
			struct smtp_outcome o = smtp_classify_event(SMTP_EV_REFUSED, m->rcode[i], 0);
			report(m, i, &o, m->rtext[i], 0, 0);
		} else {
			report(m, i, &common, text, 0, told++ > 0);
		}
	}
	nmsg_free(m);
	pump_soon(s);
}

/* A transaction completed as far as the protocol goes: the connection can go back to the
 * pool (or close at its message cap), then the recipients are reported. */
static void txn_end(struct conn *c, enum smtp_event ev, int code, const char *text)
{
	struct native *s = c->s;
	char *owned = c->fail_text; /* text may be this: freed only after the report */
	int close_now = 0;

	c->fail_text = NULL;
	c->done_txns++;
	if (c->voided || ev != SMTP_EV_ACCEPTED)
		c->need_rset = 1;
	if (c->doomed || s->aborting) {
		close_now = 1;
	} else if (c->done_txns >= s->max_msgs) {
		conn_set_state(c, CS_QUIT);
		close_now = conn_write(c, "QUIT\r\n", 6) != 0;
	} else {
		conn_set_state(c, CS_READY);
	}
	txn_report(c, ev, code, text);
	free(owned);
	if (close_now)
		conn_close(c);
}

/* The connection failed (closed, timed out, spoke nonsense, TLS, setup refusals): report
 * the message it carried, close it. */
static void conn_fail(struct conn *c, enum smtp_event ev, int code, const char *text)
{
	if (c->state == CS_DEAD)
		return;
	if (log_enabled(LOG_DEBUG))
		log_debug("smtp connection failed", LOG_I("conn", (long long)c->id),
			  LOG_S("state", state_names[c->state]), LOG_I("smtp", (long long)code),
			  LOG_S("error", text ? text : ""));
	if (c->m && refused(c->mail_code)) {
		/* MAIL was refused: nothing that follows could have delivered it */
		txn_report(c, SMTP_EV_REFUSED, c->mail_code, c->fail_text);
		conn_close(c);
		return;
	}
	txn_report(c, ev, code, text);
	conn_close(c);
}

/* ---- transactions -------------------------------------------------------------------- */

static enum step step_at(const struct conn *c, size_t k, size_t *rcpt)
{
	if (c->rset_first) {
		if (k == 0)
			return ST_RSET;
		k--;
	}
	if (k == 0)
		return ST_MAIL;
	if (k <= c->m->n) {
		*rcpt = k - 1;
		return ST_RCPT;
	}
	return c->bdat ? ST_BDAT : ST_DATA;
}

static int emit_evbuffer(void *arg, const char *p, size_t len)
{
	return evbuffer_add(arg, p, len);
}

static int write_step(struct conn *c, enum step st, size_t rcpt)
{
	struct nmsg *m = c->m;
	const struct buf *b = m->msg;

	switch (st) {
	case ST_RSET:
		return conn_write(c, "RSET\r\n", 6);
	case ST_MAIL: {
		const struct smtp_body_info *bi = &c->body;
		int utf8 = smtp_needs_utf8(m->from);

		for (size_t i = 0; i < m->n && !utf8; i++)
			utf8 = smtp_needs_utf8(m->rcpt[i]);
		if (conn_printf(c, "MAIL FROM:<%s>", m->from) != 0)
			return -1;
		if ((c->ext.flags & SMTP_EXT_SIZE) && conn_printf(c, " SIZE=%zu", b->len + bi->dots) != 0)
			return -1;
		if (bi->eight_bit && (c->ext.flags & SMTP_EXT_8BITMIME) && conn_write(c, " BODY=8BITMIME", 14) != 0)
			return -1;
		if (utf8 && (c->ext.flags & SMTP_EXT_SMTPUTF8) && conn_write(c, " SMTPUTF8", 9) != 0)
			return -1;
		return conn_write(c, "\r\n", 2);
	}
	case ST_RCPT:
		return conn_printf(c, "RCPT TO:<%s>\r\n", m->rcpt[rcpt]);
	case ST_DATA:
		return conn_write(c, "DATA\r\n", 6);
	case ST_BDAT:
		/* BDAT carries the bytes as they are: no dot-stuffing, no terminator */
		if (conn_printf(c, "BDAT %zu LAST\r\n", b->len) != 0 ||
		    conn_write(c, b->data ? b->data : "", b->len) != 0)
			return -1;
		c->body_sent = 1;
		return 0;
	}
	return -1;
}

/* Sends what may go now: with PIPELINING every command up to DATA (or BDAT with the body)
 * in one write; without it, the next command once the previous one was answered. */
static void txn_pump(struct conn *c)
{
	while (c->sent < c->nsteps) {
		size_t rcpt = 0;
		enum step st;

		if (!c->pipelining && c->sent > c->answered)
			return;
		st = step_at(c, c->sent, &rcpt);
		if (write_step(c, st, rcpt) != 0) {
			conn_fail(c, SMTP_EV_LOCAL, 0, "out of memory writing a command");
			return;
		}
		c->sent++;
	}
}

static void txn_start(struct conn *c, struct nmsg *m)
{
	smtp_body_scan(m->msg->data ? m->msg->data : "", m->msg->len, &c->body);
	c->m = m;
	if (c->body.longest > MIME_LINE_MAX) {
		/* never sendable; the connection stays as it was */
		c->m = NULL;
		struct smtp_outcome o = smtp_classify_event(SMTP_EV_LINE_TOO_LONG, 0, 0);
		for (size_t i = 0; i < m->n; i++)
			report(m, i, &o, o.why, 0, i > 0);
		nmsg_free(m);
		pump_soon(c->s);
		return;
	}
	c->rset_first = c->need_rset;
	c->need_rset = 0;
	c->pipelining = (c->ext.flags & SMTP_EXT_PIPELINING) != 0;
	c->bdat = (c->ext.flags & SMTP_EXT_CHUNKING) != 0;
	c->nsteps = (size_t)c->rset_first + 1 + m->n + 1;
	c->sent = c->answered = 0;
	c->mail_code = 0;
	c->rcpt_ok = 0;
	c->body_sent = 0;
	c->any_reply = 0;
	c->voided = 0;
	conn_set_state(c, CS_TXN);
	txn_pump(c);
}

static int set_fail_text(struct conn *c)
{
	free(c->fail_text);
	c->fail_text = strdup(c->reply.text);
	return c->fail_text ? 0 : -1;
}

static void send_body(struct conn *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	const struct buf *b = c->m->msg;

	if (smtp_dot_stuff(b->data ? b->data : "", b->len, emit_evbuffer, out) != 0) {
		conn_fail(c, SMTP_EV_LOCAL, 0, "out of memory writing the message");
		return;
	}
	c->body_sent = 1;
	conn_set_state(c, CS_BODY);
}

/* The reply to the final "." or to BDAT LAST. */
static void on_final_reply(struct conn *c)
{
	int code = c->reply.code;

	if (c->voided || c->rcpt_ok == 0 || (c->mail_code != 0 && c->mail_code / 100 != 2)) {
		c->voided = 1;
		if (c->mail_code / 100 != 2)
			txn_end(c, SMTP_EV_REFUSED, c->mail_code, c->fail_text);
		else
			txn_end(c, SMTP_EV_REFUSED, 0, "no recipient accepted");
		return;
	}
	if (code / 100 == 2)
		txn_end(c, SMTP_EV_ACCEPTED, code, c->reply.text);
	else
		txn_end(c, SMTP_EV_DATA_REFUSED, code, c->reply.text);
}

/* Re-arms the timer for the next reply awaited: RFC 5321 §4.5.3.2 gives DATA 2 minutes,
 * MAIL and RCPT 5, BDAT LAST (like the final ".") 10. */
static void txn_arm(struct conn *c)
{
	size_t rcpt = 0;
	enum step st = step_at(c, c->answered, &rcpt);
	uint64_t ms = cap_ms(c->s, st == ST_DATA ? T_DATA_INIT_MS : st == ST_BDAT ? T_DOT_MS : T_COMMAND_MS);
	struct timeval tv = { .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000 };

	evtimer_add(c->timer, &tv);
}

static void on_txn_reply(struct conn *c)
{
	struct nmsg *m = c->m;
	int code = c->reply.code;
	size_t rcpt = 0;
	enum step st;

	c->any_reply = 1;
	if (code == 421)
		c->doomed = 1;
	st = step_at(c, c->answered++, &rcpt);
	switch (st) {
	case ST_RSET:
		break;
	case ST_MAIL:
		c->mail_code = code;
		/* a relay's per-connection cap answers MAIL with 4xx: a fresh connection may do */
		if (code / 100 == 4)
			c->doomed = 1;
		if (code / 100 != 2) {
			if (set_fail_text(c) != 0) {
				conn_fail(c, SMTP_EV_LOCAL, 0, "out of memory");
				return;
			}
			c->voided = 1;
			if (!c->pipelining) {
				txn_end(c, SMTP_EV_REFUSED, code, c->fail_text);
				return;
			}
		}
		break;
	case ST_RCPT:
		m->rcode[rcpt] = code;
		if (code / 100 == 2) {
			c->rcpt_ok++;
		} else if (!c->voided) {
			free(m->rtext[rcpt]);
			m->rtext[rcpt] = strdup(c->reply.text);
		} else {
			m->rcode[rcpt] = 0; /* MAIL's refusal decides */
		}
		if (!c->pipelining && rcpt + 1 == m->n && c->rcpt_ok == 0) {
			/* every recipient refused: no DATA */
			c->voided = 1;
			txn_end(c, SMTP_EV_REFUSED, 0, "no recipient accepted");
			return;
		}
		break;
	case ST_DATA:
		if (code == 354) {
			if (c->voided || c->rcpt_ok == 0) {
				/* RFC 2920 §3.1: DATA accepted anyway, so end it empty */
				c->voided = 1;
				if (conn_write(c, ".\r\n", 3) != 0) {
					conn_fail(c, SMTP_EV_LOCAL, 0, "out of memory");
					return;
				}
				conn_set_state(c, CS_BODY);
				return;
			}
			send_body(c);
			return;
		}
		if (c->voided || c->rcpt_ok == 0) {
			on_final_reply(c);
			return;
		}
		if (set_fail_text(c) != 0) {
			conn_fail(c, SMTP_EV_LOCAL, 0, "out of memory");
			return;
		}
		txn_end(c, SMTP_EV_REFUSED, code, c->fail_text);
		return;
	case ST_BDAT:
		on_final_reply(c);
		return;
	}
	txn_pump(c);
	if (c->state == CS_TXN)
		txn_arm(c);
}

/* ---- session set-up: greeting, EHLO, STARTTLS, AUTH ------------------------------------ */

static void session_ready(struct conn *c);

static int send_ehlo(struct conn *c, const char *verb)
{
	memset(&c->ext, 0, sizeof(c->ext));
	conn_set_state(c, verb[0] == 'E' ? CS_EHLO : CS_HELO);
	return conn_printf(c, "%s %s\r\n", verb, c->s->helo);
}

static int host_is_ip(const char *h)
{
	unsigned char a[16];

	return inet_pton(AF_INET, h, a) == 1 || inet_pton(AF_INET6, h, a) == 1;
}

/* A new SSL object verifying the relay's certificate against smtp.url's host. */
static SSL *ssl_for(struct native *s)
{
	SSL *ssl = SSL_new(s->ssl_ctx);

	if (ssl == NULL)
		return NULL;
	if (host_is_ip(s->host)) {
		if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), s->host) != 1)
			goto fail;
	} else {
		if (SSL_set_tlsext_host_name(ssl, s->host) != 1 || SSL_set1_host(ssl, s->host) != 1)
			goto fail;
	}
	return ssl;
fail:
	SSL_free(ssl);
	return NULL;
}

static void on_read(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);

static void start_tls(struct conn *c)
{
	struct native *s = c->s;
	SSL *ssl;
	struct bufferevent *tb;

	/* bytes after the 220 were sent before the handshake: an injection attempt */
	if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
		conn_fail(c, SMTP_EV_MALFORMED, 0, "data after the reply to STARTTLS");
		return;
	}
	ssl = ssl_for(s);
	if (ssl == NULL) {
		conn_fail(c, SMTP_EV_LOCAL, 0, "cannot create a TLS session");
		return;
	}
	tb = bufferevent_openssl_filter_new(s->base, c->bev, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	if (tb == NULL) {
		SSL_free(ssl);
		conn_fail(c, SMTP_EV_LOCAL, 0, "cannot create a TLS session");
		return;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(tb, 1);
	c->bev = tb;
	bufferevent_setcb(tb, on_read, NULL, on_event, c);
	bufferevent_enable(tb, EV_READ | EV_WRITE);
	conn_set_state(c, CS_TLS);
}

/* Re-reads the XOAUTH2 token when its file changed (an external refresher rewrites it),
 * through file_read: a FIFO or a device put in its place must not block the loop. */
static const char *oauth_token(struct native *s)
{
	struct stat st;
	char *tok;
	size_t n = 0;
	int err;

	if (stat(s->token_file, &st) != 0)
		return NULL;
	if (s->token && st.st_mtim.tv_sec == s->token_st.st_mtim.tv_sec &&
	    st.st_mtim.tv_nsec == s->token_st.st_mtim.tv_nsec && st.st_size == s->token_st.st_size &&
	    st.st_ino == s->token_st.st_ino)
		return s->token;
	tok = file_read(s->token_file, 8191, &n, &err);
	if (tok == NULL)
		return NULL;
	while (n > 0 && (tok[n - 1] == '\n' || tok[n - 1] == '\r' || tok[n - 1] == ' '))
		n--;
	tok[n] = '\0';
	if (s->token) {
		memset(s->token, 0, strlen(s->token));
		free(s->token);
	}
	s->token = tok;
	s->token_st = st;
	return s->token;
}

/* Writes "prefix base64(data)\r\n" and wipes the copy (it holds a secret). */
static int write_b64(struct conn *c, const char *prefix, const char *data, size_t n)
{
	struct buf b;
	int rc;

	buf_init(&b);
	rc = buf_puts(&b, prefix) != 0 || mime_base64(&b, data, n) != 0 || buf_puts(&b, "\r\n") != 0 ? -1 : 0;
	if (rc == 0)
		rc = conn_write(c, b.data, b.len);
	if (b.data)
		memset(b.data, 0, b.cap);
	buf_free(&b);
	return rc;
}

static int auth_plain(struct conn *c)
{
	struct native *s = c->s;
	size_t ul = strlen(s->username), pl = strlen(s->password ? s->password : "");
	char *raw = malloc(ul + pl + 2);
	int rc;

	if (raw == NULL)
		return -1;
	raw[0] = '\0';
	memcpy(raw + 1, s->username, ul);
	raw[1 + ul] = '\0';
	memcpy(raw + 2 + ul, s->password ? s->password : "", pl);
	rc = write_b64(c, "AUTH PLAIN ", raw, ul + pl + 2);
	memset(raw, 0, ul + pl + 2);
	free(raw);
	return rc;
}

static int auth_xoauth2(struct conn *c)
{
	struct native *s = c->s;
	const char *tok = oauth_token(s);
	struct buf b;
	int rc;

	if (tok == NULL)
		return 1;
	buf_init(&b);
	rc = buf_printf(&b, "user=%s\001auth=Bearer %s\001\001", s->username, tok) != 0
		     ? -1
		     : write_b64(c, "AUTH XOAUTH2 ", b.data, b.len);
	if (b.data)
		memset(b.data, 0, b.cap);
	buf_free(&b);
	return rc;
}

static void auth_start(struct conn *c)
{
	struct native *s = c->s;
	int rc;

	if (s->token_file && s->token_file[0])
		c->auth_mech = SMTP_AUTH_XOAUTH2;
	else if (c->ext.auth & SMTP_AUTH_PLAIN)
		c->auth_mech = SMTP_AUTH_PLAIN;
	else if (c->ext.auth & SMTP_AUTH_LOGIN)
		c->auth_mech = SMTP_AUTH_LOGIN;
	else
		c->auth_mech = 0;
	if (c->auth_mech == 0 || !(c->ext.auth & c->auth_mech)) {
		conn_fail(c, SMTP_EV_AUTH_FAILED, 0, "no AUTH mechanism in common with the relay");
		return;
	}
	c->auth_step = 0;
	conn_set_state(c, CS_AUTH);
	if (c->auth_mech == SMTP_AUTH_PLAIN)
		rc = auth_plain(c);
	else if (c->auth_mech == SMTP_AUTH_LOGIN)
		rc = conn_write(c, "AUTH LOGIN\r\n", 12);
	else
		rc = auth_xoauth2(c);
	if (rc > 0)
		conn_fail(c, SMTP_EV_AUTH_FAILED, 0, "cannot read smtp.oauth_token_file");
	else if (rc < 0)
		conn_fail(c, SMTP_EV_LOCAL, 0, "out of memory");
}

static void on_auth_reply(struct conn *c)
{
	struct native *s = c->s;
	int code = c->reply.code;
	int rc = 0;

	if (code == 235) {
		session_ready(c);
		return;
	}
	if (code != 334 || c->auth_step >= 2) {
		conn_fail(c, SMTP_EV_AUTH_FAILED, code, c->reply.text);
		return;
	}
	c->auth_step++;
	if (c->auth_mech == SMTP_AUTH_LOGIN && c->auth_step == 1)
		rc = write_b64(c, "", s->username, strlen(s->username));
	else if (c->auth_mech == SMTP_AUTH_LOGIN)
		rc = write_b64(c, "", s->password ? s->password : "", strlen(s->password ? s->password : ""));
	else
		/* XOAUTH2 / PLAIN: a 334 carries an error description; an empty line ends it */
		rc = conn_write(c, "\r\n", 2);
	if (rc != 0)
		conn_fail(c, SMTP_EV_LOCAL, 0, "out of memory");
}

/* EHLO answered (possibly after STARTTLS): TLS, then AUTH, then ready. */
static void after_ehlo(struct conn *c)
{
	struct native *s = c->s;

	if (!c->tls && !s->implicit_tls && s->tls != SMTP_TLS_NONE) {
		if (c->ext.flags & SMTP_EXT_STARTTLS) {
			conn_set_state(c, CS_STARTTLS);
			if (conn_write(c, "STARTTLS\r\n", 10) != 0)
				conn_fail(c, SMTP_EV_LOCAL, 0, "out of memory");
			return;
		}
		if (s->tls == SMTP_TLS_REQUIRED) {
			conn_fail(c, SMTP_EV_STARTTLS_FAILED, 0, "relay does not offer STARTTLS (smtp.tls: required)");
			return;
		}
	}
	/* like libcurl: no AUTH advertised, no AUTH tried (MAIL then gets 530) */
	if (s->username && s->username[0] && (c->ext.flags & SMTP_EXT_AUTH)) {
		auth_start(c);
		return;
	}
	session_ready(c);
}

static void on_setup_reply(struct conn *c)
{
	struct native *s = c->s;
	int code = c->reply.code;

	switch (c->state) {
	case CS_GREETING:
		if (code != 220) {
			conn_fail(c, SMTP_EV_GREETING, code, c->reply.text);
			return;
		}
		if (send_ehlo(c, "EHLO") != 0)
			conn_fail(c, SMTP_EV_LOCAL, 0, "out of memory");
		return;
	case CS_EHLO:
		if (code / 100 == 2) {
			after_ehlo(c);
			return;
		}
		/* an old server: HELO, unless TLS was required (it needs EHLO) */
		if (c->tls || (s->tls == SMTP_TLS_REQUIRED && !s->implicit_tls) || code == 421) {
			conn_fail(c, code == 421 ? SMTP_EV_GREETING : SMTP_EV_EHLO_REFUSED, code, c->reply.text);
			return;
		}
		if (send_ehlo(c, "HELO") != 0)
			conn_fail(c, SMTP_EV_LOCAL, 0, "out of memory");
		return;
	case CS_HELO:
		if (code / 100 != 2) {
			conn_fail(c, SMTP_EV_EHLO_REFUSED, code, c->reply.text);
			return;
		}
		memset(&c->ext, 0, sizeof(c->ext));
		after_ehlo(c);
		return;
	case CS_STARTTLS:
		if (code == 220) {
			start_tls(c);
			return;
		}
		if (s->tls == SMTP_TLS_REQUIRED) {
			conn_fail(c, SMTP_EV_STARTTLS_FAILED, code, c->reply.text);
			return;
		}
		/* opportunistic: go on in clear text, as libcurl's CURLUSESSL_TRY does */
		c->ext.flags &= ~SMTP_EXT_STARTTLS;
		if (s->username && s->username[0] && (c->ext.flags & SMTP_EXT_AUTH))
			auth_start(c);
		else
			session_ready(c);
		return;
	case CS_AUTH:
		on_auth_reply(c);
		return;
	default:
		return;
	}
}

/* The session can carry mail: take the message it was opened for, or wait in the pool. */
static void session_ready(struct conn *c)
{
	struct nmsg *m = c->m;

	conn_set_state(c, CS_READY);
	if (m != NULL) {
		c->m = NULL;
		txn_start(c, m);
	} else {
		pump_soon(c->s);
	}
}

/* ---- I/O callbacks ------------------------------------------------------------------- */

static void on_reply(struct conn *c)
{
	switch (c->state) {
	case CS_GREETING:
	case CS_EHLO:
	case CS_HELO:
	case CS_STARTTLS:
	case CS_AUTH:
		on_setup_reply(c);
		return;
	case CS_TXN:
		on_txn_reply(c);
		return;
	case CS_BODY:
		on_final_reply(c);
		return;
	case CS_QUIT:
	case CS_READY:
		/* the reply to QUIT, or an idle relay saying goodbye (421): done with it */
		conn_close(c);
		return;
	case CS_CONNECT:
	case CS_TLS:
	case CS_DEAD:
		conn_fail(c, SMTP_EV_MALFORMED, 0, "reply out of turn");
		return;
	}
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	while (c->state != CS_DEAD && c->bev == bev) {
		size_t eol = 0, len;
		struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol, EVBUFFER_EOL_CRLF);
		enum smtp_line_status ls;
		const char *line;

		if (p.pos < 0) {
			if (evbuffer_get_length(in) > SMTP_LINE_MAX)
				conn_fail(c, SMTP_EV_MALFORMED, 0, "reply line too long");
			return;
		}
		len = (size_t)p.pos;
		if (len > SMTP_LINE_MAX) {
			conn_fail(c, SMTP_EV_MALFORMED, 0, "reply line too long");
			return;
		}
		line = (const char *)evbuffer_pullup(in, (ev_ssize_t)(len + eol));
		if (line == NULL) {
			conn_fail(c, SMTP_EV_LOCAL, 0, "out of memory");
			return;
		}
		ls = smtp_reply_line(&c->reply, line, len);
		if (ls != SMTP_LINE_BAD && c->state == CS_EHLO && c->reply.nlines > 1)
			smtp_ext_line(&c->ext, line, len);
		evbuffer_drain(in, len + eol);
		if (ls == SMTP_LINE_BAD) {
			conn_fail(c, SMTP_EV_MALFORMED, 0, "malformed reply from the relay");
			return;
		}
		if (ls == SMTP_LINE_LAST) {
			on_reply(c);
			smtp_reply_reset(&c->reply);
		}
	}
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	struct native *s = c->s;
	unsigned long e;
	char text[300];

	if (c->bev != bev || c->state == CS_DEAD)
		return;
	if (what & BEV_EVENT_CONNECTED) {
		if (c->state == CS_CONNECT) {
			c->tls = s->implicit_tls;
			conn_set_state(c, CS_GREETING);
		} else if (c->state == CS_TLS) {
			c->tls = 1;
			if (send_ehlo(c, "EHLO") != 0)
				conn_fail(c, SMTP_EV_LOCAL, 0, "out of memory");
		}
		return;
	}
	if (c->state == CS_TLS || (c->state == CS_CONNECT && s->implicit_tls)) {
		SSL *ssl = bufferevent_openssl_get_ssl(bev);
		long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;

		e = bufferevent_get_openssl_error(bev);
		if (vr != X509_V_OK) {
			snprintf(text, sizeof(text), "TLS certificate verification failed: %s",
				 X509_verify_cert_error_string(vr));
			conn_fail(c, SMTP_EV_TLS_VERIFY, 0, text);
			return;
		}
		if (e != 0 || c->state == CS_TLS) {
			char es[200];
			ERR_error_string_n(e, es, sizeof(es));
			snprintf(text, sizeof(text), "TLS handshake failed: %s", e ? es : "connection closed");
			conn_fail(c, SMTP_EV_TLS_HANDSHAKE, 0, text);
			return;
		}
	}
	if (c->state == CS_CONNECT) {
		int dns = bufferevent_socket_get_dns_error(bev);

		if (dns != 0) {
			snprintf(text, sizeof(text), "cannot resolve %s: %s", s->host, evutil_gai_strerror(dns));
			conn_fail(c, SMTP_EV_RESOLVE, 0, text);
		} else {
			snprintf(text, sizeof(text), "cannot connect to %s:%d: %s", s->host, s->port,
				 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
			conn_fail(c, SMTP_EV_CONNECT, 0, text);
		}
		return;
	}
	if (c->state == CS_QUIT || (c->state == CS_READY && c->m == NULL)) {
		conn_close(c);
		return;
	}
	conn_fail(c, SMTP_EV_CLOSED, 0,
		  c->body_sent ? "connection lost after the message was sent" : "connection lost");
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	(void)fd;
	(void)what;

	switch (c->state) {
	case CS_READY:
		/* idle too long: say goodbye before the relay does */
		conn_set_state(c, CS_QUIT);
		if (conn_write(c, "QUIT\r\n", 6) != 0)
			conn_close(c);
		return;
	case CS_QUIT:
		conn_close(c);
		return;
	case CS_CONNECT:
		conn_fail(c, SMTP_EV_CONNECT, 0, "connect timed out");
		return;
	case CS_DEAD:
		return;
	default:
		conn_fail(c, SMTP_EV_TIMEOUT, 0,
			  c->body_sent ? "timeout waiting for the reply to the message"
				       : "timeout waiting for the relay");
		return;
	}
}

/* Opens a connection for m (it carries m through the set-up, so a failure there is
 * reported on m, which keeps the breaker informed). */
static int conn_open(struct native *s, struct nmsg *m)
{
	struct conn *c = calloc(1, sizeof(*c));
	int slot = -1;

	if (c == NULL)
		return -1;
	for (int i = 0; i < s->pool; i++)
		if (s->conns[i] == NULL) {
			slot = i;
			break;
		}
	c->s = s;
	c->id = ++s->next_id;
	c->state = CS_CONNECT;
	c->m = m;
	c->timer = evtimer_new(s->base, on_timer, c);
	if (s->implicit_tls) {
		SSL *ssl = ssl_for(s);
		c->bev = ssl ? bufferevent_openssl_socket_new(s->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
							      BEV_OPT_CLOSE_ON_FREE)
			     : NULL;
		if (c->bev == NULL && ssl)
			SSL_free(ssl);
		if (c->bev)
			bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
	} else {
		c->bev = bufferevent_socket_new(s->base, -1, BEV_OPT_CLOSE_ON_FREE);
	}
	if (slot < 0 || c->timer == NULL || c->bev == NULL) {
		c->m = NULL;
		conn_free(c);
		return -1;
	}
	s->conns[slot] = c;
	s->nconns++;
	smtp_reply_reset(&c->reply);
	bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	conn_set_state(c, CS_CONNECT);
	if (bufferevent_socket_connect_hostname(c->bev, s->dns, AF_UNSPEC, s->host, s->port) != 0) {
		/* reported from the loop, like any other connect failure */
		event_active(c->timer, EV_TIMEOUT, 0);
	}
	return 0;
}

/* ---- the queue ----------------------------------------------------------------------- */

static struct conn *idle_conn(struct native *s)
{
	for (int i = 0; i < s->pool; i++) {
		struct conn *c = s->conns[i];
		if (c && c->state == CS_READY && c->m == NULL)
			return c;
	}
	return NULL;
}

static void on_pump(evutil_socket_t fd, short what, void *arg)
{
	struct native *s = arg;
	(void)fd;
	(void)what;

	while (s->qhead && !s->aborting) {
		struct conn *c = idle_conn(s);
		uint64_t now = clock_mono_ms();
		struct nmsg *m;

		if (c == NULL && s->nconns >= s->pool)
			return;
		if (!ratelimit_take(&s->rl, now)) {
			uint64_t w = ratelimit_wait_ms(&s->rl, now);
			struct timeval tv = { .tv_sec = (time_t)(w / 1000), .tv_usec = (suseconds_t)(w % 1000) * 1000 };
			if (w == 0)
				tv.tv_usec = 1000;
			evtimer_add(s->ev_rl, &tv);
			return;
		}
		m = queue_pop(s);
		if (c != NULL) {
			txn_start(c, m);
		} else if (conn_open(s, m) != 0) {
			struct smtp_outcome o = smtp_classify_event(SMTP_EV_LOCAL, 0, 0);
			for (size_t i = 0; i < m->n; i++)
				report(m, i, &o, "cannot open a connection", 0, i > 0);
			nmsg_free(m);
		}
	}
}

static void cancel_queue(struct native *s, const char *why)
{
	struct nmsg *m;

	while ((m = queue_pop(s)) != NULL)
		nmsg_not_attempted(m, why);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
	struct native *s = arg;
	(void)fd;
	(void)what;

	if (s->cancel_pending) {
		s->cancel_pending = 0;
		cancel_queue(s, "not attempted: relay paused");
	}
}

/* ---- engine entry points ------------------------------------------------------------- */

static void native_free(void *impl);

/* smtp://host[:port][/helo] or smtps://...; [v6] literals allowed. */
static int parse_url(struct native *s, const char *url, const char *helo)
{
	const char *h, *slash;
	char why[128];
	struct hostport hp;
	long port;

	s->implicit_tls = strncmp(url, "smtps://", 8) == 0;
	h = url + (s->implicit_tls ? 8 : 7);
	slash = strchr(h, '/');
	if (hostport_split(h, slash ? (size_t)(slash - h) : strlen(h), &hp, why, sizeof(why)) < 0)
		return -1;
	port = hp.port ? hostport_port(hp.port, hp.port_len) : (s->implicit_tls ? 465 : 25);
	if (port < 1)
		return -1;
	s->port = (int)port;
	s->host = strndup(hp.host, hp.host_len);
	if (helo && helo[0])
		s->helo = strdup(helo);
	else if (slash && slash[1])
		s->helo = strdup(slash + 1);
	else
		s->helo = strdup("localhost");
	return s->host && s->helo ? 0 : -1;
}

static void *native_new(struct event_base *base, const struct config *cfg, char *errbuf, size_t errlen)
{
	struct native *s = calloc(1, sizeof(*s));

	if (s == NULL) {
		snprintf(errbuf, errlen, "out of memory");
		return NULL;
	}
	s->base = base;
	s->tls = cfg->smtp_tls;
	s->pool = cfg->smtp_pool_size > 0 ? cfg->smtp_pool_size : 1;
	s->max_msgs = cfg->smtp_max_messages > 0 ? cfg->smtp_max_messages : 100;
	s->connect_ms = (uint64_t)cfg->smtp_connect_timeout_ms;
	s->timeout_ms = (uint64_t)cfg->smtp_timeout_ms;
	ratelimit_init(&s->rl, cfg->smtp_rate_limit, 1);
	if (parse_url(s, cfg->smtp_url, cfg->smtp_helo) != 0) {
		snprintf(errbuf, errlen, "smtp.url: cannot parse host and port");
		native_free(s);
		return NULL;
	}
	s->username = cfg->smtp_username ? strdup(cfg->smtp_username) : NULL;
	s->password = cfg->smtp_password ? strdup(cfg->smtp_password) : NULL;
	s->token_file = cfg->smtp_oauth_token_file ? strdup(cfg->smtp_oauth_token_file) : NULL;
	s->conns = calloc((size_t)s->pool, sizeof(*s->conns));
	s->ev_pump = event_new(base, -1, 0, on_pump, s);
	s->ev_kick = event_new(base, -1, 0, on_kick, s);
	s->ev_rl = evtimer_new(base, on_pump, s);
	s->ev_reap = event_new(base, -1, 0, on_reap, s);
	s->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	if (s->dns == NULL)
		s->dns = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	if (s->conns == NULL || s->ev_pump == NULL || s->ev_kick == NULL || s->ev_rl == NULL || s->ev_reap == NULL ||
	    s->dns == NULL) {
		snprintf(errbuf, errlen, "out of memory");
		native_free(s);
		return NULL;
	}
	if (s->implicit_tls || s->tls != SMTP_TLS_NONE) {
		s->ssl_ctx = SSL_CTX_new(TLS_client_method());
		if (s->ssl_ctx == NULL) {
			snprintf(errbuf, errlen, "cannot create a TLS context");
			native_free(s);
			return NULL;
		}
		SSL_CTX_set_min_proto_version(s->ssl_ctx, TLS1_2_VERSION);
		SSL_CTX_set_verify(s->ssl_ctx, SSL_VERIFY_PEER, NULL);
		/* like libcurl's CAINFO: a CA file replaces the system store */
		if (cfg->smtp_ca_file && cfg->smtp_ca_file[0]) {
			if (SSL_CTX_load_verify_locations(s->ssl_ctx, cfg->smtp_ca_file, NULL) != 1) {
				snprintf(errbuf, errlen, "smtp.ca_file: cannot load %s", cfg->smtp_ca_file);
				native_free(s);
				return NULL;
			}
		} else if (SSL_CTX_set_default_verify_paths(s->ssl_ctx) != 1) {
			snprintf(errbuf, errlen, "cannot load the system CA store");
			native_free(s);
			return NULL;
		}
	}
	return s;
}

static int native_send(void *impl, const char *mail_from, const char *const *rcpt, size_t nrcpt, const struct buf *msg,
		       smtp_done_fn done, void *arg)
{
	struct native *s = impl;
	struct nmsg *m = nmsg_new(mail_from, rcpt, nrcpt, msg, done, arg);

	if (m == NULL)
		return -1;
	queue_push(s, m, 0);
	pump_soon(s);
	return 0;
}

static void native_cancel_queued(void *impl)
{
	struct native *s = impl;

	s->cancel_pending = 1;
	event_active(s->ev_kick, 0, 0);
}

static void native_abort_all(void *impl)
{
	struct native *s = impl;

	s->aborting = 1;
	for (int i = 0; i < s->pool; i++) {
		struct conn *c = s->conns[i];
		struct nmsg *m;

		if (c == NULL)
			continue;
		m = c->m;
		c->m = NULL;
		if (m != NULL) {
			if (c->body_sent) {
				struct smtp_outcome o = { SMTP_UNKNOWN, 0, 0, 0, 1, "aborted after DATA" };
				for (size_t k = 0; k < m->n; k++)
					report(m, k, &o, "aborted while waiting for the relay's reply to the message",
					       0, k > 0);
				nmsg_free(m);
			} else {
				nmsg_not_attempted(m, "aborted before the message was sent");
			}
		}
		conn_close(c);
	}
	cancel_queue(s, "not attempted: shutting down");
}

static void native_set_rate(void *impl, double per_s)
{
	struct native *s = impl;

	ratelimit_init(&s->rl, per_s, 1);
	pump_soon(s);
}

static void native_free(void *impl)
{
	struct native *s = impl;

	if (s == NULL)
		return;
	for (int i = 0; s->conns && i < s->pool; i++) {
		struct conn *c = s->conns[i];
		if (c == NULL)
			continue;
		if (c->m)
			nmsg_free(c->m);
		conn_free(c);
	}
	while (s->dead) {
		struct conn *c = s->dead;
		s->dead = c->next_dead;
		conn_free(c);
	}
	while (s->qhead)
		nmsg_free(queue_pop(s));
	free(s->conns);
	if (s->ev_pump)
		event_free(s->ev_pump);
	if (s->ev_kick)
		event_free(s->ev_kick);
	if (s->ev_rl)
		event_free(s->ev_rl);
	if (s->ev_reap)
		event_free(s->ev_reap);
	if (s->dns)
		evdns_base_free(s->dns, 0);
	if (s->ssl_ctx)
		SSL_CTX_free(s->ssl_ctx);
	if (s->password) {
		memset(s->password, 0, strlen(s->password));
		free(s->password);
	}
	if (s->token) {
		memset(s->token, 0, strlen(s->token));
		free(s->token);
	}
	free(s->username);
	free(s->token_file);
	free(s->host);
	free(s->helo);
	free(s);
}

const struct smtp_engine smtp_engine_native = {
	.name = "native",
	.create = native_new,
	.send = native_send,
	.cancel_queued = native_cancel_queued,
	.abort_all = native_abort_all,
	.set_rate = native_set_rate,
	.destroy = native_free,
};
