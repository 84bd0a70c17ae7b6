/* Unit tests for relaytext: relay text becomes valid UTF-8, escapes instead of losses,
 * cuts only on character boundaries, and a verdict built from it stays valid. */
#include <jansson.h>
#include <stdlib.h>

#include "job.h"
#include "relaytext.h"
#include "testutil.h"

struct tcase {
	const char *what;
	const char *in;
	size_t inlen;
	size_t cap;
	const char *want;
};

static const struct tcase cases[] = {
	{ "plain ascii", "550 no such user", 16, 64, "550 no such user" },
	{ "utf-8 kept", "550 Benutzer unbekannt \xC3\xBC", 25, 64, "550 Benutzer unbekannt \xC3\xBC" },
	{ "latin-1 byte escaped", "550 Gr\xFC\xDF", 8, 64, "550 Gr\\xFC\\xDF" },
	{ "cut 3-byte char at end", "451 \xE2\x82", 6, 64, "451 \\xE2\\x82" },
	{ "overlong escaped", "5 \xC0\xAF", 4, 64, "5 \\xC0\\xAF" },
	{ "surrogate escaped", "5 \xED\xA0\x80", 5, 64, "5 \\xED\\xA0\\x80" },
	{ "above U+10FFFF escaped", "5 \xF4\x90\x80\x80", 6, 64, "5 \\xF4\\x90\\x80\\x80" },
	{ "control chars escaped, tab kept", "a\r\n\tb\x1b", 6, 64, "a\\x0D\\x0A\tb\\x1B" },
	{ "NUL byte escaped", "a\0b", 3, 64, "a\\x00b" },
	{ "4-byte char kept", "\xF0\x9F\x93\xA7 ok", 7, 64, "\xF0\x9F\x93\xA7 ok" },
	{ "cut before a char that does not fit", "ab\xE2\x82\xAC", 5, 5, "ab" },
	{ "cut before an escape that does not fit", "abc\xFF", 4, 6, "abc" },
	{ "exact fit", "abc", 3, 4, "abc" },
};

static void test_clean(void)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[128];
		size_t n = relay_text_clean(out, cases[i].cap, cases[i].in, cases[i].inlen);
		json_t *j;

		CHECK(strcmp(out, cases[i].want) == 0, "%s: got \"%s\"", cases[i].what, out);
		CHECK_INT(n, strlen(cases[i].want));
		/* what jansson (and so last_error) accepts */
		j = json_string(out);
		CHECK(j != NULL, "%s: not valid UTF-8 for jansson", cases[i].what);
		json_decref(j);
	}
}

static void test_trim_tail(void)
{
	char a[] = "ab\xE2\x82"; /* euro sign cut after 2 of 3 bytes */
	char b[] = "ab\xE2\x82\xAC";
	char c[] = "ab\xC3";
	char d[] = "plain";

	relay_text_trim_tail(a);
	CHECK(strcmp(a, "ab") == 0, "trim %s", a);
	relay_text_trim_tail(b);
	CHECK(strcmp(b, "ab\xE2\x82\xAC") == 0, "trim %s", b);
	relay_text_trim_tail(c);
	CHECK(strcmp(c, "ab") == 0, "trim %s", c);
	relay_text_trim_tail(d);
	CHECK(strcmp(d, "plain") == 0, "trim %s", d);
}

static void test_dup(void)
{
	char *s = relay_text_dup("550 \xFF", 64);

	CHECK_STR(s, "550 \\xFF");
	free(s);
	CHECK(relay_text_dup(NULL, 64) == NULL, "NULL stays NULL");
}

/* A long reply of multi-byte characters through the verdict's fixed error buffer: the
 * result must still be valid UTF-8 (it was cut mid-character before). */
static void test_verdict_cut(void)
{
	char text[2000];
	struct rcpt_reply r;
	struct job_verdict v;
	json_t *j;
	size_t i;

	for (i = 0; i + 2 < sizeof(text) - 1; i += 2)
		memcpy(text + i, "\xC3\xBC", 2);
	memset(text + i, 0, sizeof(text) - i); /* 599 bytes of error buffer: an odd cut */
	memset(&r, 0, sizeof(r));
	r.state = RCPT_FAILED;
	r.code = 550;
	r.text = text;
	r.charged = 1;
	memset(&v, 0, sizeof(v));
	job_verdict(&r, 1, NULL, &v);
	j = json_string(v.error);
	CHECK(j != NULL, "verdict error is not valid UTF-8 (len %zu)", strlen(v.error));
	json_decref(j);
	CHECK(strlen(v.error) > 500, "error kept (%zu bytes)", strlen(v.error));
}

int main(void)
{
	test_clean();
	test_trim_tail();
	test_dup();
	test_verdict_cut();
	return test_summary("relaytext");
}
