/* Unit tests for smtp_proto (reply parser, EHLO keywords, body scan, dot-stuffing) and for
 * the engine-neutral events of smtp_class. */
#include <stdlib.h>

#include "buf.h"
#include "smtp_class.h"
#include "smtp_proto.h"
#include "testutil.h"

/* Feeds lines (separated by '\n' in text) and returns the status of the last one. */
static enum smtp_line_status feed(struct smtp_reply *r, const char *text)
{
	enum smtp_line_status st = SMTP_LINE_BAD;

	smtp_reply_reset(r);
	while (*text) {
		const char *nl = strchr(text, '\n');
		size_t n = nl ? (size_t)(nl - text) : strlen(text);
		st = smtp_reply_line(r, text, n);
		if (st != SMTP_LINE_MORE)
			return st;
		text += n + (nl ? 1 : 0);
	}
	return st;
}

static void test_replies(void)
{
	struct smtp_reply r;
	static const struct {
		const char *in;
		enum smtp_line_status st;
		int code;
		const char *enh;
		const char *text;
	} rows[] = {
		{ "250 OK", SMTP_LINE_LAST, 250, "", "250 OK" },
		{ "250", SMTP_LINE_LAST, 250, "", "250" },
		{ "550 5.1.1 User unknown", SMTP_LINE_LAST, 550, "5.1.1", "550 5.1.1 User unknown" },
		{ "451 4.3.0 try later\r", SMTP_LINE_LAST, 451, "4.3.0", "451 4.3.0 try later" },
		{ "250-a\n250-b\n250 2.0.0 c", SMTP_LINE_LAST, 250, "2.0.0", "250 2.0.0 c" },
		/* an enhanced code of another class is text, not a status */
		{ "550 4.1.1 odd", SMTP_LINE_LAST, 550, "", "550 4.1.1 odd" },
		{ "250 2.0.0", SMTP_LINE_LAST, 250, "2.0.0", "250 2.0.0" },
		{ "250 2.0.0x", SMTP_LINE_LAST, 250, "", "250 2.0.0x" },
		{ "250 2.1234.0 no", SMTP_LINE_LAST, 250, "", "250 2.1234.0 no" },
		{ "250-a", SMTP_LINE_MORE, 250, "", "250-a" },
		/* malformed */
		{ "", SMTP_LINE_BAD, 0, "", "" },
		{ "25", SMTP_LINE_BAD, 0, "", "" },
		{ "2x0 OK", SMTP_LINE_BAD, 0, "", "" },
		{ "hello", SMTP_LINE_BAD, 0, "", "" },
		{ "250/OK", SMTP_LINE_BAD, 0, "", "" },
		{ "150 what", SMTP_LINE_BAD, 0, "", "" },
		{ "650 what", SMTP_LINE_BAD, 0, "", "" },
		{ "999 what", SMTP_LINE_BAD, 0, "", "" },
		{ "050 what", SMTP_LINE_BAD, 0, "", "" },
		{ "250-a\n550 b", SMTP_LINE_BAD, 250, "", "250-a" },
	};

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		enum smtp_line_status st = feed(&r, rows[i].in);
		CHECK(st == rows[i].st, "%s: status %d want %d", rows[i].in, st, rows[i].st);
		if (st == SMTP_LINE_BAD)
			continue;
		CHECK_INT(r.code, rows[i].code);
		CHECK_STR(r.enhanced, rows[i].enh);
		CHECK_STR(r.text, rows[i].text);
	}
	/* control bytes never reach the logs */
	smtp_reply_reset(&r);
	CHECK(smtp_reply_line(&r, "550 a\033b\0c", 9) == SMTP_LINE_LAST, "binary text");
	CHECK_STR(r.text, "550 a\\x1Bb\\x00c");
}

static void test_limits(void)
{
	struct smtp_reply r;
	char *big = malloc(SMTP_LINE_MAX + 10);
	int i;
	enum smtp_line_status st = SMTP_LINE_MORE;

	memset(big, 'x', SMTP_LINE_MAX + 10);
	memcpy(big, "250 ", 4);
	smtp_reply_reset(&r);
	CHECK(smtp_reply_line(&r, big, SMTP_LINE_MAX + 1) == SMTP_LINE_BAD, "over-long line");
	smtp_reply_reset(&r);
	CHECK(smtp_reply_line(&r, big, SMTP_LINE_MAX) == SMTP_LINE_LAST, "longest line taken");
	CHECK(strlen(r.text) <= SMTP_TEXT_MAX - 1 && strlen(r.text) >= SMTP_TEXT_MAX - 4, "cut at %zu", strlen(r.text));
	free(big);
	/* endless continuation lines end in an error, not a loop */
	smtp_reply_reset(&r);
	for (i = 0; i < SMTP_REPLY_LINES_MAX + 5 && st == SMTP_LINE_MORE; i++)
		st = smtp_reply_line(&r, "250-more", 8);
	CHECK(st == SMTP_LINE_BAD, "too many lines");
	CHECK_INT(i, SMTP_REPLY_LINES_MAX + 1);
}

static void test_ehlo(void)
{
	struct smtp_ext e;
	static const char *const lines[] = {
		"250-pipelining",
		"250-SIZE 10240000",
		"250-8BITMIME",
		"250-SMTPUTF8",
		"250-CHUNKING",
		"250-STARTTLS",
		"250-AUTH PLAIN LOGIN CRAM-MD5",
		"250-AUTH=XOAUTH2",
		"250-X-UNKNOWN a b",
		"250 ENHANCEDSTATUSCODES",
	};

	memset(&e, 0, sizeof(e));
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		smtp_ext_line(&e, lines[i], strlen(lines[i]));
	CHECK_INT(e.flags, SMTP_EXT_PIPELINING | SMTP_EXT_SIZE | SMTP_EXT_8BITMIME | SMTP_EXT_SMTPUTF8 |
				   SMTP_EXT_CHUNKING | SMTP_EXT_STARTTLS | SMTP_EXT_AUTH | SMTP_EXT_ENHANCED);
	CHECK_INT(e.auth, SMTP_AUTH_PLAIN | SMTP_AUTH_LOGIN | SMTP_AUTH_XOAUTH2);
	CHECK_INT(e.size_max, 10240000);

	memset(&e, 0, sizeof(e));
	smtp_ext_line(&e, "250-SIZE", 8);
	CHECK_INT(e.size_max, 0);
	smtp_ext_line(&e, "250-SIZE 12x", 12);
	CHECK_INT(e.size_max, 0);
	smtp_ext_line(&e, "250-SIZE 99999999999999999999999", 32);
	CHECK(e.size_max == 0, "overflowing SIZE ignored");
	smtp_ext_line(&e, "250-PIPELININGX", 15);
	CHECK(!(e.flags & SMTP_EXT_PIPELINING), "prefix is not the keyword");
	smtp_ext_line(&e, "250", 3);
	smtp_ext_line(&e, "250-AUTH", 8);
	CHECK_INT(e.auth, 0);
}

static int emit_buf(void *arg, const char *p, size_t n)
{
	return buf_append(arg, p, n);
}

static void test_dot_stuff(void)
{
	static const struct {
		const char *in, *out;
	} rows[] = {
		{ "", ".\r\n" },
		{ "a\r\n", "a\r\n.\r\n" },
		{ "a", "a\r\n.\r\n" },
		{ ".\r\n", "..\r\n.\r\n" },
		{ "a\r\n.b\r\n..\r\n", "a\r\n..b\r\n...\r\n.\r\n" },
		{ "a.\r\nb . c\r\n", "a.\r\nb . c\r\n.\r\n" },
		{ "x\r\n.", "x\r\n..\r\n.\r\n" },
	};

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct buf b;
		buf_init(&b);
		CHECK(smtp_dot_stuff(rows[i].in, strlen(rows[i].in), emit_buf, &b) == 0, "emit");
		CHECK_STR(b.data, rows[i].out);
		buf_free(&b);
	}
}

static void test_body_scan(void)
{
	struct smtp_body_info bi;
	char line[1002];

	smtp_body_scan("a\r\n.b\r\nccc\r\n", 12, &bi);
	CHECK_INT(bi.longest, 3);
	CHECK_INT(bi.dots, 1);
	CHECK_INT(bi.eight_bit, 0);
	CHECK_INT(bi.ends_crlf, 1);
	smtp_body_scan("\xc3\xa9t\xc3\xa9", 6, &bi);
	CHECK_INT(bi.eight_bit, 1);
	CHECK_INT(bi.ends_crlf, 0);
	memset(line, 'x', sizeof(line));
	line[999] = '\r';
	line[1000] = '\n';
	smtp_body_scan(line, 1001, &bi);
	CHECK_INT(bi.longest, 999);
	CHECK(smtp_needs_utf8("j\xc3\xb6rg@example.org") == 1, "utf8 address");
	CHECK(smtp_needs_utf8("a@example.org") == 0, "ascii address");
}

/* Both engines must reach the same verdict for the same relay behaviour: each event is
 * checked against the row libcurl's equivalent hits. */
static void test_events(void)
{
	static const struct {
		const char *what;
		enum smtp_event ev;
		int code, flags;
		enum smtp_verdict v;
		int breaker, charge, code_out;
	} rows[] = {
		{ "accepted", SMTP_EV_ACCEPTED, 250, SMTP_F_DATA_SENT, SMTP_OK, 0, 0, 250 },
		{ "rcpt 550", SMTP_EV_REFUSED, 550, 0, SMTP_PERMANENT, 0, 1, 550 },
		{ "rcpt 451", SMTP_EV_REFUSED, 451, 0, SMTP_RETRY, 0, 1, 451 },
		{ "mail 530", SMTP_EV_REFUSED, 530, 0, SMTP_CONFIG, 0, 0, 530 },
		{ "rcpt 421", SMTP_EV_REFUSED, 421, 0, SMTP_RETRY, 1, 1, 421 },
		{ "dot 451", SMTP_EV_DATA_REFUSED, 451, 0, SMTP_RETRY, 0, 1, 451 },
		{ "dot 554", SMTP_EV_DATA_REFUSED, 554, 0, SMTP_PERMANENT, 0, 1, 554 },
		{ "greeting 421", SMTP_EV_GREETING, 421, 0, SMTP_RETRY, 1, 1, 421 },
		{ "greeting 554", SMTP_EV_GREETING, 554, 0, SMTP_RETRY, 1, 0, 554 },
		{ "ehlo refused", SMTP_EV_EHLO_REFUSED, 500, 0, SMTP_CONFIG, 0, 0, 500 },
		{ "starttls", SMTP_EV_STARTTLS_FAILED, 0, 0, SMTP_CONFIG, 0, 0, 0 },
		{ "auth", SMTP_EV_AUTH_FAILED, 535, 0, SMTP_CONFIG, 0, 0, 535 },
		{ "tls verify", SMTP_EV_TLS_VERIFY, 0, 0, SMTP_CONFIG, 0, 0, 0 },
		{ "tls handshake", SMTP_EV_TLS_HANDSHAKE, 0, 0, SMTP_RETRY, 1, 0, 0 },
		{ "connect", SMTP_EV_CONNECT, 0, 0, SMTP_RETRY, 1, 0, 0 },
		{ "resolve", SMTP_EV_RESOLVE, 0, 0, SMTP_RETRY, 1, 0, 0 },
		{ "timeout before", SMTP_EV_TIMEOUT, 0, 0, SMTP_RETRY, 1, 1, 0 },
		{ "timeout after dot", SMTP_EV_TIMEOUT, 0, SMTP_F_DATA_SENT, SMTP_UNKNOWN, 1, 1, 0 },
		{ "closed after dot", SMTP_EV_CLOSED, 0, SMTP_F_DATA_SENT, SMTP_UNKNOWN, 1, 1, 0 },
		{ "closed cached", SMTP_EV_CLOSED, 0, SMTP_F_REUSED, SMTP_RETRY_NOW, 0, 0, 0 },
		{ "closed", SMTP_EV_CLOSED, 0, 0, SMTP_RETRY, 1, 1, 0 },
		{ "garbage before dot", SMTP_EV_MALFORMED, 0, 0, SMTP_RETRY, 1, 1, 0 },
		{ "garbage after dot", SMTP_EV_MALFORMED, 0, SMTP_F_DATA_SENT, SMTP_UNKNOWN, 1, 1, 0 },
		{ "line too long", SMTP_EV_LINE_TOO_LONG, 0, 0, SMTP_PERMANENT, 0, 1, 0 },
		{ "local", SMTP_EV_LOCAL, 0, 0, SMTP_RETRY, 0, 0, 0 },
	};

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct smtp_outcome o = smtp_classify_event(rows[i].ev, rows[i].code, rows[i].flags);
		CHECK(o.verdict == rows[i].v, "%s: verdict %s", rows[i].what, smtp_verdict_name(o.verdict));
		CHECK(o.breaker_failure == rows[i].breaker, "%s: breaker %d", rows[i].what, o.breaker_failure);
		CHECK(o.charge_attempt == rows[i].charge, "%s: charge %d", rows[i].what, o.charge_attempt);
		CHECK(o.code == rows[i].code_out, "%s: code %d", rows[i].what, o.code);
	}
}

int main(void)
{
	test_replies();
	test_limits();
	test_ehlo();
	test_dot_stuff();
	test_body_scan();
	test_events();
	return test_summary("smtp_proto");
}
