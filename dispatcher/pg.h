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

/* Blocking calls that keep the server's whole report, for `outboxd migrate`. Each returns
 * the result (free with pg_sync_free_result(); NULL only when libpq could not make one:
 * out of memory or the connection lost, see pg_sync_error()) and reports nothing itself. */

/* How a call ended. */
enum pg_outcome { PG_OK_COMMAND, PG_OK_TUPLES, PG_OK_EMPTY, PG_COPY_REFUSED, PG_FAILED };

/* Fields of a server error report (libpq's PG_DIAG_* codes). */
enum pg_field {
	PG_FIELD_SEVERITY = 'S',
	PG_FIELD_SQLSTATE = 'C',
	PG_FIELD_PRIMARY = 'M',
	PG_FIELD_DETAIL = 'D',
	PG_FIELD_HINT = 'H',
	PG_FIELD_CONTEXT = 'W',
	PG_FIELD_POSITION = 'P',
};

/* Runs sql with the simple protocol: several statements are allowed, the result is the
 * last one's. A COPY to or from the client is ended at once (PG_COPY_REFUSED). */
struct pg_result *pg_sync_exec(struct pg_sync *s, const char *sql);
/* Runs sql with text parameters (NULL for SQL NULL). */
struct pg_result *pg_sync_exec_params(struct pg_sync *s, const char *sql, int nparams, const char *const *params);
/* Runs sql with one binary bytea parameter $1 of len bytes (at most INT_MAX). */
struct pg_result *pg_sync_exec_bytea(struct pg_sync *s, const char *sql, const void *data, size_t len);
/* How the call that gave r ended (PG_FAILED for NULL). */
enum pg_outcome pg_outcome_of(const struct pg_result *r);
/* A field of r's error report, or NULL when absent. */
const char *pg_result_field(const struct pg_result *r, enum pg_field field);
/* The connection's last error message ("" when none). */
const char *pg_sync_error(const struct pg_sync *s);
/* 1 while a transaction block is open (or failed), 0 when idle. */
int pg_sync_in_transaction(const struct pg_sync *s);
/* The server's version number, e.g. 150004. */
int pg_sync_server_version(const struct pg_sync *s);
/* Writes where s is connected, without any password: "user@host:port/dbname". */
void pg_sync_target(const struct pg_sync *s, char *out, size_t outlen);

#endif
