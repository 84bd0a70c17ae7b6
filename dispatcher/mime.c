/* mime: the message builder. Header fields are written through a small folding writer
 * (hw_*) that knows the current column, so folding and RFC 2047 word sizing are decided
 * as the bytes are produced; bodies are normalised to CRLF and then encoded. */
#include "mime.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "address.h"

#define EW_MAX 75      /* RFC 2047: an encoded word is at most 75 characters */
#define EW_OVERHEAD 12 /* "=?UTF-8?B?" + "?=" */
#define EW_MIN 24      /* smallest word worth starting on a line: one 4-byte char in Q */

static const char hexd[] = "0123456789ABCDEF";
static const char b64d[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* ---- checks ---------------------------------------------------------------------- */

/* Length of the ASCII prefix of s[0..len), eight bytes at a time where it can. */
static size_t ascii_prefix(const unsigned char *s, size_t len)
{
	size_t i = 0;

	for (; i + 8 <= len; i += 8) {
		uint64_t w;
		memcpy(&w, s + i, 8);
		if (w & UINT64_C(0x8080808080808080))
			break;
	}
	while (i < len && s[i] < 0x80)
		i++;
	return i;
}

int mime_utf8_valid(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	while (i < len) {
		unsigned c = s[i];
		size_t n, k;
		uint32_t cp;

		if (c < 0x80) {
			i += ascii_prefix(s + i, len - i);
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF) {
			n = 1;
			cp = c & 0x1F;
		} else if (c >= 0xE0 && c <= 0xEF) {
			n = 2;
			cp = c & 0x0F;
		} else if (c >= 0xF0 && c <= 0xF4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return 0;
		}
		if (len - i - 1 < n)
			return 0;
		for (k = 1; k <= n; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + k] & 0x3F);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
		    (cp >= 0xD800 && cp <= 0xDFFF))
			return 0;
		i += n + 1;
	}
	return 1;
}

static int is_ascii(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] >= 0x80)
			return 0;
	return 1;
}

/* Header input must be one line of printable UTF-8 text (TAB allowed). */
static int check_text(const char *what, const char *s, char *err, size_t errlen)
{
	size_t i, n = strlen(s);

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\r' || c == '\n') {
			snprintf(err, errlen, "%s: contains CR or LF", what);
			return -1;
		}
		if ((c < 0x20 && c != '\t') || c == 0x7F) {
			snprintf(err, errlen, "%s: contains a control character", what);
			return -1;
		}
	}
	if (!mime_utf8_valid(s, n)) {
		snprintf(err, errlen, "%s: invalid UTF-8", what);
		return -1;
	}
	return 0;
}

/* ---- header writer ----------------------------------------------------------------- */

struct hw {
	struct buf *out;
	size_t col; /* octets on the current line */
	int used;   /* something follows the field name already */
	int oom;
};

static void hw_put(struct hw *h, const char *s, size_t n)
{
	if (!h->oom && buf_append(h->out, s, n) < 0)
		h->oom = 1;
	h->col += n;
}

static void hw_fold(struct hw *h)
{
	hw_put(h, "\r\n", 2);
	h->col = 0;
}

static void hw_begin(struct hw *h, const char *name)
{
	h->col = 0;
	h->used = 0;
	hw_put(h, name, strlen(name));
	hw_put(h, ":", 1);
}

static void hw_end(struct hw *h)
{
	hw_put(h, "\r\n", 2);
}

/* An unbreakable token preceded by a space, moved to a new line if it would pass the fold. */
static void hw_atom(struct hw *h, const char *a, size_t n)
{
	if (h->used && h->col + 1 + n > MIME_FOLD)
		hw_fold(h);
	hw_put(h, " ", 1);
	hw_put(h, a, n);
	h->used = 1;
}

/* Q is restricted to the characters allowed in a phrase, so one encoder serves
 * Subject and display names alike. */
static int q_literal(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '!' || c == '*' ||
	       c == '+' || c == '-' || c == '/';
}

static size_t q_cost(unsigned char c)
{
	return q_literal(c) || c == ' ' ? 1 : 3;
}

static size_t utf8_len(unsigned char c)
{
	if (c < 0x80)
		return 1;
	if ((c & 0xE0) == 0xC0)
		return 2;
	if ((c & 0xF0) == 0xE0)
		return 3;
	return 4;
}

static void b64_block(const unsigned char *s, size_t n, char *o)
{
	uint32_t v = (uint32_t)s[0] << 16 | (n > 1 ? (uint32_t)s[1] << 8 : 0) | (n > 2 ? s[2] : 0);

	o[0] = b64d[(v >> 18) & 63];
	o[1] = b64d[(v >> 12) & 63];
	o[2] = n > 1 ? b64d[(v >> 6) & 63] : '=';
	o[3] = n > 2 ? b64d[v & 63] : '=';
}

/* Writes s (valid UTF-8) as encoded words filling the current line, then folded lines. */
static void hw_encoded(struct hw *h, const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i, qtotal = 0, btotal = (len + 2) / 3 * 4;
	int use_q;

	for (i = 0; i < len; i++)
		qtotal += q_cost(s[i]);
	use_q = qtotal <= btotal;
	i = 0;
	while (i < len) {
		char w[EW_MAX + 1];
		size_t wl = 0, budget, payload, j = i, cost = 0, k;

		budget = h->col + 1 < MIME_FOLD ? MIME_FOLD - h->col - 1 : 0;
		if (budget < EW_MIN) {
			hw_fold(h);
			budget = MIME_FOLD - 1;
		}
		if (budget > EW_MAX)
			budget = EW_MAX;
		payload = budget - EW_OVERHEAD;
		/* Take whole characters while the word still fits. */
		while (j < len) {
			size_t cl = utf8_len(s[j]), c = 0;
			if (cl > len - j)
				cl = len - j;
			if (use_q)
				for (k = 0; k < cl; k++)
					c += q_cost(s[j + k]);
			else
				c = (j - i + cl + 2) / 3 * 4 - cost;
			if (cost + c > payload)
				break;
			cost += c;
			j += cl;
		}
		memcpy(w, use_q ? "=?UTF-8?Q?" : "=?UTF-8?B?", 10);
		wl = 10;
		if (use_q) {
			for (k = i; k < j; k++) {
				if (q_literal(s[k])) {
					w[wl++] = (char)s[k];
				} else if (s[k] == ' ') {
					w[wl++] = '_';
				} else {
					w[wl++] = '=';
					w[wl++] = hexd[s[k] >> 4];
					w[wl++] = hexd[s[k] & 15];
				}
			}
		} else {
			for (k = i; k < j; k += 3) {
				b64_block(s + k, j - k < 3 ? j - k : 3, w + wl);
				wl += 4;
			}
		}
		w[wl++] = '?';
		w[wl++] = '=';
		hw_put(h, " ", 1);
		hw_put(h, w, wl);
		h->used = 1;
		i = j;
	}
}

int mime_encode_words(struct buf *out, size_t name_len, const char *str, size_t len)
{
	struct hw h = { out, name_len, 0, 0 };

	hw_encoded(&h, str, len);
	return h.oom ? -1 : 0;
}

static int is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* Longest run of whitespace-then-word: the smallest piece whitespace folding can move. */
static size_t longest_token(const char *s, size_t n)
{
	size_t i = 0, best = 0;

	while (i < n) {
		size_t st = i;
		while (i < n && is_wsp(s[i]))
			i++;
		while (i < n && !is_wsp(s[i]))
			i++;
		if (i - st > best)
			best = i - st;
	}
	return best;
}

/* ASCII unstructured text, folded by inserting CRLF before existing whitespace only,
 * so unfolding gives back exactly the input. */
static void hw_unstructured(struct hw *h, const char *s, size_t n)
{
	size_t i = 0;

	if (n == 0)
		return;
	hw_put(h, " ", 1);
	while (i < n) {
		size_t st = i, ws;
		while (i < n && is_wsp(s[i]))
			i++;
		ws = i - st;
		while (i < n && !is_wsp(s[i]))
			i++;
		if (h->used && ws > 0 && i - st > ws && h->col + (i - st) > MIME_FOLD)
			hw_fold(h);
		hw_put(h, s + st, i - st);
		h->used = 1;
	}
}

/* ---- addresses ------------------------------------------------------------------- */

static int atext(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* 1 if name can go out as bare atoms: atext words separated by single spaces. */
static int name_is_atoms(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || s[0] == ' ' || s[n - 1] == ' ')
		return 0;
	for (i = 0; i < n; i++) {
		if (s[i] == ' ') {
			if (s[i + 1] == ' ')
				return 0;
		} else if (!atext((unsigned char)s[i])) {
			return 0;
		}
		if (s[i] == '=' && i + 1 < n && s[i + 1] == '?')
			return 0; /* would look like an encoded word */
	}
	return 1;
}

/* 1 if a display name goes out as encoded words: when not ASCII, or when as atoms or as a
 * quoted string (at most 2n + 2 octets) it would hold a piece too long to fold. */
static int name_needs_encoding(const char *s, size_t n)
{
	if (!is_ascii(s, n))
		return 1;
	return (name_is_atoms(s, n) ? longest_token(s, n) : 2 * n + 2) > MIME_LINE_MAX - 16;
}

/* Writes one mailbox ("addr" or "Name <addr>") as part of an address list. */
static int hw_mailbox(struct hw *h, const char *what, const char *item, int last, char *err, size_t errlen)
{
	struct address_mailbox mb;
	const char *addr, *name, *why;
	size_t alen, nlen;
	struct buf tmp;
	int rc = -1;

	if (item == NULL) {
		snprintf(err, errlen, "%s: missing", what);
		return -1;
	}
	/* the grammar first, so that the reason is the one INSERT gives (sql/01_validate.sql) */
	why = address_mailbox_parse(item, &mb);
	if (why != NULL) {
		snprintf(err, errlen, "%s: %s", what, why);
		return -1;
	}
	if (check_text(what, item, err, errlen) < 0)
		return -1;
	addr = mb.addr;
	alen = mb.addr_len;
	name = mb.name;
	nlen = mb.name_len;
	buf_init(&tmp);
	/* A quoted display name (nothing inside is escaped: address.h) is unquoted first,
	 * then re-encoded the canonical way. */
	if (nlen >= 2 && name[0] == '"') {
		name++;
		nlen -= 2;
	}
	if (nlen > 0 && is_ascii(name, nlen) && name_is_atoms(name, nlen) && nlen + alen + 5 < MIME_FOLD) {
		/* A short mailbox stays on one line rather than folding inside the name. */
		struct buf one;
		int bad;
		buf_init(&one);
		bad = buf_append(&one, name, nlen) < 0 || buf_puts(&one, " <") < 0 ||
		      buf_append(&one, addr, alen) < 0 || buf_puts(&one, last ? ">" : ">,") < 0;
		if (!bad)
			hw_atom(h, one.data, one.len);
		buf_free(&one);
		if (bad)
			goto oom;
		rc = 0;
		goto out;
	}
	if (nlen > 0) {
		if (name_needs_encoding(name, nlen)) {
			hw_encoded(h, name, nlen);
		} else if (name_is_atoms(name, nlen)) {
			size_t i = 0;
			while (i < nlen) {
				size_t st = i;
				while (i < nlen && name[i] != ' ')
					i++;
				hw_atom(h, name + st, i - st);
				i++;
			}
		} else {
			struct buf q;
			size_t i;
			buf_init(&q);
			int bad = buf_putc(&q, '"') < 0;
			for (i = 0; i < nlen && !bad; i++) {
				if (name[i] == '"' || name[i] == '\\')
					bad |= buf_putc(&q, '\\') < 0;
				bad |= buf_putc(&q, name[i]) < 0;
			}
			bad |= buf_putc(&q, '"') < 0;
			if (!bad)
				hw_atom(h, q.data, q.len);
			buf_free(&q);
			if (bad)
				goto oom;
		}
		buf_reset(&tmp);
		if (buf_putc(&tmp, '<') < 0 || buf_append(&tmp, addr, alen) < 0 ||
		    buf_puts(&tmp, last ? ">" : ">,") < 0)
			goto oom;
	} else {
		buf_reset(&tmp);
		if (buf_append(&tmp, addr, alen) < 0 || buf_puts(&tmp, last ? "" : ",") < 0)
			goto oom;
	}
	hw_atom(h, tmp.data, tmp.len);
	rc = 0;
	goto out;
oom:
	snprintf(err, errlen, "out of memory");
out:
	buf_free(&tmp);
	return rc;
}

static int hw_address_list(struct hw *h, const char *field, const char *label, const char *const *v, size_t n,
			   char *err, size_t errlen)
{
	size_t i;
	char what[48];

	hw_begin(h, field);
	for (i = 0; i < n; i++) {
		snprintf(what, sizeof(what), "%s[%zu]", label, i + 1); /* from 1, as INSERT counts */
		if (hw_mailbox(h, n == 1 ? label : what, v[i], i + 1 == n, err, errlen) < 0)
			return -1;
	}
	hw_end(h);
	return 0;
}

/* ---- bodies ---------------------------------------------------------------------- */

/* LF, CRLF and lone CR all become CRLF; a non-empty body always ends with CRLF. */
static int body_normalise(const char *s, struct buf *d)
{
	size_t n = strlen(s), st = 0;

	if (buf_reserve(d, n + n / 16 + 2) < 0)
		return -1;
	while (st < n) {
		size_t i = st + strcspn(s + st, "\r\n");
		if (i == n)
			break;
		if (buf_append(d, s + st, i - st) < 0 || buf_append(d, "\r\n", 2) < 0)
			return -1;
		if (s[i] == '\r' && s[i + 1] == '\n')
			i++;
		st = i + 1;
	}
	if (buf_append(d, s + st, n - st) < 0)
		return -1;
	if (d->len > 0 && (d->len < 2 || memcmp(d->data + d->len - 2, "\r\n", 2) != 0))
		return buf_append(d, "\r\n", 2);
	return 0;
}

static int qp_line(const unsigned char *s, size_t n, struct buf *o)
{
	size_t j, col = 0;

	for (j = 0; j < n; j++) {
		unsigned char c = s[j];
		char tok[3];
		size_t tl = 1, limit = j + 1 == n ? MIME_FOLD : MIME_FOLD - 1;
		int lit = (c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && j + 1 < n);

		/* "From " at a line start is mangled by mbox tools; hide it. */
		if (j == 0 && c == 'F' && n >= 5 && memcmp(s, "From ", 5) == 0)
			lit = 0;
		tok[0] = (char)c;
		if (!lit) {
			tok[0] = '=';
			tok[1] = hexd[c >> 4];
			tok[2] = hexd[c & 15];
			tl = 3;
		}
		if (col + tl > limit) {
			if (buf_append(o, "=\r\n", 3) < 0)
				return -1;
			col = 0;
		}
		if (buf_append(o, tok, tl) < 0)
			return -1;
		col += tl;
	}
	return 0;
}

/* Quoted-printable (RFC 2045): CRLF pairs are hard line breaks, lines <= 76. */
static int qp_encode(const char *str, size_t n, struct buf *o)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	while (i < n) {
		size_t e = i;
		while (e < n && !(s[e] == '\r' && e + 1 < n && s[e + 1] == '\n'))
			e++;
		if (qp_line(s + i, e - i, o) < 0)
			return -1;
		if (e < n && buf_append(o, "\r\n", 2) < 0)
			return -1;
		i = e < n ? e + 2 : e;
	}
	return 0;
}

static size_t b64_size(size_t n)
{
	size_t chars = (n + 2) / 3 * 4;

	return chars + 2 * ((chars + MIME_FOLD - 1) / MIME_FOLD);
}

static int b64_encode(const char *str, size_t n, struct buf *o)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i, col = 0;
	char blk[4];

	if (buf_reserve(o, b64_size(n)) < 0)
		return -1;
	for (i = 0; i < n; i += 3) {
		b64_block(s + i, n - i < 3 ? n - i : 3, blk);
		if (buf_append(o, blk, 4) < 0)
			return -1;
		col += 4;
		if (col == MIME_FOLD || i + 3 >= n) {
			if (buf_append(o, "\r\n", 2) < 0)
				return -1;
			col = 0;
		}
	}
	return 0;
}

int mime_base64(struct buf *out, const void *data, size_t n)
{
	const unsigned char *s = data;
	char blk[4];

	if (buf_reserve(out, (n + 2) / 3 * 4) < 0)
		return -1;
	for (size_t i = 0; i < n; i += 3) {
		b64_block(s + i, n - i < 3 ? n - i : 3, blk);
		if (buf_append(out, blk, 4) < 0)
			return -1;
	}
	return 0;
}

/* Longest line of CRLF-normalised text, in bytes, line ends not counted. */
static size_t longest_line(const char *s, size_t len)
{
	const char *p, *end, *cr;
	size_t longest = 0;

	if (len == 0)
		return 0;
	p = s;
	end = s + len;
	while (p < end && (cr = memchr(p, '\r', (size_t)(end - p))) != NULL) {
		if ((size_t)(cr - p) > longest)
			longest = (size_t)(cr - p);
		p = cr + 1;
		if (p < end && *p == '\n')
			p++;
	}
	if (p < end && (size_t)(end - p) > longest)
		longest = (size_t)(end - p);
	return longest;
}

/* Normalises and encodes one body; *cte receives the transfer encoding name. */
static int body_prepare(const char *what, const char *src, struct buf *enc, const char **cte, char *err, size_t errlen)
{
	struct buf norm;
	int ascii, rc = -1;

	buf_init(&norm);
	if (body_normalise(src, &norm) < 0)
		goto oom;
	/* ASCII is valid UTF-8: only other text needs the full check */
	ascii = ascii_prefix((const unsigned char *)norm.data, norm.len) == norm.len;
	if (!ascii && !mime_utf8_valid(norm.data, norm.len)) {
		snprintf(err, errlen, "%s: invalid UTF-8", what);
		goto out;
	}
	if (ascii && longest_line(norm.data, norm.len) <= MIME_LINE_MAX) {
		*cte = "7bit";
		*enc = norm;
		return 0;
	}
	if (qp_encode(norm.data, norm.len, enc) < 0)
		goto oom;
	*cte = "quoted-printable";
	/* Simple rule: quoted-printable keeps mostly-Latin text readable; when base64 is
	 * smaller (mostly non-Latin scripts), use it. */
	if (b64_size(norm.len) < enc->len) {
		buf_reset(enc);
		if (b64_encode(norm.data, norm.len, enc) < 0)
			goto oom;
		*cte = "base64";
	}
	rc = 0;
	goto out;
oom:
	snprintf(err, errlen, "out of memory");
out:
	buf_free(&norm);
	return rc;
}

/* ---- the message ----------------------------------------------------------------- */

static const char *const owned_headers[] = {
	"Message-ID",
	"Date",
	"From",
	"To",
	"Cc",
	"Bcc",
	"Reply-To",
	"Subject",
	"MIME-Version",
	"Content-Type",
	"Content-Transfer-Encoding",
};

static int message_id_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0, i, at = 0;

	if (n < 5 || n > 250 || s[0] != '<' || s[n - 1] != '>')
		return 0;
	for (i = 1; i + 1 < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= 0x20 || c >= 0x7F || c == '<' || c == '>')
			return 0;
		if (c == '@')
			at = i;
	}
	return at > 1 && at + 2 < n;
}

static int write_date(struct buf *out, time_t t, char *err, size_t errlen)
{
	static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	struct tm tm;

	/* Fixed English names: strftime would follow the process locale. */
	if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 < 1900 || tm.tm_year + 1900 > 9999) {
		snprintf(err, errlen, "date: out of range");
		return -1;
	}
	if (buf_printf(out, "Date: %s, %02d %s %04d %02d:%02d:%02d +0000\r\n", days[tm.tm_wday], tm.tm_mday,
		       months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec) < 0) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

static int write_subject(struct hw *h, const char *subj, char *err, size_t errlen)
{
	size_t n = strlen(subj);

	if (check_text("subject", subj, err, errlen) < 0)
		return -1;
	hw_begin(h, "Subject");
	/* Encode when not plain ASCII, when a word could not be folded under 998 octets,
	 * or when the text could be mistaken for an encoded word. */
	if (!is_ascii(subj, n) || longest_token(subj, n) > MIME_LINE_MAX - 16 || strstr(subj, "=?") != NULL)
		hw_encoded(h, subj, n);
	else
		hw_unstructured(h, subj, n);
	hw_end(h);
	return 0;
}

static int write_extra_header(struct hw *h, size_t idx, const struct mime_header *x, char *err, size_t errlen)
{
	size_t i, n, vn;
	char what[112];

	n = x->name ? strlen(x->name) : 0;
	if (n == 0 || n > 76) {
		snprintf(err, errlen, "header[%zu]: invalid name", idx);
		return -1;
	}
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)x->name[i];
		if (c < 33 || c > 126 || c == ':') {
			snprintf(err, errlen, "header[%zu]: invalid name", idx);
			return -1;
		}
	}
	for (i = 0; i < sizeof(owned_headers) / sizeof(owned_headers[0]); i++) {
		if (strcasecmp(x->name, owned_headers[i]) == 0) {
			snprintf(err, errlen, "header %s: set by outboxd, not allowed in headers", x->name);
			return -1;
		}
	}
	snprintf(what, sizeof(what), "header %s", x->name);
	if (x->value == NULL) {
		snprintf(err, errlen, "%s: missing value", what);
		return -1;
	}
	if (check_text(what, x->value, err, errlen) < 0)
		return -1;
	vn = strlen(x->value);
	hw_begin(h, x->name);
	if (!is_ascii(x->value, vn)) {
		hw_encoded(h, x->value, vn);
	} else {
		if (n + 2 + longest_token(x->value, vn) > MIME_LINE_MAX) {
			snprintf(err, errlen, "%s: value has a word too long to fold", what);
			return -1;
		}
		hw_unstructured(h, x->value, vn);
	}
	hw_end(h);
	return 0;
}

static uint64_t fnv1a(const char *s, uint64_t salt)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ salt;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	return h;
}

static int contains(const struct buf *b, const char *needle)
{
	return b->len > 0 && memmem(b->data, b->len, needle, strlen(needle)) != NULL;
}

static int write_part_headers(struct buf *out, const char *type, const char *cte)
{
	return buf_printf(out, "Content-Type: %s; charset=UTF-8\r\nContent-Transfer-Encoding: %s\r\n", type, cte);
}

/* Checks the finished header block: every line within the hard limit. */
static int headers_fit(const struct buf *out, size_t from, size_t to)
{
	size_t i, line = 0;

	for (i = from; i < to; i++) {
		if (out->data[i] == '\r')
			line = 0, i++;
		else if (++line > MIME_LINE_MAX)
			return 0;
	}
	return 1;
}

int mime_build(const struct mime_msg *m, struct buf *out, char *errbuf, size_t errlen)
{
	struct hw h = { out, 0, 0, 0 };
	struct buf text, html;
	const char *tcte = NULL, *hcte = NULL;
	int has_text = m->body_text && m->body_text[0];
	int has_html = m->body_html && m->body_html[0];
	size_t start = out->len, i;
	char boundary[40];
	int rc = -1;

	buf_init(&text);
	buf_init(&html);
	if (errlen > 0)
		errbuf[0] = '\0';
	if (!message_id_ok(m->message_id)) {
		snprintf(errbuf, errlen, "message_id: malformed, want <local@domain>");
		goto out;
	}
	if (has_text && body_prepare("body_text", m->body_text, &text, &tcte, errbuf, errlen) < 0)
		goto out;
	if (has_html && body_prepare("body_html", m->body_html, &html, &hcte, errbuf, errlen) < 0)
		goto out;

	if (write_date(out, m->date, errbuf, errlen) < 0)
		goto out;
	if (buf_printf(out, "Message-ID: %s\r\n", m->message_id) < 0)
		goto oom;
	if (m->from == NULL || m->from[0] == '\0') {
		snprintf(errbuf, errlen, "from: missing");
		goto out;
	}
	if (hw_address_list(&h, "From", "from", &m->from, 1, errbuf, errlen) < 0)
		goto out;
	if (m->n_to > 0) {
		if (hw_address_list(&h, "To", "to", m->to, m->n_to, errbuf, errlen) < 0)
			goto out;
	} else if (m->n_cc == 0) {
		/* Only blind recipients: say so rather than leave To out. */
		if (buf_puts(out, "To: undisclosed-recipients:;\r\n") < 0)
			goto oom;
	}
	if (m->n_cc > 0 && hw_address_list(&h, "Cc", "cc", m->cc, m->n_cc, errbuf, errlen) < 0)
		goto out;
	if (m->reply_to != NULL && hw_address_list(&h, "Reply-To", "reply_to", &m->reply_to, 1, errbuf, errlen) < 0)
		goto out;
	if (write_subject(&h, m->subject ? m->subject : "", errbuf, errlen) < 0)
		goto out;
	if (buf_puts(out, "MIME-Version: 1.0\r\n") < 0)
		goto oom;
	for (i = 0; i < m->n_headers; i++)
		if (write_extra_header(&h, i, &m->headers[i], errbuf, errlen) < 0)
			goto out;
	if (h.oom)
		goto oom;
	if (!headers_fit(out, start, out->len)) {
		snprintf(errbuf, errlen, "headers: a line is longer than %d octets", MIME_LINE_MAX);
		goto out;
	}

	if (has_text && has_html) {
		uint64_t salt = 0;
		const char *seed = m->boundary_seed ? m->boundary_seed : m->message_id;

		/* "=_" cannot occur in quoted-printable or base64 output; 7bit parts are checked. */
		do {
			snprintf(boundary, sizeof(boundary), "=_outboxd_%016llx",
				 (unsigned long long)fnv1a(seed, salt));
			salt++;
		} while ((contains(&text, boundary) || contains(&html, boundary)) && salt < 64);
		if (contains(&text, boundary) || contains(&html, boundary)) {
			snprintf(errbuf, errlen, "body: no usable MIME boundary");
			goto out;
		}
		if (buf_printf(out, "Content-Type: multipart/alternative; boundary=\"%s\"\r\n\r\n--%s\r\n", boundary,
			       boundary) < 0 ||
		    write_part_headers(out, "text/plain", tcte) < 0 || buf_puts(out, "\r\n") < 0 ||
		    buf_append(out, text.data, text.len) < 0 || buf_printf(out, "--%s\r\n", boundary) < 0 ||
		    write_part_headers(out, "text/html", hcte) < 0 || buf_puts(out, "\r\n") < 0 ||
		    buf_append(out, html.data, html.len) < 0 || buf_printf(out, "--%s--\r\n", boundary) < 0)
			goto oom;
	} else if (has_html) {
		if (write_part_headers(out, "text/html", hcte) < 0 || buf_puts(out, "\r\n") < 0 ||
		    buf_append(out, html.data, html.len) < 0)
			goto oom;
	} else {
		if (write_part_headers(out, "text/plain", has_text ? tcte : "7bit") < 0 || buf_puts(out, "\r\n") < 0 ||
		    (has_text && buf_append(out, text.data, text.len) < 0))
			goto oom;
	}
	rc = 0;
	goto out;
oom:
	snprintf(errbuf, errlen, "out of memory");
out:
	if (rc < 0 && out->len > start)
		buf_truncate(out, start);
	buf_free(&text);
	buf_free(&html);
	return rc;
}
