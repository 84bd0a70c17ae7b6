/* http: the operator-facing HTTP endpoint on the main event loop (libevent evhttp):
 * GET /health (liveness), GET /health/ready (readiness), GET /metrics (Prometheus). */
#ifndef OUTBOXD_HTTP_H
#define OUTBOXD_HTTP_H

#include <stddef.h>

struct event_base;
struct metrics;
struct http_server;

/*
 * Readiness probe, called on the loop for each GET /health/ready. Returns 1 when the
 * dispatcher is ready (a reason written all the same is served as a note), or 0 after
 * writing a short human reason (NUL-terminated, at most reason_len bytes) such as
 * "database unreachable". It must only read state the loop
 * already holds: it must not block or run queries.
 */
typedef int (*http_ready_fn)(void *arg, char *reason, size_t reason_len);

struct evhttp_request;

/*
 * Further routes, asked about every path the server does not serve itself, whatever the
 * method. Returns 0 to leave the request alone (the server answers 404), or 1 when it took
 * the request: it then answers it, at once or later from the loop (evhttp keeps a request
 * whose client went away until it is answered).
 */
typedef int (*http_route_fn)(void *arg, struct evhttp_request *req);

/*
 * Binds addr ("ipv4:port", "[ipv6]:port" or "localhost:port"; port 0 picks a free
 * one; names are never resolved) and serves on base. reg is rendered for /metrics and
 * may be NULL (empty body); the server adds its own families to it
 * (outboxd_http_connections, outboxd_http_connections_rejected_total,
 * outboxd_http_request_timeouts_total, outboxd_http_idle_closed_total). ready_cb may be NULL (always ready). reg, ready_cb
 * and arg must outlive the server. Returns the server, which the caller frees with
 * http_stop(), or NULL with a message in errbuf (bad address, port in use, OOM).
 */
struct http_server *http_start(struct event_base *base, const char *addr, struct metrics *reg, http_ready_fn ready_cb,
			       void *arg, char *errbuf, size_t errlen) __attribute__((warn_unused_result));

/*
 * Limits the server (defaults: 64 connections, 10 s): at most max_connections open at once
 * (one more takes the place of the connection idle longest after an answer,
 * outboxd_http_idle_closed_total; without one it is closed at once, unanswered, and counted
 * in outboxd_http_connections_rejected_total), and a client must send each whole request
 * within timeout_ms of connecting or of the previous answer, or it is disconnected: idle and
 * trickling (slowloris) clients alike (outboxd_http_request_timeouts_total). No deadline
 * runs while a request is being answered. Call it right after http_start().
 */
void http_set_limits(struct http_server *srv, int max_connections, long long timeout_ms);

/* Sets the further routes (fn NULL: none); fn and arg must outlive the server. */
void http_set_routes(struct http_server *srv, http_route_fn fn, void *arg);

/* Sends a complete response with Content-Type `type` and Cache-Control: no-store; for
 * HEAD only the headers (with the body's length). Headers added before stay. */
void http_reply(struct evhttp_request *req, int code, const char *type, const char *body, size_t len);

/* The port actually bound (useful after asking for port 0), or -1. */
int http_port(const struct http_server *srv);

/* Closes the listener and every open connection and frees srv. Call it from outside
 * the server's own callbacks. NULL is fine. */
void http_stop(struct http_server *srv);

#endif
