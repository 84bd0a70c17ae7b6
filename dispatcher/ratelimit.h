/* ratelimit: a token bucket capping messages per second on a lane. Time is passed in
 * (milliseconds, monotonic); tokens are kept in millionths so the maths is exact. */
#ifndef OUTBOXD_RATELIMIT_H
#define OUTBOXD_RATELIMIT_H

#include <stdint.h>

#define RATELIMIT_UNIT 1000000ULL /* one token, in micro-tokens */

struct ratelimit {
	uint64_t per_ms;   /* refill in micro-tokens per millisecond; 0 = unlimited */
	uint64_t capacity; /* burst, in micro-tokens */
	uint64_t tokens;   /* current level, in micro-tokens */
	uint64_t last_ms;  /* time of the last refill */
	int started;       /* last_ms is meaningful */
};

/* Sets the rate (tokens per second; <= 0 turns limiting off; rates below 0.001/s are
 * raised to 0.001/s) and burst (bucket size in tokens; 0 means 1). Starts full. */
void ratelimit_init(struct ratelimit *rl, double rate_per_s, unsigned burst);

/* Returns 1 and consumes a token if one is available at now_ms, else 0. Always 1 when off. */
int ratelimit_take(struct ratelimit *rl, uint64_t now_ms);

/* Milliseconds from now_ms until a token is available (0 if one is, or when off).
 * Does not consume. */
uint64_t ratelimit_wait_ms(struct ratelimit *rl, uint64_t now_ms);

/* 1 when a rate is configured. */
int ratelimit_enabled(const struct ratelimit *rl);

#endif
