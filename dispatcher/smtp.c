/* SMTP sink over libcurl multi, driven by libevent sockets and timers (curl's
 * multi-event pattern, PITFALLS §3.1). One transfer = one envelope recipient. */
#include "smtp.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "config.h"
#include "log.h"
#include "ratelimit.h"

struct xfer {
	struct xfer *next;
	struct smtp_sink *s;
	CURL *easy;
	struct curl_slist *rcpts;
	char *mail_from;
	char *rcpt;
	const struct buf *msg;
	size_t off;
	smtp_done_fn done;
	void *arg;
	size_t index;
	uint64_t started_ms;
	int retried;
	int eof; /* the whole message was handed to libcurl */
	char errbuf[CURL_ERROR_SIZE];
	char reply[512];
};

struct sockinfo {
	struct event *ev;
	struct smtp_sink *s;
};

struct smtp_sink {
	struct event_base *base;
	CURLM *multi;
	struct event *timer;
	struct event *kick;
	struct event *rl_timer;
	int running_handles;

	char *url;
	enum smtp_tls_mode tls;
	char *ca_file;
	char *username;
	char *password;
	int pool;
	long connect_timeout_ms;
	long timeout_ms;

	struct ratelimit rl;
	int cancel_pending;
	struct xfer *qhead, *qtail; /* not started */
	struct xfer *running;       /* in the multi handle */
	size_t nqueued, nrunning;
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void xfer_free(struct xfer *x)
{
	if (x->easy)
		curl_easy_cleanup(x->easy);
	curl_slist_free_all(x->rcpts);
	free(x->mail_from);
	free(x->rcpt);
	free(x);
}

static size_t read_cb(char *out, size_t size, size_t nmemb, void *arg)
{
	struct xfer *x = arg;
	size_t want = size * nmemb;
	size_t left = x->msg->len - x->off;
	size_t n = left < want ? left : want;

	memcpy(out, x->msg->data + x->off, n);
	x->off += n;
	if (n == 0)
		x->eof = 1;
	return n;
}

/* libcurl hands every server reply line of SMTP to the header callback: keep the last,
 * so a refusal is stored with the server's own text. */
static size_t header_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	struct xfer *x = arg;
	size_t n = size * nmemb;
	size_t len = n < sizeof(x->reply) - 1 ? n : sizeof(x->reply) - 1;

	/* the reply to QUIT says nothing about the message */
	if (n >= 3 && memcmp(data, "221", 3) == 0)
		return n;
	memcpy(x->reply, data, len);
	x->reply[len] = '\0';
	x->reply[strcspn(x->reply, "\r\n")] = '\0';
	return n;
}

static void complete(struct xfer *x, const struct smtp_result *r)
{
	x->done(x->arg, x->index, r);
	xfer_free(x);
}

static void complete_not_attempted(struct xfer *x, const char *why)
{
	struct smtp_result r = { .not_attempted = 1, .text = why };
	r.outcome.verdict = SMTP_RETRY;
	complete(x, &r);
}

static int xfer_setup(struct xfer *x)
{
	struct smtp_sink *s = x->s;
	CURL *e = curl_easy_init();
	char addr[1024];

	if (e == NULL)
		return -1;
	x->easy = e;
	snprintf(addr, sizeof(addr), "<%s>", x->rcpt);
	x->rcpts = curl_slist_append(NULL, addr);
	if (x->rcpts == NULL)
		return -1;
	snprintf(addr, sizeof(addr), "<%s>", x->mail_from);
	curl_easy_setopt(e, CURLOPT_URL, s->url);
	curl_easy_setopt(e, CURLOPT_MAIL_FROM, addr);
	curl_easy_setopt(e, CURLOPT_MAIL_RCPT, x->rcpts);
	curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(e, CURLOPT_READFUNCTION, read_cb);
	curl_easy_setopt(e, CURLOPT_READDATA, x);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
	curl_easy_setopt(e, CURLOPT_PRIVATE, x);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, s->connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, s->timeout_ms);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	switch (s->tls) {
	case SMTP_TLS_REQUIRED:
		/* never CURLUSESSL_TRY here: a stripped STARTTLS would go on in clear text */
		curl_easy_setopt(e, CURLOPT_USE_SSL, (long)CURLUSESSL_ALL);
		break;
	case SMTP_TLS_OPPORTUNISTIC:
		curl_easy_setopt(e, CURLOPT_USE_SSL, (long)CURLUSESSL_TRY);
		break;
	case SMTP_TLS_NONE:
		curl_easy_setopt(e, CURLOPT_USE_SSL, (long)CURLUSESSL_NONE);
		break;
	}
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (s->ca_file && s->ca_file[0])
		curl_easy_setopt(e, CURLOPT_CAINFO, s->ca_file);
	if (s->username && s->username[0]) {
		curl_easy_setopt(e, CURLOPT_USERNAME, s->username);
		curl_easy_setopt(e, CURLOPT_PASSWORD, s->password ? s->password : "");
	}
	return 0;
}

static void start_queued(struct smtp_sink *s)
{
	while (s->qhead && s->nrunning < (size_t)s->pool) {
		struct xfer *x = s->qhead;
		uint64_t now = now_ms();

		if (!ratelimit_take(&s->rl, now)) {
			uint64_t wait = ratelimit_wait_ms(&s->rl, now);
			struct timeval tv = { .tv_sec = (time_t)(wait / 1000),
					      .tv_usec = (suseconds_t)((wait % 1000) * 1000) };
			if (!evtimer_pending(s->rl_timer, NULL))
				evtimer_add(s->rl_timer, &tv);
			return;
		}
		s->qhead = x->next;
		if (s->qhead == NULL)
			s->qtail = NULL;
		s->nqueued--;
		x->next = NULL;
		x->started_ms = now;
		if (xfer_setup(x) != 0 || curl_multi_add_handle(s->multi, x->easy) != CURLM_OK) {
			complete_not_attempted(x, "cannot set up transfer");
			continue;
		}
		x->next = s->running;
		s->running = x;
		s->nrunning++;
	}
}

static void unlink_running(struct smtp_sink *s, struct xfer *x)
{
	for (struct xfer **p = &s->running; *p; p = &(*p)->next) {
		if (*p == x) {
			*p = x->next;
			s->nrunning--;
			break;
		}
	}
	x->next = NULL;
}

static void check_multi_info(struct smtp_sink *s)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(s->multi, &left)) != NULL) {
		struct xfer *x = NULL;
		long code = 0, connects = 0;
		CURLcode rc;
		struct smtp_result r;

		if (msg->msg != CURLMSG_DONE)
			continue;
		rc = msg->data.result;
		/* read everything before remove_handle (PITFALLS §3.1) */
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
		curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &code);
		curl_easy_getinfo(msg->easy_handle, CURLINFO_NUM_CONNECTS, &connects);
		curl_multi_remove_handle(s->multi, msg->easy_handle);
		unlink_running(s, x);

		memset(&r, 0, sizeof(r));
		r.outcome = smtp_classify((int)rc, code,
					  (connects == 0 ? SMTP_F_REUSED : 0) | (x->eof ? SMTP_F_DATA_SENT : 0));
		r.duration_s = (double)(now_ms() - x->started_ms) / 1000.0;
		if (r.outcome.verdict == SMTP_RETRY_NOW && !x->retried) {
			/* the relay silently closed a cached connection: resend at once, uncharged */
			x->retried = 1;
			curl_easy_cleanup(x->easy);
			x->easy = NULL;
			curl_slist_free_all(x->rcpts);
			x->rcpts = NULL;
			x->off = 0;
			x->eof = 0;
			x->reply[0] = '\0';
			x->errbuf[0] = '\0';
			x->next = s->qhead;
			s->qhead = x;
			if (s->qtail == NULL)
				s->qtail = x;
			s->nqueued++;
			continue;
		}
		if (r.outcome.verdict == SMTP_OK)
			r.text = x->reply;
		else if (x->reply[0] && code >= 400)
			r.text = x->reply;
		else if (x->errbuf[0])
			r.text = x->errbuf;
		else
			r.text = curl_easy_strerror(rc);
		complete(x, &r);
	}
	start_queued(s);
}

static void on_socket_event(evutil_socket_t fd, short kind, void *arg)
{
	struct smtp_sink *s = arg;
	int action = ((kind & EV_READ) ? CURL_CSELECT_IN : 0) | ((kind & EV_WRITE) ? CURL_CSELECT_OUT : 0);

	curl_multi_socket_action(s->multi, fd, action, &s->running_handles);
	/* no evtimer_del when nothing runs: check_multi_info may just have added the next
	 * queued transfer, whose start depends on the timer libcurl armed for it */
	check_multi_info(s);
}

static void on_timeout(evutil_socket_t fd, short kind, void *arg)
{
	struct smtp_sink *s = arg;
	(void)fd;
	(void)kind;
	curl_multi_socket_action(s->multi, CURL_SOCKET_TIMEOUT, 0, &s->running_handles);
	check_multi_info(s);
}

/* CURLMOPT_TIMERFUNCTION: only arms or deletes our timer; never calls libcurl. */
static int timer_fn(CURLM *m, long timeout_ms, void *arg)
{
	struct smtp_sink *s = arg;
	(void)m;

	if (timeout_ms < 0) {
		evtimer_del(s->timer);
	} else {
		struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
		evtimer_add(s->timer, &tv);
	}
	return 0;
}

/* CURLMOPT_SOCKETFUNCTION: one persistent event per socket, re-assigned when the wanted
 * direction changes; never close the fd (libcurl owns it). */
static int socket_fn(CURL *e, curl_socket_t fd, int what, void *arg, void *sockp)
{
	struct smtp_sink *s = arg;
	struct sockinfo *si = sockp;
	short kind;
	(void)e;

	if (what == CURL_POLL_REMOVE) {
		if (si) {
			event_free(si->ev);
			free(si);
			curl_multi_assign(s->multi, fd, NULL);
		}
		return 0;
	}
	kind = (short)(((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0) |
		       EV_PERSIST);
	if (si == NULL) {
		si = calloc(1, sizeof(*si));
		if (si == NULL)
			return -1;
		si->s = s;
		si->ev = event_new(s->base, fd, kind, on_socket_event, s);
		curl_multi_assign(s->multi, fd, si);
	} else {
		event_del(si->ev);
		event_assign(si->ev, s->base, fd, kind, on_socket_event, s);
	}
	event_add(si->ev, NULL);
	return 0;
}

static void on_kick(evutil_socket_t fd, short kind, void *arg)
{
	struct smtp_sink *s = arg;
	(void)fd;
	(void)kind;

	if (s->cancel_pending) {
		s->cancel_pending = 0;
		while (s->qhead) {
			struct xfer *x = s->qhead;
			s->qhead = x->next;
			s->nqueued--;
			complete_not_attempted(x, "not attempted: relay paused");
		}
		s->qtail = NULL;
	}
	start_queued(s);
}

static char *build_url(const char *url, const char *helo)
{
	struct buf b;
	const char *rest;
	char *out;

	/* The URL path is the EHLO name for libcurl's SMTP: smtp://host:port/helo.name */
	buf_init(&b);
	rest = strstr(url, "://");
	rest = rest ? strchr(rest + 3, '/') : NULL;
	if (rest != NULL) {
		out = strdup(url);
		return out;
	}
	if (buf_puts(&b, url) != 0 || buf_putc(&b, '/') != 0 || buf_puts(&b, helo && helo[0] ? helo : "localhost") != 0) {
		buf_free(&b);
		return NULL;
	}
	out = buf_steal(&b);
	buf_free(&b);
	return out;
}

struct smtp_sink *smtp_new(struct event_base *base, const struct config *cfg, char *errbuf, size_t errlen)
{
	struct smtp_sink *s;
	static int global_done;

	if (!global_done) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
			snprintf(errbuf, errlen, "curl_global_init failed");
			return NULL;
		}
		global_done = 1;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		snprintf(errbuf, errlen, "out of memory");
		return NULL;
	}
	s->base = base;
	s->url = build_url(cfg->smtp_url, cfg->smtp_helo);
	s->tls = cfg->smtp_tls;
	s->ca_file = cfg->smtp_ca_file ? strdup(cfg->smtp_ca_file) : NULL;
	s->username = cfg->smtp_username ? strdup(cfg->smtp_username) : NULL;
	s->password = cfg->smtp_password ? strdup(cfg->smtp_password) : NULL;
	s->pool = cfg->smtp_pool_size > 0 ? cfg->smtp_pool_size : 1;
	s->connect_timeout_ms = (long)cfg->smtp_connect_timeout_ms;
	s->timeout_ms = (long)cfg->smtp_timeout_ms;
	ratelimit_init(&s->rl, cfg->smtp_rate_limit, 1);
	s->multi = curl_multi_init();
	s->timer = evtimer_new(base, on_timeout, s);
	s->kick = event_new(base, -1, 0, on_kick, s);
	s->rl_timer = evtimer_new(base, on_kick, s);
	if (s->url == NULL || s->multi == NULL || s->timer == NULL || s->kick == NULL || s->rl_timer == NULL) {
		snprintf(errbuf, errlen, "out of memory");
		smtp_free(s);
		return NULL;
	}
	curl_multi_setopt(s->multi, CURLMOPT_SOCKETFUNCTION, socket_fn);
	curl_multi_setopt(s->multi, CURLMOPT_SOCKETDATA, s);
	curl_multi_setopt(s->multi, CURLMOPT_TIMERFUNCTION, timer_fn);
	curl_multi_setopt(s->multi, CURLMOPT_TIMERDATA, s);
	curl_multi_setopt(s->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)s->pool);
	curl_multi_setopt(s->multi, CURLMOPT_MAXCONNECTS, (long)s->pool);
	return s;
}

int smtp_send(struct smtp_sink *s, const char *mail_from, const char *rcpt, const struct buf *msg,
	      smtp_done_fn done, void *arg, size_t index)
{
	struct xfer *x = calloc(1, sizeof(*x));

	if (x == NULL)
		return -1;
	x->s = s;
	x->mail_from = strdup(mail_from ? mail_from : "");
	x->rcpt = strdup(rcpt);
	x->msg = msg;
	x->done = done;
	x->arg = arg;
	x->index = index;
	if (x->mail_from == NULL || x->rcpt == NULL) {
		xfer_free(x);
		return -1;
	}
	if (s->qtail)
		s->qtail->next = x;
	else
		s->qhead = x;
	s->qtail = x;
	s->nqueued++;
	event_active(s->kick, 0, 0);
	return 0;
}

size_t smtp_in_flight(const struct smtp_sink *s)
{
	return s->nqueued + s->nrunning;
}

void smtp_cancel_queued(struct smtp_sink *s)
{
	s->cancel_pending = 1;
	event_active(s->kick, 0, 0);
}

void smtp_abort_all(struct smtp_sink *s)
{
	while (s->running) {
		struct xfer *x = s->running;
		struct smtp_result r;

		s->running = x->next;
		s->nrunning--;
		curl_multi_remove_handle(s->multi, x->easy);
		memset(&r, 0, sizeof(r));
		if (x->off > 0) {
			/* the payload was being sent: the relay may have queued it */
			r.outcome.verdict = SMTP_UNKNOWN;
			r.outcome.charge_attempt = 1;
			r.text = "aborted at shutdown during DATA";
		} else {
			r.not_attempted = 1;
			r.outcome.verdict = SMTP_RETRY;
			r.text = "aborted at shutdown";
		}
		complete(x, &r);
	}
	while (s->qhead) {
		struct xfer *x = s->qhead;
		s->qhead = x->next;
		s->nqueued--;
		complete_not_attempted(x, "not attempted: shutting down");
	}
	s->qtail = NULL;
}

void smtp_set_rate(struct smtp_sink *s, double per_s)
{
	ratelimit_init(&s->rl, per_s, 1);
}

void smtp_free(struct smtp_sink *s)
{
	if (s == NULL)
		return;
	if (s->multi)
		smtp_abort_all(s);
	if (s->multi)
		curl_multi_cleanup(s->multi);
	if (s->timer)
		event_free(s->timer);
	if (s->kick)
		event_free(s->kick);
	if (s->rl_timer)
		event_free(s->rl_timer);
	free(s->url);
	free(s->ca_file);
	if (s->password) {
		memset(s->password, 0, strlen(s->password));
		free(s->password);
	}
	free(s->username);
	free(s);
}
