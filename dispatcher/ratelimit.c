/* ratelimit: token bucket. Refill is computed lazily from elapsed time on each call,
 * so there is no timer; callers ask ratelimit_wait_ms() when to come back. */
#include "ratelimit.h"

void ratelimit_init(struct ratelimit *rl, double rate_per_s, unsigned burst)
{
	double per_ms;

	rl->per_ms = 0;
	if (rate_per_s > 0) {
		/* Cap absurd rates so burst * unit and per_ms cannot overflow. */
		if (rate_per_s > 1e9)
			rate_per_s = 1e9;
		per_ms = rate_per_s * (double)RATELIMIT_UNIT / 1000.0 + 0.5;
		rl->per_ms = per_ms < 1 ? 1 : (uint64_t)per_ms;
	}
	rl->capacity = (uint64_t)(burst ? burst : 1) * RATELIMIT_UNIT;
	rl->tokens = rl->capacity;
	rl->last_ms = 0;
	rl->started = 0;
}

static void ratelimit_refill(struct ratelimit *rl, uint64_t now_ms)
{
	uint64_t elapsed, room;

	if (!rl->started) {
		rl->started = 1;
		rl->last_ms = now_ms;
		return;
	}
	if (now_ms <= rl->last_ms) {
		/* Clock did not move (or went back): no refill, follow the clock. */
		rl->last_ms = now_ms;
		return;
	}
	elapsed = now_ms - rl->last_ms;
	rl->last_ms = now_ms;
	room = rl->capacity - rl->tokens;
	if (elapsed >= room / rl->per_ms + 1)
		rl->tokens = rl->capacity;
	else
		rl->tokens += elapsed * rl->per_ms;
	if (rl->tokens > rl->capacity)
		rl->tokens = rl->capacity;
}

int ratelimit_take(struct ratelimit *rl, uint64_t now_ms)
{
	if (rl->per_ms == 0)
		return 1;
	ratelimit_refill(rl, now_ms);
	if (rl->tokens < RATELIMIT_UNIT)
		return 0;
	rl->tokens -= RATELIMIT_UNIT;
	return 1;
}

uint64_t ratelimit_wait_ms(struct ratelimit *rl, uint64_t now_ms)
{
	uint64_t missing;

	if (rl->per_ms == 0)
		return 0;
	ratelimit_refill(rl, now_ms);
	if (rl->tokens >= RATELIMIT_UNIT)
		return 0;
	missing = RATELIMIT_UNIT - rl->tokens;
	return (missing + rl->per_ms - 1) / rl->per_ms;
}

int ratelimit_enabled(const struct ratelimit *rl)
{
	return rl->per_ms != 0;
}
