/* Unit tests for backoff: bounds, cap, overflow safety and a roughly uniform spread. */
#include <stdint.h>

#include "backoff.h"
#include "testutil.h"

static void test_ceiling_table(void)
{
	static const struct {
		unsigned attempt;
		uint64_t base, cap, want;
	} rows[] = {
		{ 0, 1000, 60000, 1000 },
		{ 1, 1000, 60000, 1000 },
		{ 2, 1000, 60000, 2000 },
		{ 6, 1000, 60000, 32000 },
		{ 7, 1000, 60000, 60000 },
		{ 64, 1000, 60000, 60000 },
		{ 65, 1, UINT64_MAX, UINT64_MAX },
		{ 64, 1, UINT64_MAX, 1ULL << 63 },
		{ 200, 1, UINT64_MAX, UINT64_MAX },
		{ UINT32_MAX, 5, 100, 100 },
		{ 3, 0, 100, 0 },
		{ 3, 50, 0, 0 },
		{ 2, UINT64_MAX, UINT64_MAX, UINT64_MAX },
	};
	size_t i;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		uint64_t got = backoff_ceiling_ms(rows[i].attempt, rows[i].base, rows[i].cap);
		CHECK(got == rows[i].want, "row %zu: got %llu want %llu", i, (unsigned long long)got,
		      (unsigned long long)rows[i].want);
	}
}

static void test_bounds(void)
{
	uint64_t st = 42;
	unsigned a;
	int bad = 0, hit_max = 0;

	for (a = 1; a <= 200; a++) {
		uint64_t ceil = backoff_ceiling_ms(a, 500, 3600000);
		int k;
		for (k = 0; k < 50; k++) {
			uint64_t d = backoff_full_jitter_ms(a, 500, 3600000, backoff_xorshift64(&st));
			if (d > ceil || d > 3600000)
				bad++;
		}
		/* the extremes of the random range map onto the ends of the interval */
		if (backoff_full_jitter_ms(a, 500, 3600000, 0) != 0)
			bad++;
		if (backoff_full_jitter_ms(a, 500, 3600000, ceil) == ceil)
			hit_max++;
	}
	CHECK_INT(bad, 0);
	CHECK_INT(hit_max, 200);
	CHECK(backoff_full_jitter_ms(300, 1, UINT64_MAX, 12345) == 12345, "full range");
	CHECK(backoff_full_jitter_ms(9, 0, 1000, 777) == 0, "zero base");
}

static void test_uniform_mean(void)
{
	uint64_t st = 0xC0FFEE;
	const uint64_t cap = 10000;
	double sum = 0, mean, want = cap / 2.0;
	unsigned buckets[10] = { 0 };
	int i, empty = 0;

	for (i = 0; i < 10000; i++) {
		uint64_t d = backoff_full_jitter_ms(20, 1000, cap, backoff_xorshift64(&st));
		sum += (double)d;
		buckets[d * 10 / (cap + 1)]++;
	}
	mean = sum / 10000;
	CHECK(mean > want * 0.9 && mean < want * 1.1, "mean %.1f want ~%.1f", mean, want);
	for (i = 0; i < 10; i++)
		if (buckets[i] < 800 || buckets[i] > 1200)
			empty++;
	CHECK_INT(empty, 0);
}

static void test_random_source(void)
{
	uint64_t a = backoff_random64(), b = backoff_random64(), s = 0;

	CHECK(a != b, "two draws equal: %llu", (unsigned long long)a);
	CHECK(backoff_xorshift64(&s) != 0 && s != 0, "zero state not replaced");
}

int main(void)
{
	test_ceiling_table();
	test_bounds();
	test_uniform_mean();
	test_random_source();
	return test_summary("backoff");
}
