/* breaker: a circuit breaker per relay/sink, so a dead server is probed now and then
 * instead of being hammered by every due row. Time is passed in, in milliseconds. */
#ifndef OUTBOXD_BREAKER_H
#define OUTBOXD_BREAKER_H

#include <stdint.h>

enum breaker_state {
	BREAKER_CLOSED,    /* requests flow; consecutive failures are counted */
	BREAKER_OPEN,      /* requests refused until open_ms has passed */
	BREAKER_HALF_OPEN, /* one probe at a time; its outcome closes or re-opens */
};

typedef void (*breaker_change_fn)(void *arg, enum breaker_state from, enum breaker_state to);

/* Plain data; embed it and set it up with breaker_init(). Fields are read-only outside
 * breaker.c. */
struct breaker {
	enum breaker_state state;
	unsigned threshold;    /* consecutive failures that open it; 0 = never opens */
	unsigned failures;     /* consecutive failures while closed */
	uint64_t base_open_ms; /* first open period */
	uint64_t open_ms;      /* current open period (doubles on a failed probe) */
	uint64_t max_open_ms;  /* cap for open_ms */
	uint64_t opened_at_ms; /* when it last opened */
	int probe_in_flight;   /* half-open: a probe was allowed and has not reported */
	unsigned long opens;   /* times it went to OPEN, for metrics */
	breaker_change_fn on_change;
	void *on_change_arg;
};

/* Starts closed. open_ms is the first open period; each failed half-open probe doubles
 * it up to max_open_ms (max_open_ms < open_ms means no growth). */
void breaker_init(struct breaker *b, unsigned threshold, uint64_t open_ms, uint64_t max_open_ms);

/* Changes the limits (threshold, first and largest open period) and keeps the state, so a
 * configuration reload does not close an open breaker. The new limits apply from the next
 * failure or transition. */
void breaker_set_limits(struct breaker *b, unsigned threshold, uint64_t open_ms, uint64_t max_open_ms);

/* Registers fn (may be NULL) to be called on every state change, after the change. */
void breaker_set_on_change(struct breaker *b, breaker_change_fn fn, void *arg);

/* Returns 1 if a request may go now, else 0. Open -> half-open once open_ms has passed;
 * in half-open only one probe is allowed until it reports success, failure or cancel. */
int breaker_allow(struct breaker *b, uint64_t now_ms);

/* Reports that the relay answered. Closes a half-open breaker and resets the failure
 * count and open period. A late success while open is only counted, not acted on. */
void breaker_success(struct breaker *b, uint64_t now_ms);

/* Reports that the relay failed. Opens after threshold consecutive failures; a failed
 * probe re-opens with a doubled period. Late failures while open change nothing; any
 * failure reported while half-open (even from a request sent before the breaker opened)
 * counts as the probe failing, which errs on the side of leaving a sick relay alone. */
void breaker_failure(struct breaker *b, uint64_t now_ms);

/* Releases an allowed request that said nothing about the relay (not sent, cancelled,
 * neutral outcome), so a half-open breaker may probe again. */
void breaker_cancel(struct breaker *b);

/* Forces the breaker closed and resets it (operator action, config reload). */
void breaker_reset(struct breaker *b);

/* Current state. */
enum breaker_state breaker_state(const struct breaker *b);

/* While open: when a probe will next be allowed; otherwise now_ms. */
uint64_t breaker_next_probe_ms(const struct breaker *b, uint64_t now_ms);

/* "closed", "open" or "half_open" (static string). */
const char *breaker_state_name(enum breaker_state s);

#endif
