/* Unit tests for buf: growth, NUL termination, embedded NULs, printf, steal. */
#include <stdint.h>
#include <stdlib.h>

#include "buf.h"
#include "testutil.h"

static void test_empty(void)
{
	struct buf b;
	char *s;

	buf_init(&b);
	CHECK(b.data == NULL && b.len == 0 && b.cap == 0, "fresh buffer not empty");
	buf_reset(&b);
	buf_truncate(&b, 10);
	s = buf_steal(&b);
	CHECK_STR(s, "");
	free(s);
	buf_free(&b);
	buf_free(&b);
	CHECK(b.data == NULL, "double free left data");
}

static void test_append_grow(void)
{
	struct buf b;
	size_t i;
	int ok = 1;

	buf_init(&b);
	for (i = 0; i < 10000; i++)
		if (buf_putc(&b, (char)('a' + i % 26)) < 0)
			ok = 0;
	CHECK(ok, "putc failed");
	CHECK_INT(b.len, 10000);
	CHECK(b.cap > b.len, "cap %zu len %zu", b.cap, b.len);
	CHECK_INT(b.data[b.len], 0);
	CHECK_INT(b.data[9999], 'a' + 9999 % 26);
	buf_reset(&b);
	CHECK_INT(b.len, 0);
	CHECK_STR(b.data, "");
	buf_free(&b);
}

static void test_embedded_nul(void)
{
	struct buf b;

	buf_init(&b);
	CHECK_INT(buf_append(&b, "a\0b", 3), 0);
	CHECK_INT(b.len, 3);
	CHECK(memcmp(b.data, "a\0b", 4) == 0, "bytes differ");
	CHECK_INT(buf_append(&b, NULL, 0), 0);
	CHECK_INT(b.len, 3);
	buf_free(&b);
}

static void test_printf(void)
{
	struct buf b;
	char big[5000];

	buf_init(&b);
	CHECK_INT(buf_puts(&b, "x="), 0);
	CHECK_INT(buf_printf(&b, "%d %s", 42, "ok"), 0);
	CHECK_STR(b.data, "x=42 ok");
	memset(big, 'z', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	CHECK_INT(buf_printf(&b, "[%s]", big), 0);
	CHECK_INT(b.len, 7 + 2 + 4999);
	CHECK_INT(b.data[b.len - 1], ']');
	CHECK_INT(buf_printf(&b, "%s", ""), 0);
	CHECK_INT(b.len, 7 + 2 + 4999);
	buf_truncate(&b, 4);
	CHECK_STR(b.data, "x=42");
	buf_free(&b);
}

static void test_overflow_refused(void)
{
	struct buf b;

	buf_init(&b);
	CHECK_INT(buf_puts(&b, "abc"), 0);
	CHECK_INT(buf_reserve(&b, SIZE_MAX - 2), -1);
	CHECK_INT(buf_reserve(&b, SIZE_MAX), -1);
	CHECK_STR(b.data, "abc");
	CHECK_INT(b.len, 3);
	buf_free(&b);
}

static void test_steal(void)
{
	struct buf b;
	char *s;

	buf_init(&b);
	CHECK_INT(buf_puts(&b, "hello"), 0);
	s = buf_steal(&b);
	CHECK_STR(s, "hello");
	CHECK(b.data == NULL && b.len == 0, "steal left data behind");
	free(s);
}

int main(void)
{
	test_empty();
	test_append_grow();
	test_embedded_nul();
	test_printf();
	test_overflow_refused();
	test_steal();
	return test_summary("buf");
}
