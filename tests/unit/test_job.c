/* job: the row's decisions, table by table: recipients, verdict, claim limit, flush
 * timing, the mirror's cursor advance. */
#include <stdlib.h>

#include "job.h"
#include "testutil.h"

static void test_names(void)
{
	CHECK_STR(outcome_name(OUTCOME_SENT), "sent");
	CHECK_STR(outcome_name(OUTCOME_RETRY), "retry");
	CHECK_STR(outcome_name(OUTCOME_FAILED), "failed");
	CHECK_STR(outcome_name(OUTCOME_RELEASED), "released");
	CHECK_STR(outcome_name(OUTCOME_UNKNOWN), "unknown");
	CHECK_STR(outcome_name(OUTCOME_DEAD), "dead");
	CHECK_STR(outcome_name((enum outcome)99), "invalid");
	CHECK_STR(rcpt_kind_name(RCPT_BCC), "bcc");
	CHECK_STR(rcpt_state_name(RCPT_PENDING), "pending");
}

/* ---- recipients ---------------------------------------------------------------------- */

static const struct {
	const char *to, *cc, *bcc, *done;
	const char *want; /* "kind:addr kind:addr ..." */
} pick_cases[] = {
	{ "{a@x}", "{}", "{}", "{}", "to:a@x" },
	{ "{a@x,b@x}", "{c@x}", "{d@x}", "{}", "to:a@x to:b@x cc:c@x bcc:d@x" },
	{ "{a@x}", "{a@x}", "{a@x}", "{}", "to:a@x" }, /* one copy per address */
	{ "{a@x,a@x}", "{}", "{}", "{}", "to:a@x" },
	{ "{a@x}", "{b@x,a@x}", "{b@x}", "{}", "to:a@x cc:b@x" },
	{ "{a@x,b@x}", "{c@x}", "{}", "{b@x}", "to:a@x cc:c@x" }, /* done earlier */
	{ "{a@x}", "{}", "{}", "{a@x}", "" },                     /* all done */
	{ "{NULL,a@x}", "{NULL}", "{}", "{NULL}", "to:a@x" },     /* SQL NULLs */
	{ "{}", "{}", "{z@x}", "{}", "bcc:z@x" },
	{ "{A@x}", "{a@x}", "{}", "{}", "to:A@x cc:a@x" }, /* exact match only */
};

static void test_pick(void)
{
	for (size_t c = 0; c < sizeof(pick_cases) / sizeof(pick_cases[0]); c++) {
		struct pgarray to, cc, bcc, done;
		struct rcpt_pick out[16];
		char got[256] = "";
		size_t n, len = 0;

		CHECK(pgarray_parse(pick_cases[c].to, &to) == 0 && pgarray_parse(pick_cases[c].cc, &cc) == 0 &&
			      pgarray_parse(pick_cases[c].bcc, &bcc) == 0 &&
			      pgarray_parse(pick_cases[c].done, &done) == 0,
		      "case %zu: parse", c);
		n = job_pick_recipients(&to, &cc, &bcc, &done, out);
		for (size_t i = 0; i < n; i++)
			len += (size_t)snprintf(got + len, sizeof(got) - len, "%s%s:%s", i ? " " : "",
						rcpt_kind_name(out[i].kind), out[i].addr);
		CHECK(strcmp(got, pick_cases[c].want) == 0, "case %zu: got \"%s\", want \"%s\"", c, got,
		      pick_cases[c].want);
		pgarray_free(&to);
		pgarray_free(&cc);
		pgarray_free(&bcc);
		pgarray_free(&done);
	}
}

/* ---- verdict ------------------------------------------------------------------------- */

#define OK250                                                                                                          \
	{                                                                                                              \
		RCPT_SENT, 250, "250 ok", 1, 0                                                                         \
	}
#define PERM550                                                                                                        \
	{                                                                                                              \
		RCPT_FAILED, 550, "550 no such user", 1, 0                                                             \
	}
#define TEMP451                                                                                                        \
	{                                                                                                              \
		RCPT_PENDING, 451, "451 try later", 1, 0                                                               \
	}
#define LOST                                                                                                           \
	{                                                                                                              \
		RCPT_PENDING, 0, "connection lost", 1, 1                                                               \
	}
#define NOTSENT                                                                                                        \
	{                                                                                                              \
		RCPT_PENDING, 0, "not attempted", 0, 0                                                                 \
	}
#define CONFIG                                                                                                         \
	{                                                                                                              \
		RCPT_PENDING, 535, "535 auth", 0, 0                                                                    \
	}

static const struct {
	const char *name;
	size_t n;
	struct rcpt_reply r[4];
	int has_data;
	struct rcpt_reply data;
	enum outcome outcome, counted;
	int unknown, code;
	const char *error;
} verdict_cases[] = {
	{ "one sent", 1, { OK250 }, 0, { 0 }, OUTCOME_SENT, OUTCOME_SENT, 0, 250, "" },
	{ "all sent", 3, { OK250, OK250, OK250 }, 0, { 0 }, OUTCOME_SENT, OUTCOME_SENT, 0, 250, "" },
	{ "one refused", 1, { PERM550 }, 0, { 0 }, OUTCOME_FAILED, OUTCOME_FAILED, 0, 550, "550 no such user" },
	{ "refused without text",
	  1,
	  { { RCPT_FAILED, 554, NULL, 1, 0 } },
	  0,
	  { 0 },
	  OUTCOME_FAILED,
	  OUTCOME_FAILED,
	  0,
	  554,
	  "refused" },
	{ "some refused",
	  3,
	  { OK250, PERM550, OK250 },
	  0,
	  { 0 },
	  OUTCOME_FAILED,
	  OUTCOME_FAILED,
	  0,
	  550,
	  "1 of 3 recipients refused: 550 no such user" },
	{ "temporary", 2, { OK250, TEMP451 }, 0, { 0 }, OUTCOME_RETRY, OUTCOME_RETRY, 0, 451, "451 try later" },
	{ "temporary beats refusal",
	  2,
	  { PERM550, TEMP451 },
	  0,
	  { 0 },
	  OUTCOME_RETRY,
	  OUTCOME_RETRY,
	  0,
	  451,
	  "451 try later" },
	{ "lost after DATA",
	  1,
	  { LOST },
	  0,
	  { 0 },
	  OUTCOME_RETRY,
	  OUTCOME_UNKNOWN,
	  1,
	  0,
	  "connection lost (outcome unknown: the relay may have accepted it)" },
	{ "nothing reached the relay", 2, { NOTSENT, NOTSENT }, 0, { 0 }, OUTCOME_RELEASED, OUTCOME_RELEASED, 0, 0, "" },
	{ "configuration refused", 1, { CONFIG }, 0, { 0 }, OUTCOME_RELEASED, OUTCOME_RELEASED, 0, 0, "" },
	{ "one sent, one not attempted",
	  2,
	  { OK250, NOTSENT },
	  0,
	  { 0 },
	  OUTCOME_RETRY,
	  OUTCOME_RETRY,
	  0,
	  0,
	  "temporary failure" },
	{ "refused, one not attempted",
	  2,
	  { PERM550, NOTSENT },
	  0,
	  { 0 },
	  OUTCOME_RETRY,
	  OUTCOME_RETRY,
	  0,
	  550,
	  "550 no such user" },
	{ "none", 0, { { 0 } }, 0, { 0 }, OUTCOME_SENT, OUTCOME_SENT, 0, 250, "" },
	/* one transaction: accepted recipients take the data phase's reply */
	{ "data accepted", 2, { OK250, OK250 }, 1, OK250, OUTCOME_SENT, OUTCOME_SENT, 0, 250, "" },
	{ "data refused",
	  2,
	  { OK250, OK250 },
	  1,
	  { RCPT_FAILED, 554, "554 spam", 1, 0 },
	  OUTCOME_FAILED,
	  OUTCOME_FAILED,
	  0,
	  554,
	  "554 spam" },
	{ "data refused, rcpt refused",
	  2,
	  { PERM550, OK250 },
	  1,
	  { RCPT_FAILED, 554, "554 spam", 1, 0 },
	  OUTCOME_FAILED,
	  OUTCOME_FAILED,
	  0,
	  550,
	  "550 no such user" },
	{ "rcpt refused, data accepted",
	  2,
	  { PERM550, OK250 },
	  1,
	  OK250,
	  OUTCOME_FAILED,
	  OUTCOME_FAILED,
	  0,
	  550,
	  "1 of 2 recipients refused: 550 no such user" },
	{ "data deferred", 2, { OK250, PERM550 }, 1, TEMP451, OUTCOME_RETRY, OUTCOME_RETRY, 0, 451, "451 try later" },
	{ "lost at DATA",
	  1,
	  { OK250 },
	  1,
	  LOST,
	  OUTCOME_RETRY,
	  OUTCOME_UNKNOWN,
	  1,
	  0,
	  "connection lost (outcome unknown: the relay may have accepted it)" },
	{ "rcpt deferred, data accepted",
	  2,
	  { TEMP451, OK250 },
	  1,
	  OK250,
	  OUTCOME_RETRY,
	  OUTCOME_RETRY,
	  0,
	  451,
	  "451 try later" },
};

static void test_verdict(void)
{
	for (size_t c = 0; c < sizeof(verdict_cases) / sizeof(verdict_cases[0]); c++) {
		struct job_verdict v;

		job_verdict(verdict_cases[c].r, verdict_cases[c].n,
			    verdict_cases[c].has_data ? &verdict_cases[c].data : NULL, &v);
		CHECK(v.outcome == verdict_cases[c].outcome, "%s: outcome %s, want %s", verdict_cases[c].name,
		      outcome_name(v.outcome), outcome_name(verdict_cases[c].outcome));
		CHECK(v.counted == verdict_cases[c].counted, "%s: counted %s, want %s", verdict_cases[c].name,
		      outcome_name(v.counted), outcome_name(verdict_cases[c].counted));
		CHECK(v.unknown == verdict_cases[c].unknown, "%s: unknown %d", verdict_cases[c].name, v.unknown);
		CHECK(v.code == verdict_cases[c].code, "%s: code %d, want %d", verdict_cases[c].name, v.code,
		      verdict_cases[c].code);
		CHECK(strcmp(v.error, verdict_cases[c].error) == 0, "%s: error \"%s\", want \"%s\"",
		      verdict_cases[c].name, v.error, verdict_cases[c].error);
	}
}

static void test_effective(void)
{
	struct rcpt_reply ok = OK250, bad = PERM550, data = TEMP451;

	CHECK(job_rcpt_effective(&ok, NULL) == &ok, "no data phase: own reply");
	CHECK(job_rcpt_effective(&ok, &data) == &data, "accepted: the data phase decides");
	CHECK(job_rcpt_effective(&bad, &data) == &bad, "refused at RCPT: its own reply");
}

/* ---- claiming ------------------------------------------------------------------------ */

static void test_claim(void)
{
	static const struct {
		int batch, max, in_flight, want;
	} closed[] = {
		{ 100, 1000, 0, 100 },  { 100, 1000, 900, 100 }, { 100, 1000, 950, 50 },
		{ 100, 1000, 951, 0 }, /* less than half a batch of room: wait */
		{ 100, 1000, 1000, 0 }, { 100, 1000, 1200, 0 },  { 100, 50, 0, 50 },
		{ 100, 50, 24, 26 },    { 100, 50, 26, 0 },      { 1, 1, 0, 1 },
		{ 1, 1, 1, 0 },         { 3, 10, 8, 2 },         { 3, 10, 9, 0 },
	};
	struct breaker b;

	CHECK_INT(job_claim_span(100, 1000), 100);
	CHECK_INT(job_claim_span(100, 30), 30);
	for (size_t c = 0; c < sizeof(closed) / sizeof(closed[0]); c++) {
		breaker_init(&b, 3, 1000, 8000);
		CHECK(job_claim_limit(closed[c].batch, closed[c].max, closed[c].in_flight, &b, 0) == closed[c].want,
		      "closed %zu: batch %d max %d in flight %d: want %d", c, closed[c].batch, closed[c].max,
		      closed[c].in_flight, closed[c].want);
	}
	/* open: nothing until the open period is over, then one probe with nothing in flight */
	breaker_init(&b, 1, 1000, 8000);
	breaker_failure(&b, 10000);
	CHECK_INT(breaker_state(&b), BREAKER_OPEN);
	CHECK_INT(job_claim_limit(100, 1000, 0, &b, 10500), 0);
	CHECK_INT(job_claim_limit(100, 1000, 1, &b, 11000), 0);
	CHECK_INT(job_claim_limit(100, 1000, 0, &b, 11000), 1);
	CHECK_INT(breaker_state(&b), BREAKER_HALF_OPEN);
	/* half-open with the probe in flight: nothing more */
	CHECK_INT(job_claim_limit(100, 1000, 1, &b, 11001), 0);
	/* half-open with nothing in flight (the probe never reached the relay): another probe */
	CHECK_INT(job_claim_limit(100, 1000, 0, &b, 11002), 1);
	breaker_success(&b, 11003);
	CHECK_INT(job_claim_limit(100, 1000, 0, &b, 11004), 100);
}

/* After a claim: the idle mark, claiming again, waiting for a wake-up. */
static void test_after_claim(void)
{
	static const struct {
		const char *name;
		int n, limit, idle, woken;
		int set_idle, again, empty;
	} cases[] = {
		/* steady trickle: the claim took every due row and the idle mark stands, so the
		 * next commit wakes us; no busy/idle flip and no empty claim per message */
		{ "short claim while idle", 1, 100, 1, 0, -1, 0, 1 },
		{ "empty claim while idle", 0, 100, 1, 0, -1, 0, 1 },
		/* a row committed after the claim's snapshot woke us during the claim: look again
		 * now rather than at the next poll */
		{ "woken during a short claim", 1, 100, 1, 1, -1, 1, 0 },
		{ "woken during an empty claim", 0, 100, 1, 1, -1, 1, 0 },
		/* a backlog: busy (producers stop notifying), claim on */
		{ "full claim while idle", 100, 100, 1, 0, 0, 1, 0 },
		{ "full claim while busy", 100, 100, 0, 0, -1, 1, 0 },
		/* busy and drained: mark idle, then look once more */
		{ "empty claim while busy", 0, 100, 0, 0, 1, 1, 0 },
		{ "short claim while busy", 5, 100, 0, 0, -1, 0, 0 },
		{ "short claim while busy, woken", 5, 100, 0, 1, -1, 1, 0 },
		{ "probe of one", 1, 1, 0, 0, -1, 1, 0 },
	};

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct claim_next next;
		job_after_claim(cases[c].n, cases[c].limit, cases[c].idle, cases[c].woken, &next);
		CHECK(next.set_idle == cases[c].set_idle && next.again == cases[c].again &&
			      next.empty == cases[c].empty,
		      "%s: set_idle %d again %d empty %d, want %d %d %d", cases[c].name, next.set_idle, next.again,
		      next.empty, cases[c].set_idle, cases[c].again, cases[c].empty);
	}
}

/* ---- flush policy -------------------------------------------------------------------- */

static void test_flush(void)
{
	static const struct {
		int running;
		int64_t delay;
		size_t waiting, in_flight;
		int span, want;
	} cases[] = {
		{ 1, 10, 1, 500, 100, 0 },                              /* backlog: wait for half a batch */
		{ 1, 10, 49, 500, 100, 0 }, { 1, 10, 50, 500, 100, 1 }, /* half a batch waiting: write */
		{ 1, 10, 1, 49, 100, 1 },                               /* few in flight: no more coming soon */
		{ 1, 10, 1, 50, 100, 0 },   { 1, 0, 1, 500, 100, 1 },   /* outcome_delay 0: always at once */
		{ 0, 10, 1, 500, 100, 1 },                              /* stopping: at once */
		{ 1, 10, 0, 0, 1, 1 },                                  /* span 1: group of 0 */
	};

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++)
		CHECK(job_flush_now(cases[c].running, cases[c].delay, cases[c].waiting, cases[c].in_flight,
				    cases[c].span) == cases[c].want,
		      "flush case %zu: want %d", c, cases[c].want);
}

/* ---- the mirror's reads -------------------------------------------------------------- */

static void test_mirror_advance(void)
{
	static const struct {
		const char *name;
		struct mirror_read r;
		int64_t cursor;
		int guard_moves;
		enum mirror_next next;
	} cases[] = {
		{ "empty read", { .rows = 0, .limit = 100, .cursor = 7, .max_id = 7 }, 7, 0, MIRROR_NEXT_IDLE },
		{ "guard-only row",
		  { .rows = 1, .limit = 100, .has_xmin = 1, .cursor = 7, .max_id = 7 },
		  7,
		  1,
		  MIRROR_NEXT_IDLE },
		{ "some produced",
		  { .rows = 3,
		    .limit = 100,
		    .produced = 3,
		    .fresh = 3,
		    .first_has_id = 1,
		    .has_xmin = 1,
		    .cursor = 7,
		    .max_id = 10 },
		  10,
		  1,
		  MIRROR_NEXT_NOTHING },
		{ "full read moves on",
		  { .rows = 100,
		    .limit = 100,
		    .produced = 100,
		    .fresh = 100,
		    .first_has_id = 1,
		    .has_xmin = 1,
		    .cursor = 0,
		    .max_id = 100 },
		  100,
		  1,
		  MIRROR_NEXT_READ },
		{ "full read of known rows: wait",
		  { .rows = 100,
		    .limit = 100,
		    .first_has_id = 1,
		    .has_xmin = 1,
		    .behind = 0,
		    .cursor = 100,
		    .max_id = 100 },
		  100,
		  1,
		  MIRROR_NEXT_WAIT },
		{ "rows behind fill the read: keep the guard",
		  { .rows = 100,
		    .limit = 100,
		    .behind = 100,
		    .produced = 100,
		    .fresh = 100,
		    .first_has_id = 1,
		    .has_xmin = 1,
		    .cursor = 500,
		    .max_id = 500 },
		  500,
		  0,
		  MIRROR_NEXT_READ },
		{ "a row left over lowers the cursor",
		  { .rows = 5,
		    .limit = 100,
		    .produced = 3,
		    .skipped = 2,
		    .fresh = 5,
		    .first_has_id = 1,
		    .has_xmin = 1,
		    .cursor = 10,
		    .max_id = 15,
		    .first_unhandled = 12 },
		  11,
		  1,
		  MIRROR_NEXT_WAIT },
		{ "left over behind the cursor",
		  { .rows = 2,
		    .limit = 100,
		    .behind = 1,
		    .skipped = 1,
		    .fresh = 2,
		    .first_has_id = 1,
		    .has_xmin = 1,
		    .cursor = 10,
		    .max_id = 12,
		    .first_unhandled = 4 },
		  3,
		  1,
		  MIRROR_NEXT_WAIT },
		{ "stopped (queue full)",
		  { .rows = 100,
		    .limit = 100,
		    .produced = 40,
		    .fresh = 41,
		    .stopped = 1,
		    .first_has_id = 1,
		    .has_xmin = 1,
		    .cursor = 0,
		    .max_id = 41,
		    .first_unhandled = 41 },
		  40,
		  1,
		  MIRROR_NEXT_NOTHING },
		{ "all produced already (results unwritten)",
		  { .rows = 3, .limit = 100, .first_has_id = 1, .has_xmin = 1, .cursor = 10, .max_id = 10 },
		  10,
		  1,
		  MIRROR_NEXT_IDLE },
		{ "fresh but none produced or skipped",
		  { .rows = 3,
		    .limit = 100,
		    .fresh = 1,
		    .first_has_id = 1,
		    .has_xmin = 1,
		    .cursor = 10,
		    .max_id = 12,
		    .first_unhandled = 12 },
		  11,
		  1,
		  MIRROR_NEXT_NOTHING },
	};

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct mirror_advance a;
		job_mirror_advance(&cases[c].r, &a);
		CHECK(a.cursor == cases[c].cursor, "%s: cursor %lld, want %lld", cases[c].name, (long long)a.cursor,
		      (long long)cases[c].cursor);
		CHECK(a.guard_moves == cases[c].guard_moves, "%s: guard_moves %d", cases[c].name, a.guard_moves);
		CHECK(a.next == cases[c].next, "%s: next %d, want %d", cases[c].name, (int)a.next, (int)cases[c].next);
	}
}

int main(void)
{
	test_names();
	test_pick();
	test_verdict();
	test_effective();
	test_claim();
	test_after_claim();
	test_flush();
	test_mirror_advance();
	return test_summary("job");
}
