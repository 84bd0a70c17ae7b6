/* mime: turns one outbox row into the bytes of an RFC 5322 + MIME message (CRLF line
 * ends, ASCII-only headers, RFC 2047 words for UTF-8), ready to upload over SMTP. */
#ifndef OUTBOXD_MIME_H
#define OUTBOXD_MIME_H

#include <stddef.h>
#include <time.h>

#include "buf.h"

#define MIME_FOLD 76      /* header lines are folded to at most this many octets when possible */
#define MIME_LINE_MAX 998 /* hard limit per line, CRLF excluded (RFC 5322) */

struct mime_header {
	const char *name;
	const char *value;
};

/* Everything is borrowed; mime_build() copies what it needs into out. */
struct mime_msg {
	const char *message_id; /* "<local@domain>", fixed per row */
	const char *from;       /* "addr" or "Name <addr>" (address.h) */
	const char *const *to;  /* same forms; may be empty (bcc-only) */
	size_t n_to;
	const char *const *cc; /* bcc never appears in headers */
	size_t n_cc;
	const char *reply_to;              /* NULL = none */
	const char *subject;               /* UTF-8; NULL = empty */
	const char *body_text;             /* NULL or "" = none */
	const char *body_html;             /* NULL or "" = none */
	const struct mime_header *headers; /* extra headers from the row */
	size_t n_headers;
	time_t date;               /* written in UTC */
	const char *boundary_seed; /* makes the boundary deterministic;
						    NULL = message_id */
};

/*
 * Appends the complete message to out (CRLF everywhere, no dot-stuffing: the SMTP client
 * does that). Returns 0, or -1 with a one-line reason in errbuf (e.g. "subject: contains CR
 * or LF") and out restored to its previous length. Refuses: CR/LF or other control
 * characters or invalid UTF-8 in any header input, non-ASCII or malformed addresses,
 * extra headers with bad names or names outboxd owns, invalid UTF-8 in bodies.
 *
 * Bodies: text only -> text/plain; html only -> text/html; both -> multipart/alternative
 * (plain first, html last); neither -> empty text/plain. Each body has its line ends
 * normalised to CRLF and ends with CRLF; it is sent 7bit when pure ASCII with lines of at
 * most 998 octets, otherwise quoted-printable, unless base64 would be smaller (mostly
 * non-Latin text), in which case base64.
 */
int mime_build(const struct mime_msg *m, struct buf *out, char *errbuf, size_t errlen) BUF_MUST_CHECK;

/* Appends str as RFC 2047 encoded-words for an unstructured header whose name (with
 * the colon) is name_len octets: words <= 75 chars, lines <= MIME_FOLD, folded with
 * CRLF SP, never splitting a UTF-8 sequence; Q or B, whichever is shorter. Writes the
 * space after the colon itself. str must be valid UTF-8. Returns 0, or -1 on OOM.
 * Exposed for tests and fuzzing. */
int mime_encode_words(struct buf *out, size_t name_len, const char *str, size_t len) BUF_MUST_CHECK;

/* Appends data[0..n) in base64 on one line, without line breaks (SASL responses).
 * Returns 0, or -1 on OOM. */
int mime_base64(struct buf *out, const void *data, size_t n) BUF_MUST_CHECK;

/* 1 if s[0..len) is well-formed UTF-8 (no overlongs, surrogates or values past
 * U+10FFFF), else 0. */
int mime_utf8_valid(const char *s, size_t len);

#endif
