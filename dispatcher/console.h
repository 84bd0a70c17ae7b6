/* console: the read-mostly web console on the HTTP port (/ and /ui/...). It reads through
 * the outbox.console_* SQL functions on a connection of its own, never on a /metrics scrape,
 * and requeues or cancels only with the configured token. */
#ifndef OUTBOXD_CONSOLE_H
#define OUTBOXD_CONSOLE_H

#include <stddef.h>

struct event_base;
struct config;
struct console;
struct evhttp_request;
struct telemetry;

/*
 * Creates the console and opens its database connection ("outboxd-console"). It copies what
 * it needs from cfg (token, show-body flag, whether the mirror runs); tm, which must outlive
 * it, supplies the last queue figures and the breakers. Returns NULL with errbuf set on OOM.
 * Free it with console_free() before the HTTP server is stopped.
 */
struct console *console_new(struct event_base *base, const struct config *cfg, struct telemetry *tm, char *errbuf,
			    size_t errlen) __attribute__((warn_unused_result));

/* An http_route_fn (arg = the console): takes "/", "/ui" and "/ui/..." and answers them,
 * for database pages once the query returns. Returns 0 for any other path. */
int console_route(void *arg, struct evhttp_request *req);

/* Answers every request still waiting for the database (503), closes the connection and
 * frees the console. NULL is fine. */
void console_free(struct console *c);

#endif
