/* console_html: the web console's pages as HTML, built from the JSON the console's SQL
 * functions return. Every value that came from the database or the request goes through
 * console_html_escape(); charts are inline SVG; style and script are separate assets so the
 * pages can be served under a Content-Security-Policy without 'unsafe-inline'. */
#include "console_html.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUCKETS 12 /* 5-minute buckets in the last hour */
#define CHART_W 360
#define CHART_H 100 /* plot height; labels below */

/* An output with a sticky error: helpers do nothing after the first failure. */
struct out {
	struct buf *b;
	int err;
};

static void raw(struct out *o, const char *s)
{
	if (!o->err && buf_puts(o->b, s) < 0)
		o->err = 1;
}

static void txt(struct out *o, const char *s)
{
	if (!o->err && s != NULL && console_html_escape(o->b, s) < 0)
		o->err = 1;
}

/* Formats trusted text only (numbers, fixed words): never a value from outside. */
__attribute__((format(printf, 2, 3))) static void fmt(struct out *o, const char *f, ...)
{
	va_list ap;

	if (o->err)
		return;
	va_start(ap, f);
	if (buf_vprintf(o->b, f, ap) < 0)
		o->err = 1;
	va_end(ap);
}

int console_html_escape(struct buf *b, const char *s)
{
	const char *start = s;

	for (; *s; s++) {
		const char *rep = NULL;
		unsigned char c = (unsigned char)*s;

		switch (c) {
		case '&':
			rep = "&amp;";
			break;
		case '<':
			rep = "&lt;";
			break;
		case '>':
			rep = "&gt;";
			break;
		case '"':
			rep = "&quot;";
			break;
		case '\'':
			rep = "&#39;";
			break;
		default:
			if (c < 0x20 && c != '\t' && c != '\n')
				rep = "";
			else if (c == 0x7f)
				rep = "";
		}
		if (rep == NULL)
			continue;
		if (buf_append(b, start, (size_t)(s - start)) < 0 || buf_puts(b, rep) < 0)
			return -1;
		start = s + 1;
	}
	return buf_append(b, start, (size_t)(s - start));
}

static const char *jstr(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static double jnum(json_t *o, const char *k)
{
	return json_number_value(json_object_get(o, k));
}

/* "2026-12-03T09:27:30.563668+00:00" -> "2026-12-03 09:27:30+00:00"; other text as is. */
static void show_time(struct out *o, const char *ts)
{
	char t[40];
	size_t n, i = 19;

	if (ts == NULL) {
		raw(o, "&mdash;");
		return;
	}
	n = strlen(ts);
	if (n < 19 || n >= sizeof(t) || ts[10] != 'T') {
		txt(o, ts);
		return;
	}
	memcpy(t, ts, 19);
	t[10] = ' ';
	if (ts[i] == '.')
		for (i++; ts[i] >= '0' && ts[i] <= '9'; i++)
			;
	snprintf(t + 19, sizeof(t) - 19, "%s", ts + i);
	txt(o, t);
}

static void show_age(struct out *o, double s)
{
	if (!isfinite(s) || s < 0)
		s = 0;
	if (s < 120)
		fmt(o, "%.1f s", s);
	else if (s < 7200)
		fmt(o, "%.0f min", s / 60);
	else if (s < 172800)
		fmt(o, "%.1f h", s / 3600);
	else
		fmt(o, "%.1f d", s / 86400);
}

/* Any JSON value as text: strings escaped, arrays comma-separated, objects as JSON. */
static void show_value(struct out *o, json_t *v)
{
	size_t i;
	json_t *x;
	char *s;

	if (v == NULL) {
		raw(o, "&mdash;");
		return;
	}
	switch (json_typeof(v)) {
	case JSON_STRING:
		txt(o, json_string_value(v));
		break;
	case JSON_INTEGER:
		fmt(o, "%lld", (long long)json_integer_value(v));
		break;
	case JSON_REAL:
		fmt(o, "%.6g", json_real_value(v));
		break;
	case JSON_TRUE:
		raw(o, "yes");
		break;
	case JSON_FALSE:
		raw(o, "no");
		break;
	case JSON_ARRAY:
		if (json_array_size(v) == 0)
			raw(o, "&mdash;");
		json_array_foreach (v, i, x) {
			if (i > 0)
				raw(o, ", ");
			show_value(o, x);
		}
		break;
	case JSON_OBJECT:
		s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
		if (s == NULL)
			o->err = 1;
		txt(o, s);
		free(s);
		break;
	default:
		raw(o, "&mdash;");
	}
}

/* A state word as a badge; the class name is only ever one of the known states. */
static void badge(struct out *o, const char *state)
{
	static const char *const known[] = { "pending",   "sending", "sent", "failed",    "dead", "cancelled",
					     "published", "closed",  "open", "half-open", NULL };
	const char *cls = "other";

	for (size_t i = 0; state != NULL && known[i]; i++)
		if (strcmp(state, known[i]) == 0)
			cls = known[i];
	fmt(o, "<span class=\"badge s-%s\">", cls);
	txt(o, state != NULL ? state : "?");
	raw(o, "</span>");
}

static void head(struct out *o, const struct console_view *v, const char *title)
{
	raw(o, "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
	       "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
	       "<title>");
	txt(o, title);
	raw(o, " &middot; outboxd</title><link rel=\"stylesheet\" href=\"/ui/console.css\">"
	       "<link rel=\"icon\" href=\"/ui/favicon.svg\" type=\"image/svg+xml\"></head>\n");
	fmt(o,
	    "<body data-writable=\"%d\"><header><a class=\"brand\" href=\"/ui\">outboxd</a>"
	    "<span class=\"ver\">",
	    v->writable ? 1 : 0);
	txt(o, v->version);
	raw(o, "</span><form action=\"/ui/message\" method=\"get\"><input name=\"q\" "
	       "placeholder=\"message id or Message-ID\" aria-label=\"message id or Message-ID\"></form>"
	       "<form action=\"/ui/search\" method=\"get\"><input name=\"recipient\" "
	       "placeholder=\"recipient contains\" aria-label=\"recipient\"></form>");
	if (v->writable)
		raw(o, "<input id=\"token\" type=\"password\" autocomplete=\"off\" "
		       "placeholder=\"console token\" aria-label=\"console token\">");
	else
		raw(o, "<span class=\"ro\" title=\"set http.console_token_file to requeue and cancel\">"
		       "read-only</span>");
	raw(o, "</header>\n<div id=\"flash\" role=\"status\"></div><main>\n");
}

static int tail(struct out *o)
{
	raw(o, "</main><script src=\"/ui/console.js\"></script></body></html>\n");
	return o->err ? -1 : 0;
}

/* A requeue or cancel button; the script sends it with the token. */
static void action(struct out *o, const struct console_view *v, const char *what, long long id)
{
	if (!v->writable)
		return;
	fmt(o, "<button class=\"act\" data-action=\"%s\" data-id=\"%lld\">%s</button>", what, id,
	    strcmp(what, "requeue") == 0 ? "Requeue" : "Cancel");
}

static void card(struct out *o, const char *label, const char *cls)
{
	fmt(o, "<div class=\"card %s\"><div class=\"lbl\">%s</div><div class=\"val\">", cls, label);
}

static void cards(struct out *o, const struct console_view *v)
{
	static const char *const states[] = { "pending", "sending", "sent", "failed", "dead", "cancelled" };
	json_t *f = v->figures, *depth = json_object_get(f, "depth");

	raw(o, "<section class=\"cards\">");
	for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
		json_t *n = json_object_get(depth, states[i]);

		fmt(o, "<div class=\"card s-%s\" id=\"depth-%s\"><div class=\"lbl\">%s</div><div class=\"val\">",
		    states[i], states[i], states[i]);
		if (n != NULL)
			fmt(o, "%.0f", json_number_value(n));
		else
			raw(o, "&mdash;");
		raw(o, "</div></div>");
	}
	card(o, "oldest due", "age");
	if (f != NULL)
		show_age(o, jnum(f, "oldest"));
	else
		raw(o, "&mdash;");
	raw(o, "</div></div>");
	card(o, "SMTP breaker", "brk");
	badge(o, v->smtp_breaker);
	raw(o, "</div></div>");
	card(o, "Kafka mirror lag", "lag");
	if (!v->mirror_on) {
		raw(o, "off");
	} else if (f != NULL) {
		fmt(o, "%.0f events, ", jnum(f, "lag_rows"));
		show_age(o, jnum(f, "lag_seconds"));
		raw(o, " <span class=\"sub\">breaker ");
		badge(o, v->kafka_breaker);
		raw(o, "</span>");
	} else {
		raw(o, "&mdash;");
	}
	raw(o, "</div></div></section>\n");
	if (f != NULL) {
		raw(o, "<p class=\"note\">Queue figures as read by this dispatcher ");
		show_age(o, v->figures_age_s);
		raw(o, " ago (every 5 s).</p>\n");
	} else {
		raw(o, "<p class=\"note\">Queue figures not read yet: the dispatcher reads them every 5 s.</p>\n");
	}
}

/* A bar chart of BUCKETS values, oldest left; `lo` (may be NULL) drawn darker over `hi`. */
static void chart(struct out *o, const char *label, const char *unit, const double *hi, const double *lo)
{
	double top = 0;
	int slot = CHART_W / BUCKETS;

	for (int i = 0; i < BUCKETS; i++)
		top = hi[i] > top ? hi[i] : top;
	fmt(o,
	    "<svg class=\"chart\" viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" role=\"img\" "
	    "aria-label=\"%s\">",
	    CHART_W, CHART_H + 16, CHART_W, CHART_H + 16, label);
	fmt(o, "<line class=\"axis\" x1=\"0\" y1=\"%d\" x2=\"%d\" y2=\"%d\"/>", CHART_H, CHART_W, CHART_H);
	for (int i = 0; i < BUCKETS; i++) {
		const double *series[2] = { hi, lo };

		for (int s = 0; s < 2; s++) {
			double val = series[s] != NULL ? series[s][i] : 0;
			double h = top > 0 ? val / top * (CHART_H - 14) : 0;

			if (series[s] == NULL || val <= 0)
				continue;
			fmt(o,
			    "<rect class=\"%s\" x=\"%d\" y=\"%.1f\" width=\"%d\" height=\"%.1f\">"
			    "<title>%d-%d min ago: %.6g%s</title></rect>",
			    s == 0 && lo != NULL ? "bar hi" : "bar", i * slot + 4, CHART_H - (h < 1 ? 1 : h), slot - 8,
			    h < 1 ? 1 : h, (BUCKETS - i - 1) * 5, (BUCKETS - i) * 5, val, unit);
		}
	}
	fmt(o,
	    "<text class=\"lbl\" x=\"0\" y=\"%d\">-60 min</text>"
	    "<text class=\"lbl\" x=\"%d\" y=\"%d\" text-anchor=\"end\">now</text>"
	    "<text class=\"lbl\" x=\"0\" y=\"10\">max %.6g%s</text></svg>",
	    CHART_H + 13, CHART_W, CHART_H + 13, top, unit);
}

static void charts(struct out *o, json_t *doc)
{
	double sent[BUCKETS] = { 0 }, p50[BUCKETS] = { 0 }, max[BUCKETS] = { 0 }, total = 0;
	json_t *b;
	size_t i;

	json_array_foreach (json_object_get(doc, "buckets"), i, b) {
		long long k = (long long)jnum(b, "bucket");

		if (k < 0 || k >= BUCKETS)
			continue;
		sent[BUCKETS - 1 - k] = jnum(b, "sent");
		p50[BUCKETS - 1 - k] = jnum(b, "p50");
		max[BUCKETS - 1 - k] = jnum(b, "max");
		total += jnum(b, "sent");
	}
	raw(o, "<section class=\"charts\"><figure id=\"chart-rate\"><figcaption>Delivered per 5 minutes, "
	       "last hour");
	fmt(o, " (%.0f in all)</figcaption>", total);
	chart(o, "messages delivered per 5 minutes", "", sent, NULL);
	raw(o, "</figure><figure id=\"chart-latency\"><figcaption>Delivery latency per 5 minutes: median "
	       "(dark) and max</figcaption>");
	chart(o, "delivery latency per 5 minutes", " s", max, p50);
	fmt(o, "</figure></section>\n<p class=\"note\">Charts count the sent messages among the newest %.0f.</p>\n",
	    jnum(doc, "window"));
}

/* Opens a list table with header cells `heads`; when the list is empty says `none` instead
 * and returns 0. */
static int table_start(struct out *o, json_t *list, const char *id, const char *none, const char *heads)
{
	if (json_array_size(list) == 0) {
		fmt(o, "<p class=\"note\" id=\"no-%s\">%s</p>\n", id, none);
		return 0;
	}
	fmt(o, "<table class=\"list\" id=\"%s\"><thead><tr>%s</tr></thead><tbody>\n", id, heads);
	return 1;
}

/* A row's first cells: the id linked to the message's page, then its state. */
static void row_start(struct out *o, long long id, const char *state)
{
	fmt(o, "<tr data-id=\"%lld\"><td><a href=\"/ui/message?id=%lld\">#%lld</a></td><td>", id, id, id);
	badge(o, state);
	raw(o, "</td><td class=\"subj\">");
}

/* Per-recipient replies as a list: address, code, reply text. */
static void replies(struct out *o, json_t *list)
{
	json_t *r;
	size_t i;

	if (json_array_size(list) == 0) {
		raw(o, "<span class=\"sub\">no per-recipient reply</span>");
		return;
	}
	raw(o, "<ul class=\"replies\">");
	json_array_foreach (list, i, r) {
		raw(o, "<li>");
		txt(o, jstr(r, "address"));
		raw(o, " <span class=\"sub\">");
		txt(o, jstr(r, "kind"));
		raw(o, "</span> ");
		badge(o, jstr(r, "state"));
		if (json_is_integer(json_object_get(r, "smtp_code")))
			fmt(o, " <b>%lld</b>", (long long)json_integer_value(json_object_get(r, "smtp_code")));
		if (jstr(r, "last_error") != NULL) {
			raw(o, " <span class=\"err\">");
			txt(o, jstr(r, "last_error"));
			raw(o, "</span>");
		}
		raw(o, "</li>");
	}
	raw(o, "</ul>");
}

int console_html_overview(struct buf *b, const struct console_view *v, json_t *doc)
{
	struct out o = { b, 0 };
	json_t *f, *list = json_object_get(doc, "failures");
	size_t i;

	head(&o, v, "queue");
	raw(&o, "<h1>Queue</h1>\n");
	cards(&o, v);
	charts(&o, doc);
	raw(&o, "<h2>Recent failed and dead</h2>\n");
	if (!table_start(&o, list, "failures", "No failed or dead message.",
			 "<th>id</th><th>state</th><th>subject</th><th>attempts</th><th>last reply</th>"
			 "<th>recipients</th><th>updated</th><th></th>"))
		return tail(&o);
	json_array_foreach (list, i, f) {
		long long id = (long long)jnum(f, "id");

		row_start(&o, id, jstr(f, "state"));
		txt(&o, jstr(f, "subject"));
		fmt(&o, "</td><td>%.0f / %.0f</td><td class=\"err\">", jnum(f, "attempts"), jnum(f, "max_attempts"));
		if (json_is_integer(json_object_get(f, "last_smtp_code")))
			fmt(&o, "<b>%lld</b> ", (long long)json_integer_value(json_object_get(f, "last_smtp_code")));
		txt(&o, jstr(f, "last_error"));
		raw(&o, "</td><td>");
		replies(&o, json_object_get(f, "replies"));
		raw(&o, "</td><td class=\"time\">");
		show_time(&o, jstr(f, "updated_at"));
		raw(&o, "</td><td>");
		action(&o, v, "requeue", id);
		raw(&o, "</td></tr>\n");
	}
	raw(&o, "</tbody></table>\n");
	return tail(&o);
}

/* Rows of the message's own fields, in a fixed order; bodies only when the document has them. */
static void fields(struct out *o, json_t *m)
{
	static const char *const keys[] = { "message_id",
					    "state",
					    "subject",
					    "sender",
					    "recipients",
					    "cc",
					    "bcc",
					    "reply_to",
					    "priority",
					    "attempts",
					    "max_attempts",
					    "last_smtp_code",
					    "last_error",
					    "outcome_unknown",
					    "not_before",
					    "next_attempt_at",
					    "lease_owner",
					    "lease_expires_at",
					    "idempotency_key",
					    "key",
					    "created_at",
					    "sent_at",
					    "updated_at" };

	raw(o, "<table class=\"kv\" id=\"fields\"><tbody>\n");
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		json_t *val = json_object_get(m, keys[i]);
		size_t n = strlen(keys[i]);

		/* raw(), not fmt("%s"): gcc's -O1 sanitizer build misreads the loop as passing NULL */
		raw(o, "<tr><th>");
		raw(o, keys[i]);
		raw(o, "</th><td>");
		if (strcmp(keys[i], "state") == 0)
			badge(o, json_string_value(val));
		else if (n > 3 && (strcmp(keys[i] + n - 3, "_at") == 0 || strcmp(keys[i], "not_before") == 0))
			show_time(o, json_string_value(val));
		else
			show_value(o, val);
		raw(o, "</td></tr>\n");
	}
	raw(o, "</tbody></table>\n");
}

static void recipients(struct out *o, json_t *list)
{
	json_t *r;
	size_t i;

	raw(o, "<h2>Recipients</h2>\n<table class=\"list\" id=\"recipients\"><thead><tr><th>address</th>"
	       "<th>kind</th><th>state</th><th>code</th><th>reply</th><th>attempts</th><th>updated</th>"
	       "</tr></thead><tbody>\n");
	json_array_foreach (list, i, r) {
		raw(o, "<tr><td>");
		txt(o, jstr(r, "address"));
		raw(o, "</td><td>");
		txt(o, jstr(r, "kind"));
		raw(o, "</td><td>");
		badge(o, jstr(r, "state"));
		raw(o, "</td><td>");
		show_value(o, json_object_get(r, "smtp_code"));
		raw(o, "</td><td class=\"err\">");
		txt(o, jstr(r, "last_error"));
		raw(o, "</td><td>");
		show_value(o, json_object_get(r, "attempts"));
		raw(o, "</td><td class=\"time\">");
		show_time(o, jstr(r, "updated_at"));
		raw(o, "</td></tr>\n");
	}
	raw(o, "</tbody></table>\n");
}

static void events(struct out *o, json_t *doc)
{
	json_t *list = json_object_get(doc, "events"), *e;
	size_t i;

	raw(o, "<h2>Lifecycle events</h2>\n");
	if (json_array_size(list) == 0) {
		fmt(o,
		    "<p class=\"note\">None among the newest %.0f events (they are written while "
		    "<code>kafka.lifecycle_events</code> is on and the mirror runs).</p>\n",
		    jnum(doc, "window"));
		return;
	}
	raw(o, "<table class=\"list\" id=\"events\"><thead><tr><th>time</th><th>event</th><th>details</th>"
	       "<th>mirror</th></tr></thead><tbody>\n");
	json_array_foreach (list, i, e) {
		json_t *p = json_object_get(e, "payload");

		raw(o, "<tr><td class=\"time\">");
		show_time(o, jstr(e, "created_at"));
		raw(o, "</td><td>");
		txt(o, jstr(e, "type"));
		raw(o, "</td><td>");
		fmt(o, "attempt %.0f", jnum(p, "attempts"));
		if (json_is_integer(json_object_get(p, "code")))
			fmt(o, ", <b>%lld</b>", (long long)json_integer_value(json_object_get(p, "code")));
		if (jstr(p, "error") != NULL) {
			raw(o, " <span class=\"err\">");
			txt(o, jstr(p, "error"));
			raw(o, "</span>");
		}
		raw(o, "</td><td>");
		badge(o, jstr(e, "state"));
		if (json_is_integer(json_object_get(e, "kafka_offset")))
			fmt(o, " partition %lld offset %lld",
			    (long long)json_integer_value(json_object_get(e, "kafka_partition")),
			    (long long)json_integer_value(json_object_get(e, "kafka_offset")));
		raw(o, "</td></tr>\n");
	}
	raw(o, "</tbody></table>\n");
}

static void bodies(struct out *o, json_t *m)
{
	static const char *const keys[] = { "headers", "body_text", "body_html" };

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		json_t *val = json_object_get(m, keys[i]);

		if (val == NULL || json_is_null(val))
			continue;
		fmt(o, "<h2>%s</h2>\n<pre class=\"body\">", keys[i]);
		show_value(o, val);
		raw(o, "</pre>\n");
	}
}

int console_html_message(struct buf *b, const struct console_view *v, json_t *doc, const char *query)
{
	struct out o = { b, 0 };
	json_t *m = json_object_get(doc, "message");
	const char *state = jstr(m, "state");
	long long id = (long long)jnum(m, "id");

	if (!json_is_object(m)) {
		head(&o, v, "not found");
		raw(&o, "<h1>No such message</h1>\n<p class=\"note\" id=\"not-found\">Nothing has the id or "
			"Message-ID <code>");
		txt(&o, query);
		raw(&o, "</code>.</p>\n");
		return tail(&o);
	}
	head(&o, v, "message");
	fmt(&o, "<h1>Message #%lld ", id);
	badge(&o, state);
	raw(&o, "</h1>\n<p class=\"actions\">");
	if (state != NULL && (strcmp(state, "failed") == 0 || strcmp(state, "dead") == 0))
		action(&o, v, "requeue", id);
	if (state != NULL && strcmp(state, "pending") == 0)
		action(&o, v, "cancel", id);
	raw(&o, "</p>\n<p class=\"summary\">");
	txt(&o, jstr(m, "subject"));
	fmt(&o, " <span class=\"sub\">attempt %.0f of %.0f", jnum(m, "attempts"), jnum(m, "max_attempts"));
	if (json_is_integer(json_object_get(m, "last_smtp_code")))
		fmt(&o, ", last reply <b>%lld</b>",
		    (long long)json_integer_value(json_object_get(m, "last_smtp_code")));
	raw(&o, "</span></p>\n");
	recipients(&o, json_object_get(doc, "recipients"));
	events(&o, doc);
	raw(&o, "<h2>Details</h2>\n");
	fields(&o, m);
	bodies(&o, m);
	return tail(&o);
}

int console_html_search(struct buf *b, const struct console_view *v, json_t *doc, const char *text)
{
	struct out o = { b, 0 };
	json_t *list = json_object_get(doc, "messages"), *m;
	size_t i;

	head(&o, v, "search");
	raw(&o, "<h1>Recipient contains &ldquo;");
	txt(&o, text);
	raw(&o, "&rdquo;</h1>\n");
	fmt(&o, "<p class=\"note\">Among the newest %.0f messages; newest first, at most 50.</p>\n",
	    jnum(doc, "window"));
	if (!table_start(&o, list, "results", "No message found.",
			 "<th>id</th><th>state</th><th>subject</th><th>to, cc</th><th>last reply</th><th>created</th>"))
		return tail(&o);
	json_array_foreach (list, i, m) {
		row_start(&o, (long long)jnum(m, "id"), jstr(m, "state"));
		txt(&o, jstr(m, "subject"));
		raw(&o, "</td><td>");
		show_value(&o, json_object_get(m, "recipients"));
		if (json_array_size(json_object_get(m, "cc")) > 0) {
			raw(&o, "; cc ");
			show_value(&o, json_object_get(m, "cc"));
		}
		if (jnum(m, "bcc_count") > 0)
			fmt(&o, "; %.0f bcc", jnum(m, "bcc_count"));
		raw(&o, "</td><td class=\"err\">");
		if (json_is_integer(json_object_get(m, "last_smtp_code")))
			fmt(&o, "<b>%lld</b> ", (long long)json_integer_value(json_object_get(m, "last_smtp_code")));
		txt(&o, jstr(m, "last_error"));
		raw(&o, "</td><td class=\"time\">");
		show_time(&o, jstr(m, "created_at"));
		raw(&o, "</td></tr>\n");
	}
	raw(&o, "</tbody></table>\n");
	return tail(&o);
}

int console_html_notice(struct buf *b, const struct console_view *v, const char *title, const char *message)
{
	struct out o = { b, 0 };

	head(&o, v, title);
	raw(&o, "<h1>");
	txt(&o, title);
	raw(&o, "</h1>\n<p class=\"note\" id=\"notice\">");
	txt(&o, message);
	raw(&o, "</p>\n");
	return tail(&o);
}

const char console_css[] =
	":root{--fg:#1d2330;--mut:#6b7385;--bg:#f6f7f9;--card:#fff;--line:#e2e5ea;--acc:#2458c6;"
	"--ok:#1f8a4c;--warn:#b7791f;--bad:#c53030;font:14px/1.45 system-ui,-apple-system,'Segoe UI',"
	"Roboto,sans-serif;color:var(--fg);background:var(--bg)}\n"
	"body{margin:0}header{display:flex;gap:.8rem;align-items:center;flex-wrap:wrap;padding:.6rem 1.2rem;"
	"background:#1d2330;color:#fff}header a.brand{color:#fff;font-weight:700;font-size:1.1rem;"
	"text-decoration:none}header .ver{color:#aab3c5;font-size:.85rem}header form{margin:0}"
	"header input{padding:.3rem .5rem;border:1px solid #3a4458;border-radius:4px;background:#2a3244;"
	"color:#fff;min-width:14rem}header .ro{margin-left:auto;color:#aab3c5;font-size:.85rem}"
	"header #token{margin-left:auto;min-width:10rem}\n"
	"main{padding:1rem 1.2rem;max-width:92rem}h1{font-size:1.3rem;margin:.2rem 0 .8rem}"
	"h2{font-size:1.05rem;margin:1.4rem 0 .5rem}.note{color:var(--mut);font-size:.85rem;margin:.3rem 0}\n"
	".cards{display:flex;flex-wrap:wrap;gap:.6rem}.card{background:var(--card);border:1px solid var(--line);"
	"border-radius:6px;padding:.45rem .7rem;min-width:5.2rem}.card .lbl{color:var(--mut);font-size:.78rem;"
	"text-transform:uppercase;letter-spacing:.03em}.card .val{font-size:1.35rem;font-weight:600}"
	".card.lag .val,.card.brk .val,.card.age .val{font-size:1rem;padding-top:.3rem}"
	".card.s-failed .val,.card.s-dead .val{color:var(--bad)}.card.s-sent .val{color:var(--ok)}\n"
	".charts{display:flex;flex-wrap:wrap;gap:1rem;margin-top:1rem}figure{margin:0;background:var(--card);"
	"border:1px solid var(--line);border-radius:6px;padding:.6rem .8rem}figcaption{font-size:.85rem;"
	"color:var(--mut);margin-bottom:.3rem}svg.chart .bar{fill:var(--acc)}svg.chart .bar.hi{fill:#b9c9ee}"
	"svg.chart .axis{stroke:var(--line)}svg.chart .lbl{fill:var(--mut);font-size:10px}\n"
	"table{border-collapse:collapse;background:var(--card);border:1px solid var(--line);width:100%}"
	"th,td{text-align:left;padding:.35rem .55rem;border-bottom:1px solid var(--line);vertical-align:top}"
	"th{font-size:.78rem;color:var(--mut);font-weight:600}table.kv{width:auto}table.kv th{text-transform:none}"
	"td.err{color:#7a2020;min-width:14rem;max-width:30rem;overflow-wrap:anywhere}td.subj{min-width:8rem;max-width:18rem;overflow-wrap:anywhere}"
	"td.time{white-space:nowrap;color:var(--mut);font-size:.85rem}ul.replies{margin:0;padding-left:1rem}"
	".sub{color:var(--mut);font-size:.8rem}.err{color:#7a2020}pre.body{background:var(--card);"
	"border:1px solid var(--line);padding:.6rem;white-space:pre-wrap;overflow-wrap:anywhere}\n"
	".badge{display:inline-block;padding:0 .45rem;border-radius:9px;font-size:.78rem;font-weight:600;"
	"background:#e2e5ea;color:#333}.badge.s-sent,.badge.s-published,.badge.s-closed{background:#d5f0df;"
	"color:var(--ok)}.badge.s-failed,.badge.s-dead,.badge.s-open{background:#f9dada;color:var(--bad)}"
	".badge.s-pending,.badge.s-sending,.badge.s-half-open{background:#fcefd6;color:var(--warn)}\n"
	"button.act{border:1px solid var(--acc);background:#fff;color:var(--acc);border-radius:4px;"
	"padding:.15rem .6rem;cursor:pointer}button.act:hover{background:var(--acc);color:#fff}"
	"#flash{padding:0 1.2rem}#flash.ok,#flash.bad{padding:.5rem 1.2rem}#flash.ok{background:#d5f0df}"
	"#flash.bad{background:#f9dada}p.summary{font-size:1rem;margin:.2rem 0 .6rem;overflow-wrap:anywhere}\n";

const char console_favicon[] =
	"<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\"><rect width=\"16\" height=\"16\" "
	"rx=\"3\" fill=\"#1d2330\"/><path d=\"M3 5h10v7H3z\" fill=\"none\" stroke=\"#fff\" stroke-width=\"1.5\"/>"
	"<path d=\"M3 5l5 4 5-4\" fill=\"none\" stroke=\"#fff\" stroke-width=\"1.5\"/></svg>\n";

/* Token kept for the tab only (sessionStorage); sent in a header, which a cross-site page
 * cannot set without a CORS preflight that the console never grants. */
const char console_js[] =
	"'use strict';\n"
	"(function () {\n"
	"  var tok = document.getElementById('token');\n"
	"  var flash = document.getElementById('flash');\n"
	"  if (tok) {\n"
	"    tok.value = sessionStorage.getItem('outboxd-console-token') || '';\n"
	"    tok.addEventListener('change', function () {\n"
	"      sessionStorage.setItem('outboxd-console-token', tok.value);\n"
	"    });\n"
	"  }\n"
	"  function say(ok, text) {\n"
	"    flash.className = ok ? 'ok' : 'bad';\n"
	"    flash.textContent = text;\n"
	"  }\n"
	"  document.querySelectorAll('button.act').forEach(function (b) {\n"
	"    b.addEventListener('click', function () {\n"
	"      var action = b.getAttribute('data-action'), id = b.getAttribute('data-id');\n"
	"      b.disabled = true;\n"
	"      fetch('/ui/api/' + action, {\n"
	"        method: 'POST', credentials: 'omit',\n"
	"        headers: {'Content-Type': 'application/x-www-form-urlencoded',\n"
	"                  'X-Console-Token': tok ? tok.value : ''},\n"
	"        body: 'id=' + encodeURIComponent(id)\n"
	"      }).then(function (r) {\n"
	"        return r.json().then(function (j) { return {status: r.status, body: j}; });\n"
	"      }).then(function (r) {\n"
	"        if (r.status === 200 && r.body.changed) {\n"
	"          say(true, action + ' #' + id + ': done');\n"
	"          setTimeout(function () { location.reload(); }, 600);\n"
	"        } else {\n"
	"          say(false, action + ' #' + id + ': ' + (r.body.error || 'not possible in its state'));\n"
	"          b.disabled = false;\n"
	"        }\n"
	"      }).catch(function (e) {\n"
	"        say(false, action + ' #' + id + ': ' + e);\n"
	"        b.disabled = false;\n"
	"      });\n"
	"    });\n"
	"  });\n"
	"})();\n";
