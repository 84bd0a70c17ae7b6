/* smtp_curl: the libcurl SMTP engine (smtp.engine: libcurl), one transaction per
 * recipient. A pool of worker threads, one reused libcurl connection each, fed from the
 * event loop. libcurl 7.x waits for the reply to the final "." with a blocking poll inside
 * its SMTP DONE phase (smtp_block_statemach), even under the multi interface, so a slow
 * relay would freeze a loop that drove it; here only that connection's worker waits.
 * Workers take transfers from one queue (under a mutex, with the rate limit) and hand
 * results back through a pipe; every callback runs on the loop. */
#include "smtp.h"

#include <curl/curl.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "clock.h"
#include "config.h"
#include "log.h"
#include "ratelimit.h"

struct xfer {
	struct xfer *next;
	struct curl_sink *s;
	char *mail_from;
	char *rcpt;
	const struct buf *msg;
	size_t off;
	smtp_done_fn done;
	void *arg;
	size_t index;
	uint64_t started_ms;
	int retried;
	int eof;          /* the whole message was handed to libcurl */
	atomic_int abort; /* set by the loop: give up (drain timeout, shutdown) */
	/* filled by the worker */
	CURLcode rc;
	long code;
	long connects;
	char errbuf[CURL_ERROR_SIZE];
	char reply[512];
};

struct worker {
	pthread_t tid;
	struct curl_sink *s;
	CURL *easy;
	struct xfer *slot; /* the transfer it performs, NULL while idle (under s->mu) */
};

struct curl_sink {
	struct event_base *base;
	struct event *kick;
	struct event *ev_done;
	int pipefd[2];

	char *url;
	enum smtp_tls_mode tls;
	char *ca_file;
	char *username;
	char *password;
	int pool;
	long connect_timeout_ms;
	long timeout_ms;

	int aborting;       /* smtp_abort_all ran: nothing is sent again; loop only */
	int cancel_pending; /* loop only */

	/* shared with the workers, under mu */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct ratelimit rl;
	struct xfer *qhead, *qtail; /* not started: workers take from the head */
	int stopping;
	struct xfer *done_head; /* finished by workers, under mu */
	struct worker *workers;
	int nworkers;
};

static void xfer_free(struct xfer *x)
{
	free(x->mail_from);
	free(x->rcpt);
	free(x);
}

/* ---- worker side --------------------------------------------------------------------- */

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

/* Called by libcurl about once a second, also while it waits for the reply to ".". */
static int progress_cb(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	struct xfer *x = arg;
	(void)dt;
	(void)dn;
	(void)ut;
	(void)un;
	return atomic_load(&x->abort) ? 1 : 0;
}

static void xfer_perform(struct worker *w, struct xfer *x)
{
	struct curl_sink *s = w->s;
	CURL *e = w->easy;
	struct curl_slist *rcpts;
	char from[1024], to[1024];

	/* reset keeps the live connection: the next message reuses it */
	curl_easy_reset(e);
	snprintf(to, sizeof(to), "<%s>", x->rcpt);
	snprintf(from, sizeof(from), "<%s>", x->mail_from);
	rcpts = curl_slist_append(NULL, to);
	if (rcpts == NULL) {
		x->rc = CURLE_OUT_OF_MEMORY;
		return;
	}
	curl_easy_setopt(e, CURLOPT_URL, s->url);
	curl_easy_setopt(e, CURLOPT_MAIL_FROM, from);
	curl_easy_setopt(e, CURLOPT_MAIL_RCPT, rcpts);
	curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(e, CURLOPT_READFUNCTION, read_cb);
	curl_easy_setopt(e, CURLOPT_READDATA, x);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, progress_cb);
	curl_easy_setopt(e, CURLOPT_XFERINFODATA, x);
	curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
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
	x->rc = curl_easy_perform(e);
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &x->code);
	curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &x->connects);
	curl_easy_setopt(e, CURLOPT_MAIL_RCPT, NULL);
	curl_slist_free_all(rcpts);
}

/* Takes the next queued transfer for this worker (under s->mu). Returns NULL when there
 * is none or the rate limit says wait; *wait_ms is then how long. */
static struct xfer *take_queued(struct curl_sink *s, uint64_t *wait_ms)
{
	struct xfer *x = s->qhead;
	uint64_t now;

	*wait_ms = 0;
	if (x == NULL)
		return NULL;
	now = clock_mono_ms();
	if (!ratelimit_take(&s->rl, now)) {
		*wait_ms = ratelimit_wait_ms(&s->rl, now);
		if (*wait_ms == 0)
			*wait_ms = 1;
		return NULL;
	}
	s->qhead = x->next;
	if (s->qhead == NULL)
		s->qtail = NULL;
	x->next = NULL;
	x->started_ms = now;
	return x;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct curl_sink *s = w->s;

	pthread_mutex_lock(&s->mu);
	for (;;) {
		struct xfer *x;
		uint64_t wait_ms;
		int wake;
		char one = 1;

		if (s->stopping)
			break;
		x = take_queued(s, &wait_ms);
		if (x == NULL) {
			if (wait_ms > 0) {
				struct timespec ts;
				clock_gettime(CLOCK_REALTIME, &ts);
				ts.tv_sec += (time_t)(wait_ms / 1000);
				ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
				if (ts.tv_nsec >= 1000000000L) {
					ts.tv_sec++;
					ts.tv_nsec -= 1000000000L;
				}
				pthread_cond_timedwait(&s->cv, &s->mu, &ts);
			} else {
				pthread_cond_wait(&s->cv, &s->mu);
			}
			continue;
		}
		w->slot = x;
		pthread_mutex_unlock(&s->mu);

		xfer_perform(w, x);

		pthread_mutex_lock(&s->mu);
		w->slot = NULL;
		/* wake the loop only when its list was empty: it takes the whole list at once */
		wake = s->done_head == NULL;
		x->next = s->done_head;
		s->done_head = x;
		if (wake) {
			while (write(s->pipefd[1], &one, 1) < 0 && errno == EINTR)
				;
		}
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

/* ---- loop side ----------------------------------------------------------------------- */

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

/* Puts a transfer back at the head of the queue (under s->mu). */
static void queue_front(struct curl_sink *s, struct xfer *x)
{
	x->next = s->qhead;
	s->qhead = x;
	if (s->qtail == NULL)
		s->qtail = x;
}

static void finish(struct curl_sink *s, struct xfer *x)
{
	struct smtp_result r;

	memset(&r, 0, sizeof(r));
	/* an abort that came after the transfer had ended changes nothing: use its real result */
	if (atomic_load(&x->abort) && x->rc == CURLE_ABORTED_BY_CALLBACK) {
		if (x->eof) {
			/* the payload was handed over: the relay may have queued it */
			r.outcome.verdict = SMTP_UNKNOWN;
			r.outcome.charge_attempt = 1;
			r.text = "aborted while waiting for the relay's reply to the message";
		} else {
			r.not_attempted = 1;
			r.outcome.verdict = SMTP_RETRY;
			r.text = "aborted before the message was sent";
		}
		complete(x, &r);
		return;
	}
	r.outcome = smtp_classify((int)x->rc, x->code,
				  (x->connects == 0 ? SMTP_F_REUSED : 0) | (x->eof ? SMTP_F_DATA_SENT : 0));
	r.duration_s = (double)(clock_mono_ms() - x->started_ms) / 1000.0;
	if (r.outcome.verdict == SMTP_RETRY_NOW && !x->retried && !s->aborting) {
		/* the relay silently closed a cached connection: resend at once, uncharged */
		x->retried = 1;
		x->off = 0;
		x->eof = 0;
		x->reply[0] = '\0';
		x->errbuf[0] = '\0';
		pthread_mutex_lock(&s->mu);
		queue_front(s, x);
		pthread_cond_signal(&s->cv);
		pthread_mutex_unlock(&s->mu);
		return;
	}
	if (r.outcome.verdict == SMTP_OK)
		r.text = x->reply;
	else if (x->reply[0] && x->code >= 400)
		r.text = x->reply;
	else if (x->errbuf[0])
		r.text = x->errbuf;
	else
		r.text = curl_easy_strerror(x->rc);
	complete(x, &r);
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
	struct curl_sink *s = arg;
	struct xfer *list, *rev = NULL;
	char drain[64];
	(void)what;

	/* a worker writes only when the list was empty, so one read nearly always empties the
	 * pipe; anything left makes the (level-triggered) event fire again */
	(void)!read(fd, drain, sizeof(drain));
	pthread_mutex_lock(&s->mu);
	list = s->done_head;
	s->done_head = NULL;
	pthread_mutex_unlock(&s->mu);
	/* finished first, reported first */
	while (list) {
		struct xfer *n = list->next;
		list->next = rev;
		rev = list;
		list = n;
	}
	while (rev) {
		struct xfer *n = rev->next;
		rev->next = NULL;
		finish(s, rev);
		rev = n;
	}
}

/* Takes every transfer not yet started out of the queue (the workers see an empty one)
 * and reports each as not attempted. */
static void cancel_queue(struct curl_sink *s, const char *why)
{
	struct xfer *list;

	pthread_mutex_lock(&s->mu);
	list = s->qhead;
	s->qhead = s->qtail = NULL;
	pthread_mutex_unlock(&s->mu);
	while (list) {
		struct xfer *x = list;
		list = x->next;
		x->next = NULL;
		complete_not_attempted(x, why);
	}
}

static void on_kick(evutil_socket_t fd, short kind, void *arg)
{
	struct curl_sink *s = arg;
	(void)fd;
	(void)kind;

	if (s->cancel_pending) {
		s->cancel_pending = 0;
		cancel_queue(s, "not attempted: relay paused");
	}
}

static char *build_url(const char *url, const char *helo)
{
	struct buf b;
	const char *rest;
	char *out;

	/* The URL path is the EHLO name for libcurl's SMTP: smtp://host:port/helo.name */
	rest = strstr(url, "://");
	rest = rest ? strchr(rest + 3, '/') : NULL;
	if (rest != NULL)
		return strdup(url);
	buf_init(&b);
	if (buf_puts(&b, url) != 0 || buf_putc(&b, '/') != 0 ||
	    buf_puts(&b, helo && helo[0] ? helo : "localhost") != 0) {
		buf_free(&b);
		return NULL;
	}
	out = buf_steal(&b);
	buf_free(&b);
	return out;
}

static void curl_sink_free(void *impl);

static void *curl_sink_new(struct event_base *base, const struct config *cfg, char *errbuf, size_t errlen)
{
	struct curl_sink *s;
	static int global_done;

	/* before any thread exists: curl_global_init is not thread-safe */
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
	s->pipefd[0] = s->pipefd[1] = -1;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	s->url = build_url(cfg->smtp_url, cfg->smtp_helo);
	s->tls = cfg->smtp_tls;
	s->ca_file = cfg->smtp_ca_file ? strdup(cfg->smtp_ca_file) : NULL;
	s->username = cfg->smtp_username ? strdup(cfg->smtp_username) : NULL;
	s->password = cfg->smtp_password ? strdup(cfg->smtp_password) : NULL;
	s->pool = cfg->smtp_pool_size > 0 ? cfg->smtp_pool_size : 1;
	s->connect_timeout_ms = (long)cfg->smtp_connect_timeout_ms;
	s->timeout_ms = (long)cfg->smtp_timeout_ms;
	ratelimit_init(&s->rl, cfg->smtp_rate_limit, 1);
	if (pipe2(s->pipefd, O_NONBLOCK | O_CLOEXEC) != 0) {
		snprintf(errbuf, errlen, "pipe: %s", strerror(errno));
		curl_sink_free(s);
		return NULL;
	}
	s->kick = event_new(base, -1, 0, on_kick, s);
	s->ev_done = event_new(base, s->pipefd[0], EV_READ | EV_PERSIST, on_done, s);
	s->workers = calloc((size_t)s->pool, sizeof(*s->workers));
	if (s->url == NULL || s->kick == NULL || s->ev_done == NULL || s->workers == NULL) {
		snprintf(errbuf, errlen, "out of memory");
		curl_sink_free(s);
		return NULL;
	}
	event_add(s->ev_done, NULL);
	for (int i = 0; i < s->pool; i++) {
		struct worker *w = &s->workers[i];
		w->s = s;
		w->easy = curl_easy_init();
		if (w->easy == NULL || pthread_create(&w->tid, NULL, worker_main, w) != 0) {
			snprintf(errbuf, errlen, "cannot start SMTP worker %d", i);
			if (w->easy)
				curl_easy_cleanup(w->easy);
			w->easy = NULL;
			curl_sink_free(s);
			return NULL;
		}
		s->nworkers++;
	}
	return s;
}

static struct xfer *xfer_new(struct curl_sink *s, const char *mail_from, const char *rcpt, const struct buf *msg,
			     smtp_done_fn done, void *arg, size_t index)
{
	struct xfer *x = calloc(1, sizeof(*x));

	if (x == NULL)
		return NULL;
	x->s = s;
	x->mail_from = strdup(mail_from ? mail_from : "");
	x->rcpt = strdup(rcpt);
	x->msg = msg;
	x->done = done;
	x->arg = arg;
	x->index = index;
	atomic_init(&x->abort, 0);
	if (x->mail_from == NULL || x->rcpt == NULL) {
		xfer_free(x);
		return NULL;
	}
	return x;
}

/* libcurl cannot say which recipient of a multi-recipient transaction was refused, so
 * each recipient gets a transaction of its own. All are built before any is queued: a
 * failure queues none. */
static int curl_sink_send(void *impl, const char *mail_from, const char *const *rcpt, size_t nrcpt,
			  const struct buf *msg, smtp_done_fn done, void *arg)
{
	struct curl_sink *s = impl;
	struct xfer *head = NULL, **tail = &head;

	for (size_t i = 0; i < nrcpt; i++) {
		struct xfer *x = xfer_new(s, mail_from, rcpt[i], msg, done, arg, i);

		if (x == NULL) {
			while (head) {
				struct xfer *n = head->next;
				xfer_free(head);
				head = n;
			}
			return -1;
		}
		*tail = x;
		tail = &x->next;
	}
	pthread_mutex_lock(&s->mu);
	if (s->qtail)
		s->qtail->next = head;
	else
		s->qhead = head;
	for (s->qtail = head; s->qtail->next; s->qtail = s->qtail->next)
		;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	return 0;
}

static void curl_sink_cancel_queued(void *impl)
{
	struct curl_sink *s = impl;

	s->cancel_pending = 1;
	event_active(s->kick, 0, 0);
}

static void curl_sink_abort_all(void *impl)
{
	struct curl_sink *s = impl;

	s->aborting = 1;
	/* running transfers notice within about a second (libcurl's progress callback) and
	 * report through the pipe like any other */
	pthread_mutex_lock(&s->mu);
	for (int i = 0; i < s->nworkers; i++)
		if (s->workers[i].slot)
			atomic_store(&s->workers[i].slot->abort, 1);
	pthread_mutex_unlock(&s->mu);
	cancel_queue(s, "not attempted: shutting down");
}

static void curl_sink_set_rate(void *impl, double per_s)
{
	struct curl_sink *s = impl;

	pthread_mutex_lock(&s->mu);
	ratelimit_init(&s->rl, per_s, 1);
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

static void curl_sink_free(void *impl)
{
	struct curl_sink *s = impl;

	if (s == NULL)
		return;
	/* no callbacks from here on: the owner may already have freed what they point to */
	pthread_mutex_lock(&s->mu);
	for (int i = 0; i < s->nworkers; i++)
		if (s->workers[i].slot)
			atomic_store(&s->workers[i].slot->abort, 1);
	s->stopping = 1;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	for (int i = 0; i < s->nworkers; i++) {
		curl_socket_t fd = CURL_SOCKET_BAD;

		pthread_join(s->workers[i].tid, NULL);
		/* curl_easy_cleanup sends QUIT on the cached connection and waits for the reply:
		 * a relay that never answers would hold the exit for minutes. Cut the connection. */
		if (curl_easy_getinfo(s->workers[i].easy, CURLINFO_ACTIVESOCKET, &fd) == CURLE_OK &&
		    fd != CURL_SOCKET_BAD)
			shutdown(fd, SHUT_RDWR);
		curl_easy_cleanup(s->workers[i].easy);
	}
	while (s->qhead) {
		struct xfer *x = s->qhead;
		s->qhead = x->next;
		xfer_free(x);
	}
	while (s->done_head) {
		struct xfer *x = s->done_head;
		s->done_head = x->next;
		xfer_free(x);
	}
	free(s->workers);
	if (s->kick)
		event_free(s->kick);
	if (s->ev_done)
		event_free(s->ev_done);
	if (s->pipefd[0] >= 0)
		close(s->pipefd[0]);
	if (s->pipefd[1] >= 0)
		close(s->pipefd[1]);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	free(s->url);
	free(s->ca_file);
	if (s->password) {
		memset(s->password, 0, strlen(s->password));
		free(s->password);
	}
	free(s->username);
	free(s);
}

const struct smtp_engine smtp_engine_curl = {
	.name = "libcurl",
	.create = curl_sink_new,
	.send = curl_sink_send,
	.cancel_queued = curl_sink_cancel_queued,
	.abort_all = curl_sink_abort_all,
	.set_rate = curl_sink_set_rate,
	.destroy = curl_sink_free,
};
