/* pgarray: parses PostgreSQL's text output of a one-dimensional text[] ("{a,"b c",NULL}")
 * so the claim can return plain columns instead of JSON. Pure; no libpq. */
#ifndef OUTBOXD_PGARRAY_H
#define OUTBOXD_PGARRAY_H

#include <stddef.h>

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

#endif
