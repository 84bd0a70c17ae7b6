/* http: routes the three operator endpoints. The listening socket is created here
 * (numeric address, no DNS) so bind errors are reported precisely, then handed to
 * evhttp, which reads and writes without blocking the loop. This file also bounds what
 * clients may hold: connections (a cap) and time (a deadline per request). */
#include "http.h"
#include "hostport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "buf.h"
#include "clock.h"
#include "log.h"
#include "metrics.h"

/* Small limits: nothing legitimate sends more to these endpoints, and a client that
 * stalls is dropped rather than holding a connection forever. */
#define HTTP_MAX_HEADERS 8192
#define HTTP_MAX_BODY 1024
#define HTTP_REASON_MAX 512
/* Input buffered per connection at most: evhttp keeps reading while an answer waits to be
 * written, so a client that pipelines and never reads would grow it without bound. Far
 * above one whole request (headers and body), so reading only pauses for such a client. */
#define HTTP_READ_MAX (64 * 1024)
#define HTTP_DEFAULT_MAX_CONNECTIONS 64
#define HTTP_DEFAULT_TIMEOUT_MS 10000
/* evhttp's own timeout, which bounds writing an answer, sits this much beyond the request
 * deadline so that a request that is late is cut (and counted) by the deadline. */
#define HTTP_WRITE_SLACK_MS 1000

#define CT_JSON "application/json"
#define CT_TEXT "text/plain; charset=utf-8"
#define CT_METRICS "text/plain; version=0.0.4; charset=utf-8"

/* At most one warning per LOG_EVERY_MS for each kind of abuse, with the count since. */
struct ratelog {
	uint64_t last_ms;
	long long suppressed;
};

/*
 * One client connection. evhttp (libevent 2.1) says nothing when it accepts one: the
 * bufferevent it asks us for (evhttp_set_bevcb) is the first sign, and its evhttp
 * connection is looked up on the next loop pass, once evhttp has set it up. From then on
 * the close callback says when it goes.
 */
struct http_conn {
	struct http_server *srv;
	struct bufferevent *bev;         /* our reference, until attached */
	struct evhttp_connection *evcon; /* NULL until attached */
	TAILQ_ENTRY(http_conn) link;     /* srv->pending until attached, then srv->conns */
	/* srv->queue: the attached ones awaiting a request, earliest deadline first (not
	 * those whose request is being answered); srv->idle: those of them that were
	 * answered before (idle keep-alive), oldest first */
	TAILQ_ENTRY(http_conn) qlink, ilink;
	int queued, idle;
	uint64_t deadline_ms; /* the whole request must be in by then */
};
TAILQ_HEAD(conn_list, http_conn);

struct http_server {
	struct evhttp *http;
	struct metrics *reg;
	http_ready_fn ready_cb;
	void *arg;
	http_route_fn extra; /* further routes (the web console); NULL = none */
	void *extra_arg;
	int port;
	/* accept() failures (EMFILE, ENFILE, ENOBUFS): the listener pauses instead of spinning */
	struct evconnlistener *listener;
	struct event *ev_resume;
	struct ratelog accept_log;
	/* the connection cap and the request deadline */
	int max_conns;
	uint64_t timeout_ms;
	int nconns;               /* attached and counted */
	struct conn_list pending; /* accepted, not yet attached */
	struct conn_list conns;   /* attached */
	struct conn_list queue;   /* awaiting a request, by deadline */
	struct conn_list idle;    /* idle keep-alive, oldest first */
	struct event *ev_attach;  /* looks up new connections after evhttp set them up */
	struct event *ev_deadline;
	struct ratelog reject_log, timeout_log;
	struct metrics_child *m_open, *m_rejected, *m_timeouts, *m_idle_closed;
};

/* How long the listener rests after accept() failed. */
#define ACCEPT_PAUSE_MS 250
#define LOG_EVERY_MS 5000

/* Returns 1 when the event may be logged now (*suppressed then says how many were not
 * since the last time), or 0 after counting it as suppressed. */
static int ratelog_due(struct ratelog *rl, long long *suppressed)
{
	uint64_t now = clock_mono_ms();

	if (rl->last_ms != 0 && now - rl->last_ms < LOG_EVERY_MS) {
		rl->suppressed++;
		return 0;
	}
	*suppressed = rl->suppressed;
	rl->last_ms = now;
	rl->suppressed = 0;
	return 1;
}

/* evhttp's listener passes its struct evhttp to the error callback, not ours: servers
 * are found by it (a process runs one or two). */
#define MAX_SERVERS 8
static struct http_server *servers[MAX_SERVERS];

static void server_register(struct http_server *srv)
{
	for (int i = 0; i < MAX_SERVERS; i++)
		if (servers[i] == NULL) {
			servers[i] = srv;
			return;
		}
}

static void server_unregister(struct http_server *srv)
{
	for (int i = 0; i < MAX_SERVERS; i++)
		if (servers[i] == srv)
			servers[i] = NULL;
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
	struct http_server *srv = arg;
	(void)fd;
	(void)what;
	evconnlistener_enable(srv->listener);
}

/* Without this callback libevent logs each failure as plain text and keeps the (level
 * triggered) listener armed: at the descriptor limit the loop spun on accept(). */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
	struct http_server *srv = NULL;
	int err = EVUTIL_SOCKET_ERROR();
	struct timeval tv = { 0, ACCEPT_PAUSE_MS * 1000 };
	long long suppressed;

	for (int i = 0; i < MAX_SERVERS && srv == NULL; i++)
		if (servers[i] != NULL && (void *)servers[i]->http == arg)
			srv = servers[i];
	evconnlistener_disable(l);
	if (srv == NULL) {
		/* not one of ours (cannot happen): rest anyway rather than spin */
		return;
	}
	evtimer_add(srv->ev_resume, &tv);
	if (ratelog_due(&srv->accept_log, &suppressed))
		log_warn("http: accept failed; listener paused", LOG_S("error", evutil_socket_error_to_string(err)),
			 LOG_I("suppressed", suppressed), LOG_I("pause_ms", (long long)ACCEPT_PAUSE_MS));
}

/* ---- the connection cap and the request deadline ---- */

static struct timeval ms_to_tv(uint64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };

	return tv;
}

/* Arms the timer for the earliest deadline, the queue's head (none: the timer may fire
 * for nothing, which is harmless). */
static void deadline_arm(struct http_server *srv)
{
	struct http_conn *first = TAILQ_FIRST(&srv->queue);
	uint64_t now = clock_mono_ms();
	struct timeval tv;

	if (first == NULL)
		return;
	tv = ms_to_tv(first->deadline_ms > now ? first->deadline_ms - now : 0);
	evtimer_add(srv->ev_deadline, &tv);
}

static void queue_remove(struct http_conn *c)
{
	if (c->idle)
		TAILQ_REMOVE(&c->srv->idle, c, ilink);
	if (c->queued)
		TAILQ_REMOVE(&c->srv->queue, c, qlink);
	c->queued = c->idle = 0;
	c->deadline_ms = 0;
}

/* Gives c the deadline now + timeout; answered: it is idle keep-alive. Every deadline is
 * set that way, so appending keeps the queue in deadline order. */
static void queue_push(struct http_conn *c, int answered)
{
	struct http_server *srv = c->srv;

	queue_remove(c);
	c->deadline_ms = clock_mono_ms() + srv->timeout_ms;
	TAILQ_INSERT_TAIL(&srv->queue, c, qlink);
	c->queued = 1;
	if (answered) {
		TAILQ_INSERT_TAIL(&srv->idle, c, ilink);
		c->idle = 1;
	}
	if (TAILQ_FIRST(&srv->queue) == c)
		deadline_arm(srv);
}

/* The record of an attached connection, or NULL (one left uncounted). */
static struct http_conn *conn_of(struct http_server *srv, struct evhttp_connection *evcon)
{
	struct http_conn *c;

	for (c = TAILQ_FIRST(&srv->conns); c != NULL; c = TAILQ_NEXT(c, link))
		if (evcon != NULL && c->evcon == evcon)
			return c;
	return NULL;
}

/* Forgets a connection (evhttp frees the connection itself, or the caller does). */
static void conn_forget(struct http_conn *c)
{
	struct http_server *srv = c->srv;

	queue_remove(c);
	if (c->evcon != NULL) {
		TAILQ_REMOVE(&srv->conns, c, link);
		srv->nconns--;
		metrics_set(srv->m_open, srv->nconns);
	} else {
		TAILQ_REMOVE(&srv->pending, c, link);
	}
	free(c);
}

/* evhttp is closing the connection (client gone, error, its own timeout, or http_stop). */
static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
	(void)evcon;
	conn_forget(arg);
}

/* Returns the evhttp connection that took bev, or NULL when evhttp freed it already.
 * evhttp makes its connection the bufferevent's callback argument, and clears the
 * callbacks when it frees the bufferevent. */
static struct evhttp_connection *evcon_of(struct bufferevent *bev)
{
	void (*readcb)(struct bufferevent *, void *) = NULL;
	void *cbarg = NULL;

	bufferevent_getcb(bev, &readcb, NULL, NULL, &cbarg);
	if (readcb == NULL || cbarg == NULL || evhttp_connection_get_bufferevent(cbarg) != bev)
		return NULL;
	return cbarg;
}

/* Closes c, an attached connection, from outside evhttp's callbacks. */
static void conn_close(struct http_conn *c)
{
	struct evhttp_connection *evcon = c->evcon;

	evhttp_connection_set_closecb(evcon, NULL, NULL);
	conn_forget(c);
	evhttp_connection_free(evcon);
}

/* At the cap, closes the connection idle the longest after an answer (keep-alive), which
 * its client may reopen at any time; returns 0, or -1 when there is none. */
static int make_room(struct http_server *srv)
{
	struct http_conn *c = TAILQ_FIRST(&srv->idle);

	if (c == NULL)
		return -1;
	conn_close(c);
	metrics_inc(srv->m_idle_closed);
	return 0;
}

/* Runs once evhttp has set up the connections accepted since the last pass: counts each
 * one in, or closes it at once when the cap is reached and no idle keep-alive one can
 * make room. */
static void on_attach(evutil_socket_t fd, short what, void *arg)
{
	struct http_server *srv = arg;
	struct http_conn *c;
	long long suppressed;

	(void)fd;
	(void)what;
	while ((c = TAILQ_FIRST(&srv->pending)) != NULL) {
		struct evhttp_connection *evcon;

		evcon = evcon_of(c->bev);
		bufferevent_decref(c->bev);
		c->bev = NULL;
		if (evcon == NULL) {
			conn_forget(c);
			continue;
		}
		if (srv->nconns >= srv->max_conns && make_room(srv) < 0) {
			conn_forget(c);
			metrics_inc(srv->m_rejected);
			if (ratelog_due(&srv->reject_log, &suppressed))
				log_warn("http: connection limit reached; connection closed",
					 LOG_I("max_connections", (long long)srv->max_conns),
					 LOG_I("suppressed", suppressed));
			evhttp_connection_free(evcon);
			continue;
		}
		TAILQ_REMOVE(&srv->pending, c, link);
		TAILQ_INSERT_TAIL(&srv->conns, c, link);
		c->evcon = evcon;
		srv->nconns++;
		evhttp_connection_set_closecb(evcon, on_conn_close, c);
		queue_push(c, 0);
	}
	metrics_set(srv->m_open, srv->nconns);
}

/* evhttp asks for the bufferevent of a connection it has just accepted. */
static struct bufferevent *on_new_bev(struct event_base *base, void *arg)
{
	struct http_server *srv = arg;
	struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	struct http_conn *c = bev != NULL ? calloc(1, sizeof(*c)) : NULL;

	if (bev != NULL)
		bufferevent_setwatermark(bev, EV_READ, 0, HTTP_READ_MAX);
	if (c == NULL)
		return bev; /* out of memory: served, but neither counted nor cut by the deadline */
	/* held until on_attach, so that it stays valid even if evhttp frees it first */
	bufferevent_incref(bev);
	c->srv = srv;
	c->bev = bev;
	TAILQ_INSERT_TAIL(&srv->pending, c, link);
	event_active(srv->ev_attach, EV_TIMEOUT, 0);
	return bev;
}

/* Cuts every connection whose request is not in by its deadline (idle or trickling). */
static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct http_server *srv = arg;
	uint64_t now = clock_mono_ms();
	long long suppressed, cut = 0;
	struct http_conn *c;

	(void)fd;
	(void)what;
	while ((c = TAILQ_FIRST(&srv->queue)) != NULL && c->deadline_ms <= now) {
		conn_close(c);
		cut++;
	}
	if (cut > 0) {
		metrics_add(srv->m_timeouts, (double)cut);
		if (ratelog_due(&srv->timeout_log, &suppressed))
			log_warn("http: request not received in time; connection closed",
				 LOG_I("timeout_ms", (long long)srv->timeout_ms), LOG_I("closed", cut),
				 LOG_I("suppressed", suppressed));
	}
	deadline_arm(srv);
}

/* The answer is sent: the next request on this connection has its own deadline. */
static void on_request_done(struct evhttp_request *req, void *arg)
{
	struct http_conn *c = conn_of(arg, evhttp_request_get_connection(req));

	if (c != NULL)
		queue_push(c, 1);
}

/* A whole request arrived: no deadline while it is answered (the console may wait for the
 * database, under its own timeouts). */
static void request_started(struct http_server *srv, struct evhttp_request *req)
{
	struct http_conn *c = conn_of(srv, evhttp_request_get_connection(req));

	if (c == NULL)
		return;
	queue_remove(c);
	evhttp_request_set_on_complete_cb(req, on_request_done, srv);
}

static void register_metrics(struct http_server *srv, struct metrics *reg)
{
	struct metrics_family *f;

	if (reg == NULL)
		return;
	f = metrics_gauge_new(reg, "outboxd_http_connections", "Open connections to the HTTP port.", NULL);
	srv->m_open = metrics_child(f, NULL);
	f = metrics_counter_new(reg, "outboxd_http_connections_rejected_total",
				"Connections closed at once because http.max_connections were open.", NULL);
	srv->m_rejected = metrics_child(f, NULL);
	f = metrics_counter_new(reg, "outboxd_http_request_timeouts_total",
				"Connections closed because no whole request arrived within http.request_timeout.",
				NULL);
	srv->m_timeouts = metrics_child(f, NULL);
	f = metrics_counter_new(reg, "outboxd_http_idle_closed_total",
				"Idle keep-alive connections closed to admit a new one at http.max_connections.", NULL);
	srv->m_idle_closed = metrics_child(f, NULL);
}

enum route { ROUTE_NONE, ROUTE_HEALTH, ROUTE_READY, ROUTE_METRICS };

/* "host:port" / "[v6]:port" as a socket address, without any name lookup. */
static int parse_listen(const char *addr, struct sockaddr_storage *ss, socklen_t *sslen, char *errbuf, size_t errlen)
{
	char host[INET6_ADDRSTRLEN + 1], why[128];
	struct hostport hp;
	long port;

	if (addr == NULL || hostport_split(addr, strlen(addr), &hp, why, sizeof(why)) < 0) {
		snprintf(errbuf, errlen, "http listen \"%s\": %s", addr != NULL ? addr : "",
			 addr != NULL ? why : "expected host:port");
		return -1;
	}
	if (hp.port == NULL) {
		snprintf(errbuf, errlen, "http listen \"%s\": expected host:port", addr);
		return -1;
	}
	port = hostport_port(hp.port, hp.port_len);
	if (port < 0) {
		snprintf(errbuf, errlen, "http listen \"%s\": bad port", addr);
		return -1;
	}
	if (hp.host_len >= sizeof(host)) {
		snprintf(errbuf, errlen, "http listen \"%s\": bad host", addr);
		return -1;
	}
	memcpy(host, hp.host, hp.host_len);
	host[hp.host_len] = '\0';
	if (strcmp(host, "localhost") == 0)
		strcpy(host, "127.0.0.1");

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, host, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons((unsigned short)port);
		*sslen = sizeof(*sin);
	} else if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((unsigned short)port);
		*sslen = sizeof(*sin6);
	} else {
		snprintf(errbuf, errlen, "http listen \"%s\": host must be a numeric IPv4/IPv6 address", addr);
		return -1;
	}
	return 0;
}

/* Returns a non-blocking listening socket, or -1 with errbuf set. */
static int open_listener(const char *addr, int *port, char *errbuf, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	int fd, one = 1;

	if (parse_listen(addr, &ss, &sslen, errbuf, errlen) < 0)
		return -1;
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(errbuf, errlen, "http listen %s: socket: %s", addr, strerror(errno));
		return -1;
	}
	/* Lets a restarted daemon rebind while old connections sit in TIME_WAIT; on Linux
	 * it does not let two live listeners share the port. */
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss.ss_family == AF_INET6)
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sslen) < 0 || listen(fd, 64) < 0) {
		snprintf(errbuf, errlen, "http listen %s: %s", addr, strerror(errno));
		close(fd);
		return -1;
	}
	sslen = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &sslen) == 0)
		*port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						       : ((struct sockaddr_in *)&ss)->sin_port);
	return fd;
}

static enum route route_of(const char *path)
{
	if (path == NULL)
		return ROUTE_NONE;
	if (strcmp(path, "/health") == 0)
		return ROUTE_HEALTH;
	if (strcmp(path, "/health/ready") == 0)
		return ROUTE_READY;
	if (strcmp(path, "/metrics") == 0)
		return ROUTE_METRICS;
	return ROUTE_NONE;
}

/* Sends a complete response. For HEAD, evhttp 2.1 would send the body and omit
 * Content-Length, so the length is set here and the body left out. */
static void reply(struct evhttp_request *req, int code, const char *type, const char *body, size_t len)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	struct evbuffer *out = evbuffer_new();
	char clen[32];

	evhttp_add_header(h, "Content-Type", type);
	evhttp_add_header(h, "Cache-Control", "no-store");
	if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
		snprintf(clen, sizeof(clen), "%zu", len);
		evhttp_add_header(h, "Content-Length", clen);
		len = 0;
	}
	if (out == NULL || evbuffer_add(out, body, len) < 0) {
		if (out != NULL)
			evbuffer_free(out);
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	evhttp_send_reply(req, code, NULL, out);
	evbuffer_free(out);
}

/* Serialises obj (taking the reference) and sends it. */
static void reply_json(struct evhttp_request *req, int code, json_t *obj)
{
	char *s = obj != NULL ? json_dumps(obj, JSON_COMPACT) : NULL;

	json_decref(obj);
	if (s == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	reply(req, code, CT_JSON, s, strlen(s));
	free(s);
}

static void serve_ready(struct http_server *srv, struct evhttp_request *req)
{
	char reason[HTTP_REASON_MAX] = "";
	json_t *obj;
	size_t i;

	if (srv->ready_cb == NULL || srv->ready_cb(srv->arg, reason, sizeof(reason)) == 1) {
		/* ready, perhaps with a note on something degraded that a restart would not fix */
		reason[sizeof(reason) - 1] = '\0';
		reply_json(req, HTTP_OK,
			   reason[0] ? json_pack("{s:s,s:s}", "status", "ready", "reason", reason)
				     : json_pack("{s:s}", "status", "ready"));
		return;
	}
	reason[sizeof(reason) - 1] = '\0';
	if (reason[0] == '\0')
		strcpy(reason, "unspecified");
	obj = json_pack("{s:s,s:s}", "status", "not ready", "reason", reason);
	if (obj == NULL) {
		/* jansson refuses invalid UTF-8; keep the ASCII part of the reason. */
		for (i = 0; reason[i] != '\0'; i++)
			if ((unsigned char)reason[i] >= 0x80)
				reason[i] = '?';
		obj = json_pack("{s:s,s:s}", "status", "not ready", "reason", reason);
	}
	reply_json(req, HTTP_SERVUNAVAIL, obj);
}

static void serve_metrics(struct http_server *srv, struct evhttp_request *req)
{
	struct buf b;

	buf_init(&b);
	if (srv->reg != NULL && metrics_render_buf(srv->reg, &b) < 0) {
		buf_free(&b);
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	reply(req, HTTP_OK, CT_METRICS, b.data != NULL ? b.data : "", b.len);
	buf_free(&b);
}

static void handle(struct evhttp_request *req, void *arg)
{
	struct http_server *srv = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	enum route r = route_of(uri != NULL ? evhttp_uri_get_path(uri) : NULL);
	static const char not_found[] = "not found\n", not_allowed[] = "method not allowed\n";

	request_started(srv, req);
	if (r == ROUTE_NONE && srv->extra != NULL && srv->extra(srv->extra_arg, req))
		return;
	if (r == ROUTE_NONE) {
		reply(req, HTTP_NOTFOUND, CT_TEXT, not_found, sizeof(not_found) - 1);
		return;
	}
	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
		reply(req, HTTP_BADMETHOD, CT_TEXT, not_allowed, sizeof(not_allowed) - 1);
		return;
	}
	switch (r) {
	case ROUTE_HEALTH:
		reply_json(req, HTTP_OK, json_pack("{s:s}", "status", "ok"));
		break;
	case ROUTE_READY:
		serve_ready(srv, req);
		break;
	default:
		serve_metrics(srv, req);
		break;
	}
}

struct http_server *http_start(struct event_base *base, const char *addr, struct metrics *reg, http_ready_fn ready_cb,
			       void *arg, char *errbuf, size_t errlen)
{
	struct http_server *srv;
	struct evhttp_bound_socket *bound;
	int fd;

	srv = calloc(1, sizeof(*srv));
	if (srv == NULL) {
		snprintf(errbuf, errlen, "http: out of memory");
		return NULL;
	}
	TAILQ_INIT(&srv->pending);
	TAILQ_INIT(&srv->conns);
	TAILQ_INIT(&srv->queue);
	TAILQ_INIT(&srv->idle);
	srv->reg = reg;
	srv->ready_cb = ready_cb;
	srv->arg = arg;
	srv->port = -1;
	fd = open_listener(addr, &srv->port, errbuf, errlen);
	if (fd < 0) {
		free(srv);
		return NULL;
	}
	srv->http = evhttp_new(base);
	if (srv->http == NULL) {
		snprintf(errbuf, errlen, "http: evhttp_new failed");
		goto fail;
	}
	evhttp_set_max_headers_size(srv->http, HTTP_MAX_HEADERS);
	evhttp_set_max_body_size(srv->http, HTTP_MAX_BODY);
	/* Accept every method so the router can answer 405 with Allow; evhttp would
	 * otherwise answer unknown methods with 501. */
	evhttp_set_allowed_methods(srv->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
						      EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
						      EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	evhttp_set_gencb(srv->http, handle, srv);
	evhttp_set_bevcb(srv->http, on_new_bev, srv);
	srv->ev_resume = evtimer_new(base, on_accept_resume, srv);
	srv->ev_attach = event_new(base, -1, 0, on_attach, srv);
	srv->ev_deadline = evtimer_new(base, on_deadline, srv);
	if (srv->ev_resume == NULL || srv->ev_attach == NULL || srv->ev_deadline == NULL) {
		snprintf(errbuf, errlen, "http: out of memory");
		goto fail;
	}
	http_set_limits(srv, HTTP_DEFAULT_MAX_CONNECTIONS, HTTP_DEFAULT_TIMEOUT_MS);
	/* From here the evhttp listener owns fd and closes it in evhttp_free(). */
	bound = evhttp_accept_socket_with_handle(srv->http, fd);
	if (bound == NULL) {
		snprintf(errbuf, errlen, "http listen %s: cannot register listener", addr);
		goto fail;
	}
	srv->listener = evhttp_bound_socket_get_listener(bound);
	server_register(srv);
	evconnlistener_set_error_cb(srv->listener, on_accept_error);
	register_metrics(srv, reg);
	return srv;
fail:
	close(fd);
	if (srv->ev_resume != NULL)
		event_free(srv->ev_resume);
	if (srv->ev_attach != NULL)
		event_free(srv->ev_attach);
	if (srv->ev_deadline != NULL)
		event_free(srv->ev_deadline);
	if (srv->http != NULL)
		evhttp_free(srv->http);
	free(srv);
	return NULL;
}

void http_set_limits(struct http_server *srv, int max_connections, long long timeout_ms)
{
	struct timeval tv;
	struct http_conn *c;
	uint64_t latest;

	srv->max_conns = max_connections > 0 ? max_connections : 1;
	srv->timeout_ms = timeout_ms > 0 ? (uint64_t)timeout_ms : 1;
	tv = ms_to_tv(srv->timeout_ms + HTTP_WRITE_SLACK_MS);
	evhttp_set_timeout_tv(srv->http, &tv);
	/* Deadlines already set end by now + timeout too: the queue stays in order. */
	latest = clock_mono_ms() + srv->timeout_ms;
	for (c = TAILQ_FIRST(&srv->queue); c != NULL; c = TAILQ_NEXT(c, qlink))
		if (c->deadline_ms > latest)
			c->deadline_ms = latest;
	deadline_arm(srv);
}

void http_set_routes(struct http_server *srv, http_route_fn fn, void *arg)
{
	srv->extra = fn;
	srv->extra_arg = arg;
}

void http_reply(struct evhttp_request *req, int code, const char *type, const char *body, size_t len)
{
	reply(req, code, type, body, len);
}

int http_port(const struct http_server *srv)
{
	return srv != NULL ? srv->port : -1;
}

void http_stop(struct http_server *srv)
{
	if (srv == NULL)
		return;
	server_unregister(srv);
	/* frees every connection: their close callbacks forget the attached ones */
	evhttp_free(srv->http);
	while (!TAILQ_EMPTY(&srv->conns))
		conn_forget(TAILQ_FIRST(&srv->conns));
	while (!TAILQ_EMPTY(&srv->pending)) {
		struct bufferevent *bev = TAILQ_FIRST(&srv->pending)->bev;

		conn_forget(TAILQ_FIRST(&srv->pending));
		bufferevent_decref(bev);
	}
	event_free(srv->ev_resume);
	event_free(srv->ev_attach);
	event_free(srv->ev_deadline);
	free(srv);
}
