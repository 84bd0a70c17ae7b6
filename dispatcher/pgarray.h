/* pgarray: the text form of one-dimensional PostgreSQL arrays, both ways: parses text[]
 * output ("{a,"b c",NULL}") so the claim can return plain columns instead of JSON, and
 * builds array literals for parameters. Pure; no libpq. */
#ifndef OUTBOXD_PGARRAY_H
#define OUTBOXD_PGARRAY_H

#include <stddef.h>

#include "buf.h"

/* A parsed array: items[i] is NULL for an SQL NULL element. Owns every string. */
struct pgarray {
	char **items;
	size_t n;
};

/* Parses s (NULL or "" give an empty array). Returns 0, or -1 on malformed input or OOM
 * (out is then empty). The caller frees out with pgarray_free(). */
int pgarray_parse(const char *s, struct pgarray *out) __attribute__((warn_unused_result));

/* Frees the items and empties the array. Safe to call twice. */
void pgarray_free(struct pgarray *a);

/* An array literal being built, element by element. A failed append (out of memory) is
 * remembered and reported by pgarray_lit_close(). */
struct pgarray_lit {
	struct buf text;
	size_t n;
	int failed;
};

void pgarray_lit_init(struct pgarray_lit *l);
/* Appends an integer element. */
void pgarray_lit_int(struct pgarray_lit *l, long long v);
/* Appends a text element, double-quoted with '"' and '\\' escaped. */
void pgarray_lit_str(struct pgarray_lit *l, const char *s);
/* Closes the literal ("{}" when empty). Returns its text, owned by l, or NULL when an
 * append failed. */
const char *pgarray_lit_close(struct pgarray_lit *l) __attribute__((warn_unused_result));
void pgarray_lit_free(struct pgarray_lit *l);

#endif
