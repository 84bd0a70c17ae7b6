/* backoff: exponential backoff with full jitter and a cap, for message retries and
 * reconnects, plus the random source it draws from. */
#ifndef OUTBOXD_BACKOFF_H
#define OUTBOXD_BACKOFF_H

#include <stdint.h>

/* Returns a delay uniform in [0, min(cap_ms, base_ms * 2^(attempt-1))], derived from
 * random64 (pass backoff_random64() in production, a fixed value in tests). attempt 0
 * counts as 1. Never overflows, whatever attempt and base_ms are. */
uint64_t backoff_full_jitter_ms(unsigned attempt, uint64_t base_ms, uint64_t cap_ms, uint64_t random64);

/* The ceiling the jitter is drawn under: min(cap_ms, base_ms * 2^(attempt-1)). */
uint64_t backoff_ceiling_ms(unsigned attempt, uint64_t base_ms, uint64_t cap_ms);

/* Returns 64 random bits: getrandom() when it answers without blocking, otherwise a
 * xorshift generator seeded once from the clock and pid. Not for secrets. */
uint64_t backoff_random64(void);

/* Advances a xorshift64* state (must be non-zero; 0 is replaced by a constant) and
 * returns the next value. Deterministic, for tests and simulations. */
uint64_t backoff_xorshift64(uint64_t *state);

#endif
