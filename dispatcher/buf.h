/* buf: a growable, always NUL-terminated byte buffer used to assemble messages,
 * log lines and SQL text without fixed-size arrays. */
#ifndef OUTBOXD_BUF_H
#define OUTBOXD_BUF_H

#include <stdarg.h>
#include <stddef.h>

#define BUF_MUST_CHECK __attribute__((warn_unused_result))

/* data is NULL until the first append; after any successful append data[len] == '\0'.
 * The buffer owns data; release it with buf_free(). */
struct buf {
	char *data;
	size_t len, cap;
};

/* Sets b to the empty state; allocates nothing. */
void buf_init(struct buf *b);

/* Makes room for at least extra more bytes plus the NUL. Returns 0, or -1 when out
 * of memory or the size would overflow (b is left unchanged). */
int buf_reserve(struct buf *b, size_t extra) BUF_MUST_CHECK;

/* Appends n bytes (which may contain NULs). Returns 0, or -1 on OOM with b unchanged. */
int buf_append(struct buf *b, const void *p, size_t n) BUF_MUST_CHECK;

/* Appends a NUL-terminated string. Returns 0, or -1 on OOM with b unchanged. */
int buf_puts(struct buf *b, const char *s) BUF_MUST_CHECK;

/* Appends one byte. Returns 0, or -1 on OOM with b unchanged. */
int buf_putc(struct buf *b, char c) BUF_MUST_CHECK;

/* Appends printf-formatted text. Returns 0, or -1 on OOM or a formatting error,
 * with b unchanged. */
int buf_printf(struct buf *b, const char *fmt, ...) BUF_MUST_CHECK __attribute__((format(printf, 2, 3)));

/* va_list form of buf_printf. */
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) BUF_MUST_CHECK __attribute__((format(printf, 2, 0)));

/* Empties b but keeps its allocation for reuse. */
void buf_reset(struct buf *b);

/* Shortens b to len bytes (no-op when len >= b->len). */
void buf_truncate(struct buf *b, size_t len);

/* Hands the bytes to the caller (who frees them with free()) and leaves b empty.
 * Returns "" allocated on demand for an empty buffer, or NULL on OOM. */
char *buf_steal(struct buf *b) BUF_MUST_CHECK;

/* Frees the storage and returns b to the empty state. Safe to call twice. */
void buf_free(struct buf *b);

#endif
