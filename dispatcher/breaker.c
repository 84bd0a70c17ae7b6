/* breaker: closed -> open after N consecutive failures -> half-open after a pause ->
 * closed on a good probe or open again (longer) on a bad one. One setter owns state. */
#include "breaker.h"

#include <stddef.h>

static void breaker_set_state(struct breaker *b, enum breaker_state to, uint64_t now_ms)
{
	enum breaker_state from = b->state;

	if (from == to)
		return;
	b->state = to;
	b->probe_in_flight = 0;
	if (to == BREAKER_OPEN) {
		b->opened_at_ms = now_ms;
		b->opens++;
	}
	if (to == BREAKER_CLOSED) {
		b->failures = 0;
		b->open_ms = b->base_open_ms;
	}
	if (b->on_change != NULL)
		b->on_change(b->on_change_arg, from, to);
}

void breaker_set_limits(struct breaker *b, unsigned threshold, uint64_t open_ms, uint64_t max_open_ms)
{
	b->threshold = threshold;
	b->base_open_ms = open_ms;
	b->max_open_ms = max_open_ms < open_ms ? open_ms : max_open_ms;
	if (b->open_ms > b->max_open_ms)
		b->open_ms = b->max_open_ms;
}

void breaker_init(struct breaker *b, unsigned threshold, uint64_t open_ms, uint64_t max_open_ms)
{
	b->state = BREAKER_CLOSED;
	b->failures = 0;
	b->open_ms = open_ms;
	breaker_set_limits(b, threshold, open_ms, max_open_ms);
	b->opened_at_ms = 0;
	b->probe_in_flight = 0;
	b->opens = 0;
	b->on_change = NULL;
	b->on_change_arg = NULL;
}

void breaker_set_on_change(struct breaker *b, breaker_change_fn fn, void *arg)
{
	b->on_change = fn;
	b->on_change_arg = arg;
}

uint64_t breaker_next_probe_ms(const struct breaker *b, uint64_t now_ms)
{
	uint64_t at;

	if (b->state != BREAKER_OPEN)
		return now_ms;
	at = b->opened_at_ms + b->open_ms;
	if (at < b->opened_at_ms) /* wrapped: effectively never */
		at = UINT64_MAX;
	return at > now_ms ? at : now_ms;
}

int breaker_allow(struct breaker *b, uint64_t now_ms)
{
	switch (b->state) {
	case BREAKER_CLOSED:
		return 1;
	case BREAKER_OPEN:
		if (breaker_next_probe_ms(b, now_ms) > now_ms)
			return 0;
		breaker_set_state(b, BREAKER_HALF_OPEN, now_ms);
		b->probe_in_flight = 1;
		return 1;
	case BREAKER_HALF_OPEN:
		if (b->probe_in_flight)
			return 0;
		b->probe_in_flight = 1;
		return 1;
	}
	return 0;
}

void breaker_success(struct breaker *b, uint64_t now_ms)
{
	if (b->state == BREAKER_HALF_OPEN)
		breaker_set_state(b, BREAKER_CLOSED, now_ms);
	else if (b->state == BREAKER_CLOSED)
		b->failures = 0;
}

void breaker_failure(struct breaker *b, uint64_t now_ms)
{
	switch (b->state) {
	case BREAKER_CLOSED:
		if (b->threshold == 0)
			return;
		if (b->failures < b->threshold)
			b->failures++;
		if (b->failures >= b->threshold)
			breaker_set_state(b, BREAKER_OPEN, now_ms);
		return;
	case BREAKER_HALF_OPEN:
		b->open_ms = b->open_ms > b->max_open_ms / 2 ? b->max_open_ms : b->open_ms * 2;
		breaker_set_state(b, BREAKER_OPEN, now_ms);
		return;
	case BREAKER_OPEN:
		return;
	}
}

void breaker_cancel(struct breaker *b)
{
	if (b->state == BREAKER_HALF_OPEN)
		b->probe_in_flight = 0;
}

void breaker_reset(struct breaker *b)
{
	breaker_set_state(b, BREAKER_CLOSED, 0);
	b->failures = 0;
	b->open_ms = b->base_open_ms;
}

enum breaker_state breaker_state(const struct breaker *b)
{
	return b->state;
}

const char *breaker_state_name(enum breaker_state s)
{
	switch (s) {
	case BREAKER_CLOSED:
		return "closed";
	case BREAKER_OPEN:
		return "open";
	case BREAKER_HALF_OPEN:
		return "half_open";
	}
	return "unknown";
}
