/* console_html: every value from the database is escaped, hostile subjects and relay texts
 * included; charts and buttons appear as the view says; bodies only when the document has them. */
#include "console_html.h"
#include "testutil.h"

#include <stdlib.h>

static const char *const HOSTILE = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>&amp;";

/* No markup from the hostile text survives; its escaped form does. */
static void check_clean(const char *page, const char *what)
{
	CHECK(strstr(page, "<script>alert") == NULL, "%s: raw <script> from data", what);
	CHECK(strstr(page, "<img") == NULL, "%s: raw <img> from data", what);
	CHECK(strstr(page, "onerror=alert") == NULL || strstr(page, "&lt;img src=x onerror=alert") != NULL,
	      "%s: an attribute from data", what);
	CHECK(strstr(page,
		     "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&gt;&lt;img src=x onerror=alert(2)&gt;&amp;amp;") !=
		      NULL,
	      "%s: escaped text missing", what);
}

static json_t *hostile_doc(const char *fmt)
{
	json_error_t e;
	char *text = NULL;
	json_t *doc;

	/* %s of the format gets the hostile string as a JSON string (escaped for JSON) */
	json_t *s = json_string(HOSTILE);
	char *js = json_dumps(s, JSON_ENCODE_ANY);
	size_t n = strlen(fmt) * 2 + strlen(js) * 8 + 1;

	text = malloc(n);
	snprintf(text, n, fmt, js, js, js, js, js, js, js, js);
	doc = json_loads(text, 0, &e);
	CHECK(doc != NULL, "bad test JSON: %s", e.text);
	free(text);
	free(js);
	json_decref(s);
	return doc;
}

static void test_escape(void)
{
	struct buf b;

	buf_init(&b);
	CHECK_INT(console_html_escape(&b, "a<b>&\"c'\x01\x7f\td\n"), 0);
	CHECK_STR(b.data, "a&lt;b&gt;&amp;&quot;c&#39;\td\n");
	buf_reset(&b);
	CHECK_INT(console_html_escape(&b, ""), 0);
	CHECK(b.len == 0, "empty");
	buf_free(&b);
}

static void test_overview(void)
{
	struct console_view v = { .version = "1.0", .writable = 1, .smtp_breaker = "open", .kafka_breaker = "closed" };
	json_t *doc = hostile_doc(
		"{\"window\": 20000, \"buckets\": [{\"bucket\": 0, \"sent\": 12, \"p50\": 0.25, \"max\": 1.5},"
		" {\"bucket\": 11, \"sent\": 3, \"p50\": 2, \"max\": 4}],"
		" \"failures\": [{\"id\": 7, \"state\": \"failed\", \"subject\": %s, \"attempts\": 1, \"max_attempts\": 10,"
		"   \"last_smtp_code\": 550, \"last_error\": %s, \"updated_at\": \"2026-12-03T09:27:30.5+00:00\","
		"   \"replies\": [{\"address\": \"a@example.com\", \"kind\": \"to\", \"state\": \"failed\","
		"                  \"smtp_code\": 550, \"last_error\": %s}]}]}");
	struct buf b;

	buf_init(&b);
	CHECK_INT(console_html_overview(&b, &v, doc), 0);
	check_clean(b.data, "overview");
	CHECK(strstr(b.data, "data-action=\"requeue\" data-id=\"7\"") != NULL, "requeue button");
	CHECK(strstr(b.data, "<b>550</b>") != NULL, "smtp code");
	CHECK(strstr(b.data, "2026-12-03 09:27:30+00:00") != NULL, "time shortened");
	CHECK(strstr(b.data, "<title>0-5 min ago: 12</title>") != NULL, "newest bucket on the right");
	CHECK(strstr(b.data, "<title>55-60 min ago: 3</title>") != NULL, "oldest bucket on the left");
	CHECK(strstr(b.data, "(15 in all)") != NULL, "total");
	CHECK(strstr(b.data, "badge s-open") != NULL, "breaker");
	CHECK(strstr(b.data, "<script src=\"/ui/console.js\"></script>") != NULL, "script tag");

	/* read-only: no button, a notice instead */
	buf_reset(&b);
	v.writable = 0;
	CHECK_INT(console_html_overview(&b, &v, doc), 0);
	CHECK(strstr(b.data, "data-action") == NULL, "no button when read-only");
	CHECK(strstr(b.data, "read-only") != NULL, "read-only shown");
	buf_free(&b);
	json_decref(doc);
}

static void test_message(void)
{
	struct console_view v = { .version = "1.0", .writable = 1 };
	json_t *doc = hostile_doc(
		"{\"window\": 20000, \"message\": {\"id\": 9, \"message_id\": %s, \"state\": \"pending\", \"subject\": %s,"
		"  \"recipients\": [%s], \"cc\": [], \"bcc\": [], \"headers\": {\"X-Evil\": %s}, \"body_text\": %s},"
		" \"recipients\": [{\"address\": %s, \"kind\": \"to\", \"state\": \"pending\", \"smtp_code\": null,"
		"   \"last_error\": %s, \"attempts\": 0, \"updated_at\": null}],"
		" \"events\": [{\"id\": 1, \"type\": \"email.retry\", \"state\": \"pending\", \"created_at\": \"x\","
		"   \"payload\": {\"attempts\": 1, \"code\": 451, \"error\": %s}}]}");
	json_t *no_body = json_loads("{\"message\": {\"id\": 3, \"state\": \"dead\", \"subject\": \"s\"},"
				     " \"recipients\": [], \"events\": []}",
				     0, NULL);
	struct buf b;

	buf_init(&b);
	CHECK_INT(console_html_message(&b, &v, doc, "9"), 0);
	check_clean(b.data, "message");
	CHECK(strstr(b.data, "data-action=\"cancel\" data-id=\"9\"") != NULL, "cancel for pending");
	CHECK(strstr(b.data, "data-action=\"requeue\"") == NULL, "no requeue for pending");
	CHECK(strstr(b.data, "<h2>body_text</h2>") != NULL, "body when present");
	CHECK(strstr(b.data, "email.retry") != NULL, "lifecycle event");

	buf_reset(&b);
	CHECK_INT(console_html_message(&b, &v, no_body, "3"), 0);
	CHECK(strstr(b.data, "body_text") == NULL, "no body when absent");
	CHECK(strstr(b.data, "data-action=\"requeue\" data-id=\"3\"") != NULL, "requeue for dead");

	buf_reset(&b);
	CHECK_INT(console_html_message(&b, &v, NULL, HOSTILE), 0);
	check_clean(b.data, "not found");
	CHECK(strstr(b.data, "No such message") != NULL, "not found");
	buf_free(&b);
	json_decref(doc);
	json_decref(no_body);
}

static void test_search_and_notice(void)
{
	struct console_view v = { .version = "1.0" };
	json_t *doc = hostile_doc(
		"{\"window\": 20000, \"messages\": [{\"id\": 4, \"state\": \"sent\", \"subject\": %s,"
		"  \"recipients\": [%s], \"cc\": [%s], \"bcc_count\": 2, \"last_smtp_code\": 250, \"last_error\": %s,"
		"  \"created_at\": \"2026-12-03T09:27:30+00:00\"}]}");
	struct buf b;

	buf_init(&b);
	CHECK_INT(console_html_search(&b, &v, doc, HOSTILE), 0);
	check_clean(b.data, "search");
	CHECK(strstr(b.data, "; 2 bcc") != NULL, "bcc counted, not listed");
	buf_reset(&b);
	CHECK_INT(console_html_notice(&b, &v, HOSTILE, HOSTILE), 0);
	check_clean(b.data, "notice");
	buf_free(&b);
	json_decref(doc);
}

int main(void)
{
	test_escape();
	test_overview();
	test_message();
	test_search_and_notice();
	return test_summary("console_html");
}
