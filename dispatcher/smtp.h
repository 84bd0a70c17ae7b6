/* SMTP sink: delivers prepared messages to one relay on the libevent loop, every
 * recipient of a message in one submission with a result per recipient, through one of
 * two engines chosen by smtp.engine: "native" (smtp_native.c: pipelining, chunking, one
 * transaction for all recipients) or "libcurl" (smtp_curl.c: one transaction per
 * recipient). The core sees only this header. */
#ifndef OUTBOXD_SMTP_H
#define OUTBOXD_SMTP_H

#include <stddef.h>
#include <stdint.h>

#include "smtp_class.h"

struct event_base;
struct config;
struct buf;
struct smtp_sink;

/* Outcome for one recipient. `text` is the server's reply line or the engine's error
 * text, valid only during the callback. not_attempted: nothing reached the server for it
 * (sink paused or shut down). */
struct smtp_result {
	struct smtp_outcome outcome;
	const char *text;
	int not_attempted;
	int shared; /* repeats the outcome of the same transaction already reported for
			     an earlier recipient: the relay's breaker and the reply metrics
			     have heard it once */
	double duration_s;
};

/* Called once per recipient: index is the recipient's position in the submission. */
typedef void (*smtp_done_fn)(void *arg, size_t index, const struct smtp_result *r);

/* Creates the sink from the smtp.* configuration. Returns NULL with errbuf set. */
struct smtp_sink *smtp_new(struct event_base *base, const struct config *cfg, char *errbuf, size_t errlen);

/* Queues one message for rcpt[0..nrcpt) (addresses are copied): MAIL FROM mail_from,
 * the recipients, then msg (bytes with CRLF line ends; borrowed: must stay valid until
 * the last `done` call). `done(arg, i, r)` is called exactly once for every recipient,
 * from the loop (never from inside smtp_submit). Returns 0, or -1 when the sink cannot
 * accept work (then done is never called). */
int smtp_submit(struct smtp_sink *s, const char *mail_from, const char *const *rcpt, size_t nrcpt,
		const struct buf *msg, smtp_done_fn done, void *arg) __attribute__((warn_unused_result));


/* Completes every message not yet started with not_attempted = 1 (used when the relay's
 * breaker opens and at shutdown). */
void smtp_cancel_queued(struct smtp_sink *s);

/* Aborts running transactions too (drain timeout): each recipient completes with verdict
 * UNKNOWN if its message may have been handed over, else not_attempted. */
void smtp_abort_all(struct smtp_sink *s);

/* Changes the rate limit (messages/s, 0 = off) at runtime. */
void smtp_set_rate(struct smtp_sink *s, double per_s);

/* "native" or "libcurl" (static string). */
const char *smtp_engine_name(const struct smtp_sink *s);

/* Frees the sink without calling back; messages still queued are dropped. */
void smtp_free(struct smtp_sink *s);

/* ---- for the engines only ---------------------------------------------------------- */

/* One engine behind the sink (OpenSMTPD-style backend table). */
struct smtp_engine {
	const char *name;
	void *(*create)(struct event_base *base, const struct config *cfg, char *errbuf, size_t errlen);
	int (*send)(void *impl, const char *mail_from, const char *const *rcpt, size_t nrcpt, const struct buf *msg,
		    smtp_done_fn done, void *arg);
	void (*cancel_queued)(void *impl);
	void (*abort_all)(void *impl);
	void (*set_rate)(void *impl, double per_s);
	void (*destroy)(void *impl);
};

extern const struct smtp_engine smtp_engine_native;
extern const struct smtp_engine smtp_engine_curl;

#endif
