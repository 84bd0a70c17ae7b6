/* Unit tests for breaker: the state walk with simulated time, probe exclusivity,
 * open-period doubling and cap, and the change hook. */
#include <stdint.h>

#include "breaker.h"
#include "testutil.h"

struct log {
	int n;
	enum breaker_state from[16], to[16];
};

static void record(void *arg, enum breaker_state from, enum breaker_state to)
{
	struct log *l = arg;

	if (l->n < 16) {
		l->from[l->n] = from;
		l->to[l->n] = to;
	}
	l->n++;
}

/* One scripted step: an action at a time and the expected result/state after it. */
enum act { ALLOW, OK, FAIL, CANCEL };
struct step {
	enum act act;
	uint64_t t;
	int want_allow; /* for ALLOW */
	enum breaker_state want_state;
};

static void run_script(const char *name, struct breaker *b, const struct step *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		int got = -1;
		switch (s[i].act) {
		case ALLOW:
			got = breaker_allow(b, s[i].t);
			CHECK(got == s[i].want_allow, "%s step %zu: allow=%d want %d", name, i, got, s[i].want_allow);
			break;
		case OK:
			breaker_success(b, s[i].t);
			break;
		case FAIL:
			breaker_failure(b, s[i].t);
			break;
		case CANCEL:
			breaker_cancel(b);
			break;
		}
		CHECK(breaker_state(b) == s[i].want_state, "%s step %zu: state %s want %s", name, i,
		      breaker_state_name(breaker_state(b)), breaker_state_name(s[i].want_state));
	}
}

static void test_walk(void)
{
	static const struct step script[] = {
		{ ALLOW, 0, 1, BREAKER_CLOSED },
		{ FAIL, 1, 0, BREAKER_CLOSED },
		{ FAIL, 2, 0, BREAKER_CLOSED },
		{ OK, 3, 0, BREAKER_CLOSED }, /* success resets the consecutive count */
		{ FAIL, 4, 0, BREAKER_CLOSED },
		{ FAIL, 5, 0, BREAKER_CLOSED },
		{ FAIL, 10, 0, BREAKER_OPEN }, /* third in a row: open at t=10 for 1000 */
		{ ALLOW, 11, 0, BREAKER_OPEN },
		{ FAIL, 500, 0, BREAKER_OPEN }, /* late failure does not extend */
		{ ALLOW, 1009, 0, BREAKER_OPEN },
		{ ALLOW, 1010, 1, BREAKER_HALF_OPEN }, /* the probe */
		{ ALLOW, 1011, 0, BREAKER_HALF_OPEN }, /* only one at a time */
		{ FAIL, 1100, 0, BREAKER_OPEN },       /* probe failed: open for 2000 */
		{ ALLOW, 3099, 0, BREAKER_OPEN },
		{ ALLOW, 3100, 1, BREAKER_HALF_OPEN },
		{ CANCEL, 3101, 0, BREAKER_HALF_OPEN }, /* probe not sent: slot freed */
		{ ALLOW, 3102, 1, BREAKER_HALF_OPEN },
		{ FAIL, 3200, 0, BREAKER_OPEN }, /* open for 4000 */
		{ ALLOW, 7199, 0, BREAKER_OPEN },
		{ ALLOW, 7200, 1, BREAKER_HALF_OPEN },
		{ FAIL, 7300, 0, BREAKER_OPEN }, /* 8000 capped to 5000 */
		{ ALLOW, 12299, 0, BREAKER_OPEN },
		{ ALLOW, 12300, 1, BREAKER_HALF_OPEN },
		{ OK, 12400, 0, BREAKER_CLOSED },
		{ ALLOW, 12401, 1, BREAKER_CLOSED },
		{ ALLOW, 12402, 1, BREAKER_CLOSED },
		{ FAIL, 12500, 0, BREAKER_CLOSED },
		{ FAIL, 12501, 0, BREAKER_CLOSED },
		{ FAIL, 12502, 0, BREAKER_OPEN }, /* period back to the base 1000 */
		{ ALLOW, 13501, 0, BREAKER_OPEN },
		{ ALLOW, 13502, 1, BREAKER_HALF_OPEN },
	};
	struct breaker b;
	struct log l = { 0 };

	breaker_init(&b, 3, 1000, 5000);
	breaker_set_on_change(&b, record, &l);
	run_script("walk", &b, script, sizeof(script) / sizeof(script[0]));
	CHECK_INT(l.n, 11);
	CHECK(l.from[0] == BREAKER_CLOSED && l.to[0] == BREAKER_OPEN, "first change");
	CHECK(l.from[1] == BREAKER_OPEN && l.to[1] == BREAKER_HALF_OPEN, "second change");
	CHECK(l.from[8] == BREAKER_HALF_OPEN && l.to[8] == BREAKER_CLOSED, "close change");
	CHECK_INT(b.opens, 5);
}

static void test_threshold_zero_and_one(void)
{
	struct breaker b;
	int i;

	breaker_init(&b, 0, 1000, 1000);
	for (i = 0; i < 100; i++)
		breaker_failure(&b, (uint64_t)i);
	CHECK(breaker_state(&b) == BREAKER_CLOSED, "threshold 0 opened");

	breaker_init(&b, 1, 1000, 0); /* max < base: no growth */
	breaker_failure(&b, 5);
	CHECK(breaker_state(&b) == BREAKER_OPEN, "threshold 1 did not open");
	CHECK(breaker_next_probe_ms(&b, 6) == 1005, "next probe %llu",
	      (unsigned long long)breaker_next_probe_ms(&b, 6));
	CHECK_INT(breaker_allow(&b, 1005), 1);
	breaker_failure(&b, 1006);
	CHECK_INT(b.open_ms, 1000);
	CHECK(breaker_next_probe_ms(&b, 1007) == 2006, "no growth");
	breaker_reset(&b);
	CHECK(breaker_state(&b) == BREAKER_CLOSED, "reset");
	CHECK_INT(breaker_allow(&b, 1008), 1);
}

static void test_huge_times(void)
{
	struct breaker b;

	breaker_init(&b, 1, UINT64_MAX / 2, UINT64_MAX);
	breaker_failure(&b, UINT64_MAX - 10);
	CHECK_INT(breaker_allow(&b, UINT64_MAX - 1), 0);
	CHECK(breaker_next_probe_ms(&b, 0) == UINT64_MAX, "wrap");
}

/* A configuration reload changes the limits but neither closes an open breaker nor
 * forgets the failures counted so far. */
static void test_set_limits_keeps_state(void)
{
	struct breaker b;

	breaker_init(&b, 3, 1000, 8000);
	breaker_failure(&b, 0);
	breaker_failure(&b, 0);
	breaker_failure(&b, 0);
	CHECK_INT(breaker_state(&b), BREAKER_OPEN);
	breaker_set_limits(&b, 2, 500, 4000);
	CHECK_INT(breaker_state(&b), BREAKER_OPEN);
	CHECK_INT(b.base_open_ms, 500);

	breaker_init(&b, 5, 1000, 8000);
	breaker_failure(&b, 0);
	breaker_set_limits(&b, 2, 1000, 8000);
	CHECK_INT(breaker_state(&b), BREAKER_CLOSED);
	breaker_failure(&b, 0);
	CHECK_INT(breaker_state(&b), BREAKER_OPEN); /* second failure meets the new threshold */
	/* a max below the current period pulls it down; a max below the base is raised to it */
	breaker_set_limits(&b, 2, 1000, 10);
	CHECK_INT(b.max_open_ms, 1000);
	CHECK(b.open_ms <= b.max_open_ms, "open_ms %llu above max %llu", (unsigned long long)b.open_ms,
	      (unsigned long long)b.max_open_ms);
}

static void test_names(void)
{
	CHECK_STR(breaker_state_name(BREAKER_CLOSED), "closed");
	CHECK_STR(breaker_state_name(BREAKER_OPEN), "open");
	CHECK_STR(breaker_state_name(BREAKER_HALF_OPEN), "half_open");
	CHECK_STR(breaker_state_name((enum breaker_state)42), "unknown");
}

int main(void)
{
	test_walk();
	test_threshold_zero_and_one();
	test_huge_times();
	test_set_limits_keeps_state();
	test_names();
	return test_summary("breaker");
}
