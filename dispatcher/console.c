/* console: routes of the web console, its database connection and its write actions.
 * Pages are rendered by console_html.c from one JSON document per request; a request waits
 * for its query on the loop (never blocking it) and is answered from the query's callback.
 * Writes (requeue, cancel) need http.console_token in the X-Console-Token header, compared in
 * constant time, from a same-origin page: a custom header cannot be sent cross-site without a
 * CORS preflight, which the console never grants, and a foreign Origin is refused outright. */
#include "console.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "clock.h"
#include "config.h"
#include "console_html.h"
#include "http.h"
#include "log.h"
#include "pg.h"
#include "telemetry.h"

#define CONSOLE_MAX_PENDING 16 /* requests waiting for the database at once */
#define CONSOLE_QUERY_MS 5000  /* client-side bound; the session's statement_timeout too */
#define CONSOLE_MAX_QUERY 320  /* longest search text or Message-ID accepted */

/* libevent 2.1 names no constant for it */
#define CONSOLE_FORBIDDEN 403

#define CT_HTML "text/html; charset=utf-8"
#define CT_JSON "application/json"

struct console {
	struct event_base *base;
	struct pgconn *db;
	struct telemetry *tm;
	char *token; /* NULL = read-only */
	int show_body;
	int mirror_on;
	int pending;                 /* requests waiting for a query */
	struct console_req *waiting; /* list of them, answered by console_free() if still there */
};

enum page { PAGE_OVERVIEW, PAGE_MESSAGE, PAGE_SEARCH, PAGE_ACTION };

/* One request waiting for its query. */
struct console_req {
	struct console *c;
	struct evhttp_request *req;
	enum page page;
	char text[CONSOLE_MAX_QUERY + 1]; /* the query text or message id, for the page */
	const char *action;               /* PAGE_ACTION: "requeue" or "cancel" */
	long long id;
	struct console_req *next, *prev;
};

static void add_security_headers(struct evhttp_request *req)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);

	evhttp_add_header(h, "Content-Security-Policy",
			  "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
			  "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'");
	evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
	evhttp_add_header(h, "Referrer-Policy", "no-referrer");
	evhttp_add_header(h, "X-Frame-Options", "DENY");
}

static void send_buf(struct evhttp_request *req, int code, const char *type, struct buf *b)
{
	add_security_headers(req);
	http_reply(req, code, type, b->data != NULL ? b->data : "", b->len);
}

static void send_json(struct evhttp_request *req, int code, json_t *obj)
{
	char *s = obj != NULL ? json_dumps(obj, JSON_COMPACT) : NULL;

	json_decref(obj);
	add_security_headers(req);
	if (s == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	http_reply(req, code, CT_JSON, s, strlen(s));
	free(s);
}

static void view_of(const struct console *c, struct console_view *v)
{
	double at = 0;

	memset(v, 0, sizeof(*v));
	v->version = OUTBOXD_VERSION;
	v->writable = c->token != NULL;
	v->mirror_on = c->mirror_on;
	v->smtp_breaker = breaker_state_name(telemetry_breaker_state(c->tm, "smtp"));
	v->kafka_breaker = breaker_state_name(telemetry_breaker_state(c->tm, "kafka"));
	v->figures = telemetry_figures(c->tm, &at);
	v->figures_age_s = v->figures != NULL ? clock_mono_s() - at : 0;
}

static void send_notice(struct console *c, struct evhttp_request *req, int code, const char *title, const char *message)
{
	struct console_view v;
	struct buf b;

	buf_init(&b);
	view_of(c, &v);
	if (console_html_notice(&b, &v, title, message) < 0)
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
	else
		send_buf(req, code, CT_HTML, &b);
	buf_free(&b);
}

/* Equal without an early exit, so the time taken says nothing about where they differ. */
static int token_equal(const char *given, const char *want)
{
	size_t gl = strlen(given), wl = strlen(want);
	unsigned char diff = (unsigned char)(gl != wl);

	for (size_t i = 0; i < wl; i++)
		diff |= (unsigned char)(want[i] ^ (i < gl ? given[i] : 0));
	return diff == 0;
}

static void req_unlink(struct console_req *r)
{
	struct console *c = r->c;

	if (r->prev)
		r->prev->next = r->next;
	else
		c->waiting = r->next;
	if (r->next)
		r->next->prev = r->prev;
	c->pending--;
}

static void render(struct console_req *r, json_t *doc)
{
	struct console_view v;
	struct buf b;
	int rc = -1;

	buf_init(&b);
	view_of(r->c, &v);
	switch (r->page) {
	case PAGE_OVERVIEW:
		rc = console_html_overview(&b, &v, doc);
		break;
	case PAGE_MESSAGE:
		rc = console_html_message(&b, &v, doc, r->text);
		break;
	case PAGE_SEARCH:
		rc = console_html_search(&b, &v, doc, r->text);
		break;
	case PAGE_ACTION:
		break;
	}
	if (rc < 0)
		evhttp_send_error(r->req, HTTP_INTERNAL, NULL);
	else
		send_buf(r->req,
			 r->page == PAGE_MESSAGE && !json_is_object(json_object_get(doc, "message")) ? HTTP_NOTFOUND
												     : HTTP_OK,
			 CT_HTML, &b);
	buf_free(&b);
}

static void on_result(void *arg, const struct pg_result *res, const char *err)
{
	struct console_req *r = arg;
	const char *why = err;
	json_t *doc = NULL;

	req_unlink(r);
	if (res != NULL && pg_result_ok(res) && pg_ntuples(res) == 1) {
		if (r->page == PAGE_ACTION) {
			int changed = strcmp(pg_value(res, 0, 0), "t") == 0;

			log_info("console action", LOG_S("action", r->action), LOG_I("id", r->id),
				 LOG_B("changed", changed));
			send_json(r->req, HTTP_OK,
				  json_pack("{s:b,s:s,s:I}", "changed", changed, "action", r->action, "id",
					    (json_int_t)r->id));
			free(r);
			return;
		}
		doc = pg_isnull(res, 0, 0) ? json_null() : json_loads(pg_value(res, 0, 0), 0, NULL);
		why = doc == NULL ? "unreadable answer" : NULL;
	} else if (res != NULL) {
		why = pg_result_error(res);
	}
	if (why != NULL) {
		log_warn("console query failed", LOG_S("error", why));
		if (r->page == PAGE_ACTION)
			send_json(r->req, HTTP_SERVUNAVAIL, json_pack("{s:s}", "error", "database error"));
		else
			send_notice(r->c, r->req, HTTP_SERVUNAVAIL, "database error",
				    "The console's query failed; the dispatcher's log has the reason.");
	} else {
		render(r, doc);
	}
	json_decref(doc);
	free(r);
}

/* Starts the query for r, or answers at once when it cannot. Takes r. */
static void start(struct console *c, struct console_req *r, const char *sql, int n, const char *const *params)
{
	if (c->pending >= CONSOLE_MAX_PENDING || !pg_ready(c->db) ||
	    pg_query(c->db, sql, n, params, CONSOLE_QUERY_MS, on_result, r) != 0) {
		const char *why = pg_ready(c->db) ? "busy" : "database not connected";

		if (r->page == PAGE_ACTION)
			send_json(r->req, HTTP_SERVUNAVAIL, json_pack("{s:s}", "error", why));
		else
			send_notice(c, r->req, HTTP_SERVUNAVAIL, why, "Try again in a moment.");
		free(r);
		return;
	}
	r->next = c->waiting;
	if (c->waiting)
		c->waiting->prev = r;
	c->waiting = r;
	c->pending++;
}

static struct console_req *req_new(struct console *c, struct evhttp_request *req, enum page page)
{
	struct console_req *r = calloc(1, sizeof(*r));

	if (r == NULL) {
		evhttp_send_error(req, HTTP_SERVUNAVAIL, NULL);
		return NULL;
	}
	r->c = c;
	r->req = req;
	r->page = page;
	return r;
}

/* Parses a positive decimal id; 0 when s is not one. */
static long long parse_id(const char *s)
{
	char *end;
	long long v;

	if (s == NULL || *s < '1' || *s > '9' || strlen(s) > 18)
		return 0;
	errno = 0;
	v = strtoll(s, &end, 10);
	return *end == '\0' && errno == 0 ? v : 0;
}

static void serve_message(struct console *c, struct evhttp_request *req, struct evkeyvalq *q)
{
	const char *text = evhttp_find_header(q, "q"), *id_s = evhttp_find_header(q, "id");
	char idbuf[24], mid[CONSOLE_MAX_QUERY + 3];
	const char *params[3] = { NULL, NULL, c->show_body ? "true" : "false" };
	struct console_req *r;
	long long id;

	if (text == NULL)
		text = id_s != NULL ? id_s : "";
	while (*text == ' ')
		text++;
	if (strlen(text) == 0 || strlen(text) > CONSOLE_MAX_QUERY) {
		send_notice(c, req, HTTP_BADREQUEST, "bad request", "Give a message id or a Message-ID.");
		return;
	}
	if ((r = req_new(c, req, PAGE_MESSAGE)) == NULL)
		return;
	snprintf(r->text, sizeof(r->text), "%s", text);
	id = parse_id(text);
	if (id > 0) {
		snprintf(idbuf, sizeof(idbuf), "%lld", id);
		params[0] = idbuf;
	}
	/* Message-IDs are stored with their angle brackets; accept them typed without. */
	snprintf(mid, sizeof(mid), text[0] == '<' ? "%s" : "<%s>", text);
	params[1] = mid;
	start(c, r, "SELECT outbox.console_message($1::bigint, $2, $3::boolean)::text", 3, params);
}

static void serve_search(struct console *c, struct evhttp_request *req, struct evkeyvalq *q)
{
	const char *text = evhttp_find_header(q, "recipient");
	struct console_req *r;
	const char *params[1];

	if (text == NULL || text[0] == '\0' || strlen(text) > CONSOLE_MAX_QUERY) {
		send_notice(c, req, HTTP_BADREQUEST, "bad request", "Give part of a recipient address.");
		return;
	}
	if ((r = req_new(c, req, PAGE_SEARCH)) == NULL)
		return;
	snprintf(r->text, sizeof(r->text), "%s", text);
	params[0] = r->text;
	start(c, r, "SELECT outbox.console_search($1)::text", 1, params);
}

/* "http://" + Host must be the Origin when the browser sends one. */
static int same_origin(struct evhttp_request *req)
{
	struct evkeyvalq *h = evhttp_request_get_input_headers(req);
	const char *origin = evhttp_find_header(h, "Origin"), *host = evhttp_find_header(h, "Host");
	const char *site = evhttp_find_header(h, "Sec-Fetch-Site");
	char want[300];

	if (site != NULL && strcmp(site, "same-origin") != 0)
		return 0;
	if (origin == NULL)
		return 1;
	if (host == NULL)
		return 0;
	snprintf(want, sizeof(want), "http://%s", host);
	return strcmp(origin, want) == 0;
}

static void serve_action(struct console *c, struct evhttp_request *req, const char *action)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	struct evkeyvalq form;
	const char *token = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Console-Token");
	char body[256], idbuf[24];
	const char *params[1] = { idbuf };
	struct console_req *r;
	size_t n;
	long long id;

	if (c->token == NULL) {
		send_json(req, CONSOLE_FORBIDDEN,
			  json_pack("{s:s}", "error", "the console is read-only (http.console_token_file is not set)"));
		return;
	}
	if (!same_origin(req)) {
		send_json(req, CONSOLE_FORBIDDEN, json_pack("{s:s}", "error", "cross-origin request refused"));
		return;
	}
	if (token == NULL || !token_equal(token, c->token)) {
		log_warn("console action refused: bad token", LOG_S("action", action));
		send_json(req, CONSOLE_FORBIDDEN, json_pack("{s:s}", "error", "wrong or missing console token"));
		return;
	}
	n = evbuffer_get_length(in);
	if (n >= sizeof(body)) {
		send_json(req, HTTP_BADREQUEST, json_pack("{s:s}", "error", "body too large"));
		return;
	}
	evbuffer_copyout(in, body, n);
	body[n] = '\0';
	if (evhttp_parse_query_str(body, &form) != 0 || (id = parse_id(evhttp_find_header(&form, "id"))) == 0) {
		evhttp_clear_headers(&form);
		send_json(req, HTTP_BADREQUEST, json_pack("{s:s}", "error", "expected id=<message id>"));
		return;
	}
	evhttp_clear_headers(&form);
	if ((r = req_new(c, req, PAGE_ACTION)) == NULL)
		return;
	r->action = action;
	r->id = id;
	snprintf(idbuf, sizeof(idbuf), "%lld", id);
	start(c, r,
	      strcmp(action, "requeue") == 0 ? "SELECT outbox.requeue($1::bigint)" : "SELECT outbox.cancel($1::bigint)",
	      1, params);
}

static void serve_asset(struct evhttp_request *req, const char *type, const char *body)
{
	add_security_headers(req);
	http_reply(req, HTTP_OK, type, body, strlen(body));
}

int console_route(void *arg, struct evhttp_request *req)
{
	struct console *c = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	int get = cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD;
	struct evkeyvalq q;

	if (path == NULL || (strcmp(path, "/") != 0 && strcmp(path, "/ui") != 0 && strncmp(path, "/ui/", 4) != 0))
		return 0;
	if (strncmp(path, "/ui/api/", 8) == 0) {
		const char *action = strcmp(path + 8, "requeue") == 0  ? "requeue"
				     : strcmp(path + 8, "cancel") == 0 ? "cancel"
								       : NULL;
		if (action == NULL)
			return 0;
		if (cmd != EVHTTP_REQ_POST) {
			evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
			send_json(req, HTTP_BADMETHOD, json_pack("{s:s}", "error", "POST only"));
			return 1;
		}
		serve_action(c, req, action);
		return 1;
	}
	if (!get) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
		send_notice(c, req, HTTP_BADMETHOD, "method not allowed", "The console's pages take GET only.");
		return 1;
	}
	if (strcmp(path, "/ui/console.css") == 0) {
		serve_asset(req, "text/css; charset=utf-8", console_css);
		return 1;
	}
	if (strcmp(path, "/ui/console.js") == 0) {
		serve_asset(req, "text/javascript; charset=utf-8", console_js);
		return 1;
	}
	if (strcmp(path, "/ui/favicon.svg") == 0) {
		serve_asset(req, "image/svg+xml", console_favicon);
		return 1;
	}
	if (evhttp_parse_query_str(evhttp_uri_get_query(uri) ? evhttp_uri_get_query(uri) : "", &q) != 0) {
		send_notice(c, req, HTTP_BADREQUEST, "bad request", "The query string could not be read.");
	} else if (strcmp(path, "/") == 0 || strcmp(path, "/ui") == 0 || strcmp(path, "/ui/") == 0) {
		struct console_req *r = req_new(c, req, PAGE_OVERVIEW);

		if (r != NULL)
			start(c, r, "SELECT outbox.console_overview()::text", 0, NULL);
	} else if (strcmp(path, "/ui/message") == 0) {
		serve_message(c, req, &q);
	} else if (strcmp(path, "/ui/search") == 0) {
		serve_search(c, req, &q);
	} else {
		send_notice(c, req, HTTP_NOTFOUND, "not found", "The console has no such page.");
	}
	evhttp_clear_headers(&q);
	return 1;
}

struct console *console_new(struct event_base *base, const struct config *cfg, struct telemetry *tm, char *errbuf,
			    size_t errlen)
{
	struct console *c = calloc(1, sizeof(*c));
	char opts[96];

	if (c == NULL) {
		snprintf(errbuf, errlen, "console: out of memory");
		return NULL;
	}
	c->base = base;
	c->tm = tm;
	c->show_body = cfg->http_console_show_body;
	c->mirror_on = cfg->kafka_brokers != NULL && cfg->kafka_brokers[0] != '\0';
	if (cfg->http_console_token != NULL && cfg->http_console_token[0] != '\0' &&
	    (c->token = strdup(cfg->http_console_token)) == NULL) {
		free(c);
		snprintf(errbuf, errlen, "console: out of memory");
		return NULL;
	}
	snprintf(opts, sizeof(opts), "-c statement_timeout=%d -c idle_in_transaction_session_timeout=10000",
		 CONSOLE_QUERY_MS);
	c->db = pg_new(base, "outboxd-console", cfg->database_url, opts, cfg->database_connect_timeout_ms,
		       cfg->reconnect_max_ms, NULL, c);
	if (c->db == NULL) {
		console_free(c);
		snprintf(errbuf, errlen, "console: cannot create the database connection");
		return NULL;
	}
	return c;
}

void console_free(struct console *c)
{
	if (c == NULL)
		return;
	/* Closing fails every queued query: their callbacks answer the waiting requests. */
	pg_close(c->db);
	while (c->waiting != NULL) {
		struct console_req *r = c->waiting;

		req_unlink(r);
		evhttp_send_error(r->req, HTTP_SERVUNAVAIL, NULL);
		free(r);
	}
	if (c->token != NULL)
		explicit_bzero(c->token, strlen(c->token));
	free(c->token);
	free(c);
}
