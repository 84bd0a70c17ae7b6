/* Minimal table-driven unit-test support: CHECK records a failure and goes on,
 * test_summary() prints "N passed, N failed" and returns the exit code. */
#ifndef OUTBOXD_TESTUTIL_H
#define OUTBOXD_TESTUTIL_H

#include <stdio.h>
#include <string.h>

static int tu_passed, tu_failed;

#define CHECK(cond, ...)                                                                                               \
	do {                                                                                                           \
		if (cond) {                                                                                            \
			tu_passed++;                                                                                   \
		} else {                                                                                               \
			tu_failed++;                                                                                   \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                \
			fprintf(stderr, __VA_ARGS__);                                                                  \
			fputc('\n', stderr);                                                                           \
		}                                                                                                      \
	} while (0)

#define CHECK_STR(got, want)                                                                                           \
	CHECK((got) != NULL && strcmp((got), (want)) == 0, "got \"%s\", want \"%s\"", (got) ? (got) : "(null)", (want))

#define CHECK_INT(got, want)                                                                                           \
	CHECK((long long)(got) == (long long)(want), "got %lld, want %lld", (long long)(got), (long long)(want))

static inline int test_summary(const char *name)
{
	printf("%s: %d passed, %d failed\n", name, tu_passed, tu_failed);
	return tu_failed == 0 ? 0 : 1;
}

#endif
