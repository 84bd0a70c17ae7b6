/* Unit tests for the pure parts of migrate: file-name rules, directory listing and ordering,
 * data-directory discovery next to the binary, and error-position mapping. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "migrate.h"
#include "testutil.h"

static void test_parse_filename(void)
{
	static const struct {
		const char *file;
		int rc, version;
		const char *name;
	} cases[] = {
		{ "0001_init.sql", 1, 1, "init" },
		{ "00012_two_words.sql", 1, 12, "two_words" },
		{ "0000_zero.sql", 1, 0, "zero" },
		{ "2147483647_max.sql", 1, INT_MAX, "max" },
		{ "2147483648_over.sql", -1, 0, NULL },
		{ "99999999999999999999_huge.sql", -1, 0, NULL },
		{ "001_short.sql", 0, 0, NULL },
		{ "0001-dash.sql", 0, 0, NULL },
		{ "0001_.sql", 0, 0, NULL },
		{ "0001_upper.SQL", 0, 0, NULL },
		{ "0001_backup.sql.bak", 0, 0, NULL },
		{ "abcd_letters.sql", 0, 0, NULL },
		{ "_0001_lead.sql", 0, 0, NULL },
		{ "0001.sql", 0, 0, NULL },
		{ "", 0, 0, NULL },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int v = -7;
		char *name = NULL;
		int rc = migrate_parse_filename(cases[i].file, &v, &name);
		CHECK(rc == cases[i].rc, "%s: rc %d, want %d", cases[i].file, rc, cases[i].rc);
		if (cases[i].rc == 1) {
			CHECK_INT(v, cases[i].version);
			CHECK_STR(name, cases[i].name);
		} else {
			CHECK(name == NULL, "%s: name set on failure", cases[i].file);
		}
		free(name);
	}
	int v = 0;
	CHECK_INT(migrate_parse_filename("0042_no_name_wanted.sql", &v, NULL), 1);
	CHECK_INT(v, 42);
}

/* Creates path as an empty file (or a directory when dir is set). */
static void touch(const char *root, const char *name, int dir)
{
	char p[PATH_MAX];
	snprintf(p, sizeof p, "%s/%s", root, name);
	if (dir) {
		CHECK(mkdir(p, 0755) == 0, "mkdir %s", p);
		return;
	}
	FILE *f = fopen(p, "w");
	CHECK(f != NULL, "create %s", p);
	if (f)
		fclose(f);
}

static void rm_rf(const char *path)
{
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
	CHECK(system(cmd) == 0, "%s", cmd);
}

static void test_list_dir(void)
{
	char root[] = "/tmp/test_migrate_XXXXXX";
	char errbuf[512];
	struct migrate_list l = { NULL, 0 };

	CHECK(mkdtemp(root) != NULL, "mkdtemp");
	touch(root, "0010_c.sql", 0);
	touch(root, "0002_b.sql", 0);
	touch(root, "0001_a.sql", 0);
	touch(root, "README.md", 0);
	touch(root, ".0005_hidden.sql", 0);
	touch(root, "misnamed.sql", 0); /* warned about, skipped */
	touch(root, "0003_dir.sql", 1); /* a directory is not a migration */

	CHECK_INT(migrate_list_dir(root, &l, errbuf, sizeof errbuf), 0);
	CHECK_INT(l.n, 3);
	if (l.n == 3) {
		CHECK_INT(l.files[0].version, 1);
		CHECK_INT(l.files[1].version, 2);
		CHECK_INT(l.files[2].version, 10);
		CHECK_STR(l.files[2].filename, "0010_c.sql");
		CHECK_STR(l.files[2].name, "c");
	}
	migrate_list_free(&l);
	migrate_list_free(&l); /* twice is safe */
	CHECK(l.files == NULL && l.n == 0, "list emptied");

	touch(root, "00002_again.sql", 0); /* same number, different spelling */
	CHECK_INT(migrate_list_dir(root, &l, errbuf, sizeof errbuf), -1);
	CHECK(strstr(errbuf, "duplicate") && strstr(errbuf, "0002_b.sql") && strstr(errbuf, "00002_again.sql"),
	      "errbuf: %s", errbuf);
	CHECK(l.files == NULL, "nothing handed out on failure");

	char missing[PATH_MAX];
	snprintf(missing, sizeof missing, "%s/nope", root);
	CHECK_INT(migrate_list_dir(missing, &l, errbuf, sizeof errbuf), -1);
	CHECK(strstr(errbuf, "nope") != NULL, "errbuf: %s", errbuf);
	rm_rf(root);
}

static void test_default_dir(void)
{
	char root[] = "/tmp/test_migrate_XXXXXX";
	char exe[PATH_MAX], out[PATH_MAX], want[PATH_MAX];

	CHECK(mkdtemp(root) != NULL, "mkdtemp");
	snprintf(exe, sizeof exe, "%s/bin/outboxd", root);
	touch(root, "bin", 1);

	/* source tree: <root>/build/outboxd and <root>/migrations */
	touch(root, "migrations", 1);
	snprintf(want, sizeof want, "%s/migrations", root);
	CHECK_INT(migrate_default_dir(exe, "migrations", out, sizeof out), 1);
	CHECK(strcmp(out, want) == 0, "got %s, want %s", out, want);

	/* an installed tree takes precedence */
	touch(root, "share", 1);
	touch(root, "share/outboxd", 1);
	touch(root, "share/outboxd/migrations", 1);
	snprintf(want, sizeof want, "%s/share/outboxd/migrations", root);
	CHECK_INT(migrate_default_dir(exe, "migrations", out, sizeof out), 0);
	CHECK(strcmp(out, want) == 0, "got %s, want %s", out, want);

	/* the result must fit */
	char tiny[8];
	CHECK(migrate_default_dir(exe, "migrations", tiny, sizeof tiny) != 0, "tiny buffer refused");

	/* nothing next to the binary: only the built-in directory could match */
	int r = migrate_default_dir(exe, "no-such-subdir", out, sizeof out);
	CHECK_INT(r, -1);
	rm_rf(root);
}

static void test_position(void)
{
	const char *t = "ab\ncd\n";
	int line = 0, col = 0;

	CHECK_INT(migrate_position_to_line(t, strlen(t), 1, &line, &col), 0);
	CHECK(line == 1 && col == 1, "%d:%d", line, col);
	CHECK_INT(migrate_position_to_line(t, strlen(t), 3, &line, &col), 0);
	CHECK(line == 1 && col == 3, "%d:%d", line, col); /* the newline itself */
	CHECK_INT(migrate_position_to_line(t, strlen(t), 5, &line, &col), 0);
	CHECK(line == 2 && col == 2, "%d:%d", line, col);
	CHECK_INT(migrate_position_to_line(t, strlen(t), 0, &line, &col), -1);
	CHECK_INT(migrate_position_to_line(t, strlen(t), 7, &line, &col), -1);

	/* positions count characters, not bytes: "é" is two bytes, one character */
	const char *u = "-- \xc3\xa9t\xc3\xa9\nSELECT x";
	CHECK_INT(migrate_position_to_line(u, strlen(u), 7, &line, &col), 0);
	CHECK(line == 1 && col == 7, "%d:%d", line, col);
	CHECK_INT(migrate_position_to_line(u, strlen(u), 15, &line, &col), 0);
	CHECK(line == 2 && col == 8, "%d:%d", line, col);
}

int main(void)
{
	test_parse_filename();
	test_list_dir();
	test_default_dir();
	test_position();
	return test_summary("migrate");
}
