/* Unit tests for http: a server on 127.0.0.1:0 in the test's own event_base, driven by
 * raw HTTP requests from bufferevents on the same loop (loopback only). */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "buf.h"
#include "http.h"
#include "metrics.h"
#include "testutil.h"

static struct event_base *base;
static int port;

/* ---- a raw client on the same loop ---- */

struct resp {
	int status;
	char headers[2048];
	char *body;
	size_t body_len;
	int timed_out;
};

struct fetch {
	struct buf raw;
	int done;
	int timed_out;
};

static void on_read(struct bufferevent *bev, void *arg)
{
	struct fetch *f = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n = evbuffer_get_length(in);

	if (buf_reserve(&f->raw, n) == 0) {
		evbuffer_remove(in, f->raw.data + f->raw.len, n);
		f->raw.len += n;
		f->raw.data[f->raw.len] = '\0';
	}
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct fetch *f = arg;

	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		on_read(bev, arg);
		f->done = 1;
		event_base_loopbreak(base);
	}
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct fetch *f = arg;

	(void)fd;
	(void)what;
	f->timed_out = 1;
	event_base_loopbreak(base);
}

static struct bufferevent *connect_raw(void *cbarg)
{
	struct sockaddr_in sin;
	struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((unsigned short)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bufferevent_setcb(bev, on_read, NULL, on_event, cbarg);
	bufferevent_enable(bev, EV_READ);
	if (bufferevent_socket_connect(bev, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
		bufferevent_free(bev);
		return NULL;
	}
	return bev;
}

/* Sends raw (which should end the connection, e.g. with Connection: close) and reads
 * the whole response until the server closes. */
static void fetch_raw(const char *raw, struct resp *r)
{
	struct fetch f;
	struct bufferevent *bev;
	struct event *t;
	struct timeval tv = { 5, 0 };
	char *sep;

	memset(r, 0, sizeof(*r));
	memset(&f, 0, sizeof(f));
	buf_init(&f.raw);
	bev = connect_raw(&f);
	if (bev == NULL) {
		r->status = -1;
		return;
	}
	bufferevent_write(bev, raw, strlen(raw));
	t = evtimer_new(base, on_timeout, &f);
	evtimer_add(t, &tv);
	while (!f.done && !f.timed_out)
		event_base_dispatch(base);
	event_free(t);
	bufferevent_free(bev);
	r->timed_out = f.timed_out;
	if (f.raw.data == NULL || sscanf(f.raw.data, "HTTP/1.%*d %d", &r->status) != 1)
		r->status = -1;
	sep = f.raw.data != NULL ? strstr(f.raw.data, "\r\n\r\n") : NULL;
	if (sep != NULL) {
		size_t hl = (size_t)(sep - f.raw.data) + 2;

		if (hl >= sizeof(r->headers))
			hl = sizeof(r->headers) - 1;
		memcpy(r->headers, f.raw.data, hl);
		r->headers[hl] = '\0';
		r->body_len = f.raw.len - (size_t)(sep + 4 - f.raw.data);
		r->body = malloc(r->body_len + 1);
		memcpy(r->body, sep + 4, r->body_len);
		r->body[r->body_len] = '\0';
	}
	buf_free(&f.raw);
}

static void fetch(const char *method, const char *path, struct resp *r)
{
	char req[512];

	snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", method, path);
	fetch_raw(req, r);
}

/* The value of header name (case-insensitive) or "" when absent. */
static const char *header(const struct resp *r, const char *name, char *dst, size_t dstlen)
{
	const char *p = r->headers;
	size_t n = strlen(name);

	dst[0] = '\0';
	while ((p = strstr(p, "\r\n")) != NULL) {
		p += 2;
		if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
			const char *v = p + n + 1, *e;

			while (*v == ' ')
				v++;
			e = strstr(v, "\r\n");
			snprintf(dst, dstlen, "%.*s", e ? (int)(e - v) : (int)strlen(v), v);
			break;
		}
	}
	return dst;
}

static void resp_free(struct resp *r)
{
	free(r->body);
	r->body = NULL;
}

/* ---- a readiness callback the tests control ---- */

struct ready_state {
	int ready;
	const char *reason;
	int calls;
};

static int ready_cb(void *arg, char *reason, size_t len)
{
	struct ready_state *s = arg;

	s->calls++;
	if (s->ready)
		return 1;
	if (s->reason != NULL)
		snprintf(reason, len, "%s", s->reason);
	return 0;
}

/* ---- tests ---- */

static void test_health(void)
{
	struct resp r;
	char h[256];

	fetch("GET", "/health", &r);
	CHECK_INT(r.status, 200);
	CHECK_STR(header(&r, "Content-Type", h, sizeof(h)), "application/json");
	CHECK_STR(r.body, "{\"status\":\"ok\"}");
	CHECK_STR(header(&r, "Content-Length", h, sizeof(h)), "15");
	resp_free(&r);

	fetch("HEAD", "/health", &r);
	CHECK_INT(r.status, 200);
	CHECK_STR(header(&r, "Content-Length", h, sizeof(h)), "15");
	CHECK(r.body_len == 0, "HEAD has no body, got %zu bytes", r.body_len);
	resp_free(&r);
}

static void test_ready(struct ready_state *st)
{
	struct resp r;
	char h[256];

	st->ready = 1;
	fetch("GET", "/health/ready", &r);
	CHECK_INT(r.status, 200);
	CHECK_STR(r.body, "{\"status\":\"ready\"}");
	CHECK_STR(header(&r, "Content-Type", h, sizeof(h)), "application/json");
	resp_free(&r);

	st->ready = 0;
	st->reason = "database unreachable";
	fetch("GET", "/health/ready", &r);
	CHECK_INT(r.status, 503);
	CHECK_STR(r.body, "{\"status\":\"not ready\",\"reason\":\"database unreachable\"}");
	CHECK_STR(header(&r, "Content-Type", h, sizeof(h)), "application/json");
	resp_free(&r);

	st->reason = "quote \" backslash \\ newline\n";
	fetch("GET", "/health/ready", &r);
	CHECK_INT(r.status, 503);
	CHECK_STR(r.body, "{\"status\":\"not ready\",\"reason\":"
			  "\"quote \\\" backslash \\\\ newline\\n\"}");
	resp_free(&r);

	st->reason = "bad \xff utf8";
	fetch("GET", "/health/ready", &r);
	CHECK_INT(r.status, 503);
	CHECK_STR(r.body, "{\"status\":\"not ready\",\"reason\":\"bad ? utf8\"}");
	resp_free(&r);

	st->reason = NULL;
	fetch("GET", "/health/ready", &r);
	CHECK_STR(r.body, "{\"status\":\"not ready\",\"reason\":\"unspecified\"}");
	resp_free(&r);

	st->ready = 1;
	fetch("GET", "/health/ready", &r);
	CHECK_INT(r.status, 200);
	resp_free(&r);
	/* Liveness does not depend on readiness. */
	st->ready = 0;
	fetch("GET", "/health", &r);
	CHECK_INT(r.status, 200);
	resp_free(&r);
	st->ready = 1;
}

static void test_metrics_endpoint(struct metrics *reg, struct metrics_child *hits)
{
	struct resp r;
	char h[256], *want;

	metrics_inc(hits);
	want = metrics_render(reg);
	fetch("GET", "/metrics", &r);
	CHECK_INT(r.status, 200);
	CHECK_STR(header(&r, "Content-Type", h, sizeof(h)), "text/plain; version=0.0.4; charset=utf-8");
	/* rendered while the scrape's own connection is open */
	CHECK(want && strstr(want, "\noutboxd_http_connections 0\n"), "open connections before the scrape");
	if (want && strstr(want, "\noutboxd_http_connections 0\n"))
		strstr(want, "\noutboxd_http_connections 0\n")[26] = '1';
	CHECK_STR(r.body, want);
	CHECK(r.body && strstr(r.body, "test_hits_total 1\n"), "counter in body");
	snprintf(want, strlen(want) + 1, "%zu", r.body_len);
	CHECK_STR(header(&r, "Content-Length", h, sizeof(h)), want);
	free(want);
	resp_free(&r);

	fetch("GET", "/metrics?name[]=x", &r);
	CHECK_INT(r.status, 200);
	resp_free(&r);
}

static void test_errors(void)
{
	static const struct {
		const char *method, *path;
		int status;
	} cases[] = {
		{ "GET", "/", 404 },          { "GET", "/nope", 404 },           { "GET", "/health/", 404 },
		{ "GET", "/metricsx", 404 },  { "DELETE", "/nope", 404 },        { "POST", "/metrics", 405 },
		{ "PUT", "/health", 405 },    { "PATCH", "/health/ready", 405 }, { "OPTIONS", "/metrics", 405 },
		{ "DELETE", "/health", 405 },
	};
	struct resp r;
	char h[256];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		fetch(cases[i].method, cases[i].path, &r);
		CHECK(r.status == cases[i].status, "%s %s: got %d want %d", cases[i].method, cases[i].path, r.status,
		      cases[i].status);
		if (cases[i].status == 405)
			CHECK_STR(header(&r, "Allow", h, sizeof(h)), "GET, HEAD");
		resp_free(&r);
	}
	fetch_raw("garbage\r\n\r\n", &r);
	CHECK_INT(r.status, 400);
	resp_free(&r);
}

/* A client that sends half a request must not hold up anyone else. */
static void test_stalled_client(void)
{
	struct fetch idle;
	struct bufferevent *bev;
	struct resp r;

	memset(&idle, 0, sizeof(idle));
	buf_init(&idle.raw);
	bev = connect_raw(&idle);
	CHECK(bev != NULL, "connect");
	bufferevent_write(bev, "GET /hea", 8);
	fetch("GET", "/health", &r);
	CHECK_INT(r.status, 200);
	CHECK(!r.timed_out, "served while another client stalls");
	resp_free(&r);
	bufferevent_free(bev);
	buf_free(&idle.raw);
}

/* Two requests on one keep-alive connection. */
static void test_keepalive(void)
{
	struct resp r;

	fetch_raw("GET /health HTTP/1.1\r\nHost: t\r\n\r\n"
		  "GET /health/ready HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
		  &r);
	CHECK_INT(r.status, 200);
	CHECK(r.body && strstr(r.body, "{\"status\":\"ready\"}") != NULL, "second response on the same connection: %s",
	      r.body ? r.body : "");
	resp_free(&r);

	/* A HEAD response must carry no body bytes, or the next response is corrupted. */
	fetch_raw("HEAD /metrics HTTP/1.1\r\nHost: t\r\n\r\n"
		  "GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
		  &r);
	CHECK_INT(r.status, 200);
	CHECK(r.body && strncmp(r.body, "HTTP/1.1 200 OK\r\n", 17) == 0 &&
		      strstr(r.body, "\r\n\r\n{\"status\":\"ok\"}") != NULL,
	      "HEAD then GET: %s", r.body ? r.body : "");
	resp_free(&r);
}

/* ---- the connection cap and the request deadline ---- */

static double metric(struct metrics *reg, const char *name)
{
	char *text = metrics_render(reg), *p, key[128];
	double v = -1;

	snprintf(key, sizeof(key), "\n%s ", name);
	p = text ? strstr(text, key) : NULL;
	if (p != NULL)
		v = strtod(p + strlen(key), NULL);
	free(text);
	return v;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs the loop until metric name equals want or ms pass; returns 1 when it did. */
static int wait_metric(struct metrics *reg, const char *name, double want, int ms)
{
	long long end = now_ms() + ms;

	while (metric(reg, name) != want) {
		if (now_ms() > end)
			return 0;
		event_base_loop(base, EVLOOP_NONBLOCK);
		usleep(2000);
	}
	return 1;
}

/* Runs the loop until every client in f[0..n) saw its connection end, or ms pass. */
static int wait_closed(struct fetch *f, int n, int ms)
{
	long long end = now_ms() + ms;

	for (int i = 0; i < n; i++)
		while (!f[i].done) {
			if (now_ms() > end)
				return 0;
			event_base_loop(base, EVLOOP_NONBLOCK);
			usleep(2000);
		}
	return 1;
}

#define LIMIT 3
#define TIMEOUT_MS 300

static void test_connection_limit(struct http_server *srv, struct metrics *reg)
{
	struct fetch idle[LIMIT];
	struct bufferevent *bev[LIMIT];
	struct resp r;
	long long t0, cut;
	double rejected0 = metric(reg, "outboxd_http_connections_rejected_total");
	double timeouts0 = metric(reg, "outboxd_http_request_timeouts_total");

	http_set_limits(srv, LIMIT, TIMEOUT_MS);
	CHECK(wait_metric(reg, "outboxd_http_connections", 0, 2000), "no connection open to begin with");
	t0 = now_ms();
	for (int i = 0; i < LIMIT; i++) {
		memset(&idle[i], 0, sizeof(idle[i]));
		buf_init(&idle[i].raw);
		bev[i] = connect_raw(&idle[i]);
	}
	CHECK(wait_metric(reg, "outboxd_http_connections", LIMIT, 1000), "%d idle connections counted", LIMIT);
	/* one more is closed unanswered, at once */
	fetch("GET", "/health", &r);
	CHECK(r.status == -1 && !r.timed_out, "beyond the limit: status %d, timed out %d", r.status, r.timed_out);
	CHECK(now_ms() - t0 < TIMEOUT_MS, "refused before the idle ones time out");
	resp_free(&r);
	CHECK(metric(reg, "outboxd_http_connections_rejected_total") == rejected0 + 1, "rejection counted");
	/* the idle ones are cut at the timeout */
	CHECK(wait_closed(idle, LIMIT, 3000), "idle connections closed");
	cut = now_ms() - t0;
	CHECK(cut >= TIMEOUT_MS - 50 && cut < TIMEOUT_MS + 1000, "idle ones cut after %lld ms", cut);
	CHECK(metric(reg, "outboxd_http_request_timeouts_total") == timeouts0 + LIMIT, "timeouts counted");
	CHECK(wait_metric(reg, "outboxd_http_connections", 0, 1000), "none open after the cut");
	for (int i = 0; i < LIMIT; i++) {
		bufferevent_free(bev[i]);
		buf_free(&idle[i].raw);
	}
	fetch("GET", "/health", &r);
	CHECK_INT(r.status, 200);
	resp_free(&r);
}

/* At the cap, a new connection takes the place of the one idle longest after an answer
 * (keep-alive); connections that never sent a request are not displaced (above). */
static void test_idle_keepalive_makes_room(struct metrics *reg)
{
	static const char req[] = "GET /health HTTP/1.1\r\nHost: t\r\n\r\n";
	struct fetch kept[LIMIT];
	struct bufferevent *bev[LIMIT];
	struct resp r;
	double rejected0 = metric(reg, "outboxd_http_connections_rejected_total");

	for (int i = 0; i < LIMIT; i++) {
		memset(&kept[i], 0, sizeof(kept[i]));
		buf_init(&kept[i].raw);
		bev[i] = connect_raw(&kept[i]);
		bufferevent_write(bev[i], req, sizeof(req) - 1);
		while (kept[i].raw.len == 0 && !kept[i].done)
			event_base_loop(base, EVLOOP_ONCE);
		CHECK(strstr(kept[i].raw.data ? kept[i].raw.data : "", "200 OK") != NULL, "keep-alive %d answered", i);
	}
	CHECK(wait_metric(reg, "outboxd_http_connections", LIMIT, 1000), "%d kept alive", LIMIT);
	fetch("GET", "/health", &r);
	CHECK_INT(r.status, 200);
	resp_free(&r);
	CHECK(wait_closed(kept, 1, 1000), "the oldest idle one made room");
	CHECK(!kept[1].done && !kept[2].done, "the others stay");
	CHECK(metric(reg, "outboxd_http_idle_closed_total") == 1, "counted");
	CHECK(metric(reg, "outboxd_http_connections_rejected_total") == rejected0, "nobody turned away");
	for (int i = 0; i < LIMIT; i++) {
		bufferevent_free(bev[i]);
		buf_free(&kept[i].raw);
	}
	CHECK(wait_metric(reg, "outboxd_http_connections", 0, 1000), "all released");
}

static void on_trickle(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	bufferevent_write(arg, "X", 1);
}

/* A request trickled a byte at a time, each well within evhttp's read timeout, is cut at
 * the request deadline all the same. */
static void test_slow_request(struct metrics *reg)
{
	struct fetch f;
	struct bufferevent *bev;
	struct event *tick;
	struct timeval every = { 0, 50 * 1000 };
	long long t0, cut;

	memset(&f, 0, sizeof(f));
	buf_init(&f.raw);
	t0 = now_ms();
	bev = connect_raw(&f);
	bufferevent_write(bev, "GET /health HTTP/1.1\r\nX-Slow: ", strlen("GET /health HTTP/1.1\r\nX-Slow: "));
	tick = event_new(base, -1, EV_PERSIST, on_trickle, bev);
	event_add(tick, &every);
	CHECK(wait_closed(&f, 1, 3000), "slow client closed");
	cut = now_ms() - t0;
	CHECK(cut >= TIMEOUT_MS - 50 && cut < TIMEOUT_MS + 1000, "slow client cut after %lld ms", cut);
	CHECK(f.raw.len == 0, "no answer to a request cut short");
	event_free(tick);
	bufferevent_free(bev);
	buf_free(&f.raw);
	CHECK(wait_metric(reg, "outboxd_http_connections", 0, 1000), "none open after the cut");
}

/* However a connection ends, it stops counting: many of each kind stay under the limit. */
static void test_every_close_is_counted(struct metrics *reg)
{
	static const char *const kinds[] = {
		"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", /* answered, server closes */
		"garbage\r\n\r\n",                                              /* 400 */
		"GET /health HTTP/1.0\r\n\r\n",                                 /* HTTP/1.0 */
		"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
		"POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n", /* body too large */
	};
	static const char keepalive[] = "GET /health HTTP/1.1\r\nHost: t\r\n\r\n";
	struct resp r;

	for (int round = 0; round < 4; round++)
		for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
			fetch_raw(kinds[k], &r);
			CHECK(r.status > 0, "%s: answered (%d)", kinds[k], r.status);
			resp_free(&r);
		}
	/* clients that go away first: at once, mid-request, and after a keep-alive answer */
	for (int i = 0; i < 3 * LIMIT; i++) {
		struct fetch f;
		struct bufferevent *bev;

		memset(&f, 0, sizeof(f));
		buf_init(&f.raw);
		bev = connect_raw(&f);
		if (i % 3 == 1)
			bufferevent_write(bev, "GET /heal", 9);
		else if (i % 3 == 2)
			bufferevent_write(bev, keepalive, sizeof(keepalive) - 1);
		CHECK(wait_metric(reg, "outboxd_http_connections", 1, 1000), "client %d counted", i);
		if (i % 3 == 2) {
			while (f.raw.len == 0 && !f.done)
				event_base_loop(base, EVLOOP_ONCE);
		}
		bufferevent_free(bev);
		buf_free(&f.raw);
		CHECK(wait_metric(reg, "outboxd_http_connections", 0, 1000), "client %d released", i);
	}
	CHECK(metric(reg, "outboxd_http_connections_rejected_total") == 1, "no rejection under the limit");
}

static void test_bind_errors(void)
{
	static const char *const bad[] = {
		"127.0.0.1",          "127.0.0.1:",    "127.0.0.1:70000",
		"127.0.0.1:-1",       "127.0.0.1:80x", ":9187",
		"example.invalid:80", "[::1",          "",
		"192.0.2.1:0",
	};
	char err[256], addr[64];
	struct http_server *s;
	size_t i;

	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	err[0] = '\0';
	s = http_start(base, addr, NULL, NULL, NULL, err, sizeof(err));
	CHECK(s == NULL, "second bind to %s succeeded", addr);
	CHECK(strstr(err, "in use") != NULL, "error names the cause: %s", err);
	http_stop(s);

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		s = http_start(base, bad[i], NULL, NULL, NULL, err, sizeof(err));
		CHECK(s == NULL && err[0] != '\0', "\"%s\" accepted or no error", bad[i]);
		http_stop(s);
	}
	CHECK(http_start(base, NULL, NULL, NULL, NULL, err, sizeof(err)) == NULL, "NULL addr");

	s = http_start(base, "localhost:0", NULL, NULL, NULL, err, sizeof(err));
	CHECK(s != NULL && http_port(s) > 0, "localhost:0: %s", err);
	http_stop(s);
	s = http_start(base, "[::1]:0", NULL, NULL, NULL, err, sizeof(err));
	if (s == NULL)
		printf("note: IPv6 loopback unavailable here (%s)\n", err);
	CHECK(s == NULL || http_port(s) > 0, "[::1]:0 port");
	http_stop(s);
	http_stop(NULL);
	CHECK_INT(http_port(NULL), -1);
}

int main(void)
{
	struct metrics *reg = metrics_new();
	struct metrics_family *f = metrics_counter_new(reg, "test_hits_total", "Hits.", NULL);
	struct ready_state st = { 1, NULL, 0 };
	struct http_server *srv;
	char err[256] = "";

	base = event_base_new();
	srv = http_start(base, "127.0.0.1:0", reg, ready_cb, &st, err, sizeof(err));
	CHECK(srv != NULL, "start: %s", err);
	if (srv == NULL)
		return test_summary("http");
	port = http_port(srv);
	CHECK(port > 0, "bound port %d", port);

	test_health();
	test_ready(&st);
	test_metrics_endpoint(reg, metrics_child(f, NULL));
	test_errors();
	test_stalled_client();
	test_keepalive();
	test_connection_limit(srv, reg);
	test_idle_keepalive_makes_room(reg);
	test_slow_request(reg);
	test_every_close_is_counted(reg);
	test_bind_errors();
	CHECK(st.calls >= 7, "ready callback consulted per request (%d)", st.calls);

	http_stop(srv);
	event_base_free(base);
	metrics_free(reg);
	return test_summary("http");
}
