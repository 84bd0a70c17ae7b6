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
	return test_summary("pgarray");
}
