/* migrate: `outboxd migrate` — a one-shot, blocking libpq command run before every deploy.
 * Owns the migration file conventions, outbox.schema_migrations bookkeeping, the advisory
 * lock that serialises concurrent runs, and the re-application of the sql/ files. */
#include "migrate.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "clock.h"
#include "config.h"
#include "pg.h"
#include "file.h"

#ifndef OUTBOXD_DATADIR
#define OUTBOXD_DATADIR "/usr/local/share/outboxd"
#endif

#define PROG "outboxd migrate"
#define SHA256_HEX 64

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

/* Command-line options after parsing; strings point into argv or the environment. */
struct migrate_opts {
	const char *database_url;
	const char *migrations_dir;
	const char *sql_dir;
	int status;
	int dry_run;
	const char *layout; /* --layout: "partitioned" moves the tables onto time partitions */
	long long lock_timeout_ms;
	long long wait_timeout_ms;
	long long statement_timeout_ms;
};

/* A file read into memory, with its sha256 once computed. */
struct loaded_file {
	char *filename; /* owned for sql/ files; borrowed from migrate_list for migrations */
	struct buf text;
	char checksum[SHA256_HEX + 1];
};

/* Everything one run owns; released by ctx_free(). */
struct migrate_ctx {
	struct migrate_opts o;
	char mig_dir[PATH_MAX];
	const char *mig_how;
	char sql_dir[PATH_MAX];
	const char *sql_how;
	int have_sql_dir;
	struct migrate_list mig;
	struct loaded_file *mig_files; /* parallel to mig.files */
	struct loaded_file *sql_files;
	size_t n_sql;
	struct pg_sync *conn;
	struct pg_result *applied; /* version, name, checksum, applied_at; ordered by version */
};

static const char usage_text[] =
	"usage: outboxd migrate [--database-url URL] [--migrations DIR] [--sql DIR]\n"
	"                       [--status] [--dry-run] [--lock-timeout SECONDS]\n"
	"                       [--wait-timeout SECONDS] [--statement-timeout SECONDS]\n"
	"                       [--layout plain|partitioned]\n"
	"\n"
	"Applies pending migrations/NNNN_name.sql files in order, each in its own transaction,\n"
	"then re-applies every sql/ file in one transaction.\n"
	"\n"
	"  --database-url URL       default: $OUTBOXD_DATABASE_URL, else the PG* environment;\n"
	"                           the password from $OUTBOXD_DATABASE_PASSWORD_FILE when set\n"
	"  --migrations DIR         default: $OUTBOXD_MIGRATIONS_DIR, else found next to the binary\n"
	"  --sql DIR                default: $OUTBOXD_SQL_DIR, else DIR/../sql of an explicit\n"
	"                           migrations directory, else found next to the binary\n"
	"  --status                 list applied and pending migrations; change nothing\n"
	"  --dry-run                print what would be applied; change nothing\n"
	"  --lock-timeout S         lock_timeout for migration statements (default 10; 0: none)\n"
	"  --wait-timeout S         how long to wait for the migration lock's holder (default\n"
	"                           900; 0: fail at once), named while waiting\n"
	"  --statement-timeout S    statement_timeout for migration statements (default 0: none)\n"
	"  --layout partitioned     move messages and events onto time partitions (once; see\n"
	"                           docs/operations.md); plain keeps the layout as it is\n"
	"\n"
	"Exit status: 0 ok, 1 runtime failure, 2 usage error.\n";

/* ---- messages ---------------------------------------------------------------------- */

static void msg_v(const char *kind, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void msg_v(const char *kind, const char *fmt, va_list ap)
{
	fflush(stdout);
	fprintf(stderr, "%s: %s: ", PROG, kind);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

/* Prints one "outboxd migrate: error: ..." line on stderr. */
static void err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void err(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	msg_v("error", fmt, ap);
	va_end(ap);
}

/* Prints one "outboxd migrate: warning: ..." line on stderr. */
static void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	msg_v("warning", fmt, ap);
	va_end(ap);
}

/* Prints one progress line on stdout and flushes, so a deploy log shows it at once. */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

/* Appends s to b with every run of whitespace (newlines included) folded to one space,
 * so server messages stay on one line. */
static int buf_put_flat(struct buf *b, const char *s)
{
	int space = 0;
	for (; *s; s++) {
		if (*s == '\n' || *s == '\r' || *s == '\t' || *s == ' ') {
			space = 1;
			continue;
		}
		if (space && b->len > 0 && buf_putc(b, ' ') < 0)
			return -1;
		space = 0;
		if (buf_putc(b, *s) < 0)
			return -1;
	}
	return 0;
}

/* ---- pure helpers (declared in migrate.h) -------------------------------------------- */

int migrate_parse_filename(const char *filename, int *version, char **name_out)
{
	const char *p = filename;
	long long v = 0;
	size_t digits = 0;

	while (*p >= '0' && *p <= '9') {
		v = v * 10 + (*p - '0');
		if (v > INT_MAX)
			v = (long long)INT_MAX + 1; /* keep scanning the shape, report range below */
		digits++;
		p++;
	}
	if (digits < 4 || *p != '_')
		return 0;
	p++;
	size_t len = strlen(p);
	if (len <= 4 || strcmp(p + len - 4, ".sql") != 0)
		return 0;
	if (v > INT_MAX)
		return -1;
	*version = (int)v;
	if (name_out) {
		*name_out = strndup(p, len - 4);
		if (!*name_out)
			return -1;
	}
	return 1;
}

void migrate_list_free(struct migrate_list *list)
{
	for (size_t i = 0; i < list->n; i++) {
		free(list->files[i].name);
		free(list->files[i].filename);
	}
	free(list->files);
	list->files = NULL;
	list->n = 0;
}

static int cmp_migration(const void *a, const void *b)
{
	const struct migrate_file *x = a, *y = b;
	if (x->version != y->version)
		return x->version < y->version ? -1 : 1;
	return strcmp(x->filename, y->filename);
}

/* True when dir/name is a regular file (following symlinks). */
/* 1 for a regular file, 0 for a directory (skipped), -1 for anything else: a FIFO, a
 * device, a dangling symlink, which named as SQL is an error rather than left out. */
static int entry_kind(const char *dir, const char *name)
{
	char path[PATH_MAX];
	struct stat st;
	int n = snprintf(path, sizeof path, "%s/%s", dir, name);
	if (n < 0 || (size_t)n >= sizeof path || stat(path, &st) != 0)
		return -1;
	return S_ISREG(st.st_mode) ? 1 : S_ISDIR(st.st_mode) ? 0 : -1;
}

static int ends_with_sql(const char *name)
{
	size_t len = strlen(name);
	return len > 4 && strcmp(name + len - 4, ".sql") == 0;
}

int migrate_list_dir(const char *dir, struct migrate_list *out, char *errbuf, size_t errlen)
{
	struct migrate_list list = { NULL, 0 };
	size_t cap = 0;
	struct dirent *de;
	DIR *d = opendir(dir);

	if (!d) {
		snprintf(errbuf, errlen, "cannot read migrations directory %s: %s", dir, strerror(errno));
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		int version;
		char *name = NULL;
		if (de->d_name[0] == '.')
			continue;
		int r = migrate_parse_filename(de->d_name, &version, &name);
		int kind = entry_kind(dir, de->d_name);
		if (r == 0 || kind == 0) {
			if (r == 0 && kind == 1 && ends_with_sql(de->d_name))
				warn("ignoring %s/%s: not named NNNN_name.sql", dir, de->d_name);
			free(name);
			continue;
		}
		if (r < 0) {
			snprintf(errbuf, errlen, "%s/%s: version number out of range", dir, de->d_name);
			goto fail;
		}
		/* named as a migration: left out, its change would be missing without a word */
		if (kind < 0) {
			free(name);
			snprintf(errbuf, errlen, "%s/%s: not a regular file", dir, de->d_name);
			goto fail;
		}
		if (list.n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			struct migrate_file *nf = realloc(list.files, ncap * sizeof *nf);
			if (!nf) {
				free(name);
				snprintf(errbuf, errlen, "out of memory");
				goto fail;
			}
			list.files = nf;
			cap = ncap;
		}
		char *fn = strdup(de->d_name);
		if (!fn) {
			free(name);
			snprintf(errbuf, errlen, "out of memory");
			goto fail;
		}
		list.files[list.n++] = (struct migrate_file){ version, name, fn };
	}
	closedir(d);
	d = NULL;
	if (list.n > 1)
		qsort(list.files, list.n, sizeof *list.files, cmp_migration);
	for (size_t i = 1; i < list.n; i++) {
		if (list.files[i].version == list.files[i - 1].version) {
			snprintf(errbuf, errlen, "duplicate migration version %d in %s: %s and %s",
				 list.files[i].version, dir, list.files[i - 1].filename, list.files[i].filename);
			goto fail;
		}
	}
	*out = list;
	return 0;
fail:
	if (d)
		closedir(d);
	migrate_list_free(&list);
	return -1;
}

static int is_dir(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Canonicalises path into out (for messages and --status). Returns 0, or -1 when the
 * path does not resolve or does not fit. */
static int canonical(const char *path, char *out, size_t outlen)
{
	char *real = realpath(path, NULL);
	if (!real)
		return -1;
	size_t n = strlen(real);
	if (n >= outlen) {
		free(real);
		return -1;
	}
	memcpy(out, real, n + 1);
	free(real);
	return 0;
}

int migrate_default_dir(const char *exe_path, const char *sub, char *out, size_t outlen)
{
	char exedir[PATH_MAX], cand[PATH_MAX];
	const char *slash = exe_path ? strrchr(exe_path, '/') : NULL;

	if (slash && (size_t)(slash - exe_path) < sizeof exedir) {
		size_t n = (size_t)(slash - exe_path);
		memcpy(exedir, exe_path, n);
		exedir[n] = '\0';
		static const char *const rel[] = { "%s/../share/outboxd/%s", "%s/../%s" };
		for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
			int k = snprintf(cand, sizeof cand, rel[i], exedir, sub);
			if (k > 0 && (size_t)k < sizeof cand && is_dir(cand) && canonical(cand, out, outlen) == 0)
				return (int)i;
		}
	}
	int k = snprintf(cand, sizeof cand, "%s/%s", OUTBOXD_DATADIR, sub);
	if (k > 0 && (size_t)k < sizeof cand && is_dir(cand) && canonical(cand, out, outlen) == 0)
		return 2;
	return -1;
}

int migrate_position_to_line(const char *text, size_t len, long pos, int *line, int *col)
{
	long ch = 0;
	int l = 1, c = 0;

	if (pos < 1)
		return -1;
	for (size_t i = 0; i < len; i++) {
		unsigned char b = (unsigned char)text[i];
		if ((b & 0xC0) == 0x80)
			continue; /* a UTF-8 continuation byte is not a new character */
		ch++;
		c++;
		if (ch == pos) {
			*line = l;
			*col = c;
			return 0;
		}
		if (b == '\n') {
			l++;
			c = 0;
		}
	}
	return -1;
}

/* ---- options and directories --------------------------------------------------------- */

/* Parses a non-negative number of seconds into milliseconds: plain decimal, as the
 * configuration's numbers ("2", "0.5"); strtod alone would also take " 2", "0x10" and "1e3".
 * Returns 0 or -1. */
static int parse_seconds(const char *s, long long *ms)
{
	char *end;
	size_t digits = strspn(s, "0123456789");

	if (digits == 0 || (s[digits] != '\0' && (s[digits] != '.' || s[digits + 1] == '\0' ||
						  strspn(s + digits + 1, "0123456789") != strlen(s + digits + 1))))
		return -1;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end != '\0' || !isfinite(v) || v < 0 || v > 2147483.0)
		return -1;
	*ms = (long long)llround(v * 1000.0);
	return 0;
}

/* Parses argv (argv[0] is the command name). Returns -1 to continue, or an exit code. */
static int parse_args(int argc, char **argv, struct migrate_opts *o)
{
	static const struct {
		const char *name;
		int has_arg;
	} known[] = {
		{ "--database-url", 1 }, { "--migrations", 1 },   { "--sql", 1 },          { "--status", 0 },
		{ "--dry-run", 0 },      { "--lock-timeout", 1 }, { "--wait-timeout", 1 }, { "--statement-timeout", 1 },
		{ "--help", 0 },         { "--layout", 1 },
	};

	o->lock_timeout_ms = (long long)(MIGRATE_DEFAULT_LOCK_TIMEOUT * 1000);
	o->wait_timeout_ms = (long long)(MIGRATE_DEFAULT_WAIT_TIMEOUT * 1000);
	o->statement_timeout_ms = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *val = NULL;
		const char *eq = strchr(a, '=');
		size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
		size_t k;

		if (strcmp(a, "-h") == 0)
			a = "--help", nlen = strlen(a);
		for (k = 0; k < sizeof known / sizeof known[0]; k++)
			if (strlen(known[k].name) == nlen && strncmp(known[k].name, a, nlen) == 0)
				break;
		if (k == sizeof known / sizeof known[0]) {
			err("unknown argument '%s' (see outboxd migrate --help)", argv[i]);
			return EXIT_USAGE;
		}
		if (known[k].has_arg) {
			if (eq)
				val = eq + 1;
			else if (i + 1 < argc)
				val = argv[++i];
			else {
				err("%s needs a value", known[k].name);
				return EXIT_USAGE;
			}
		} else if (eq) {
			err("%s takes no value", known[k].name);
			return EXIT_USAGE;
		}

		const char *n = known[k].name;
		if (strcmp(n, "--help") == 0) {
			fputs(usage_text, stdout);
			return EXIT_OK;
		} else if (strcmp(n, "--database-url") == 0) {
			o->database_url = val;
		} else if (strcmp(n, "--migrations") == 0) {
			o->migrations_dir = val;
		} else if (strcmp(n, "--sql") == 0) {
			o->sql_dir = val;
		} else if (strcmp(n, "--status") == 0) {
			o->status = 1;
		} else if (strcmp(n, "--dry-run") == 0) {
			o->dry_run = 1;
		} else if (strcmp(n, "--layout") == 0) {
			if (strcmp(val, "plain") != 0 && strcmp(val, "partitioned") != 0) {
				err("--layout: '%s' is neither plain nor partitioned", val);
				return EXIT_USAGE;
			}
			o->layout = val;
		} else {
			long long *dst = strcmp(n, "--lock-timeout") == 0   ? &o->lock_timeout_ms
					 : strcmp(n, "--wait-timeout") == 0 ? &o->wait_timeout_ms
									    : &o->statement_timeout_ms;
			if (parse_seconds(val, dst) < 0) {
				err("%s: '%s' is not a number of seconds (0 to 2147483)", n, val);
				return EXIT_USAGE;
			}
		}
	}
	if (o->status && o->dry_run) {
		err("--status and --dry-run cannot be combined");
		return EXIT_USAGE;
	}
	return -1;
}

/* Returns a non-empty environment variable, or NULL. */
static const char *env_nonempty(const char *name)
{
	const char *v = getenv(name);
	return v && *v ? v : NULL;
}

/*
 * Chooses one data directory: the flag, else the environment variable, else (when
 * sibling_base is set, i.e. the migrations directory was given explicitly)
 * <sibling_base>/../<sub> or nothing, else the directories next to the binary.
 * Returns 0 found, 1 none found, or EXIT_USAGE when an explicit directory is missing.
 */
static int resolve_dir(const char *flag_val, const char *flag, const char *env, const char *sub,
		       const char *sibling_base, char *out, size_t outlen, const char **how)
{
	const char *explicit_dir = flag_val;
	*how = flag;
	if (!explicit_dir) {
		explicit_dir = env_nonempty(env);
		*how = env;
	}
	if (explicit_dir) {
		if (!is_dir(explicit_dir) || canonical(explicit_dir, out, outlen) < 0) {
			err("%s directory '%s' (from %s) does not exist", sub, explicit_dir, *how);
			return EXIT_USAGE;
		}
		return 0;
	}
	if (sibling_base) {
		char cand[PATH_MAX];
		int n = snprintf(cand, sizeof cand, "%s/../%s", sibling_base, sub);
		*how = "next to the migrations directory";
		if (n > 0 && (size_t)n < sizeof cand && is_dir(cand) && canonical(cand, out, outlen) == 0)
			return 0;
		return 1;
	}
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	exe[n > 0 ? n : 0] = '\0';
	static const char *const rules[] = { "installed next to the binary", "source tree next to the binary",
					     "built-in " OUTBOXD_DATADIR };
	int rule = migrate_default_dir(n > 0 ? exe : NULL, sub, out, outlen);
	*how = rule >= 0 ? rules[rule] : "not found";
	return rule >= 0 ? 0 : 1;
}

/* ---- files ------------------------------------------------------------------------------ */

/* Reads dir/name into b. Returns 0, or -1 after printing why. */
static int read_file(const char *dir, const char *name, struct buf *b)
{
	char path[PATH_MAX];
	size_t len;
	int n = snprintf(path, sizeof path, "%s/%s", dir, name), e;
	char *text;

	if (n < 0 || (size_t)n >= sizeof path) {
		err("%s/%s: path too long", dir, name);
		return -1;
	}
	text = file_read(path, 64u << 20, &len, &e);
	if (text == NULL) {
		err("cannot read %s: %s", path, file_strerror(e));
		return -1;
	}
	if (memchr(text, '\0', len)) {
		err("%s contains a NUL byte; SQL files must be text", path);
		free(text);
		return -1;
	}
	n = buf_append(b, text, len) < 0 || buf_puts(b, "") < 0; /* an empty file still gets a "" string */
	free(text);
	if (n) {
		err("out of memory reading %s", path);
		return -1;
	}
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Loads every *.sql of the sql directory, in byte-wise lexical order. Returns 0 or -1. */
static int load_sql_dir(struct migrate_ctx *c)
{
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	int rc = -1;
	DIR *d = opendir(c->sql_dir);

	if (!d) {
		err("cannot read sql directory %s: %s", c->sql_dir, strerror(errno));
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		/* a *.sql that is neither a file nor a directory fails in read_file, naming it */
		if (de->d_name[0] == '.' || !ends_with_sql(de->d_name) || entry_kind(c->sql_dir, de->d_name) == 0)
			continue;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			char **nn = realloc(names, ncap * sizeof *nn);
			if (!nn)
				goto out;
			names = nn;
			cap = ncap;
		}
		if (!(names[n] = strdup(de->d_name)))
			goto out;
		n++;
	}
	if (n > 1)
		qsort(names, n, sizeof *names, cmp_str);
	c->sql_files = calloc(n ? n : 1, sizeof *c->sql_files);
	if (!c->sql_files)
		goto out;
	for (size_t i = 0; i < n; i++) {
		c->sql_files[i].filename = names[i];
		names[i] = NULL;
		buf_init(&c->sql_files[i].text);
		c->n_sql = i + 1;
		if (read_file(c->sql_dir, c->sql_files[i].filename, &c->sql_files[i].text) < 0)
			goto out_quiet;
	}
	rc = 0;
	goto out_quiet;
out:
	err("out of memory listing %s", c->sql_dir);
out_quiet:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return rc;
}

/* ---- database ------------------------------------------------------------------------- */

/* A one-line rendering of a server error: "SEVERITY SQLSTATE: message (detail: ...)". When
 * text is given and the server reported a position, prefixes "line:col: ". */
static void report_pg_error(const char *what, const struct buf *text, const struct pg_result *res,
			    const struct pg_sync *conn)
{
	struct buf b;
	const char *primary = pg_result_field(res, PG_FIELD_PRIMARY);
	buf_init(&b);

	if (!primary) {
		const char *m = res ? pg_result_error(res) : "";
		if (!*m)
			m = pg_sync_error(conn);
		if (buf_put_flat(&b, *m ? m : "unknown error") < 0)
			goto oom;
		err("%s: %s", what, b.data);
		buf_free(&b);
		return;
	}
	const char *pos = pg_result_field(res, PG_FIELD_POSITION);
	const char *sev = pg_result_field(res, PG_FIELD_SEVERITY);
	const char *state = pg_result_field(res, PG_FIELD_SQLSTATE);
	const char *detail = pg_result_field(res, PG_FIELD_DETAIL);
	const char *hint = pg_result_field(res, PG_FIELD_HINT);
	const char *where = pg_result_field(res, PG_FIELD_CONTEXT);
	int line, col;

	if (buf_puts(&b, what) < 0)
		goto oom;
	if (pos && text && migrate_position_to_line(text->data, text->len, atol(pos), &line, &col) == 0 &&
	    buf_printf(&b, ":%d:%d", line, col) < 0)
		goto oom;
	if (buf_printf(&b, ": %s%s%s: ", sev ? sev : "ERROR", state ? " " : "", state ? state : "") < 0 ||
	    buf_put_flat(&b, primary) < 0)
		goto oom;
	const char *labels[] = { "detail", "hint", "context" };
	const char *vals[] = { detail, hint, where };
	int first = 1;
	for (int i = 0; i < 3; i++) {
		if (!vals[i])
			continue;
		if (buf_printf(&b, "%s%s: ", first ? " (" : "; ", labels[i]) < 0 || buf_put_flat(&b, vals[i]) < 0)
			goto oom;
		first = 0;
	}
	if (!first && buf_putc(&b, ')') < 0)
		goto oom;
	if (state && strcmp(state, "55P03") == 0 &&
	    buf_puts(
		    &b,
		    " [lock_timeout expired: another session holds a conflicting lock; retry, or raise --lock-timeout]") <
		    0)
		goto oom;
	if (state && strcmp(state, "57014") == 0 && buf_puts(&b, " [statement cancelled: see --statement-timeout]") < 0)
		goto oom;
	err("%s", b.data);
	buf_free(&b);
	return;
oom:
	buf_free(&b);
	err("%s: (out of memory formatting the server error)", what);
}

/* Runs a statement that returns no rows. Returns 0, or -1 after reporting the error. */
static int exec_cmd(struct pg_sync *conn, const char *what, const char *sql)
{
	struct pg_result *r = pg_sync_exec(conn, sql);
	int ok = pg_outcome_of(r) == PG_OK_COMMAND || pg_outcome_of(r) == PG_OK_TUPLES;
	if (!ok)
		report_pg_error(what, NULL, r, conn);
	pg_sync_free_result(r);
	return ok ? 0 : -1;
}

/* Runs a query expected to return rows. Returns the result (the caller frees it with
 * pg_sync_free_result), or NULL after reporting the error. */
static struct pg_result *exec_query(struct pg_sync *conn, const char *what, const char *sql)
{
	struct pg_result *r = pg_sync_exec(conn, sql);
	if (pg_outcome_of(r) != PG_OK_TUPLES) {
		report_pg_error(what, NULL, r, conn);
		pg_sync_free_result(r);
		return NULL;
	}
	return r;
}

/* Abandons the current transaction, if any; errors here are not interesting. */
static void rollback(struct pg_sync *conn)
{
	if (pg_sync_in_transaction(conn))
		pg_sync_free_result(pg_sync_exec(conn, "ROLLBACK"));
}

/*
 * Runs one SQL file's text with the simple protocol (many statements are allowed).
 * COPY is refused: a migration file has no data stream. Returns 0, or -1 after reporting
 * the error under the file's name.
 */
static int exec_file(struct pg_sync *conn, const char *label, const struct buf *text)
{
	struct pg_result *r = pg_sync_exec(conn, text->data);
	enum pg_outcome st = pg_outcome_of(r);
	int ok = st == PG_OK_COMMAND || st == PG_OK_TUPLES || st == PG_OK_EMPTY;

	if (st == PG_COPY_REFUSED) {
		err("%s: COPY to or from the client is not supported in SQL files", label);
		pg_sync_free_result(r);
		return -1;
	}
	if (!ok)
		report_pg_error(label, text, r, conn);
	pg_sync_free_result(r);
	if (ok && !pg_sync_in_transaction(conn)) {
		err("%s: the file ended the transaction itself (COMMIT or ROLLBACK in the file); "
		    "its changes may be committed but it was not recorded — remove the transaction "
		    "control statements",
		    label);
		return -1;
	}
	return ok ? 0 : -1;
}

/* Connects with application_name=outboxd-migrate. Returns 0, or -1 after reporting. */
static int db_connect(struct migrate_ctx *c)
{
	const char *conninfo = c->o.database_url;
	if (!conninfo)
		conninfo = env_nonempty("OUTBOXD_DATABASE_URL");
	if (!conninfo)
		conninfo = ""; /* libpq's PG* environment and defaults */

	/* The run command's password file (a mounted Secret) serves the migrate Job too. */
	const char *pwfile = env_nonempty("OUTBOXD_DATABASE_PASSWORD_FILE");
	char *password = NULL;
	if (pwfile) {
		int e = 0;
		password = config_secret_read(pwfile, &e);
		if (!password) {
			err("OUTBOXD_DATABASE_PASSWORD_FILE %s: %s", pwfile, config_secret_strerror(e));
			return -1;
		}
	}

	/* connect_timeout 10 s unless the URL says otherwise; the name is always ours */
	char why[1024];
	pg_set_password(password);
	c->conn = pg_sync_connect(conninfo, "outboxd-migrate", why, sizeof why);
	pg_set_password(NULL);
	if (password) {
		explicit_bzero(password, strlen(password));
		free(password);
	}
	if (!c->conn) {
		err("cannot connect to the database: %s", why);
		return -1;
	}
	return 0;
}

/*
 * Session settings: quiet notices, bounded lock waits, the chosen statement timeout. On
 * PostgreSQL 14+ the server also checks for a vanished client during long statements, so
 * a killed migrate run does not leave DDL running (and holding locks) behind it.
 */
static int db_configure(struct migrate_ctx *c)
{
	char sql[384];
	/* sql/00_layout.sql reads outboxd.layout (the value is one of two words, checked) */
	snprintf(sql, sizeof sql,
		 "SET client_min_messages = warning; SET lock_timeout = %lld; "
		 "SET statement_timeout = %lld; SET idle_in_transaction_session_timeout = 0%s%s%s",
		 c->o.lock_timeout_ms, c->o.statement_timeout_ms,
		 pg_sync_server_version(c->conn) >= 140000 ? "; SET client_connection_check_interval = 1000" : "",
		 c->o.layout ? "; SET outboxd.layout = " : "", c->o.layout ? c->o.layout : "");
	return exec_cmd(c->conn, "configuring the session", sql);
}

/* Undoes any session setting a file changed (a SET without LOCAL outlives its
 * transaction), so every file runs in the same session state as in a fresh run. */
static int db_reset_session(struct migrate_ctx *c)
{
	if (exec_cmd(c->conn, "resetting the session", "RESET ALL") < 0)
		return -1;
	return db_configure(c);
}

/*
 * Names the session holding the migration lock in out ("pid 123 (user u, application 'a',
 * connected since ...)") and sets *ours when it is another `outboxd migrate`. PostgreSQL
 * checks no privilege on advisory locks, so any login may hold this one. Returns 1 when
 * held, 0 when free now, -1 after reporting an error.
 */
static int db_lock_holder(struct migrate_ctx *c, char *out, size_t outlen, int *ours)
{
	char sql[1024];
	struct pg_result *r;

	snprintf(sql, sizeof sql,
		 "SELECT l.pid, coalesce(a.usename::text, '?'), coalesce(a.application_name, ''), "
		 "coalesce(to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS\"Z\"'), '?'), "
		 /* the name is the client's choice: outboxd migrate is also our login or the
		  * schema owner's (as outbox.lock_holders judges, before that function exists) */
		 "coalesce(a.application_name = 'outboxd-migrate' AND (a.usename = current_user "
		 "OR pg_catalog.pg_has_role(a.usesysid, (SELECT n.nspowner FROM pg_catalog.pg_namespace n "
		 "WHERE n.nspname = 'outbox'), 'MEMBER')), false) "
		 "FROM pg_catalog.pg_locks l LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid "
		 "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
		 "AND l.classid = (%lld::bigint >> 32)::oid AND l.objid = (%lld::bigint & 4294967295)::oid "
		 "AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())",
		 MIGRATE_LOCK_KEY, MIGRATE_LOCK_KEY);
	if (!(r = exec_query(c->conn, "looking up the holder of the migration lock", sql)))
		return -1;
	if (pg_ntuples(r) == 0) {
		pg_sync_free_result(r);
		return 0;
	}
	*ours = strcmp(pg_value(r, 0, 4), "t") == 0;
	snprintf(out, outlen, "pid %s (user %s, application '%s', connected since %s)", pg_value(r, 0, 0),
		 pg_value(r, 0, 1), pg_value(r, 0, 2), pg_value(r, 0, 3));
	pg_sync_free_result(r);
	return 1;
}

/* The holder of the migration lock for a message: who, and whether it is another run. */
static int describe_holder(struct migrate_ctx *c, char *out, size_t outlen, int *ours)
{
	int held = db_lock_holder(c, out, outlen, ours);
	if (held == 0) {
		snprintf(out, outlen, "a session that has just let go");
		*ours = 1;
	}
	return held;
}

/* Sets lock_timeout for what follows, in milliseconds. */
static int set_lock_timeout(struct migrate_ctx *c, long long ms)
{
	char sql[64];
	snprintf(sql, sizeof sql, "SET lock_timeout = %lld", ms);
	return exec_cmd(c->conn, "configuring the session", sql);
}

/*
 * Takes the migration advisory lock, waiting at most --wait-timeout (0: not at all) for its
 * holder, named on stdout every 30 s while waiting and in the error when the wait ends.
 * Session-level on purpose: it must span the many transactions of one run.
 */
static int db_lock(struct migrate_ctx *c)
{
	char sql[128], holder[512];
	int ours = 1;
	struct pg_result *r;

	snprintf(sql, sizeof sql, "SELECT pg_try_advisory_lock(%lld)", MIGRATE_LOCK_KEY);
	if (!(r = exec_query(c->conn, "taking the migration lock", sql)))
		return -1;
	int got = strcmp(pg_value(r, 0, 0), "t") == 0;
	pg_sync_free_result(r);
	if (got)
		return 0;

	long long deadline = (long long)clock_mono_ms() + c->o.wait_timeout_ms;
	if (describe_holder(c, holder, sizeof holder, &ours) < 0)
		return -1;
	if (c->o.wait_timeout_ms > 0)
		say("waiting for %s to finish, at most %.0f s (advisory lock %lld): %s",
		    ours ? "another outboxd migrate run" : "a session that is not outboxd migrate",
		    (double)c->o.wait_timeout_ms / 1000.0, MIGRATE_LOCK_KEY, holder);
	snprintf(sql, sizeof sql, "SELECT pg_advisory_lock(%lld)", MIGRATE_LOCK_KEY);
	for (long long left; (left = deadline - (long long)clock_mono_ms()) > 0;) {
		if (set_lock_timeout(c, left < 30000 ? left : 30000) < 0)
			return -1;
		r = pg_sync_exec(c->conn, sql);
		if (pg_outcome_of(r) == PG_OK_TUPLES) {
			pg_sync_free_result(r);
			return set_lock_timeout(c, c->o.lock_timeout_ms);
		}
		const char *state = pg_result_field(r, PG_FIELD_SQLSTATE);
		if (!state || strcmp(state, "55P03") != 0) {
			report_pg_error("taking the migration lock", NULL, r, c->conn);
			pg_sync_free_result(r);
			return -1;
		}
		pg_sync_free_result(r);
		if (describe_holder(c, holder, sizeof holder, &ours) < 0)
			return -1;
		left = deadline - (long long)clock_mono_ms();
		if (left > 0)
			say("still waiting for the migration lock (%.0f s left), held by %s", (double)left / 1000.0,
			    holder);
	}
	if (ours)
		err("the migration lock is still held after %.0f s by %s, another outboxd migrate run "
		    "(see --wait-timeout)",
		    (double)c->o.wait_timeout_ms / 1000.0, holder);
	else
		err("the migration lock is still held after %.0f s by %s, which is not outboxd migrate: "
		    "any login can take an advisory lock; find out what that session is, then end it "
		    "(SELECT pg_terminate_backend(pid)) and run migrate again",
		    (double)c->o.wait_timeout_ms / 1000.0, holder);
	return -1;
}

static const char bookkeeping_sql[] = "BEGIN;"
				      "CREATE SCHEMA IF NOT EXISTS outbox;"
				      "CREATE TABLE IF NOT EXISTS outbox.schema_migrations ("
				      "  version     int PRIMARY KEY,"
				      "  name        text NOT NULL,"
				      "  checksum    text NOT NULL,"
				      "  applied_at  timestamptz NOT NULL DEFAULT now(),"
				      "  duration_ms int);"
				      "COMMENT ON TABLE outbox.schema_migrations IS "
				      "  'Migrations applied by outboxd migrate: one row per migrations/NNNN_name.sql, "
				      "checksum = sha256 hex of the file';"
				      "COMMIT";

/*
 * Reports whether outbox.schema_migrations exists and, when create is set, creates it.
 * The schema is created only when missing, so a role without CREATE on the database
 * can still run migrate against an existing schema. Returns 1 exists, 0 absent, -1 error.
 */
static int db_bookkeeping(struct migrate_ctx *c, int create)
{
	struct pg_result *r = exec_query(c->conn, "reading outbox.schema_migrations",
					 "SELECT to_regclass('outbox.schema_migrations') IS NOT NULL");
	if (!r)
		return -1;
	int exists = strcmp(pg_value(r, 0, 0), "t") == 0;
	pg_sync_free_result(r);
	if (exists || !create)
		return exists;
	if (exec_cmd(c->conn, "creating outbox.schema_migrations", bookkeeping_sql) < 0) {
		rollback(c->conn);
		return -1;
	}
	return 1;
}

/* Loads the applied rows into c->applied (none when the table does not exist). */
static int db_load_applied(struct migrate_ctx *c, int table_exists)
{
	const char *sql = table_exists ? "SELECT version, name, checksum, "
					 "to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS\"Z\"') "
					 "FROM outbox.schema_migrations ORDER BY version"
				       : "SELECT 0, '', '', '' WHERE false";
	c->applied = exec_query(c->conn, "reading outbox.schema_migrations", sql);
	return c->applied ? 0 : -1;
}

/* Computes the sha256 hex of a file's bytes on the server (no crypto library needed). */
static int db_checksum(struct pg_sync *conn, const char *label, struct loaded_file *f)
{
	if (f->text.len > INT_MAX) {
		err("%s: file too large", label);
		return -1;
	}
	struct pg_result *r = pg_sync_exec_bytea(conn, "SELECT encode(sha256($1), 'hex')", f->text.data, f->text.len);
	if (pg_outcome_of(r) != PG_OK_TUPLES || pg_ntuples(r) != 1 || strlen(pg_value(r, 0, 0)) != SHA256_HEX) {
		report_pg_error(label, NULL, r, conn);
		pg_sync_free_result(r);
		return -1;
	}
	memcpy(f->checksum, pg_value(r, 0, 0), SHA256_HEX + 1);
	pg_sync_free_result(r);
	return 0;
}

/* ---- the run -------------------------------------------------------------------------- */

/* Index of the migration file with this version, or -1. */
static long find_file(const struct migrate_ctx *c, int version)
{
	for (size_t i = 0; i < c->mig.n; i++)
		if (c->mig.files[i].version == version)
			return (long)i;
	return -1;
}

/* Row of c->applied with this version, or -1. */
static int find_applied(const struct migrate_ctx *c, int version)
{
	for (int i = 0; i < pg_ntuples(c->applied); i++)
		if (atoi(pg_value(c->applied, i, 0)) == version)
			return i;
	return -1;
}

/* Reads every migration file and computes its checksum. */
static int load_migrations(struct migrate_ctx *c)
{
	c->mig_files = calloc(c->mig.n ? c->mig.n : 1, sizeof *c->mig_files);
	if (!c->mig_files) {
		err("out of memory");
		return -1;
	}
	for (size_t i = 0; i < c->mig.n; i++) {
		c->mig_files[i].filename = c->mig.files[i].filename;
		buf_init(&c->mig_files[i].text);
		if (read_file(c->mig_dir, c->mig.files[i].filename, &c->mig_files[i].text) < 0)
			return -1;
	}
	return 0;
}

/* Compares applied checksums with the files. Returns the number of changed files; warns
 * about applied versions whose file is gone (an older release may be running). */
static int verify_applied(struct migrate_ctx *c, int quiet)
{
	int changed = 0;
	for (int i = 0; i < pg_ntuples(c->applied); i++) {
		int v = atoi(pg_value(c->applied, i, 0));
		const char *name = pg_value(c->applied, i, 1);
		const char *sum = pg_value(c->applied, i, 2);
		long f = find_file(c, v);
		if (f < 0) {
			if (!quiet)
				warn("applied migration %04d_%s has no file in %s (an older release?); "
				     "leaving it alone",
				     v, name, c->mig_dir);
			continue;
		}
		if (strcmp(sum, c->mig_files[f].checksum) != 0) {
			char as[128] = "";
			if (strcmp(name, c->mig.files[f].name) != 0)
				snprintf(as, sizeof as, " as %04d_%.80s", v, name);
			if (!quiet)
				err("%s was changed after it was applied%s (file sha256 %s, recorded %s); "
				    "never edit an applied migration, add a new one",
				    c->mig.files[f].filename, as, c->mig_files[f].checksum, sum);
			changed++;
		} else if (!quiet && strcmp(name, c->mig.files[f].name) != 0) {
			warn("%s was applied under the name '%s'; the content is unchanged", c->mig.files[f].filename,
			     name);
		}
	}
	return changed;
}

/* Applies one migration in its own transaction and records it. Returns 0 or -1. */
static int apply_one(struct migrate_ctx *c, size_t i)
{
	const struct migrate_file *mf = &c->mig.files[i];
	struct loaded_file *lf = &c->mig_files[i];
	long long t0 = (long long)clock_mono_ms();

	if (db_reset_session(c) < 0 || exec_cmd(c->conn, mf->filename, "BEGIN") < 0)
		return -1;
	if (exec_file(c->conn, mf->filename, &lf->text) < 0) {
		rollback(c->conn);
		return -1;
	}
	long long ms = (long long)clock_mono_ms() - t0;
	char vbuf[16], msbuf[24];
	snprintf(vbuf, sizeof vbuf, "%d", mf->version);
	snprintf(msbuf, sizeof msbuf, "%lld", ms > INT_MAX ? (long long)INT_MAX : ms);
	const char *values[4] = { vbuf, mf->name, lf->checksum, msbuf };
	struct pg_result *r = pg_sync_exec_params(c->conn,
						  "INSERT INTO outbox.schema_migrations (version, name, checksum, "
						  "duration_ms) VALUES ($1, $2, $3, $4)",
						  4, values);
	if (pg_outcome_of(r) != PG_OK_COMMAND) {
		report_pg_error(mf->filename, NULL, r, c->conn);
		pg_sync_free_result(r);
		rollback(c->conn);
		return -1;
	}
	pg_sync_free_result(r);
	r = pg_sync_exec(c->conn, "COMMIT");
	if (pg_outcome_of(r) != PG_OK_COMMAND) { /* e.g. a deferred constraint */
		report_pg_error(mf->filename, NULL, r, c->conn);
		pg_sync_free_result(r);
		rollback(c->conn);
		return -1;
	}
	pg_sync_free_result(r);
	char stem[PATH_MAX];
	size_t n = strlen(mf->filename) - 4;
	snprintf(stem, sizeof stem, "%.*s", (int)n, mf->filename);
	say("applied %s (%lld ms)", stem, (long long)clock_mono_ms() - t0);
	return 0;
}

/* Re-applies every sql/ file in one transaction: all or nothing. */
static int apply_sql(struct migrate_ctx *c)
{
	char label[PATH_MAX + 8];
	long long t0 = (long long)clock_mono_ms();

	if (c->n_sql == 0) {
		say("sql: no files to re-apply");
		return 0;
	}
	if (db_reset_session(c) < 0 || exec_cmd(c->conn, "sql", "BEGIN") < 0)
		return -1;
	for (size_t i = 0; i < c->n_sql; i++) {
		snprintf(label, sizeof label, "sql/%s", c->sql_files[i].filename);
		if (exec_file(c->conn, label, &c->sql_files[i].text) < 0) {
			rollback(c->conn);
			err("sql: nothing from %s was applied (one transaction)", c->sql_dir);
			return -1;
		}
	}
	struct pg_result *r = pg_sync_exec(c->conn, "COMMIT");
	if (pg_outcome_of(r) != PG_OK_COMMAND) {
		report_pg_error("sql: COMMIT", NULL, r, c->conn);
		pg_sync_free_result(r);
		rollback(c->conn);
		return -1;
	}
	pg_sync_free_result(r);
	say("sql: re-applied %zu file%s (%lld ms)", c->n_sql, c->n_sql == 1 ? "" : "s",
	    (long long)clock_mono_ms() - t0);
	return 0;
}

/* Prints the connection target without any password: user@host:port/dbname. */
static void print_target(const struct pg_sync *conn)
{
	char target[512];
	pg_sync_target(conn, target, sizeof target);
	say("database: %s", target);
}

static void print_dirs(const struct migrate_ctx *c)
{
	say("migrations: %s (%s, %zu file%s)", c->mig_dir, c->mig_how, c->mig.n, c->mig.n == 1 ? "" : "s");
	if (c->have_sql_dir)
		say("sql: %s (%s, %zu file%s)", c->sql_dir, c->sql_how, c->n_sql, c->n_sql == 1 ? "" : "s");
	else
		say("sql: none (no sql directory found)");
}

/* --status: applied rows with their file state, then pending files. Changes nothing. */
static int run_status(struct migrate_ctx *c)
{
	print_target(c->conn);
	print_dirs(c);
	say("applied:%s", pg_ntuples(c->applied) ? "" : " none");
	for (int i = 0; i < pg_ntuples(c->applied); i++) {
		int v = atoi(pg_value(c->applied, i, 0));
		long f = find_file(c, v);
		const char *recorded = pg_value(c->applied, i, 2);
		if (f < 0)
			say("  %04d_%-30s %s  missing (no file; an older release?)", v, pg_value(c->applied, i, 1),
			    pg_value(c->applied, i, 3));
		else if (strcmp(recorded, c->mig_files[f].checksum) == 0)
			say("  %04d_%-30s %s  ok", v, pg_value(c->applied, i, 1), pg_value(c->applied, i, 3));
		else
			say("  %04d_%-30s %s  CHANGED (%s: sha256 %.12s..., recorded %.12s...)", v,
			    pg_value(c->applied, i, 1), pg_value(c->applied, i, 3), c->mig.files[f].filename,
			    c->mig_files[f].checksum, recorded);
	}
	size_t pending = 0;
	for (size_t i = 0; i < c->mig.n; i++)
		pending += find_applied(c, c->mig.files[i].version) < 0;
	say("pending:%s", pending ? "" : " none");
	for (size_t i = 0; i < c->mig.n; i++)
		if (find_applied(c, c->mig.files[i].version) < 0)
			say("  %s", c->mig.files[i].filename);
	return EXIT_OK;
}

/* --dry-run: what a real run would do, after the same checksum verification. */
static int run_dry(struct migrate_ctx *c)
{
	print_target(c->conn);
	print_dirs(c);
	if (verify_applied(c, 0) > 0)
		return EXIT_RUNTIME;
	size_t pending = 0;
	for (size_t i = 0; i < c->mig.n; i++) {
		if (find_applied(c, c->mig.files[i].version) < 0) {
			say("would apply %s", c->mig.files[i].filename);
			pending++;
		}
	}
	if (!pending)
		say("nothing to apply");
	for (size_t i = 0; i < c->n_sql; i++)
		say("would re-apply sql/%s", c->sql_files[i].filename);
	say("dry run: nothing was changed");
	return EXIT_OK;
}

/* The real run: verify every applied checksum, apply pending in order, re-apply sql/. */
static int run_apply(struct migrate_ctx *c)
{
	if (verify_applied(c, 0) > 0) {
		err("refusing to migrate: nothing was applied");
		return EXIT_RUNTIME;
	}
	size_t applied = 0;
	int n_rows = pg_ntuples(c->applied);
	int newest = n_rows ? atoi(pg_value(c->applied, n_rows - 1, 0)) : -1;
	for (size_t i = 0; i < c->mig.n; i++) {
		if (find_applied(c, c->mig.files[i].version) >= 0)
			continue;
		if (c->mig.files[i].version < newest)
			warn("applying %s out of order: version %d is already applied", c->mig.files[i].filename,
			     newest);
		if (apply_one(c, i) < 0) {
			err("stopped at %s (rolled back); %zu earlier migration%s of this run stay%s applied",
			    c->mig.files[i].filename, applied, applied == 1 ? "" : "s", applied == 1 ? "s" : "");
			return EXIT_RUNTIME;
		}
		applied++;
	}
	if (!applied)
		say("nothing to apply");
	return apply_sql(c) < 0 ? EXIT_RUNTIME : EXIT_OK;
}

static void ctx_free(struct migrate_ctx *c)
{
	if (c->mig_files)
		for (size_t i = 0; i < c->mig.n; i++)
			buf_free(&c->mig_files[i].text);
	free(c->mig_files);
	for (size_t i = 0; i < c->n_sql; i++) {
		free(c->sql_files[i].filename);
		buf_free(&c->sql_files[i].text);
	}
	free(c->sql_files);
	migrate_list_free(&c->mig);
	pg_sync_free_result(c->applied);
	pg_sync_close(c->conn);
}

/* Everything after option parsing; returns the exit code. */
static int migrate_run(struct migrate_ctx *c)
{
	char errbuf[PATH_MAX + 256];
	int r;

	r = resolve_dir(c->o.migrations_dir, "--migrations", "OUTBOXD_MIGRATIONS_DIR", "migrations", NULL, c->mig_dir,
			sizeof c->mig_dir, &c->mig_how);
	if (r == 1) {
		err("no migrations directory found; pass --migrations DIR or set OUTBOXD_MIGRATIONS_DIR");
		return EXIT_USAGE;
	}
	if (r != 0)
		return r;
	int explicit_mig = c->o.migrations_dir || env_nonempty("OUTBOXD_MIGRATIONS_DIR");
	r = resolve_dir(c->o.sql_dir, "--sql", "OUTBOXD_SQL_DIR", "sql", explicit_mig ? c->mig_dir : NULL, c->sql_dir,
			sizeof c->sql_dir, &c->sql_how);
	if (r == EXIT_USAGE)
		return r;
	c->have_sql_dir = r == 0;

	if (migrate_list_dir(c->mig_dir, &c->mig, errbuf, sizeof errbuf) < 0) {
		err("%s", errbuf);
		return EXIT_RUNTIME;
	}
	if (load_migrations(c) < 0 || (c->have_sql_dir && load_sql_dir(c) < 0))
		return EXIT_RUNTIME;

	if (db_connect(c) < 0 || db_configure(c) < 0)
		return EXIT_RUNTIME;
	int writing = !c->o.status && !c->o.dry_run;
	if (writing && db_lock(c) < 0)
		return EXIT_RUNTIME;
	int exists = db_bookkeeping(c, writing);
	if (exists < 0 || db_load_applied(c, exists) < 0)
		return EXIT_RUNTIME;
	for (size_t i = 0; i < c->mig.n; i++)
		if (db_checksum(c->conn, c->mig.files[i].filename, &c->mig_files[i]) < 0)
			return EXIT_RUNTIME;

	if (c->o.status)
		return run_status(c);
	if (c->o.dry_run)
		return run_dry(c);
	return run_apply(c);
}

int migrate_main(int argc, char **argv)
{
	struct migrate_ctx c;
	memset(&c, 0, sizeof c);

	int r = parse_args(argc, argv, &c.o);
	if (r >= 0)
		return r;
	r = migrate_run(&c);
	ctx_free(&c);
	return r;
}
