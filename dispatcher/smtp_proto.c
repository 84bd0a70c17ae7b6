/* smtp_proto: reply parsing, EHLO keywords, body scan and dot-stuffing; pure code shared
 * by the native SMTP engine and its unit tests. */
#include "smtp_proto.h"

#include <stdlib.h>
#include <string.h>

#include "relaytext.h"

void smtp_reply_reset(struct smtp_reply *r)
{
	r->code = 0;
	r->nlines = 0;
	r->enhanced[0] = '\0';
	r->text[0] = '\0';
}

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* "X.Y.Z" at the start of text, X matching the reply's class (RFC 3463: 1-3 digits for Y
 * and Z). Returns its length, or 0. */
static size_t enhanced_len(const char *t, size_t n, int code)
{
	size_t i = 0, k;

	if (n < 5 || t[0] != (char)('0' + code / 100) || t[1] != '.')
		return 0;
	i = 2;
	for (k = 0; i < n && is_digit(t[i]) && k < 3; i++, k++)
		;
	if (k == 0 || i >= n || t[i] != '.')
		return 0;
	i++;
	for (k = 0; i < n && is_digit(t[i]) && k < 3; i++, k++)
		;
	if (k == 0 || (i < n && t[i] != ' '))
		return 0;
	return i;
}

enum smtp_line_status smtp_reply_line(struct smtp_reply *r, const char *line, size_t len)
{
	int code;
	size_t el;
	char sep;

	if (len > 0 && line[len - 1] == '\r')
		len--;
	if (len < 3 || len > SMTP_LINE_MAX || r->nlines >= SMTP_REPLY_LINES_MAX)
		return SMTP_LINE_BAD;
	if (!is_digit(line[0]) || !is_digit(line[1]) || !is_digit(line[2]))
		return SMTP_LINE_BAD;
	/* RFC 5321 §4.2: the first digit is 2 to 5; anything else cannot be classified */
	if (line[0] < '2' || line[0] > '5')
		return SMTP_LINE_BAD;
	code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	sep = len > 3 ? line[3] : ' ';
	if (sep != ' ' && sep != '-')
		return SMTP_LINE_BAD;
	if (r->nlines > 0 && code != r->code)
		return SMTP_LINE_BAD;
	r->code = code;
	r->nlines++;
	relay_text_clean(r->text, sizeof(r->text), line, len);
	r->enhanced[0] = '\0';
	if (len > 4) {
		el = enhanced_len(line + 4, len - 4, code);
		if (el > 0 && el < sizeof(r->enhanced)) {
			memcpy(r->enhanced, line + 4, el);
			r->enhanced[el] = '\0';
		}
	}
	return sep == '-' ? SMTP_LINE_MORE : SMTP_LINE_LAST;
}

/* Case-insensitive: does the word w[0..n) equal kw? */
static int word_is(const char *w, size_t n, const char *kw)
{
	size_t k = strlen(kw);

	if (n != k)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = w[i];
		if (c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		if (c != kw[i])
			return 0;
	}
	return 1;
}

static unsigned auth_mech(const char *w, size_t n)
{
	if (word_is(w, n, "PLAIN"))
		return SMTP_AUTH_PLAIN;
	if (word_is(w, n, "LOGIN"))
		return SMTP_AUTH_LOGIN;
	if (word_is(w, n, "XOAUTH2"))
		return SMTP_AUTH_XOAUTH2;
	return 0;
}

void smtp_ext_line(struct smtp_ext *e, const char *line, size_t len)
{
	const char *p, *end;
	const char *kw;
	size_t kn;

	if (len > 0 && line[len - 1] == '\r')
		len--;
	if (len <= 4)
		return;
	p = line + 4;
	end = line + len;
	kw = p;
	/* "AUTH=LOGIN PLAIN" is the pre-RFC 4954 form some servers still announce */
	while (p < end && *p != ' ' && *p != '=')
		p++;
	kn = (size_t)(p - kw);
	if (word_is(kw, kn, "PIPELINING"))
		e->flags |= SMTP_EXT_PIPELINING;
	else if (word_is(kw, kn, "CHUNKING"))
		e->flags |= SMTP_EXT_CHUNKING;
	else if (word_is(kw, kn, "8BITMIME"))
		e->flags |= SMTP_EXT_8BITMIME;
	else if (word_is(kw, kn, "SMTPUTF8"))
		e->flags |= SMTP_EXT_SMTPUTF8;
	else if (word_is(kw, kn, "STARTTLS"))
		e->flags |= SMTP_EXT_STARTTLS;
	else if (word_is(kw, kn, "ENHANCEDSTATUSCODES"))
		e->flags |= SMTP_EXT_ENHANCED;
	else if (word_is(kw, kn, "SIZE")) {
		uint64_t v = 0;
		int digits = 0;

		e->flags |= SMTP_EXT_SIZE;
		while (p < end && *p == ' ')
			p++;
		for (; p < end && is_digit(*p) && digits < 19; p++, digits++)
			v = v * 10 + (uint64_t)(*p - '0');
		e->size_max = digits > 0 && (p == end || *p == ' ') ? v : 0;
	} else if (word_is(kw, kn, "AUTH")) {
		e->flags |= SMTP_EXT_AUTH;
		while (p < end) {
			const char *w;
			while (p < end && (*p == ' ' || *p == '='))
				p++;
			w = p;
			while (p < end && *p != ' ')
				p++;
			e->auth |= auth_mech(w, (size_t)(p - w));
		}
	}
}

void smtp_body_scan(const char *body, size_t n, struct smtp_body_info *bi)
{
	const unsigned char *s = (const unsigned char *)body;
	size_t start = 0;

	memset(bi, 0, sizeof(*bi));
	bi->ends_crlf = 1;
	for (size_t i = 0; i < n; i++)
		if (s[i] >= 0x80) {
			bi->eight_bit = 1;
			break;
		}
	while (start < n) {
		const unsigned char *nl = memchr(s + start, '\n', n - start);
		size_t end = nl ? (size_t)(nl - s) : n;
		size_t len = end - start;

		if (len > 0 && s[end - 1] == '\r')
			len--;
		if (len > bi->longest)
			bi->longest = len;
		if (s[start] == '.')
			bi->dots++;
		if (nl == NULL) {
			bi->ends_crlf = 0;
			break;
		}
		start = end + 1;
	}
}

int smtp_dot_stuff(const char *body, size_t n, int (*emit)(void *arg, const char *p, size_t len), void *arg)
{
	size_t seg = 0, i = 0;

	if (n > 0 && body[0] == '.') {
		if (emit(arg, ".", 1) != 0)
			return -1;
	}
	/* each "\n." becomes "\n..": cut after the '\n', emit an extra '.', go on */
	while (i < n) {
		const char *nl = memchr(body + i, '\n', n - i);
		size_t at;

		if (nl == NULL)
			break;
		at = (size_t)(nl - body) + 1;
		if (at < n && body[at] == '.') {
			if (emit(arg, body + seg, at - seg) != 0 || emit(arg, ".", 1) != 0)
				return -1;
			seg = at;
		}
		i = at;
	}
	if (seg < n && emit(arg, body + seg, n - seg) != 0)
		return -1;
	if (n > 0 && !(n >= 2 && body[n - 2] == '\r' && body[n - 1] == '\n')) {
		if (emit(arg, "\r\n", 2) != 0)
			return -1;
	}
	return emit(arg, ".\r\n", 3);
}

int smtp_needs_utf8(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return 1;
	return 0;
}
