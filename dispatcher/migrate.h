/* migrate: the `outboxd migrate` command. Applies migrations/NNNN_name.sql once each, in
 * order, under an advisory lock, records them in outbox.schema_migrations with a sha256
 * checksum, then re-applies every the sql/ files in one transaction. */
#ifndef OUTBOXD_MIGRATE_H
#define OUTBOXD_MIGRATE_H

#include <stddef.h>

/*
 * Key of the session advisory lock (pg_advisory_lock(bigint)) that serialises concurrent
 * `outboxd migrate` runs against one database: the ASCII bytes of "outboxmg". Other
 * advisory locks taken by outboxd must use different keys. The lock is session-scoped, so
 * migrate needs a direct or session-pooled connection, never transaction pooling.
 */
#define MIGRATE_LOCK_KEY 0x6f7574626f786d67LL

/* Default lock_timeout for the migration session, in seconds (--lock-timeout). */
#define MIGRATE_DEFAULT_LOCK_TIMEOUT 10.0
/* Default bound on waiting for another migrate run to release the lock (--wait-timeout). */
#define MIGRATE_DEFAULT_WAIT_TIMEOUT 900.0

/* One migration file found on disk. */
struct migrate_file {
	int version;    /* NNNN as a number */
	char *name;     /* the part between "NNNN_" and ".sql" */
	char *filename; /* the directory entry, e.g. "0001_init.sql" */
};

/* A directory listing of migration files, sorted by version. Owned by the caller:
 * release with migrate_list_free(). */
struct migrate_list {
	struct migrate_file *files;
	size_t n;
};

/*
 * Entry point of `outboxd migrate`: argv[0] is "migrate", the rest are its options.
 * Returns the process exit code: 0 ok, 1 runtime failure, 2 usage error.
 */
int migrate_main(int argc, char **argv);

/*
 * Parses a migration file name "NNNN_name.sql" (at least four digits, an underscore,
 * a non-empty name, ".sql"). On a match stores the version and, when name_out is not
 * NULL, a malloc'ed copy of the name (caller frees) and returns 1. Returns 0 when the
 * name does not have that shape, -1 when the version does not fit in an int or on OOM.
 */
int migrate_parse_filename(const char *filename, int *version, char **name_out);

/*
 * Lists the migration files of dir, sorted by version. Other entries are skipped
 * (a *.sql whose name does not fit is reported on stderr as ignored). Returns 0, or -1
 * with a one-line reason in errbuf (unreadable directory, duplicate version, version out
 * of range, a migration's name on a FIFO, a device or a dangling symlink). On success the caller owns *out and frees it with migrate_list_free().
 */
int migrate_list_dir(const char *dir, struct migrate_list *out, char *errbuf, size_t errlen);

/* Frees what migrate_list_dir() allocated and empties the list. Safe to call twice. */
void migrate_list_free(struct migrate_list *list);

/*
 * Finds a data directory `sub` ("migrations" or "sql") relative to the executable at
 * exe_path: <exe dir>/../share/outboxd/<sub> (an installed tree), then <exe dir>/../<sub>
 * (the source tree, binary in build/), then OUTBOXD_DATADIR/<sub>. Writes the first
 * existing directory (canonical) to out and returns which rule found it (0, 1 or 2);
 * returns -1 when none exists or out is too small.
 */
int migrate_default_dir(const char *exe_path, const char *sub, char *out, size_t outlen);

/*
 * Converts a server error position (1-based, counted in characters of the UTF-8 text)
 * into a 1-based line and column. Returns 0, or -1 when pos is outside the text.
 */
int migrate_position_to_line(const char *text, size_t len, long pos, int *line, int *col);

#endif
