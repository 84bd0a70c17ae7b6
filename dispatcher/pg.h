/* Asynchronous PostgreSQL connections on the libevent loop: non-blocking connect with
 * its own timeout, reconnect with capped jittered backoff, a FIFO of queries, LISTEN
 * notifications; and blocking one-shot calls for the CLI commands. The only module that
 * sees libpq. */
#ifndef OUTBOXD_PG_H
#define OUTBOXD_PG_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct pgconn;
struct pg_result;

struct pg_callbacks {
	/* Connected (or reconnected): restore session state here (LISTEN, locks), then catch up. */
	void (*on_connect)(struct pgconn *c, void *arg);
	/* The connection was lost; every queued query has been failed already. */
	void (*on_disconnect)(struct pgconn *c, void *arg, const char *reason);
	/* A NOTIFY arrived on a channel this connection listens to. */
	void (*on_notify)(struct pgconn *c, void *arg, const char *channel);
};

/* Called once per query: `res` is NULL when the connection failed before a result came,
 * with the reason in `err`. The result is freed after the callback returns. */
typedef void (*pg_query_cb)(void *arg, const struct pg_result *res, const char *err);

/* The password every later connection sends (database.password_file), over one in the
 * conninfo; NULL or "" for none. Copied; kept out of the conninfo strings that logs may show. */
void pg_set_password(const char *password);

/* Creates a connection object; connects at once and keeps reconnecting until
 * pg_close(). `conninfo` is a URL or key=value string (copied); `extra_options` is a
 * "-c name=value ..." string for the server's options (may be NULL). */
struct pgconn *pg_new(struct event_base *base, const char *name, const char *conninfo, const char *extra_options,
		      int64_t connect_timeout_ms, int64_t reconnect_max_ms, const struct pg_callbacks *cb, void *arg);

/* Closes the connection and frees it; queued queries are dropped without their callbacks
 * (no callback of c runs once pg_close is called). NULL is fine. */
void pg_close(struct pgconn *c);

int pg_ready(const struct pgconn *c);
/* Number of queries queued or running. */
int pg_pending(const struct pgconn *c);
/* Drops the connection now and reconnects after backoff (queued queries fail). */
void pg_reset(struct pgconn *c, const char *reason);

/* Queues a query with text parameters (NULL for SQL NULL). Returns 0, or -1 when the
 * connection is not ready (the callback is then not called). The query gives up after
 * `timeout_ms` (0 = none) by resetting the connection. */
int pg_query(struct pgconn *c, const char *sql, int nparams, const char *const *params, int64_t timeout_ms,
	     pg_query_cb cb, void *arg) __attribute__((warn_unused_result));

/* Result accessors. */
int pg_result_ok(const struct pg_result *r);            /* command or tuples OK */
const char *pg_result_error(const struct pg_result *r); /* message, "" when ok */
/* Why a query callback got no usable result: err when the connection failed (res NULL),
 * else the server's message. */
const char *pg_failure(const struct pg_result *res, const char *err);
const char *pg_result_sqlstate(const struct pg_result *r);
int pg_ntuples(const struct pg_result *r);
int pg_isnull(const struct pg_result *r, int row, int col);
const char *pg_value(const struct pg_result *r, int row, int col); /* "" when NULL */

/* Blocking helpers for one-shot CLI commands (status, migrate): connect, run, close. */
struct pg_sync;
struct pg_sync *pg_sync_connect(const char *conninfo, const char *appname, char *errbuf, size_t errlen);
/* Runs sql with params; returns a result to free with pg_sync_free_result(), or NULL
 * with the error in errbuf. */
struct pg_result *pg_sync_query(struct pg_sync *s, const char *sql, int nparams, const char *const *params,
				char *errbuf, size_t errlen);
void pg_sync_free_result(struct pg_result *r);
void pg_sync_close(struct pg_sync *s);

#endif
