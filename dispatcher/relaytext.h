/* relaytext: makes text that came from a relay (or any peer) safe to store and log.
 * Relays may answer with bytes that are not UTF-8, and fixed reply buffers may cut a
 * multi-byte character in two; jansson and PostgreSQL refuse such text, so without this
 * the row's last_error would be lost. Both SMTP engines and the job verdict use it. */
#ifndef OUTBOXD_RELAYTEXT_H
#define OUTBOXD_RELAYTEXT_H

#include <stddef.h>

/* Longest relay text kept per recipient, in bytes (escapes included). */
#define RELAY_TEXT_MAX 1024

/* Copies src[0..srclen) into dst (capacity dstlen >= 1, always NUL-terminated) as valid
 * UTF-8: every byte that is not part of a well-formed UTF-8 sequence (overlongs,
 * surrogates, > U+10FFFF, truncated sequences) and every control character other than
 * TAB becomes the four characters "\xNN"; NUL bytes too. When dst is too small the copy
 * stops before the first character (or escape) that does not fit whole, never inside one.
 * Returns the number of bytes written, not counting the NUL. */
size_t relay_text_clean(char *dst, size_t dstlen, const char *src, size_t srclen);

/* Ends s before its last character when that character is incomplete (UTF-8 text that a
 * fixed buffer, e.g. snprintf's, cut in two). */
void relay_text_trim_tail(char *s);

/* A malloc'd relay_text_clean() copy of the NUL-terminated s (NULL when s is NULL or out
 * of memory), at most max bytes of output. */
char *relay_text_dup(const char *s, size_t max);

#endif
