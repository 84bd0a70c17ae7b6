/* pgarray: the text form of text[] as PostgreSQL's array_out writes it. */
#include "pgarray.h"
#include "testutil.h"

static void expect(const char *in, int rc, size_t n, const char *const *want)
{
	struct pgarray a;
	int got = pgarray_parse(in, &a);

	CHECK(got == rc, "%s: rc %d, want %d", in ? in : "(null)", got, rc);
	CHECK(a.n == n, "%s: n %zu, want %zu", in ? in : "(null)", a.n, n);
	for (size_t i = 0; i < n && i < a.n; i++) {
		if (want[i] == NULL)
			CHECK(a.items[i] == NULL, "%s: item %zu should be NULL", in, i);
		else
			CHECK(a.items[i] && strcmp(a.items[i], want[i]) == 0, "%s: item %zu '%s', want '%s'", in, i,
			      a.items[i] ? a.items[i] : "(null)", want[i]);
	}
	pgarray_free(&a);
	pgarray_free(&a); /* twice is safe */
}

/* Literals built element by element read back as the same elements. */
static void test_literals(void)
{
	static const char *const strs[] = { "plain", "x y", "say \"hi\"", "back\\slash", "a,b", "{}", "", "NULL" };
	struct pgarray_lit l;
	struct pgarray a;
	const char *text;

	pgarray_lit_init(&l);
	text = pgarray_lit_close(&l);
	CHECK_STR(text, "{}");
	pgarray_lit_free(&l);

	pgarray_lit_init(&l);
	pgarray_lit_int(&l, 1);
	pgarray_lit_int(&l, -2);
	pgarray_lit_int(&l, 9007199254740993LL);
	text = pgarray_lit_close(&l);
	CHECK_STR(text, "{1,-2,9007199254740993}");
	pgarray_lit_free(&l);

	pgarray_lit_init(&l);
	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
		pgarray_lit_str(&l, strs[i]);
	text = pgarray_lit_close(&l);
	CHECK_STR(text, "{\"plain\",\"x y\",\"say \\\"hi\\\"\",\"back\\\\slash\",\"a,b\",\"{}\",\"\",\"NULL\"}");
	CHECK(text && pgarray_parse(text, &a) == 0, "round trip parses");
	CHECK_INT(a.n, sizeof(strs) / sizeof(strs[0]));
	for (size_t i = 0; i < a.n && i < sizeof(strs) / sizeof(strs[0]); i++)
		CHECK_STR(a.items[i], strs[i]);
	pgarray_free(&a);
	pgarray_lit_free(&l);
	pgarray_lit_free(&l); /* twice is safe */
}

int main(void)
{
	const char *one[] = { "a@example.com" };
	const char *two[] = { "a@example.com", "b@example.com" };
	const char *quoted[] = { "x y", "say \"hi\"", "back\\slash", "a,b", "{}", "" };
	const char *nulls[] = { NULL, "NULL", "null@x.org" };

	expect(NULL, 0, 0, NULL);
	expect("", 0, 0, NULL);
	expect("{}", 0, 0, NULL);
	expect("{a@example.com}", 0, 1, one);
	expect("{a@example.com,b@example.com}", 0, 2, two);
	expect("{\"x y\",\"say \\\"hi\\\"\",\"back\\\\slash\",\"a,b\",\"{}\",\"\"}", 0, 6, quoted);
	expect("{NULL,\"NULL\",null@x.org}", 0, 3, nulls);
	/* malformed */
	expect("a,b", -1, 0, NULL);
	expect("{\"unterminated}", -1, 0, NULL);
	expect("{a,b", -1, 0, NULL);
	expect("{\"a\"b}", -1, 0, NULL);
	expect("{a}}", -1, 0, NULL);
	test_literals();
	return test_summary("pgarray");
}
