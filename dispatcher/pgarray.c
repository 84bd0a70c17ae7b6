/* The text form of one-dimensional PostgreSQL arrays (array_out / array_in): elements are
 * separated by commas, quoted with "..." when they hold specials, with \ escaping inside
 * quotes; an unquoted NULL is SQL NULL. */
#include "pgarray.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

void pgarray_free(struct pgarray *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->items[i]);
	free(a->items);
	a->items = NULL;
	a->n = 0;
}

static int push(struct pgarray *a, char *item)
{
	char **grown = realloc(a->items, (a->n + 1) * sizeof(*grown));

	if (grown == NULL) {
		free(item);
		return -1;
	}
	a->items = grown;
	a->items[a->n++] = item;
	return 0;
}

int pgarray_parse(const char *s, struct pgarray *out)
{
	const char *p = s;
	size_t len = s ? strlen(s) : 0;
	char *buf;

	out->items = NULL;
	out->n = 0;
	if (s == NULL || *s == '\0')
		return 0;
	if (p[0] != '{' || p[len - 1] != '}')
		return -1;
	buf = malloc(len + 1);
	if (buf == NULL)
		return -1;
	p++;
	if (*p == '}') {
		free(buf);
		return 0;
	}
	for (;;) {
		size_t k = 0;
		int quoted = 0;
		char *item;

		if (*p == '"') {
			quoted = 1;
			p++;
			while (*p && *p != '"') {
				if (*p == '\\' && p[1])
					p++;
				buf[k++] = *p++;
			}
			if (*p != '"')
				goto bad;
			p++;
		} else {
			while (*p && *p != ',' && *p != '}')
				buf[k++] = *p++;
		}
		buf[k] = '\0';
		if (!quoted && strcasecmp(buf, "NULL") == 0)
			item = NULL;
		else if ((item = strdup(buf)) == NULL)
			goto bad;
		if (push(out, item) != 0)
			goto bad;
		if (*p == ',') {
			p++;
			continue;
		}
		if (*p == '}' && p[1] == '\0')
			break;
		goto bad;
	}
	free(buf);
	return 0;
bad:
	free(buf);
	pgarray_free(out);
	return -1;
}

/* ---- building literals ---------------------------------------------------------------- */

void pgarray_lit_init(struct pgarray_lit *l)
{
	buf_init(&l->text);
	l->n = 0;
	l->failed = 0;
}

static void lit_sep(struct pgarray_lit *l)
{
	if (buf_putc(&l->text, l->n++ ? ',' : '{') != 0)
		l->failed = 1;
}

void pgarray_lit_int(struct pgarray_lit *l, long long v)
{
	lit_sep(l);
	if (buf_printf(&l->text, "%lld", v) != 0)
		l->failed = 1;
}

void pgarray_lit_str(struct pgarray_lit *l, const char *s)
{
	int e;

	lit_sep(l);
	e = buf_putc(&l->text, '"');
	for (; *s && e == 0; s++) {
		if (*s == '"' || *s == '\\')
			e |= buf_putc(&l->text, '\\');
		e |= buf_putc(&l->text, *s);
	}
	if ((e | buf_putc(&l->text, '"')) != 0)
		l->failed = 1;
}

const char *pgarray_lit_close(struct pgarray_lit *l)
{
	if (buf_puts(&l->text, l->n ? "}" : "{}") != 0)
		l->failed = 1;
	return l->failed ? NULL : l->text.data;
}

void pgarray_lit_free(struct pgarray_lit *l)
{
	buf_free(&l->text);
	l->n = 0;
	l->failed = 0;
}
