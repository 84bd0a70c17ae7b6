/* backoff: full-jitter exponential backoff ("sleep = random(0, min(cap, base*2^n))"),
 * which spreads retries of many rows that failed together instead of re-synchronising them. */
#include "backoff.h"

#include <stdint.h>
#include <sys/random.h>
#include <unistd.h>

#include "clock.h"

uint64_t backoff_ceiling_ms(unsigned attempt, uint64_t base_ms, uint64_t cap_ms)
{
	unsigned shift = attempt > 0 ? attempt - 1 : 0;

	/* base << shift would overflow or exceed the cap: the cap wins. */
	if (shift >= 64 || base_ms > (cap_ms >> shift))
		return cap_ms;
	return base_ms << shift;
}

uint64_t backoff_full_jitter_ms(unsigned attempt, uint64_t base_ms, uint64_t cap_ms, uint64_t random64)
{
	uint64_t ceil = backoff_ceiling_ms(attempt, base_ms, cap_ms);

	if (ceil == UINT64_MAX)
		return random64;
	/* Modulo bias is below 2^-30 for any ceiling under 2^34 ms (half a year). */
	return random64 % (ceil + 1);
}

uint64_t backoff_xorshift64(uint64_t *state)
{
	uint64_t x = *state ? *state : 0x9E3779B97F4A7C15ULL;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545F4914F6CDD1DULL;
}

uint64_t backoff_random64(void)
{
	static uint64_t state;
	uint64_t v;

	if (getrandom(&v, sizeof(v), GRND_NONBLOCK) == (ssize_t)sizeof(v))
		return v;
	if (state == 0)
		state = (clock_mono_ms() * 1000000007ULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&v;
	return backoff_xorshift64(&state);
}
