/* Unit tests for mime: exact-byte fixtures for the common shapes, refusals for unsafe
 * input, and a seeded property run (random UTF-8 subjects, names and bodies) checking
 * line limits, CRLF-only output, ASCII headers and that decoding gives the input back.
 * OUTBOXD_WRITE_FIXTURES=1 rewrites the .eml fixtures (review them before committing). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "mime.h"
#include "testutil.h"

static const char *fixdir = "tests/unit/fixtures/mime";
static const time_t T0 = 1700000000; /* Tue, 14 Nov 2023 22:13:20 +0000 */

/* ---- helpers ---------------------------------------------------------------------- */

static void msg_base(struct mime_msg *m, const char *const *to, size_t n_to)
{
	memset(m, 0, sizeof(*m));
	m->message_id = "<42.abc@outbox.example>";
	m->from = "Shop <noreply@shop.example>";
	m->to = to;
	m->n_to = n_to;
	m->subject = "Your order";
	m->body_text = "Hello\nThanks for your order.\n";
	m->date = T0;
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	struct buf b;
	char tmp[4096];
	size_t n;

	if (f == NULL)
		return NULL;
	buf_init(&b);
	while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
		if (buf_append(&b, tmp, n) < 0)
			break;
	fclose(f);
	*len = b.len;
	return b.data ? b.data : calloc(1, 1);
}

static void check_fixture(const char *name, const struct mime_msg *m)
{
	struct buf out;
	char err[256], path[512];
	size_t flen = 0;
	char *want;

	buf_init(&out);
	snprintf(path, sizeof(path), "%s/%s.eml", fixdir, name);
	CHECK(mime_build(m, &out, err, sizeof(err)) == 0, "%s: build failed: %s", name, err);
	if (getenv("OUTBOXD_WRITE_FIXTURES")) {
		FILE *f = fopen(path, "wb");
		CHECK(f != NULL, "%s: cannot write %s", name, path);
		if (f) {
			fwrite(out.data, 1, out.len, f);
			fclose(f);
		}
	}
	want = slurp(path, &flen);
	CHECK(want != NULL, "%s: missing fixture %s", name, path);
	if (want) {
		int same = flen == out.len && memcmp(want, out.data, flen) == 0;
		CHECK(same, "%s: output differs from %s:\n%s", name, path, out.data ? out.data : "");
	}
	free(want);
	buf_free(&out);
}

static void expect_error(const char *name, const struct mime_msg *m, const char *want_err)
{
	struct buf out;
	char err[256];
	int rc;

	buf_init(&out);
	CHECK_INT(buf_puts(&out, "keep"), 0);
	rc = mime_build(m, &out, err, sizeof(err));
	CHECK(rc == -1, "%s: accepted", name);
	if (rc == -1)
		CHECK(strcmp(err, want_err) == 0, "%s: error \"%s\", want \"%s\"", name, err, want_err);
	CHECK(out.len == 4 && strcmp(out.data, "keep") == 0, "%s: output not rolled back", name);
	buf_free(&out);
}

/* ---- decoders for the checks -------------------------------------------------------- */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static int b64val(char c)
{
	const char *t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const char *p = c ? strchr(t, c) : NULL;
	return p ? (int)(p - t) : -1;
}

static int b64_decode(const char *s, size_t n, struct buf *o)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		int v;
		if (s[i] == '\r' || s[i] == '\n' || s[i] == '=')
			continue;
		v = b64val(s[i]);
		if (v < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (buf_putc(o, (char)((acc >> bits) & 0xFF)) < 0)
				return -1;
		}
	}
	return 0;
}

static int qp_decode(const char *s, size_t n, struct buf *o)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (s[i] != '=') {
			if (buf_putc(o, s[i]) < 0)
				return -1;
		} else if (i + 2 < n && s[i + 1] == '\r' && s[i + 2] == '\n') {
			i += 2;
		} else if (i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
			if (buf_putc(o, (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]))) < 0)
				return -1;
			i += 2;
		} else {
			return -1;
		}
	}
	return 0;
}

/* Decodes one "=?UTF-8?X?...?=" word at s (length n). */
static int ew_decode(const char *s, size_t n, struct buf *o)
{
	size_t i;

	if (n < 12 || strncmp(s, "=?UTF-8?", 8) != 0 || s[9] != '?' || s[n - 2] != '?' || s[n - 1] != '=')
		return -1;
	if (s[8] == 'B')
		return b64_decode(s + 10, n - 12, o);
	if (s[8] != 'Q')
		return -1;
	for (i = 10; i < n - 2; i++) {
		if (s[i] == '_') {
			if (buf_putc(o, ' ') < 0)
				return -1;
		} else if (s[i] == '=') {
			if (hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0)
				return -1;
			if (buf_putc(o, (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]))) < 0)
				return -1;
			i += 2;
		} else {
			if (buf_putc(o, s[i]) < 0)
				return -1;
		}
	}
	return 0;
}

/* Unfolded value of the header `name` in the header block hdr (without the space after
 * the colon), into o. Returns 0 when found. */
static int header_value(const char *hdr, const char *name, struct buf *o)
{
	size_t nl = strlen(name);
	const char *p = hdr;

	while (*p) {
		if (strncmp(p, name, nl) == 0 && p[nl] == ':') {
			p += nl + 1;
			if (*p == ' ')
				p++;
			for (;;) {
				const char *e = strstr(p, "\r\n");
				if (e == NULL)
					return -1;
				if (buf_append(o, p, (size_t)(e - p)) < 0)
					return -1;
				if (e[2] != ' ' && e[2] != '\t')
					return 0;
				p = e + 2;
			}
		}
		p = strstr(p, "\r\n");
		if (p == NULL || p[2] == '\r')
			break;
		p += 2;
	}
	return -1;
}

/* Decodes a value made only of encoded words separated by spaces. */
static int words_decode(const char *v, struct buf *o)
{
	while (*v) {
		const char *e;
		while (*v == ' ')
			v++;
		if (!*v)
			break;
		e = strstr(v + 10, "?=");
		if (e == NULL || ew_decode(v, (size_t)(e + 2 - v), o) < 0)
			return -1;
		v = e + 2;
	}
	return 0;
}

/* ---- fixtures ----------------------------------------------------------------------- */

static void test_fixtures(void)
{
	static const char *const one[] = { "alice@example.com" };
	static const char *const utf8_to[] = { "Zoë Müller <zoe@example.de>", "bob@example.com" };
	static const char *const many[] = {
		"Alpha Person <alpha@example.com>",      "\"Beta, B.\" <beta@example.com>",
		"gamma.longer.address@example.org",      "Delta <delta@example.net>",
		"Epsilon Upsilon <epsilon@example.com>", "zeta@example.com",
	};
	static const char *const cc[] = { "Carol <carol@example.com>" };
	static const struct mime_header xh[] = {
		{ "X-Campaign", "Café grand opening" },
		{ "List-Unsubscribe", "<mailto:unsub@shop.example?subject=unsubscribe>, "
				      "<https://shop.example/unsubscribe/0123456789abcdef0123456789abcdef>" },
	};
	static const struct mime_header plainh[] = { { "X-Order", "1234" } };
	struct mime_msg m;
	char longline[2101];

	msg_base(&m, one, 1);
	m.headers = plainh;
	m.n_headers = 1;
	check_fixture("plain_ascii", &m);

	msg_base(&m, one, 1);
	memset(longline, 'a', 2000);
	memcpy(longline + 2000, " end\n", 6);
	for (int i = 99; i < 2000; i += 100)
		longline[i] = ' ';
	m.body_text = longline;
	check_fixture("long_line", &m);

	msg_base(&m, utf8_to, 2);
	m.from = "Café Zürich <hello@cafe.example>";
	m.cc = cc;
	m.n_cc = 1;
	m.reply_to = "support@cafe.example";
	m.subject = "Ihre Bestellung bei Café Zürich — Bestätigung Nr. 12345 für Zoë und Björn, "
		    "danke schön!";
	m.body_text = "Grüße aus Zürich!\nIhr Kaffee ist unterwegs. ☕\n";
	m.headers = xh;
	m.n_headers = 2;
	check_fixture("utf8", &m);

	msg_base(&m, one, 1);
	m.body_text = "";
	check_fixture("empty_text", &m);

	msg_base(&m, one, 1);
	m.body_text = NULL;
	m.body_html = "<p>Hello <b>world</b></p>\n";
	check_fixture("html_only", &m);

	msg_base(&m, one, 1);
	m.body_html = "<p>Hello,</p>\n<p>Thanks for your order.</p>\n";
	check_fixture("text_html", &m);

	msg_base(&m, one, 1);
	m.body_text = "line one\n.\nline three\n..\n";
	check_fixture("single_dot", &m);

	msg_base(&m, one, 1);
	m.body_text = "unix\nold mac\rwindows\r\nmixed\n\r\nno final newline";
	check_fixture("line_ends", &m);

	msg_base(&m, one, 1);
	m.subject = "ご注文ありがとうございます。発送準備が整いましたらメールでお知らせいたします。";
	m.body_text = "このたびはご注文いただき、誠にありがとうございます。\n"
		      "商品の発送準備が整いましたら、改めてメールでお知らせいたします。\n";
	check_fixture("japanese", &m);

	msg_base(&m, many, 6);
	m.n_to = 6;
	m.subject = "A subject that is long enough to need folding because it goes on and on well "
		    "past the seventy-eight column limit of a header line";
	check_fixture("folding", &m);

	msg_base(&m, NULL, 0);
	check_fixture("bcc_only", &m);
}

static void test_fixture_properties(void)
{
	static const char *const one[] = { "alice@example.com" };
	struct mime_msg m;
	struct buf out, v;
	char err[256];
	const char *p;

	/* the dot line stays a line of its own; dot-stuffing is the SMTP client's job */
	msg_base(&m, one, 1);
	m.body_text = "a\n.\nb";
	buf_init(&out);
	CHECK_INT(mime_build(&m, &out, err, sizeof(err)), 0);
	CHECK(strstr(out.data, "\r\n\r\na\r\n.\r\nb\r\n") != NULL, "dot line: %s", out.data);
	CHECK(strstr(out.data, "Content-Transfer-Encoding: 7bit\r\n") != NULL, "dot line 7bit");
	CHECK(strstr(out.data, "Bcc") == NULL && strstr(out.data, "bcc") == NULL, "bcc present");
	buf_free(&out);

	/* multipart: plain before html, closing delimiter last */
	msg_base(&m, one, 1);
	m.body_html = "<p>x</p>";
	buf_init(&out);
	CHECK_INT(mime_build(&m, &out, err, sizeof(err)), 0);
	p = strstr(out.data, "text/plain");
	CHECK(p != NULL && strstr(p, "text/html") != NULL, "order wrong");
	CHECK(out.len > 4 && strcmp(out.data + out.len - 4, "--\r\n") == 0, "no closing delimiter");
	buf_free(&out);

	/* long 2000-char line: quoted-printable, every line <= 76 */
	{
		char body[2001];
		size_t line = 0, maxline = 0, i;
		memset(body, 'x', 2000);
		body[2000] = '\0';
		msg_base(&m, one, 1);
		m.body_text = body;
		buf_init(&out);
		CHECK_INT(mime_build(&m, &out, err, sizeof(err)), 0);
		CHECK(strstr(out.data, "quoted-printable") != NULL, "long line not QP");
		for (i = 0; i < out.len; i++) {
			if (out.data[i] == '\r') {
				line = 0;
				i++;
			} else if (++line > maxline) {
				maxline = line;
			}
		}
		CHECK(maxline <= 78, "max line %zu", maxline);
		buf_free(&out);
	}

	/* quoted display name with a comma survives as a quoted string */
	{
		static const char *const to[] = { "\"Doe, John\" <john@example.com>" };
		msg_base(&m, to, 1);
		buf_init(&out);
		buf_init(&v);
		CHECK_INT(mime_build(&m, &out, err, sizeof(err)), 0);
		CHECK_INT(header_value(out.data, "To", &v), 0);
		CHECK_STR(v.data, "\"Doe, John\" <john@example.com>");
		buf_free(&v);
		buf_free(&out);
	}
}

static void test_refusals(void)
{
	static const char *const one[] = { "alice@example.com" };
	static const char *const nonascii[] = { "zoë@example.de" };
	static const char *const twoat[] = { "a@b@example.com" };
	static const char *const nullto[] = { "ok@example.com", NULL };
	static const char *const injected[] = { "ok@example.com\r\nBcc: evil@example.com" };
	static const struct mime_header inj[] = { { "X-Tag", "a\r\nBcc: evil@example.com" } };
	static const struct mime_header lfonly[] = { { "X-Tag", "a\nb" } };
	static const struct mime_header owned[] = { { "X-Ok", "1" }, { "content-TYPE", "text/evil" } };
	static const struct mime_header bcc[] = { { "BCC", "evil@example.com" } };
	static const struct mime_header space[] = { { "X Tag", "v" } };
	static const struct mime_header colon[] = { { "X-Tag:", "v" } };
	static const struct mime_header badutf[] = { { "X-Tag", "caf\xc3" } };
	static const struct mime_header ctl[] = { { "X-Tag", "a\x01" } };
	static const struct mime_header nullv[] = { { "X-Tag", NULL } };
	struct mime_msg m;

	msg_base(&m, one, 1);
	m.subject = "Hi\r\nBcc: evil@example.com";
	expect_error("subject CRLF", &m, "subject: contains CR or LF");
	m.subject = "Hi\nthere";
	expect_error("subject LF", &m, "subject: contains CR or LF");
	m.subject = "bad \xff byte";
	expect_error("subject utf8", &m, "subject: invalid UTF-8");
	m.subject = "overlong \xc0\xaf";
	expect_error("subject overlong", &m, "subject: invalid UTF-8");
	m.subject = "surrogate \xed\xa0\x80";
	expect_error("subject surrogate", &m, "subject: invalid UTF-8");
	m.subject = "bell\a";
	expect_error("subject control", &m, "subject: contains a control character");

	msg_base(&m, one, 1);
	m.headers = inj;
	m.n_headers = 1;
	expect_error("header CRLF", &m, "header X-Tag: contains CR or LF");
	m.headers = lfonly;
	expect_error("header LF", &m, "header X-Tag: contains CR or LF");
	m.headers = owned;
	m.n_headers = 2;
	expect_error("owned header", &m, "header content-TYPE: set by outboxd, not allowed in headers");
	m.headers = bcc;
	m.n_headers = 1;
	expect_error("bcc header", &m, "header BCC: set by outboxd, not allowed in headers");
	m.headers = space;
	expect_error("name with space", &m, "header[0]: invalid name");
	m.headers = colon;
	expect_error("name with colon", &m, "header[0]: invalid name");
	m.headers = badutf;
	expect_error("header utf8", &m, "header X-Tag: invalid UTF-8");
	m.headers = ctl;
	expect_error("header control", &m, "header X-Tag: contains a control character");
	m.headers = nullv;
	expect_error("header null", &m, "header X-Tag: missing value");

	msg_base(&m, nonascii, 1);
	expect_error("non-ascii address", &m,
		     "to: non-ASCII address (give an internationalised domain as xn-- A-labels)");
	msg_base(&m, twoat, 1);
	expect_error("two @", &m, "to: malformed address (expected local@domain)");
	msg_base(&m, nullto, 2);
	expect_error("null recipient", &m, "to[2]: missing");
	msg_base(&m, injected, 1);
	expect_error("to CRLF", &m, "to: contains CR or LF");
	msg_base(&m, one, 1);
	m.from = "Shop <noreply@shop.example";
	expect_error("from unclosed", &m, "from: malformed address (expected local@domain or Name <local@domain>)");
	m.from = "Shop noreply@shop.example>";
	expect_error("from no <", &m, "from: malformed address (expected local@domain or Name <local@domain>)");
	m.from = NULL;
	expect_error("from missing", &m, "from: missing");
	msg_base(&m, one, 1);
	m.reply_to = "not an address";
	expect_error("reply-to", &m, "reply_to: malformed address (expected local@domain)");
	msg_base(&m, one, 1);
	m.message_id = "no-brackets@x";
	expect_error("message id", &m, "message_id: malformed, want <local@domain>");
	m.message_id = "<a b@x>";
	expect_error("message id space", &m, "message_id: malformed, want <local@domain>");
	msg_base(&m, one, 1);
	m.body_text = "caf\xe9";
	expect_error("body latin1", &m, "body_text: invalid UTF-8");
	msg_base(&m, one, 1);
	m.body_html = "\xf5\x80\x80\x80";
	expect_error("html utf8", &m, "body_html: invalid UTF-8");
}

/* A display name is only as long as the address grammar allows, which is any length:
 * one too long for a line as an atom or a quoted string still builds, within the limit. */
static void test_long_display_names(void)
{
	static const char *const one[] = { "alice@example.com" };
	static const char *const forms[] = { "%s <noreply@shop.example>", "\"%s\" <noreply@shop.example>",
					     "\"Doe, %s\" <noreply@shop.example>", "%s\\x <noreply@shop.example>" };
	static char name[1201], from[1300];
	struct mime_msg m;
	size_t f, len, i, line;

	for (f = 0; f < sizeof(forms) / sizeof(forms[0]); f++)
		for (len = 400; len <= 1200; len += 400) {
			struct buf out;
			char err[256] = "";
			int rc;

			memset(name, 'x', len);
			name[len] = '\0';
			snprintf(from, sizeof(from), forms[f], name);
			msg_base(&m, one, 1);
			m.from = from;
			m.reply_to = from;
			buf_init(&out);
			rc = mime_build(&m, &out, err, sizeof(err));
			CHECK(rc == 0, "form %zu, name of %zu: %s", f, len, err);
			for (i = 0, line = 0; rc == 0 && i < out.len; i++) {
				line = out.data[i] == '\n' ? 0 : line + 1;
				CHECK(line <= MIME_LINE_MAX + 1, "form %zu, name of %zu: a line over the limit", f,
				      len);
				if (line > MIME_LINE_MAX + 1)
					break;
			}
			buf_free(&out);
		}
}

/* The ASCII fast paths read eight bytes at a time: a non-ASCII byte must be seen at every
 * offset, in the word loop and in the tail, and a line's length counted across words. */
static void test_ascii_scan_offsets(void)
{
	char s[40], body[200];
	struct mime_msg m;
	const char *one[] = { "a@example.com" };

	for (size_t len = 1; len <= 24; len++) {
		for (size_t pos = 0; pos < len; pos++) {
			memset(s, 'a', len);
			s[len] = '\0';
			s[pos] = (char)0xFF;
			CHECK(!mime_utf8_valid(s, len), "0xFF at %zu of %zu taken as valid", pos, len);
			if (pos + 1 < len) {
				s[pos] = (char)0xC3; /* é */
				s[pos + 1] = (char)0xA9;
				CHECK(mime_utf8_valid(s, len), "é at %zu of %zu refused", pos, len);
				s[pos + 1] = 'a'; /* truncated sequence */
				CHECK(!mime_utf8_valid(s, len), "lone 0xC3 at %zu of %zu taken as valid", pos, len);
			}
		}
		memset(s, 'a', len);
		CHECK(mime_utf8_valid(s, len), "ASCII of %zu refused", len);
	}
	/* a body that is ASCII except one byte stays 7bit only without that byte */
	for (size_t pos = 0; pos < 20; pos++) {
		struct buf out;
		char err[256];

		memset(body, 'b', 20);
		body[20] = '\0';
		body[pos] = (char)0xFF;
		msg_base(&m, one, 1);
		m.body_text = body;
		expect_error("body 0xFF", &m, "body_text: invalid UTF-8");
		body[pos] = 'b';
		buf_init(&out);
		CHECK_INT(mime_build(&m, &out, err, sizeof(err)), 0);
		CHECK(out.data && strstr(out.data, "Content-Transfer-Encoding: 7bit"), "ASCII body %zu not 7bit", pos);
		buf_free(&out);
	}
	/* the longest line decides: 998 bytes stay 7bit, 999 do not, wherever the line sits */
	for (int longer = 0; longer <= 1; longer++) {
		struct buf text, out;
		char err[256];

		buf_init(&text);
		buf_init(&out);
		CHECK_INT(buf_puts(&text, "short\nlines\n"), 0);
		for (int i = 0; i < MIME_LINE_MAX + longer; i++)
			CHECK_INT(buf_append(&text, "x", 1), 0);
		CHECK_INT(buf_puts(&text, "\nend\n"), 0);
		msg_base(&m, one, 1);
		m.body_text = text.data;
		CHECK_INT(mime_build(&m, &out, err, sizeof(err)), 0);
		CHECK(out.data && (strstr(out.data, "Content-Transfer-Encoding: 7bit") != NULL) == !longer,
		      "line of %d bytes: wrong encoding", MIME_LINE_MAX + longer);
		buf_free(&text);
		buf_free(&out);
	}
}

/* ---- property run ------------------------------------------------------------------- */

static uint64_t rng = 0x5EEDULL;

static uint64_t rnd(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 0x2545F4914F6CDD1DULL;
}

static unsigned rn(unsigned n)
{
	return (unsigned)(rnd() % n);
}

/* Appends one random character: mostly ASCII, some 2/3/4-byte UTF-8, and, when
 * allow_nl, line breaks of every flavour. */
static int gen_char(struct buf *b, int allow_nl, int allow_tab)
{
	static const char *const pool[] = { "é", "ü", "ß", "—", "€",  "日", "本", "語",   "😀",
					    "𝄞", "=", "?", "_", "\"", "=?", ".",  "From " };
	unsigned r = rn(100);

	if (allow_nl && r < 6)
		return buf_puts(b, r < 2 ? "\n" : r < 4 ? "\r\n" : "\r");
	if (r < 16)
		return buf_putc(b, ' ');
	if (allow_tab && r < 18)
		return buf_putc(b, '\t');
	if (r < 34)
		return buf_puts(b, pool[rn(sizeof(pool) / sizeof(pool[0]))]);
	return buf_putc(b, (char)(33 + rn(94)));
}

static int gen_text(struct buf *b, size_t maxlen, int allow_nl, int allow_tab, int mostly_cjk)
{
	size_t n = rn((unsigned)maxlen + 1), i;

	buf_reset(b);
	if (rn(10) == 0 && allow_nl) { /* one very long line */
		for (i = 0; i < 1200 + rn(1500); i++)
			if (buf_putc(b, (char)('a' + rn(26))) < 0)
				return -1;
	}
	if (rn(20) == 0 && !allow_nl) { /* a long unbreakable ASCII word */
		for (i = 0; i < 300 + rn(1500); i++)
			if (buf_putc(b, (char)('a' + rn(26))) < 0)
				return -1;
	}
	for (i = 0; i < n; i++) {
		if (mostly_cjk && rn(4) != 0) {
			static const char *const cjk[] = { "日", "本", "語", "の", "文", "章", "。" };
			if (buf_puts(b, cjk[rn(sizeof(cjk) / sizeof(cjk[0]))]) < 0)
				return -1;
		} else if (gen_char(b, allow_nl, allow_tab) < 0) {
			return -1;
		}
	}
	return b->data ? 0 : buf_puts(b, "");
}

/* The normalised form mime_build promises to encode. */
static int normalise(const char *s, struct buf *o)
{
	size_t i, n = strlen(s);

	for (i = 0; i < n; i++) {
		if (s[i] == '\r' || s[i] == '\n') {
			if (buf_puts(o, "\r\n") < 0)
				return -1;
			if (s[i] == '\r' && s[i + 1] == '\n')
				i++;
		} else if (buf_putc(o, s[i]) < 0) {
			return -1;
		}
	}
	if (o->len > 0 && (o->len < 2 || strcmp(o->data + o->len - 2, "\r\n") != 0))
		return buf_puts(o, "\r\n");
	return 0;
}

/* Checks shape of the whole message; returns the offset of the body or 0 on failure. */
static size_t check_shape(const struct buf *out, int iter)
{
	size_t i, line = 0, body = 0;
	int in_hdr = 1, bad = 0, has_ew = 0;

	for (i = 0; i < out->len && !bad; i++) {
		unsigned char c = (unsigned char)out->data[i];
		if (c == '\r') {
			if (i + 1 >= out->len || out->data[i + 1] != '\n')
				bad = 1; /* lone CR */
			if (in_hdr && has_ew && line > MIME_FOLD)
				bad = 2; /* line with encoded words over 76 */
			if (in_hdr && line == 0) {
				in_hdr = 0;
				body = i + 2;
			}
			line = 0;
			has_ew = 0;
			i++;
			continue;
		}
		if (c == '\n')
			bad = 3; /* lone LF */
		if (in_hdr && (c >= 0x80 || c == 0))
			bad = 4;
		if (in_hdr && c == '=' && out->len - i > 8 && memcmp(out->data + i, "=?UTF-8?", 8) == 0)
			has_ew = 1;
		if (++line > MIME_LINE_MAX)
			bad = 5;
	}
	if (out->len < 2 || memcmp(out->data + out->len - 2, "\r\n", 2) != 0)
		bad = bad ? bad : 6;
	CHECK(bad == 0, "iter %d: shape rule %d broken near offset %zu: %.300s", iter, bad, i,
	      out->data + (i > 200 ? i - 200 : 0));
	return bad ? 0 : body;
}

static int body_roundtrip(const char *body, const char *want)
{
	const char *cte = strstr(body, "Content-Transfer-Encoding: ");
	const char *data = strstr(body, "\r\n\r\n");
	struct buf dec, nw;
	int ok = 0;
	size_t n;

	if (cte == NULL || data == NULL)
		return 0;
	data += 4;
	n = strlen(data);
	buf_init(&dec);
	buf_init(&nw);
	if (normalise(want, &nw) < 0)
		goto out;
	if (strncmp(cte + 27, "7bit", 4) == 0) {
		ok = buf_append(&dec, data, n) == 0;
	} else if (strncmp(cte + 27, "quoted-printable", 16) == 0) {
		size_t i, line = 0;
		ok = qp_decode(data, n, &dec) == 0;
		for (i = 0; i < n; i++) {
			if (data[i] == '\r')
				line = 0, i++;
			else if (++line > 76)
				ok = 0;
		}
	} else if (strncmp(cte + 27, "base64", 6) == 0) {
		ok = b64_decode(data, n, &dec) == 0;
	}
	ok = ok && dec.len == nw.len && (nw.len == 0 || memcmp(dec.data, nw.data, nw.len) == 0);
out:
	buf_free(&dec);
	buf_free(&nw);
	return ok;
}

/* Splits multipart/alternative: exactly two parts, plain first, both decode to want. */
static int multipart_roundtrip(const char *msg, const char *want)
{
	const char *b = strstr(msg, "boundary=\""), *p, *q;
	char delim[64];
	int part = 0, ok = 1;

	if (b == NULL)
		return 0;
	b += 10;
	q = strchr(b, '"');
	if (q == NULL || q - b > 50)
		return 0;
	snprintf(delim, sizeof(delim), "--%.*s", (int)(q - b), b);
	p = strstr(q, delim);
	while (p && ok) {
		const char *next;
		struct buf one;

		p += strlen(delim);
		if (strncmp(p, "--\r\n", 4) == 0)
			break;
		next = strstr(p, delim);
		if (next == NULL)
			return 0;
		buf_init(&one);
		ok = buf_append(&one, p + 2, (size_t)(next - p - 2)) == 0 &&
		     strstr(one.data, part == 0 ? "text/plain" : "text/html") != NULL && body_roundtrip(one.data, want);
		buf_free(&one);
		part++;
		p = next;
	}
	return ok && part == 2;
}

static void test_property(void)
{
	struct buf subj, body, name, out, v, dec, to0;
	const char *to[1];
	int iter, fails = 0, seen_multi = 0, seen_b64 = 0, seen_qp = 0, seen_7 = 0, seen_q = 0, seen_b = 0;

	buf_init(&subj);
	buf_init(&body);
	buf_init(&name);
	buf_init(&out);
	buf_init(&v);
	buf_init(&dec);
	buf_init(&to0);
	for (iter = 0; iter < 2000 && fails < 5; iter++) {
		struct mime_msg m;
		struct mime_header xh[1];
		char err[256];
		size_t b;
		int ok = 1;

		if (gen_text(&subj, 120, 0, 1, rn(5) == 0) < 0 || gen_text(&body, 400, 1, 1, rn(4) == 0) < 0 ||
		    gen_text(&name, 30, 0, 0, 0) < 0) {
			CHECK(0, "oom");
			break;
		}
		/* display names: printable, no quotes or angle brackets to keep parsing simple */
		for (size_t i = 0; i < name.len; i++)
			if (name.data[i] == '"' || name.data[i] == '<' || name.data[i] == '>' || name.data[i] == '\\')
				name.data[i] = 'x';
		while (name.len > 0 && name.data[name.len - 1] == ' ')
			name.data[--name.len] = '\0';
		while (name.len > 0 && name.data[0] == ' ')
			memmove(name.data, name.data + 1, name.len--);
		buf_reset(&to0);
		if ((name.len ? buf_printf(&to0, "%s <rcpt%d@example.com>", name.data, iter)
			      : buf_printf(&to0, "rcpt%d@example.com", iter)) < 0)
			break;
		to[0] = to0.data;
		memset(&m, 0, sizeof(m));
		m.message_id = "<p@example.com>";
		m.from = "sender@example.com";
		m.to = to;
		m.n_to = 1;
		m.subject = subj.data;
		m.date = T0 + iter * 7919;
		xh[0].name = "X-Note";
		xh[0].value = name.data;
		m.headers = xh;
		m.n_headers = 1;
		switch (rn(4)) {
		case 0:
			m.body_html = body.data;
			break;
		case 1:
			m.body_html = body.data;
			m.body_text = body.data;
			seen_multi = 1;
			break;
		default:
			m.body_text = body.data;
		}
		buf_reset(&out);
		if (mime_build(&m, &out, err, sizeof(err)) != 0) {
			CHECK(0, "iter %d: refused: %s", iter, err);
			fails++;
			continue;
		}
		b = check_shape(&out, iter);
		ok = b != 0;
		/* Subject decodes back to the input */
		buf_reset(&v);
		buf_reset(&dec);
		if (ok && header_value(out.data, "Subject", &v) == 0) {
			if (v.data && strstr(v.data, "=?UTF-8?")) {
				seen_q |= strstr(v.data, "?Q?") != NULL;
				seen_b |= strstr(v.data, "?B?") != NULL;
				ok = words_decode(v.data, &dec) == 0 && dec.data && strcmp(dec.data, subj.data) == 0;
			} else {
				ok = strcmp(v.data ? v.data : "", subj.data) == 0;
			}
			if (!ok)
				fprintf(stderr, "iter %d subject: [%s] vs [%s]\n", iter, v.data, subj.data);
		} else {
			ok = 0;
		}
		/* display name decodes back too */
		buf_reset(&v);
		buf_reset(&dec);
		if (ok && name.len > 0 && header_value(out.data, "To", &v) == 0) {
			char *lt = strrchr(v.data, '<');
			if (lt && lt > v.data) {
				lt[-1] = '\0';
				if (strstr(v.data, "=?UTF-8?"))
					ok = words_decode(v.data, &dec) == 0 && strcmp(dec.data, name.data) == 0;
				else if (v.data[0] == '"')
					ok = 1; /* quoted form, checked by the fixture tests */
				else
					ok = strcmp(v.data, name.data) == 0;
			} else {
				ok = 0;
			}
			if (!ok)
				fprintf(stderr, "iter %d name: [%s] vs [%s]\n", iter, v.data, name.data);
		}
		if (ok) {
			ok = m.body_text && m.body_html && body.len > 0 ? multipart_roundtrip(out.data, body.data)
									: body_roundtrip(out.data, body.data);
			seen_b64 |= strstr(out.data, "Encoding: base64") != NULL;
			seen_qp |= strstr(out.data, "Encoding: quoted-printable") != NULL;
			seen_7 |= strstr(out.data, "Encoding: 7bit") != NULL;
			if (!ok)
				fprintf(stderr, "iter %d body roundtrip failed\n", iter);
		}
		if (!ok)
			fails++;
		CHECK(ok, "iter %d failed", iter);
	}
	CHECK(seen_b64 && seen_qp && seen_7, "encodings not all exercised: b64=%d qp=%d 7bit=%d", seen_b64, seen_qp,
	      seen_7);
	CHECK(seen_multi, "multipart not exercised");
	CHECK(seen_q && seen_b, "word encodings not all exercised: Q=%d B=%d", seen_q, seen_b);
	buf_free(&subj);
	buf_free(&body);
	buf_free(&name);
	buf_free(&out);
	buf_free(&v);
	buf_free(&dec);
	buf_free(&to0);
}

/* Encoded words straight from the encoder: size limits and no split characters. */
static void test_words(void)
{
	struct buf out;
	size_t i;
	int bad = 0;

	for (i = 0; i < 300 && !bad; i++) {
		struct buf in, dec;
		size_t k, n = 1 + rn(200);
		char *p, *save = NULL;

		buf_init(&in);
		buf_init(&out);
		buf_init(&dec);
		for (k = 0; k < n; k++)
			if (gen_char(&in, 0, 0) < 0)
				bad = 1;
		if (mime_encode_words(&out, rn(40), in.data, in.len) < 0)
			bad = 1;
		for (p = strtok_r(out.data, " \r\n", &save); p && !bad; p = strtok_r(NULL, " \r\n", &save)) {
			struct buf one;
			buf_init(&one);
			if (strlen(p) > 75 || ew_decode(p, strlen(p), &one) < 0 ||
			    !mime_utf8_valid(one.data ? one.data : "", one.len))
				bad = 1;
			if (buf_append(&dec, one.data ? one.data : "", one.len) < 0)
				bad = 1;
			buf_free(&one);
		}
		if (!bad && (dec.len != in.len || memcmp(dec.data, in.data, in.len) != 0))
			bad = 2;
		buf_free(&in);
		buf_free(&out);
		buf_free(&dec);
	}
	CHECK_INT(bad, 0);
}

/* Hostile inputs: random bytes from a pool full of address punctuation. Anything
 * accepted must still have the right shape; nothing may crash (run under ASan). */
static void test_garbage(void)
{
	static const char pool[] = "aZ9 \t<>\"\\,;:@.()[]=?_-\xc3\xa9\xe2\x80\x94\xff\r\n";
	static const char *const safe[] = { "a", "Z", "9", " ", "\t", "<",  ">",  "\"", "\\", ",", ";",
					    ":", "@", ".", "(", ")",  "=?", "?=", "_",  "é",  "—", "😀" };
	struct buf f[4], out;
	int iter, accepted = 0, k;

	for (k = 0; k < 4; k++)
		buf_init(&f[k]);
	buf_init(&out);
	for (iter = 0; iter < 3000; iter++) {
		struct mime_msg m;
		struct mime_header xh[1];
		const char *to[1];
		char err[256];

		int raw = rn(4) == 0; /* raw bytes (mostly refused) or well-formed UTF-8 */
		for (k = 0; k < 4; k++) {
			size_t n = rn(40), i;
			buf_reset(&f[k]);
			for (i = 0; i < n; i++)
				if ((raw ? buf_putc(&f[k], pool[rn(sizeof(pool) - 1)])
					 : buf_puts(&f[k], safe[rn(sizeof(safe) / sizeof(safe[0]))])) < 0)
					return;
			if (buf_puts(&f[k], rn(3) ? " <x@example.com>" : "") < 0)
				return;
		}
		to[0] = f[0].data;
		memset(&m, 0, sizeof(m));
		m.message_id = "<g@example.com>";
		m.from = f[1].data;
		m.to = to;
		m.n_to = 1;
		m.reply_to = rn(2) ? f[2].data : NULL;
		m.subject = f[3].data;
		xh[0].name = rn(2) ? "X-G" : f[2].data;
		xh[0].value = f[3].data;
		m.headers = xh;
		m.n_headers = 1;
		m.body_text = f[2].data;
		buf_reset(&out);
		err[0] = '\0';
		if (mime_build(&m, &out, err, sizeof(err)) == 0) {
			accepted++;
			check_shape(&out, iter);
		} else {
			CHECK(err[0] != '\0' && out.len == 0, "iter %d: no reason or partial output", iter);
		}
	}
	CHECK(accepted > 0, "nothing accepted");
	for (k = 0; k < 4; k++)
		buf_free(&f[k]);
	buf_free(&out);
}

int main(int argc, char **argv)
{
	if (argc > 1)
		fixdir = argv[1];
	else if (getenv("MIME_FIXTURES"))
		fixdir = getenv("MIME_FIXTURES");
	test_fixtures();
	test_fixture_properties();
	test_refusals();
	test_long_display_names();
	test_ascii_scan_offsets();
	test_words();
	test_property();
	test_garbage();
	return test_summary("mime");
}
