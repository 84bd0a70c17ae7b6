/* Asynchronous libpq connections driven by libevent: connect state machine,
 * query FIFO, notifications, connection-loss detection and reconnect with backoff. */
#include "pg.h"

#include <event2/event.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "log.h"

enum pg_state { PG_DISCONNECTED, PG_CONNECTING, PG_READY, PG_CLOSED };

/* struct pg_result is never defined: a pointer to it is a PGresult in disguise, so that
 * callers never include libpq-fe.h. */
#define RES(r) ((PGresult *)(r))

struct pg_query {
	struct pg_query *next;
	char *sql;
	int nparams;
	char **params;
	int64_t timeout_ms;
	pg_query_cb cb;
	void *arg;
};

struct pgconn {
	struct event_base *base;
	char *name;
	char *conninfo;
	char *options;
	int64_t connect_timeout_ms;
	int64_t reconnect_max_ms;
	int64_t backoff_ms;
	struct pg_callbacks cb;
	void *arg;

	PGconn *conn;
	enum pg_state state;
	struct event *ev_read;  /* persistent while ready; one-shot during connect */
	struct event *ev_write; /* one-shot: connect polling or flushing */
	struct event *ev_timer; /* connect timeout, reconnect backoff, query timeout */
	int want_write_for_connect;

	struct pg_query *head, *tail; /* head is the running query when `running` */
	int running;
	int npending;
	PGresult *last; /* last result of the running query */
};

static void conn_schedule_reconnect(struct pgconn *c, const char *reason);
static void conn_start(struct pgconn *c);
static void conn_send_next(struct pgconn *c);

static const char *pg_state_name(enum pg_state s)
{
	static const char *const names[] = { "disconnected", "connecting", "ready", "closed" };
	return (unsigned)s <= PG_CLOSED ? names[s] : "unknown";
}

static void conn_set_state(struct pgconn *c, enum pg_state s)
{
	if (c->state == s)
		return;
	log_debug("database connection state", LOG_S("conn", c->name), LOG_S("from", pg_state_name(c->state)),
		  LOG_S("to", pg_state_name(s)));
	c->state = s;
}

static void query_free(struct pg_query *q)
{
	for (int i = 0; i < q->nparams; i++)
		free(q->params[i]);
	free(q->params);
	free(q->sql);
	free(q);
}

static void events_free(struct pgconn *c)
{
	/* Free the fd's events before PQfinish: a reconnect reuses the fd number and a stale
	 * event would keep the new socket out of epoll. */
	if (c->ev_read) {
		event_free(c->ev_read);
		c->ev_read = NULL;
	}
	if (c->ev_write) {
		event_free(c->ev_write);
		c->ev_write = NULL;
	}
}

/* Fails every queued query (the running one included) with `reason`. */
static void fail_all(struct pgconn *c, const char *reason)
{
	struct pg_query *q = c->head;

	c->head = c->tail = NULL;
	c->running = 0;
	c->npending = 0;
	if (c->last) {
		PQclear(c->last);
		c->last = NULL;
	}
	while (q) {
		struct pg_query *next = q->next;
		if (q->cb)
			q->cb(q->arg, NULL, reason);
		query_free(q);
		q = next;
	}
}

static void conn_drop(struct pgconn *c, const char *reason)
{
	int was_ready = c->state == PG_READY;

	events_free(c);
	evtimer_del(c->ev_timer);
	if (c->conn) {
		PQfinish(c->conn);
		c->conn = NULL;
	}
	conn_set_state(c, PG_DISCONNECTED);
	fail_all(c, reason);
	if (was_ready && c->cb.on_disconnect)
		c->cb.on_disconnect(c, c->arg, reason);
}

static void notice_receiver(void *arg, const PGresult *res)
{
	struct pgconn *c = arg;
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

	/* A fast shutdown delivers FATAL 57P01 as a notice on an idle connection, and EOF
	 * comes only later: take it as the signal to reconnect now. */
	if (state && strncmp(state, "57P0", 4) == 0) {
		log_warn("database is shutting down", LOG_S("conn", c->name), LOG_S("sqlstate", state));
		c->backoff_ms = 0;
	}
}

static void on_timer(evutil_socket_t fd, short what, void *arg);
static void on_io(evutil_socket_t fd, short what, void *arg);

static int64_t jitter(int64_t ms)
{
	uint32_t r = 0;
	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
		r = (uint32_t)rand();
	/* between half and the full value */
	return ms / 2 + (ms > 1 ? (int64_t)(r % (uint64_t)(ms / 2 + 1)) : 0);
}

static void timer_arm(struct pgconn *c, int64_t ms)
{
	struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
	evtimer_add(c->ev_timer, &tv);
}

static void conn_schedule_reconnect(struct pgconn *c, const char *why)
{
	int64_t delay;
	char reason[256];

	/* why may point into the PGconn (PQerrorMessage), which conn_drop frees */
	snprintf(reason, sizeof(reason), "%s", why ? why : "");
	reason[strcspn(reason, "\n")] = '\0';
	conn_drop(c, reason);
	if (c->backoff_ms == 0)
		c->backoff_ms = 50;
	delay = jitter(c->backoff_ms);
	c->backoff_ms *= 2;
	if (c->backoff_ms > c->reconnect_max_ms)
		c->backoff_ms = c->reconnect_max_ms;
	log_warn("database connection lost, reconnecting", LOG_S("conn", c->name), LOG_S("reason", reason),
		 LOG_I("delay_ms", (long long)delay));
	timer_arm(c, delay);
}

static void connect_wait(struct pgconn *c, int for_write)
{
	int fd = PQsocket(c->conn);

	/* The socket can change during connect (multi-host, SSL fallback): re-read it. */
	events_free(c);
	if (fd < 0) {
		conn_schedule_reconnect(c, "no socket");
		return;
	}
	if (for_write) {
		c->ev_write = event_new(c->base, fd, EV_WRITE, on_io, c);
		event_add(c->ev_write, NULL);
	} else {
		c->ev_read = event_new(c->base, fd, EV_READ, on_io, c);
		event_add(c->ev_read, NULL);
	}
}

static void conn_became_ready(struct pgconn *c)
{
	int fd = PQsocket(c->conn);

	evtimer_del(c->ev_timer);
	events_free(c);
	PQsetnonblocking(c->conn, 1);
	PQsetNoticeReceiver(c->conn, notice_receiver, c);
	c->ev_read = event_new(c->base, fd, EV_READ | EV_PERSIST, on_io, c);
	event_add(c->ev_read, NULL);
	c->backoff_ms = 0;
	conn_set_state(c, PG_READY);
	log_info("database connected", LOG_S("conn", c->name));
	if (c->cb.on_connect)
		c->cb.on_connect(c, c->arg);
}

static void connect_poll(struct pgconn *c)
{
	switch (PQconnectPoll(c->conn)) {
	case PGRES_POLLING_READING:
		connect_wait(c, 0);
		break;
	case PGRES_POLLING_WRITING:
		connect_wait(c, 1);
		break;
	case PGRES_POLLING_OK:
		conn_became_ready(c);
		break;
	case PGRES_POLLING_FAILED:
	default: {
		char reason[256];
		snprintf(reason, sizeof(reason), "%s", PQerrorMessage(c->conn));
		reason[strcspn(reason, "\n")] = '\0';
		conn_schedule_reconnect(c, reason[0] ? reason : "connection failed");
		break;
	}
	}
}

static char *pg_password; /* database.password: one per process, like the URL */

void pg_set_password(const char *password)
{
	free(pg_password);
	pg_password = password && password[0] ? strdup(password) : NULL;
}

static void conn_start(struct pgconn *c)
{
	const char *keys[] = { "dbname",
			       "application_name",
			       "keepalives",
			       "keepalives_idle",
			       "keepalives_interval",
			       "keepalives_count",
			       "tcp_user_timeout",
			       "options",
			       pg_password ? "password" : NULL,
			       NULL };
	const char *vals[] = { c->conninfo, c->name, "1", "30", "10", "3", "30000", c->options ? c->options : "",
			       pg_password, NULL };

	conn_set_state(c, PG_CONNECTING);
	c->conn = PQconnectStartParams(keys, vals, 1);
	if (c->conn == NULL) {
		conn_schedule_reconnect(c, "out of memory");
		return;
	}
	if (PQstatus(c->conn) == CONNECTION_BAD) {
		char reason[256];
		snprintf(reason, sizeof(reason), "%s", PQerrorMessage(c->conn));
		reason[strcspn(reason, "\n")] = '\0';
		conn_schedule_reconnect(c, reason);
		return;
	}
	/* libpq ignores connect_timeout in PQconnectPoll: our own timer bounds the attempt. */
	timer_arm(c, c->connect_timeout_ms);
	connect_wait(c, 1);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct pgconn *c = arg;
	(void)fd;
	(void)what;

	switch (c->state) {
	case PG_DISCONNECTED:
		conn_start(c);
		break;
	case PG_CONNECTING:
		conn_schedule_reconnect(c, "connect timeout");
		break;
	case PG_READY:
		conn_schedule_reconnect(c, "query timeout");
		break;
	case PG_CLOSED:
		break;
	}
}

static void flush_wait(struct pgconn *c)
{
	int r = PQflush(c->conn);

	if (r < 0) {
		conn_schedule_reconnect(c, PQerrorMessage(c->conn));
		return;
	}
	if (r == 1) {
		/* keep reading while waiting to write, or both sides can deadlock */
		if (c->ev_write == NULL)
			c->ev_write = event_new(c->base, PQsocket(c->conn), EV_WRITE, on_io, c);
		event_add(c->ev_write, NULL);
	}
}

static void conn_send_next(struct pgconn *c)
{
	struct pg_query *q = c->head;
	int ok;

	if (c->state != PG_READY || c->running || q == NULL)
		return;
	ok = PQsendQueryParams(c->conn, q->sql, q->nparams, NULL, (const char *const *)q->params, NULL, NULL, 0);
	if (!ok) {
		conn_schedule_reconnect(c, PQerrorMessage(c->conn));
		return;
	}
	c->running = 1;
	if (q->timeout_ms > 0)
		timer_arm(c, q->timeout_ms);
	flush_wait(c);
}

static void drain_notifies(struct pgconn *c)
{
	PGnotify *n;

	while (c->conn && (n = PQnotifies(c->conn)) != NULL) {
		if (c->cb.on_notify)
			c->cb.on_notify(c, c->arg, n->relname);
		PQfreemem(n);
	}
}

/* Reads every available result; completes the running query when libpq says it is done. */
static void read_results(struct pgconn *c)
{
	if (!PQconsumeInput(c->conn)) {
		char reason[256];
		snprintf(reason, sizeof(reason), "%s", PQerrorMessage(c->conn));
		reason[strcspn(reason, "\n")] = '\0';
		conn_schedule_reconnect(c, reason[0] ? reason : "connection lost");
		return;
	}
	while (c->running && !PQisBusy(c->conn)) {
		PGresult *r = PQgetResult(c->conn);
		if (r != NULL) {
			/* a query with several results: keep the last (errors win) */
			if (c->last && PQresultStatus(c->last) == PGRES_FATAL_ERROR)
				PQclear(r);
			else {
				if (c->last)
					PQclear(c->last);
				c->last = r;
			}
			continue;
		}
		/* query done */
		struct pg_query *q = c->head;
		PGresult *res = c->last;
		c->last = NULL;
		c->head = q->next;
		if (c->head == NULL)
			c->tail = NULL;
		c->running = 0;
		c->npending--;
		evtimer_del(c->ev_timer);
		if (q->cb)
			q->cb(q->arg, (const struct pg_result *)res, res ? NULL : "no result");
		if (res)
			PQclear(res);
		query_free(q);
		if (c->state != PG_READY)
			return; /* the callback closed or reset the connection */
		conn_send_next(c);
	}
	if (c->state == PG_READY)
		drain_notifies(c);
	if (c->state == PG_READY && PQstatus(c->conn) == CONNECTION_BAD)
		conn_schedule_reconnect(c, "connection lost");
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
	struct pgconn *c = arg;
	(void)fd;

	if (c->state == PG_CONNECTING) {
		connect_poll(c);
		return;
	}
	if (c->state != PG_READY)
		return;
	if (what & EV_WRITE) {
		flush_wait(c);
		if (c->state != PG_READY)
			return;
	}
	if (what & EV_READ)
		read_results(c);
}

struct pgconn *pg_new(struct event_base *base, const char *name, const char *conninfo, const char *extra_options,
		      int64_t connect_timeout_ms, int64_t reconnect_max_ms, const struct pg_callbacks *cb, void *arg)
{
	struct pgconn *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->base = base;
	c->name = strdup(name);
	c->conninfo = strdup(conninfo ? conninfo : "");
	c->options = extra_options ? strdup(extra_options) : NULL;
	c->connect_timeout_ms = connect_timeout_ms > 0 ? connect_timeout_ms : 5000;
	c->reconnect_max_ms = reconnect_max_ms > 0 ? reconnect_max_ms : 1000;
	if (cb)
		c->cb = *cb;
	c->arg = arg;
	c->ev_timer = evtimer_new(base, on_timer, c);
	c->state = PG_DISCONNECTED;
	conn_start(c);
	return c;
}

void pg_close(struct pgconn *c)
{
	if (c == NULL)
		return;
	/* the teardown contract: once closing, nothing calls back */
	c->cb.on_disconnect = NULL;
	for (struct pg_query *q = c->head; q; q = q->next)
		q->cb = NULL;
	conn_drop(c, "closing");
	c->state = PG_CLOSED;
	event_free(c->ev_timer);
	free(c->name);
	free(c->conninfo);
	free(c->options);
	free(c);
}

int pg_ready(const struct pgconn *c)
{
	return c != NULL && c->state == PG_READY;
}

int pg_pending(const struct pgconn *c)
{
	return c->npending;
}

void pg_reset(struct pgconn *c, const char *reason)
{
	if (c->state == PG_READY || c->state == PG_CONNECTING)
		conn_schedule_reconnect(c, reason);
}

int pg_query(struct pgconn *c, const char *sql, int nparams, const char *const *params, int64_t timeout_ms,
	     pg_query_cb cb, void *arg)
{
	struct pg_query *q;

	if (c->state != PG_READY)
		return -1;
	q = calloc(1, sizeof(*q));
	if (q == NULL)
		return -1;
	q->sql = strdup(sql);
	q->nparams = nparams;
	q->params = calloc((size_t)(nparams > 0 ? nparams : 1), sizeof(char *));
	for (int i = 0; i < nparams; i++)
		q->params[i] = params[i] ? strdup(params[i]) : NULL;
	q->timeout_ms = timeout_ms;
	q->cb = cb;
	q->arg = arg;
	if (c->tail)
		c->tail->next = q;
	else
		c->head = q;
	c->tail = q;
	c->npending++;
	conn_send_next(c);
	return 0;
}

int pg_result_ok(const struct pg_result *r)
{
	ExecStatusType s;

	if (r == NULL)
		return 0;
	s = PQresultStatus(RES(r));
	return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

const char *pg_result_error(const struct pg_result *r)
{
	if (r == NULL)
		return "no result";
	return PQresultErrorMessage(RES(r));
}

const char *pg_failure(const struct pg_result *r, const char *err)
{
	return err ? err : pg_result_error(r);
}

const char *pg_result_sqlstate(const struct pg_result *r)
{
	const char *s = r ? PQresultErrorField(RES(r), PG_DIAG_SQLSTATE) : NULL;
	return s ? s : "";
}

int pg_ntuples(const struct pg_result *r)
{
	return r ? PQntuples(RES(r)) : 0;
}

int pg_isnull(const struct pg_result *r, int row, int col)
{
	return PQgetisnull(RES(r), row, col);
}

const char *pg_value(const struct pg_result *r, int row, int col)
{
	return PQgetvalue(RES(r), row, col);
}

struct pg_sync {
	PGconn *conn;
};

struct pg_sync *pg_sync_connect(const char *conninfo, const char *appname, char *errbuf, size_t errlen)
{
	/* later keywords win: the URL may set connect_timeout, not the application name */
	const char *keys[] = { "connect_timeout", "dbname", "application_name", pg_password ? "password" : NULL, NULL };
	const char *vals[] = { "10", conninfo ? conninfo : "", appname, pg_password, NULL };
	struct pg_sync *s;
	PGconn *conn = PQconnectdbParams(keys, vals, 1);

	if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
		size_t i, n = 0;

		snprintf(errbuf, errlen, "%s", conn ? PQerrorMessage(conn) : "out of memory");
		/* one line: every host tried says why (multi-host URLs), each run of white space
		 * folded to one space */
		for (i = 0; errbuf[i] != '\0'; i++)
			if (!strchr(" \t\r\n", errbuf[i]) || (n > 0 && errbuf[n - 1] != ' '))
				errbuf[n++] = strchr("\t\r\n", errbuf[i]) ? ' ' : errbuf[i];
		while (n > 0 && errbuf[n - 1] == ' ')
			n--;
		errbuf[n] = '\0';
		PQfinish(conn);
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		PQfinish(conn);
		snprintf(errbuf, errlen, "out of memory");
		return NULL;
	}
	s->conn = conn;
	return s;
}

struct pg_result *pg_sync_query(struct pg_sync *s, const char *sql, int nparams, const char *const *params,
				char *errbuf, size_t errlen)
{
	PGresult *r = PQexecParams(s->conn, sql, nparams, NULL, params, NULL, NULL, 0);

	if (r == NULL || (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK)) {
		snprintf(errbuf, errlen, "%s", r ? PQresultErrorMessage(r) : PQerrorMessage(s->conn));
		errbuf[strcspn(errbuf, "\n")] = '\0';
		PQclear(r);
		return NULL;
	}
	return (struct pg_result *)r;
}

void pg_sync_free_result(struct pg_result *r)
{
	PQclear(RES(r));
}

void pg_sync_close(struct pg_sync *s)
{
	if (s == NULL)
		return;
	PQfinish(s->conn);
	free(s);
}

struct pg_result *pg_sync_exec(struct pg_sync *s, const char *sql)
{
	PGresult *r = PQexec(s->conn, sql), *rest;
	ExecStatusType st = PQresultStatus(r);

	if (st == PGRES_COPY_IN) {
		PQputCopyEnd(s->conn, "COPY FROM STDIN is not supported here");
	} else if (st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
		char *row;
		while (PQgetCopyData(s->conn, &row, 0) > 0)
			PQfreemem(row);
	}
	if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH)
		while ((rest = PQgetResult(s->conn)) != NULL)
			PQclear(rest);
	return (struct pg_result *)r;
}

struct pg_result *pg_sync_exec_params(struct pg_sync *s, const char *sql, int nparams, const char *const *params)
{
	return (struct pg_result *)PQexecParams(s->conn, sql, nparams, NULL, params, NULL, NULL, 0);
}

struct pg_result *pg_sync_exec_bytea(struct pg_sync *s, const char *sql, const void *data, size_t len)
{
	const Oid types[1] = { 17 }; /* bytea */
	const char *values[1] = { data };
	const int lengths[1] = { (int)len };
	const int formats[1] = { 1 };

	if (len > INT_MAX)
		return NULL;
	return (struct pg_result *)PQexecParams(s->conn, sql, 1, types, values, lengths, formats, 0);
}

enum pg_outcome pg_outcome_of(const struct pg_result *r)
{
	switch (r ? PQresultStatus(RES(r)) : PGRES_FATAL_ERROR) {
	case PGRES_COMMAND_OK:
		return PG_OK_COMMAND;
	case PGRES_TUPLES_OK:
		return PG_OK_TUPLES;
	case PGRES_EMPTY_QUERY:
		return PG_OK_EMPTY;
	case PGRES_COPY_IN:
	case PGRES_COPY_OUT:
	case PGRES_COPY_BOTH:
		return PG_COPY_REFUSED;
	default:
		return PG_FAILED;
	}
}

const char *pg_result_field(const struct pg_result *r, enum pg_field field)
{
	return r ? PQresultErrorField(RES(r), (int)field) : NULL;
}

const char *pg_sync_error(const struct pg_sync *s)
{
	return PQerrorMessage(s->conn);
}

int pg_sync_in_transaction(const struct pg_sync *s)
{
	return PQtransactionStatus(s->conn) != PQTRANS_IDLE;
}

int pg_sync_server_version(const struct pg_sync *s)
{
	return PQserverVersion(s->conn);
}

void pg_sync_target(const struct pg_sync *s, char *out, size_t outlen)
{
	const char *host = PQhost(s->conn);

	snprintf(out, outlen, "%s@%s:%s/%s", PQuser(s->conn), host && *host ? host : "(local socket)", PQport(s->conn),
		 PQdb(s->conn));
}
