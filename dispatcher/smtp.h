/* SMTP sink: delivers prepared messages to one relay, one envelope recipient per SMTP
 * transaction, over a bounded pool of reused connections: one worker thread per pooled
 * connection runs libcurl easy transfers (libcurl blocks waiting for the reply to the
 * final dot), and reports back to the loop through a pipe, so every callback runs on the
 * loop. The only module that includes curl/curl.h (with smtp_class.c). */
#ifndef OUTBOXD_SMTP_H
#define OUTBOXD_SMTP_H

#include <stddef.h>
#include <stdint.h>

#include "smtp_class.h"

struct event_base;
struct config;
struct buf;
struct smtp_sink;

/* Outcome of one transfer (one recipient). `text` is the server's last reply line or
 * libcurl's error text, valid only during the callback. not_attempted: the transfer
 * never started (sink paused or shut down); nothing reached the server. */
struct smtp_result {
	struct smtp_outcome outcome;
	const char *text;
	int not_attempted;
	double duration_s;
};

typedef void (*smtp_done_fn)(void *arg, size_t index, const struct smtp_result *r);

/* Creates the sink from the smtp.* configuration. Returns NULL with errbuf set. */
struct smtp_sink *smtp_new(struct event_base *base, const struct config *cfg, char *errbuf,
			   size_t errlen);

/* Queues one transaction: MAIL FROM mail_from, RCPT TO rcpt, DATA msg (bytes with CRLF
 * line ends; borrowed: must stay valid until `done` is called). `done(arg, index, r)` is
 * called exactly once, from the loop (never from inside smtp_send). Returns 0, or -1 when
 * the sink cannot accept work (then done is not called). */
int smtp_send(struct smtp_sink *s, const char *mail_from, const char *rcpt, const struct buf *msg,
	      smtp_done_fn done, void *arg, size_t index) __attribute__((warn_unused_result));

/* Completes every transfer not yet started with not_attempted = 1 (used when the relay's
 * breaker opens and at shutdown). */
void smtp_cancel_queued(struct smtp_sink *s);

/* Aborts running transfers too (drain timeout): each completes with verdict UNKNOWN if it
 * may have reached DATA, else not_attempted. */
void smtp_abort_all(struct smtp_sink *s);

/* Changes the rate limit (messages/s, 0 = off) at runtime. */
void smtp_set_rate(struct smtp_sink *s, double per_s);

/* Stops the workers (aborting running transfers) and frees the sink. No callback runs
 * once smtp_free is called: transfers not reported yet are dropped silently. */
void smtp_free(struct smtp_sink *s);

#endif
