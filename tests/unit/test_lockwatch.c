/* Unit tests for lockwatch: which holder rows of outbox.lock_holders() are reported as a
 * session that is not outboxd, and how the holder is named. */
#include "lockwatch.h"
#include "testutil.h"

static void test_describe_table(void)
{
	static const struct {
		const char *pid, *user, *app, *outboxd;
		int want;
		const char *text;
	} rows[] = {
		{ "", "", "", "", 0, NULL },                           /* no holder */
		{ NULL, NULL, NULL, NULL, 0, NULL },                   /* no row at all */
		{ "4242", "outboxd", "outboxd-mirror", "t", 0, NULL }, /* another replica */
		{ "4242", "app", "billing", "f", 1, "pid 4242, user app, application 'billing'" },
		{ "7", "app", "outboxd-mirror", "f", 1, "pid 7, user app, application 'outboxd-mirror'" },
		{ "7", "", "", "f", 1, "pid 7, user ?, application ''" }, /* not visible */
		{ "7", "a\nb", "x\x1b[2J\xc3\xa9", "f", 1,
		  "pid 7, user a?b, application 'x?[2J?"
		  "?'" },
	};
	char out[320];
	size_t i;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		out[0] = '\0';
		int got = lock_watch_describe(rows[i].pid, rows[i].user, rows[i].app, rows[i].outboxd, out,
					      sizeof(out));
		CHECK_INT(got, rows[i].want);
		const char *text = out;
		if (rows[i].text)
			CHECK_STR(text, rows[i].text);
	}
}

static void test_describe_truncates(void)
{
	char out[16];
	const char *text = out;

	CHECK_INT(lock_watch_describe("123456", "someone", "something long", "f", out, sizeof(out)), 1);
	CHECK_STR(text, "pid 123456, use");
}

int main(void)
{
	test_describe_table();
	test_describe_truncates();
	return test_summary("lockwatch");
}
