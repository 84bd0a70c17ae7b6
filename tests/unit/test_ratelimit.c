/* Unit tests for ratelimit: burst, steady rate, wait times, fractional rates and
 * odd clocks, all with simulated time. */
#include <stdint.h>

#include "ratelimit.h"
#include "testutil.h"

static void test_off(void)
{
	struct ratelimit rl;
	int i, n = 0;

	ratelimit_init(&rl, 0, 5);
	for (i = 0; i < 1000; i++)
		n += ratelimit_take(&rl, 0);
	CHECK_INT(n, 1000);
	CHECK_INT(ratelimit_wait_ms(&rl, 0), 0);
	CHECK_INT(ratelimit_enabled(&rl), 0);
	ratelimit_init(&rl, -3, 5);
	CHECK_INT(ratelimit_enabled(&rl), 0);
}

static void test_burst_then_rate(void)
{
	struct ratelimit rl;
	uint64_t t;
	int i, n = 0;

	ratelimit_init(&rl, 10, 5); /* 10/s, burst 5 */
	CHECK_INT(ratelimit_enabled(&rl), 1);
	for (i = 0; i < 20; i++)
		n += ratelimit_take(&rl, 1000);
	CHECK_INT(n, 5);
	CHECK_INT(ratelimit_wait_ms(&rl, 1000), 100);
	CHECK_INT(ratelimit_wait_ms(&rl, 1040), 60);
	CHECK_INT(ratelimit_take(&rl, 1099), 0);
	CHECK_INT(ratelimit_take(&rl, 1100), 1);
	CHECK_INT(ratelimit_take(&rl, 1100), 0);
	/* steady state over 10 simulated seconds polled every ms: ~100 tokens */
	n = 0;
	for (t = 1100; t < 11100; t++)
		n += ratelimit_take(&rl, t);
	CHECK(n >= 99 && n <= 101, "steady n=%d", n);
	/* a long idle refills only up to the burst */
	n = 0;
	for (i = 0; i < 50; i++)
		n += ratelimit_take(&rl, 1000000);
	CHECK_INT(n, 5);
}

static void test_wait_table(void)
{
	static const struct {
		double rate;
		unsigned burst;
		uint64_t want_wait; /* after draining the bucket */
	} rows[] = {
		{ 1, 1, 1000 },  { 2, 1, 500 },    { 3, 1, 334 },          { 1000, 1, 1 },
		{ 5000, 10, 1 }, { 0.5, 1, 2000 }, { 0.0001, 1, 1000000 }, /* raised to 0.001/s */
	};
	size_t i;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct ratelimit rl;
		uint64_t w;
		unsigned k;

		ratelimit_init(&rl, rows[i].rate, rows[i].burst);
		for (k = 0; k < rows[i].burst; k++)
			CHECK_INT(ratelimit_take(&rl, 7), 1);
		CHECK_INT(ratelimit_take(&rl, 7), 0);
		w = ratelimit_wait_ms(&rl, 7);
		CHECK(w == rows[i].want_wait, "row %zu: wait %llu want %llu", i, (unsigned long long)w,
		      (unsigned long long)rows[i].want_wait);
		CHECK(ratelimit_take(&rl, 7 + w) == 1, "row %zu: no token after the wait", i);
	}
}

static void test_burst_zero_and_clock(void)
{
	struct ratelimit rl;

	ratelimit_init(&rl, 1, 0);
	CHECK_INT(ratelimit_take(&rl, 5000), 1);
	CHECK_INT(ratelimit_take(&rl, 5000), 0);
	CHECK_INT(ratelimit_take(&rl, 4000), 0); /* clock back: no refill, no crash */
	CHECK_INT(ratelimit_take(&rl, 4999), 0);
	CHECK_INT(ratelimit_take(&rl, 5000), 1);
	CHECK_INT(ratelimit_take(&rl, UINT64_MAX), 1);
	CHECK_INT(ratelimit_take(&rl, UINT64_MAX), 0);
	ratelimit_init(&rl, 1e12, 4000000000u);
	CHECK_INT(ratelimit_take(&rl, 0), 1);
}

int main(void)
{
	test_off();
	test_burst_then_rate();
	test_wait_table();
	test_burst_zero_and_clock();
	return test_summary("ratelimit");
}
