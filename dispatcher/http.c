/* http: routes the three operator endpoints. The listening socket is created here
 * (numeric address, no DNS) so bind errors are reported precisely, then handed to
 * evhttp, which reads and writes without blocking the loop. */
#include "http.h"
#include "hostport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
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
#define HTTP_TIMEOUT_S 10
#define HTTP_REASON_MAX 512

#define CT_JSON "application/json"
#define CT_TEXT "text/plain; charset=utf-8"
#define CT_METRICS "text/plain; version=0.0.4; charset=utf-8"

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
	uint64_t accept_log_ms;      /* when the last accept error was logged */
	long long accept_suppressed; /* errors since, not logged */
};

/* How long the listener rests after accept() failed, and how often that is logged. */
#define ACCEPT_PAUSE_MS 250
#define ACCEPT_LOG_MS 5000

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
	uint64_t now = clock_mono_ms();
	struct timeval tv = { 0, ACCEPT_PAUSE_MS * 1000 };

	for (int i = 0; i < MAX_SERVERS && srv == NULL; i++)
		if (servers[i] != NULL && (void *)servers[i]->http == arg)
			srv = servers[i];
	evconnlistener_disable(l);
	if (srv == NULL) {
		/* not one of ours (cannot happen): rest anyway rather than spin */
		return;
	}
	evtimer_add(srv->ev_resume, &tv);
	if (srv->accept_log_ms != 0 && now - srv->accept_log_ms < ACCEPT_LOG_MS) {
		srv->accept_suppressed++;
		return;
	}
	log_warn("http: accept failed; listener paused", "serror", evutil_socket_error_to_string(err), "isuppressed",
		 srv->accept_suppressed, "ipause_ms", (long long)ACCEPT_PAUSE_MS, NULL);
	srv->accept_log_ms = now;
	srv->accept_suppressed = 0;
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
	evhttp_set_timeout(srv->http, HTTP_TIMEOUT_S);
	evhttp_set_max_headers_size(srv->http, HTTP_MAX_HEADERS);
	evhttp_set_max_body_size(srv->http, HTTP_MAX_BODY);
	/* Accept every method so the router can answer 405 with Allow; evhttp would
	 * otherwise answer unknown methods with 501. */
	evhttp_set_allowed_methods(srv->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
						      EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
						      EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	evhttp_set_gencb(srv->http, handle, srv);
	/* From here the evhttp listener owns fd and closes it in evhttp_free(). */
	srv->ev_resume = evtimer_new(base, on_accept_resume, srv);
	bound = srv->ev_resume != NULL ? evhttp_accept_socket_with_handle(srv->http, fd) : NULL;
	if (bound == NULL) {
		snprintf(errbuf, errlen, "http listen %s: cannot register listener", addr);
		goto fail;
	}
	srv->listener = evhttp_bound_socket_get_listener(bound);
	server_register(srv);
	evconnlistener_set_error_cb(srv->listener, on_accept_error);
	return srv;
fail:
	close(fd);
	if (srv->ev_resume != NULL)
		event_free(srv->ev_resume);
	if (srv->http != NULL)
		evhttp_free(srv->http);
	free(srv);
	return NULL;
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
	evhttp_free(srv->http);
	event_free(srv->ev_resume);
	free(srv);
}
