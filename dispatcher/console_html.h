/* console_html: renders the web console's pages from the JSON documents the console's SQL
 * functions return. Pure functions of their input (no I/O), every text HTML-escaped. */
#ifndef OUTBOXD_CONSOLE_HTML_H
#define OUTBOXD_CONSOLE_HTML_H

#include <jansson.h>
#include <stddef.h>

#include "buf.h"

/* What a page shows besides its data. Strings may be NULL. */
struct console_view {
	const char *version;      /* outboxd version, in the header */
	int writable;             /* a console token is configured: show requeue/cancel */
	int mirror_on;            /* kafka.brokers is set */
	const char *smtp_breaker; /* "closed", "open", "half-open" */
	const char *kafka_breaker;
	json_t *figures;      /* telemetry's last queue figures (depth, oldest, lag_*), or NULL */
	double figures_age_s; /* how old they are */
};

/* The static assets, NUL-terminated. */
extern const char console_css[];
extern const char console_js[];
extern const char console_favicon[];

/* Appends s with &, <, >, " and ' escaped (and control characters other than tab and
 * newline dropped). Returns 0, or -1 on OOM. */
int console_html_escape(struct buf *b, const char *s) BUF_MUST_CHECK;

/* Each renders a complete page into b (appending). Returns 0, or -1 on OOM. */
/* The overview: queue depth, oldest due age, breakers, mirror lag, the last hour's delivery
 * charts and the recent failures. `doc` is outbox.console_overview()'s result. */
int console_html_overview(struct buf *b, const struct console_view *v, json_t *doc) BUF_MUST_CHECK;
/* One message's history; `doc` is outbox.console_message()'s result (NULL or JSON null: not
 * found, with `query` shown). */
int console_html_message(struct buf *b, const struct console_view *v, json_t *doc, const char *query) BUF_MUST_CHECK;
/* Search results for `text`; `doc` is outbox.console_search()'s result. */
int console_html_search(struct buf *b, const struct console_view *v, json_t *doc, const char *text) BUF_MUST_CHECK;
/* A page that only says `message` (escaped) under `title`. */
int console_html_notice(struct buf *b, const struct console_view *v, const char *title,
			const char *message) BUF_MUST_CHECK;

#endif
