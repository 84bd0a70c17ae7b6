/* relaytext: the one place that turns peer bytes into storable UTF-8 (see relaytext.h). */
#include "relaytext.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Length of the well-formed UTF-8 sequence at p (RFC 3629 table 3-7), or 0 when the
 * bytes there do not form one. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
	unsigned char c = p[0];
	size_t len, i;
	unsigned char lo = 0x80, hi = 0xBF;

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		len = 2;
	else if (c >= 0xE0 && c <= 0xEF)
		len = 3;
	else if (c >= 0xF0 && c <= 0xF4)
		len = 4;
	else
		return 0;
	if (n < len)
		return 0;
	if (c == 0xE0)
		lo = 0xA0;
	else if (c == 0xED)
		hi = 0x9F; /* no surrogates */
	else if (c == 0xF0)
		lo = 0x90;
	else if (c == 0xF4)
		hi = 0x8F; /* nothing above U+10FFFF */
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xBF)
			return 0;
	return len;
}

size_t relay_text_clean(char *dst, size_t dstlen, const char *src, size_t srclen)
{
	const unsigned char *p = (const unsigned char *)src;
	size_t o = 0, i = 0;

	if (dstlen == 0)
		return 0;
	while (i < srclen) {
		size_t k = utf8_seq(p + i, srclen - i);
		int escape = k == 0 || (k == 1 && ((p[i] < 0x20 && p[i] != '\t') || p[i] == 0x7F));
		size_t need = escape ? 4 : k;

		if (o + need >= dstlen)
			break;
		if (escape) {
			snprintf(dst + o, 5, "\\x%02X", p[i]);
			i++;
		} else {
			memcpy(dst + o, p + i, k);
			i += k;
		}
		o += need;
	}
	dst[o] = '\0';
	return o;
}

void relay_text_trim_tail(char *s)
{
	size_t n = strlen(s), start = n, back = 0;

	/* find the first byte of the last character (at most 3 continuation bytes back) */
	while (start > 0 && back < 4 && ((unsigned char)s[start - 1] & 0xC0) == 0x80) {
		start--;
		back++;
	}
	if (start == 0)
		return;
	start--;
	if (utf8_seq((const unsigned char *)s + start, n - start) != n - start && (unsigned char)s[start] >= 0x80)
		s[start] = '\0';
}

char *relay_text_dup(const char *s, size_t max)
{
	char *d;

	if (s == NULL)
		return NULL;
	d = malloc(max + 1);
	if (d == NULL)
		return NULL;
	relay_text_clean(d, max + 1, s, strlen(s));
	return d;
}
