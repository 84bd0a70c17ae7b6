/* smtp_proto: the pure parts of the SMTP client protocol, without I/O: the reply parser
 * (multi-line replies, enhanced status codes, malformed and over-long lines), EHLO
 * extension parsing, the body scan (8-bit, line lengths) and dot-stuffing. */
#ifndef OUTBOXD_SMTP_PROTO_H
#define OUTBOXD_SMTP_PROTO_H

#include <stddef.h>
#include <stdint.h>

/* RFC 5321 §4.5.3.1.5 caps a reply line at 512 octets; real servers stay far below.
 * A longer line is taken as hostile and ends the connection. */
#define SMTP_LINE_MAX 2048
/* More lines than this in one reply (EHLO lists about 15) is a server talking nonsense. */
#define SMTP_REPLY_LINES_MAX 100
#define SMTP_TEXT_MAX 512

/* One reply being assembled line by line. */
struct smtp_reply {
	int code;                 /* 3-digit code of the first line, 0 before it */
	int nlines;               /* lines taken so far */
	char enhanced[16];        /* "5.1.1" from the last line, or "" */
	char text[SMTP_TEXT_MAX]; /* last line as received ("550 5.1.1 User unknown"),
					made safe by relay_text_clean() (control bytes and
					invalid UTF-8 as \xNN) */
};

enum smtp_line_status {
	SMTP_LINE_MORE, /* a "NNN-" continuation line: the reply goes on */
	SMTP_LINE_LAST, /* the reply is complete: code, enhanced, text are final */
	SMTP_LINE_BAD,  /* not SMTP: no 3-digit code, a code whose first digit is not 2-5,
			   a continuation with another code, a bad separator, too long,
			   too many lines */
};

/* Empties r before a new reply. */
void smtp_reply_reset(struct smtp_reply *r);

/* Feeds one line of a reply, without its CRLF (a bare LF ending is tolerated by the
 * caller's line splitter). Pure; never fails beyond returning SMTP_LINE_BAD, after which r
 * must be reset before reuse. */
enum smtp_line_status smtp_reply_line(struct smtp_reply *r, const char *line, size_t len);

/* Extensions a server announced in its EHLO reply. */
enum {
	SMTP_EXT_PIPELINING = 1u << 0,
	SMTP_EXT_CHUNKING = 1u << 1,
	SMTP_EXT_SIZE = 1u << 2,
	SMTP_EXT_8BITMIME = 1u << 3,
	SMTP_EXT_SMTPUTF8 = 1u << 4,
	SMTP_EXT_STARTTLS = 1u << 5,
	SMTP_EXT_AUTH = 1u << 6,
	SMTP_EXT_ENHANCED = 1u << 7,
};
enum {
	SMTP_AUTH_PLAIN = 1u << 0,
	SMTP_AUTH_LOGIN = 1u << 1,
	SMTP_AUTH_XOAUTH2 = 1u << 2,
};

struct smtp_ext {
	unsigned flags;    /* SMTP_EXT_* */
	unsigned auth;     /* SMTP_AUTH_* offered */
	uint64_t size_max; /* SIZE argument; 0 = no limit stated */
};

/* Reads one EHLO reply line (the whole line "250-PIPELINING" or "250 SIZE 1000"; the
 * first line, the server's name, must not be passed) into e. Unknown keywords and
 * malformed arguments are ignored. */
void smtp_ext_line(struct smtp_ext *e, const char *line, size_t len);

/* What the client must know about a message body before sending it. */
struct smtp_body_info {
	int eight_bit;  /* some byte >= 0x80: needs BODY=8BITMIME */
	size_t longest; /* longest line in octets, CR LF not counted */
	size_t dots;    /* lines starting with '.' (each costs one more octet in DATA) */
	int ends_crlf;  /* the last line is terminated (or the body is empty) */
};

/* Scans body[0..n). Pure. */
void smtp_body_scan(const char *body, size_t n, struct smtp_body_info *bi);

/* Hands body[0..n) to emit as the DATA payload: every line starting with '.' gets one
 * more '.', a missing final CRLF is added, and ".\r\n" ends it. emit receives
 * consecutive pieces (pointing into body where possible) and returns 0, or -1 to stop.
 * Returns 0, or -1 when emit failed. */
int smtp_dot_stuff(const char *body, size_t n, int (*emit)(void *arg, const char *p, size_t len), void *arg);

/* 1 if s holds a byte >= 0x80 (an address that needs SMTPUTF8). */
int smtp_needs_utf8(const char *s);

#endif
