/* Unit tests for the address grammar, case by case from tests/data/addresses.tsv, the table
 * the pgTAP side (tests/sql/01_address_grammar.sql) reads too. Each input is judged as a bare
 * address and as a mailbox, directly and through mime_build() (From, To and Reply-To), so
 * the dispatcher refuses exactly what INSERT refuses. The table is in PostgreSQL's COPY text
 * format (tab-separated, a header line, backslash escapes); its path is argv[1], else
 * $ADDRESS_CASES, else the one relative to the repository root. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "address.h"
#include "buf.h"
#include "mime.h"
#include "testutil.h"

struct tcase {
	char *input;
	size_t len;
	int address_ok, mailbox_ok;
	const char *note;
	int line;
};

/* Decodes one COPY text field in place (\\ \t \n \r \xHH; nothing else is used). Returns the
 * decoded length, or -1 on an escape the table should not contain. */
static long unescape(char *s)
{
	char *w = s;

	for (const char *r = s; *r; r++) {
		if (*r != '\\') {
			*w++ = *r;
			continue;
		}
		switch (*++r) {
		case '\\':
			*w++ = '\\';
			break;
		case 't':
			*w++ = '\t';
			break;
		case 'n':
			*w++ = '\n';
			break;
		case 'r':
			*w++ = '\r';
			break;
		case 'x': {
			char hex[3] = { r[1], r[1] ? r[2] : '\0', '\0' };
			long v;
			if (!isxdigit((unsigned char)hex[0]) || !isxdigit((unsigned char)hex[1]) ||
			    (v = strtol(hex, NULL, 16)) == 0)
				return -1;
			*w++ = (char)v;
			r += 2;
			break;
		}
		default:
			return -1;
		}
	}
	*w = '\0';
	return (long)(w - s);
}

static int verdict(const char *s)
{
	return strcmp(s, "valid") == 0 ? 1 : strcmp(s, "invalid") == 0 ? 0 : -1;
}

/* Reads the table into cases (pointing into *text, which the caller frees). Returns the
 * number of cases, or -1 when the file cannot be read or a line is malformed. */
static int load_cases(const char *path, char **text, struct tcase **cases)
{
	FILE *f = fopen(path, "rb");
	struct buf b;
	char tmp[4096];
	size_t n, cap = 0;
	int count = 0, line = 0;
	char *p, *nl;

	*text = NULL;
	*cases = NULL;
	if (f == NULL) {
		fprintf(stderr, "cannot open %s\n", path);
		return -1;
	}
	buf_init(&b);
	while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
		if (buf_append(&b, tmp, n) < 0)
			break;
	fclose(f);
	if (b.data == NULL)
		return -1;
	*text = b.data;
	for (p = b.data; *p; p = nl + 1) {
		char *field[4];
		int k;
		long len;

		nl = strchr(p, '\n');
		if (nl == NULL) {
			fprintf(stderr, "%s: last line without a newline\n", path);
			return -1;
		}
		*nl = '\0';
		if (++line == 1)
			continue; /* the header */
		field[0] = p;
		for (k = 1; k < 4; k++) {
			char *tab = strchr(field[k - 1], '\t');
			if (tab == NULL)
				break;
			*tab = '\0';
			field[k] = tab + 1;
		}
		if (k < 4 || strchr(field[3], '\t') || (len = unescape(field[0])) < 0 || verdict(field[1]) < 0 ||
		    verdict(field[2]) < 0) {
			fprintf(stderr, "%s:%d: malformed line\n", path, line);
			return -1;
		}
		if ((size_t)count == cap) {
			struct tcase *grown = realloc(*cases, (cap = cap ? cap * 2 : 64) * sizeof(**cases));
			if (grown == NULL)
				return -1;
			*cases = grown;
		}
		(*cases)[count++] = (struct tcase){ field[0],          (size_t)len, verdict(field[1]),
						    verdict(field[2]), field[3],    line };
	}
	return count;
}

/* mime_build() with input as From, as the one To, or as Reply-To: 1 if it builds. */
static int mime_accepts(const char *input, int where)
{
	static const char *const plain_to[] = { "r@example.com" };
	const char *to[1] = { input };
	struct mime_msg m;
	struct buf out;
	char err[256];
	int rc;

	memset(&m, 0, sizeof(m));
	m.message_id = "<1.case@outbox.example>";
	m.from = where == 0 ? input : "Shop <noreply@shop.example>";
	m.to = where == 1 ? to : plain_to;
	m.n_to = 1;
	m.reply_to = where == 2 ? input : NULL;
	m.subject = "s";
	m.body_text = "b";
	m.date = 1700000000;
	buf_init(&out);
	rc = mime_build(&m, &out, err, sizeof(err));
	CHECK(rc == 0 || err[0] != '\0', "line input %s: refused without a reason", input);
	buf_free(&out);
	return rc == 0;
}

static void test_cases(const struct tcase *c, int n)
{
	static const char *const where[] = { "From", "To", "Reply-To" };

	for (int i = 0; i < n; i++) {
		struct address_mailbox mb;
		const char *why = address_spec_problem(c[i].input, c[i].len);
		int has_nul = strlen(c[i].input) != c[i].len;

		CHECK(!has_nul, "line %d: NUL in the input", c[i].line);
		CHECK((why == NULL) == c[i].address_ok, "line %d: as an address, \"%s\" %s (%s)", c[i].line, c[i].input,
		      why ? why : "accepted", c[i].note);
		why = address_mailbox_parse(c[i].input, &mb);
		CHECK((why == NULL) == c[i].mailbox_ok, "line %d: as a mailbox, \"%s\" %s (%s)", c[i].line, c[i].input,
		      why ? why : "accepted", c[i].note);
		for (int w = 0; w < 3; w++)
			CHECK(mime_accepts(c[i].input, w) == c[i].mailbox_ok,
			      "line %d: mime_build with %s \"%s\": %s (%s)", c[i].line, where[w], c[i].input,
			      c[i].mailbox_ok ? "refused" : "accepted", c[i].note);
	}
}

/* The parts of a mailbox the builder and the envelope use. */
static void test_mailbox_parts(void)
{
	static const struct {
		const char *in, *name, *addr;
	} cases[] = {
		{ "a@x.org", "", "a@x.org" },
		{ "Ann <a@x.org>", "Ann", "a@x.org" },
		{ "Ann   <a@x.org>  ", "Ann", "a@x.org" },
		{ " \tAnn\t<a@x.org>", "Ann", "a@x.org" },
		{ "\"Doe, Ann\" <a@x.org>", "\"Doe, Ann\"", "a@x.org" },
		{ "<a@x.org>", "", "a@x.org" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct address_mailbox mb;
		const char *why = address_mailbox_parse(cases[i].in, &mb);
		CHECK(why == NULL, "%s: %s", cases[i].in, why);
		if (why != NULL)
			continue;
		CHECK(mb.name_len == strlen(cases[i].name) && strncmp(mb.name, cases[i].name, mb.name_len) == 0,
		      "%s: name \"%.*s\"", cases[i].in, (int)mb.name_len, mb.name);
		CHECK(mb.addr_len == strlen(cases[i].addr) && strncmp(mb.addr, cases[i].addr, mb.addr_len) == 0,
		      "%s: addr \"%.*s\"", cases[i].in, (int)mb.addr_len, mb.addr);
	}
	CHECK(address_spec_problem("a@example.com", 0) != NULL, "an empty span is refused");
	CHECK(address_spec_problem("a@example.comX", 13) == NULL, "only the span given is read");
}

int main(int argc, char **argv)
{
	const char *path = argc > 1                  ? argv[1]
			   : getenv("ADDRESS_CASES") ? getenv("ADDRESS_CASES")
						     : "tests/data/addresses.tsv";
	struct tcase *cases;
	char *text;
	int n = load_cases(path, &text, &cases);

	CHECK(n >= 40, "%s: %d cases, want at least 40", path, n);
	if (n > 0)
		test_cases(cases, n);
	test_mailbox_parts();
	free(cases);
	free(text);
	return test_summary("address");
}
