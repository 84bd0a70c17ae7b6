/* Unit tests for the configuration module: defaults, file and environment layers, the
 * strict parsers, every bad fixture under tests/unit/fixtures/config/, secret handling,
 * and the example file and docs staying in step with the key table. Run from the repo root. */
#include "config.h"
#include "testutil.h"

#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

#define FIXTURES "tests/unit/fixtures/config"

extern char **environ;

/* Removes every OUTBOXD_* variable so the host environment cannot leak into a test. */
static void env_clear(void)
{
	for (;;) {
		char name[256];
		int found = 0;

		for (char **e = environ; *e; e++) {
			if (strncmp(*e, "OUTBOXD_", 8) == 0) {
				const char *eq = strchr(*e, '=');
				size_t n = eq ? (size_t)(eq - *e) : strlen(*e);

				if (n < sizeof(name)) {
					memcpy(name, *e, n);
					name[n] = '\0';
					found = 1;
					break;
				}
			}
		}
		if (!found)
			return;
		unsetenv(name);
	}
}

/* Loads `path` into cfg; returns the error count and the error text (caller frees). */
static int load_path(struct config *cfg, const char *path, char **errs)
{
	size_t len;
	FILE *f = open_memstream(errs, &len);
	int n = config_load(cfg, path, f);

	fclose(f);
	return n;
}

/* Writes yaml to a temporary file, loads it, removes the file. */
static int load_text(struct config *cfg, const char *yaml, char **errs)
{
	char path[] = "/tmp/outboxd-test-config-XXXXXX";
	int fd = mkstemp(path), n;
	FILE *f = fdopen(fd, "w");

	fputs(yaml, f);
	fclose(f);
	n = load_path(cfg, path, errs);
	unlink(path);
	return n;
}

/* Whether some line of errs starts with the key path followed by ':' or ' ('. */
static int names_key(const char *errs, const char *key)
{
	size_t n = strlen(key);

	for (const char *line = errs; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
		if (strncmp(line, key, n) == 0 && (line[n] == ':' || line[n] == ' '))
			return 1;
	return 0;
}

/* Expects exactly `want` errors (any count when want < 0) naming `key`. */
static void expect_bad(const char *yaml, const char *key, int want)
{
	struct config cfg;
	char *errs = NULL;
	int n = load_text(&cfg, yaml, &errs);

	CHECK(n > 0 && (want < 0 || n == want), "%s: %d errors: %s", key, n, errs);
	CHECK(names_key(errs, key), "no error names %s in:\n%s", key, errs);
	free(errs);
	config_free(&cfg);
}

static void expect_env_bad(const char *var, const char *value, const char *key)
{
	struct config cfg;
	char *errs = NULL, want[256];
	int n;

	setenv(var, value, 1);
	n = load_path(&cfg, NULL, &errs);
	snprintf(want, sizeof(want), "%s (%s): ", key, var);
	CHECK(n == 1, "%s=%s: %d errors: %s", var, value, n, errs);
	CHECK(strstr(errs, want) != NULL, "want \"%s\" in: %s", want, errs);
	unsetenv(var);
	free(errs);
	config_free(&cfg);
}

static void test_defaults(void)
{
	struct config cfg;
	char *errs = NULL;
	int n = load_path(&cfg, NULL, &errs);

	CHECK_INT(n, 0);
	CHECK_STR(errs, "");
	CHECK_STR(cfg.database_url, "");
	CHECK_INT(cfg.database_connect_timeout_ms, 5000);
	CHECK_INT(cfg.database_statement_timeout_ms, 30000);
	CHECK_STR(cfg.owner, "");
	CHECK_INT(cfg.batch_size, 100);
	CHECK_INT(cfg.max_in_flight, 200);
	CHECK_INT(cfg.lease_ms, 300000);
	CHECK_INT(cfg.poll_interval_ms, 1000);
	CHECK_INT(cfg.drain_timeout_ms, 20000);
	CHECK_INT(cfg.retry_base_ms, 5000);
	CHECK_INT(cfg.retry_cap_ms, 3600000);
	CHECK_INT(cfg.reconnect_max_ms, 1000);
	CHECK_STR(cfg.smtp_url, "smtp://127.0.0.1:25");
	CHECK_INT(cfg.smtp_tls, SMTP_TLS_REQUIRED);
	CHECK_STR(cfg.smtp_from, "");
	CHECK_STR(cfg.smtp_password, "");
	CHECK_INT(cfg.smtp_pool_size, 4);
	CHECK_INT(cfg.smtp_connect_timeout_ms, 10000);
	CHECK_INT(cfg.smtp_timeout_ms, 600000);
	CHECK(cfg.smtp_rate_limit == 0.0, "rate_limit %g", cfg.smtp_rate_limit);
	CHECK_INT(cfg.smtp_breaker_threshold, 5);
	CHECK_INT(cfg.smtp_breaker_open_ms, 30000);
	CHECK_STR(cfg.kafka_brokers, "");
	CHECK_STR(cfg.kafka_topic_prefix, "outbox.event.");
	CHECK_STR(cfg.kafka_compression, "lz4");
	CHECK_INT(cfg.kafka_message_timeout_ms, 0);
	CHECK_INT(cfg.kafka_batch_size, 500);
	CHECK_STR(cfg.kafka_security_protocol, "plaintext");
	CHECK_STR(cfg.kafka_sasl_mechanism, "");
	CHECK_INT(cfg.lifecycle_events, 1);
	CHECK_STR(cfg.http_listen, "127.0.0.1:9187");
	CHECK_STR(cfg.log_level, "info");
	CHECK_INT(cfg.status_max_oldest_pending_ms, 300000);
	CHECK_INT(cfg.status_max_failed_last_hour, 100);
	CHECK_INT(cfg.status_max_mirror_lag_ms, 300000);
	free(errs);
	config_free(&cfg);
	CHECK(cfg.smtp_url == NULL, "config_free zeroes the struct");
}

static void test_file_env_precedence(void)
{
	struct config cfg;
	char *errs = NULL;
	int n;

	n = load_text(&cfg,
		      "dispatcher:\n  batch_size: 7\n  poll_interval: 250ms\n"
		      "smtp:\n  url: smtps://file.example:465\n  pool_size: 9\n  rate_limit: 2.5\n"
		      "  breaker: {failures: 3}\n"
		      "kafka:\n  lifecycle_events: false\n",
		      &errs);
	CHECK_INT(n, 0);
	CHECK_INT(cfg.batch_size, 7);
	CHECK_INT(cfg.poll_interval_ms, 250);
	CHECK_STR(cfg.smtp_url, "smtps://file.example:465");
	CHECK_INT(cfg.smtp_pool_size, 9);
	CHECK(cfg.smtp_rate_limit == 2.5, "rate %g", cfg.smtp_rate_limit);
	CHECK_INT(cfg.smtp_breaker_threshold, 3);
	CHECK_INT(cfg.lifecycle_events, 0);
	CHECK_INT(cfg.max_in_flight, 200); /* untouched key keeps its default */
	free(errs);
	config_free(&cfg);

	/* env beats file beats default; the DESIGN.md names work */
	setenv("OUTBOXD_SMTP_URL", "smtp://env.example:2525", 1);
	setenv("OUTBOXD_SMTP_TLS", "opportunistic", 1);
	setenv("OUTBOXD_SMTP_FROM", "noreply@env.example", 1);
	setenv("OUTBOXD_DATABASE_URL", "postgresql://127.0.0.1/app", 1);
	setenv("OUTBOXD_KAFKA_BROKERS", "127.0.0.1:9092", 1);
	setenv("OUTBOXD_HTTP_LISTEN", "", 1);
	setenv("OUTBOXD_SMTP_BREAKER_FAILURES", "4", 1);
	setenv("OUTBOXD_LOG_LEVEL", "WARNING", 1);
	n = load_text(&cfg, "smtp:\n  url: smtps://file.example:465\n  pool_size: 9\n", &errs);
	CHECK_INT(n, 0);
	CHECK_STR(cfg.smtp_url, "smtp://env.example:2525");
	CHECK_INT(cfg.smtp_tls, SMTP_TLS_OPPORTUNISTIC);
	CHECK_STR(cfg.smtp_from, "noreply@env.example");
	CHECK_STR(cfg.database_url, "postgresql://127.0.0.1/app");
	CHECK_STR(cfg.kafka_brokers, "127.0.0.1:9092");
	CHECK_STR(cfg.http_listen, "");
	CHECK_INT(cfg.smtp_breaker_threshold, 4);
	CHECK_STR(cfg.log_level, "warn"); /* aliases are normalised */
	CHECK_INT(cfg.smtp_pool_size, 9);
	free(errs);
	config_free(&cfg);
	env_clear();
}

static void test_values(void)
{
	struct config cfg;
	char *errs = NULL;
	int n;

	setenv("OUTBOXD_DISPATCHER_DRAIN_TIMEOUT", "0", 1);
	setenv("OUTBOXD_DISPATCHER_LEASE", "1h", 1);
	setenv("OUTBOXD_DISPATCHER_POLL_INTERVAL", "10ms", 1);
	setenv("OUTBOXD_SMTP_RATE_LIMIT", "1e3", 1);
	setenv("OUTBOXD_STATUS_MAX_FAILED_LAST_HOUR", "0", 1);
	setenv("OUTBOXD_HTTP_LISTEN", "[::1]:9187", 1);
	n = load_path(&cfg, NULL, &errs);
	CHECK_INT(n, 0);
	CHECK_INT(cfg.drain_timeout_ms, 0);
	CHECK_INT(cfg.lease_ms, 3600000);
	CHECK_INT(cfg.poll_interval_ms, 10);
	CHECK(cfg.smtp_rate_limit == 1000.0, "rate %g", cfg.smtp_rate_limit);
	CHECK_INT(cfg.status_max_failed_last_hour, 0);
	CHECK_STR(cfg.http_listen, "[::1]:9187");
	free(errs);
	config_free(&cfg);
	env_clear();
}

static void test_bad_inline(void)
{
	/* the brief's list, each naming its key */
	expect_bad("dispatcher:\n  batch_size: 2.5\n", "dispatcher.batch_size", 1);
	expect_bad("dispatcher:\n  batch_size: 10ms\n", "dispatcher.batch_size", 1);
	expect_bad("dispatcher:\n  batch_size: \"010\"\n", "dispatcher.batch_size", 1);
	expect_bad("dispatcher:\n  batch_size: 0x10\n", "dispatcher.batch_size", 1);
	expect_bad("dispatcher:\n  batch_size: -5\n", "dispatcher.batch_size", 1);
	expect_bad("dispatcher:\n  batch_size: +5\n", "dispatcher.batch_size", 1);
	expect_bad("dispatcher:\n  batch_size: 99999999999999999999999\n", "dispatcher.batch_size", 1);
	expect_bad("dispatcher:\n  lease: 10\n", "dispatcher.lease", 1);
	expect_bad("dispatcher:\n  lease: 10 s\n", "dispatcher.lease", 1);
	expect_bad("dispatcher:\n  lease: 25h\n", "dispatcher.lease", 1);
	expect_bad("dispatcher:\n  lease: 1h30m\n", "dispatcher.lease", 1);
	expect_bad("dispatcher:\n  lease: 9999999999999999999h\n", "dispatcher.lease", 1);
	expect_bad("kafka:\n  lifecycle_events: maybe\n", "kafka.lifecycle_events", 1);
	expect_bad("kafka:\n  lifecycle_events:\n", "kafka.lifecycle_events", 1);
	expect_bad("kafka:\n  lifecycle_events: 1\n", "kafka.lifecycle_events", 1);
	expect_bad("bogus: 1\n", "bogus", 1);
	expect_bad("smtp:\n  breaker:\n    failure: 3\n", "smtp.breaker.failure", 1);
	expect_bad("smtp:\n  pool_size: 257\n", "smtp.pool_size", 1);
	expect_bad("smtp:\n  tls: TLS\n", "smtp.tls", 1);
	expect_bad("smtp:\n  url: smtp.example:25\n", "smtp.url", 1);
	expect_bad("smtp:\n  url: smtp://relay:0\n", "smtp.url", 1);
	expect_bad("smtp:\n  url: smtp://:25\n", "smtp.url", 1);
	expect_bad("http:\n  listen: \":9187\"\n", "http.listen", 1);
	expect_bad("http:\n  listen: \"::1:9187\"\n", "http.listen", 1);
	expect_bad("smtp:\n  username: u\n  password_file: /nonexistent/secret\n", "smtp.password_file", 1);
	expect_bad("smtp:\n  username: u\n  password: p\n  password_file: " FIXTURES "/secret.txt\n",
		   "smtp.password_file", 1);
	expect_bad("smtp:\n\tpool_size: 2\n", "smtp", 1);
	expect_bad("smtp:\n  pool_size: 2\n  pool_size: 3\n", "smtp.pool_size", 1);
	expect_bad("smtp: 25\n", "smtp", 1);
	expect_bad("smtp:\n  breaker: 5\n", "smtp.breaker", 1);
	expect_bad("smtp:\n  rate_limit: nan\n", "smtp.rate_limit", 1);
	expect_bad("smtp:\n  rate_limit: 0x1p3\n", "smtp.rate_limit", 1);
	expect_bad("smtp:\n  from: nobody\n", "smtp.from", 1);
	expect_bad("smtp:\n  from: \"Ops <ops@[192.0.2.1]>\"\n", "smtp.from", 1); /* the address grammar */
	expect_bad("kafka:\n  brokers: \"a:9092,,b:9092\"\n", "kafka.brokers", 1);
	expect_bad("kafka:\n  sasl_mechanism: PLAIN\n", "kafka.sasl_mechanism", 1);
	expect_bad("kafka:\n  security_protocol: SSL\n", "kafka.security_protocol", 1);
	expect_bad("log:\n  level: \"\"\n", "log.level", 1);
	/* a document that is not a mapping names the file */
	{
		struct config cfg;
		char *errs = NULL;
		int n = load_text(&cfg, "- a\n- b\n", &errs);

		CHECK(n == 1 && strncmp(errs, "/tmp/outboxd-test-config-", 25) == 0 &&
			      strstr(errs, "must be a mapping"),
		      "%d: %s", n, errs);
		free(errs);
		config_free(&cfg);
	}
	/* every bad value is reported, not only the first */
	{
		struct config cfg;
		char *errs = NULL;
		int n = load_text(&cfg,
				  "dispatcher: {batch_size: 2.5, lease: 10, poll_interval: \"010\"}\n"
				  "smtp: {tls: strict, url: http://x}\nkafka: {lifecycle_events: maybe}\n",
				  &errs);

		CHECK_INT(n, 6);
		free(errs);
		config_free(&cfg);
	}
}

static void test_bad_env(void)
{
	expect_env_bad("OUTBOXD_SMTP_POOL_SIZE", "abc", "smtp.pool_size");
	expect_env_bad("OUTBOXD_SMTP_POOL_SIZE", "", "smtp.pool_size");
	expect_env_bad("OUTBOXD_DISPATCHER_LEASE", "300", "dispatcher.lease");
	expect_env_bad("OUTBOXD_SMTP_TLS", "yes", "smtp.tls");
	expect_env_bad("OUTBOXD_KAFKA_LIFECYCLE_EVENTS", "on", "kafka.lifecycle_events");
	expect_env_bad("OUTBOXD_HTTP_LISTEN", "0.0.0.0", "http.listen");
	expect_env_bad("OUTBOXD_SMTP_URL", "smtp://relay\n:25", "smtp.url");
	expect_env_bad("OUTBOXD_SMTP_PASSWORD_FILE", "/nonexistent/x", "smtp.password_file");
	env_clear();
}

/* Every bad_*.yaml fixture starts with "# expect: key.path". */
static void test_fixtures(void)
{
	DIR *d = opendir(FIXTURES);
	struct dirent *de;
	int bad = 0, good = 0;

	CHECK(d != NULL, "cannot open %s (run from the repo root)", FIXTURES);
	if (!d)
		return;
	while ((de = readdir(d))) {
		char path[512], line[256] = "", *errs = NULL;
		struct config cfg;
		FILE *f;
		int n;

		if (strncmp(de->d_name, "bad_", 4) != 0 && strncmp(de->d_name, "good_", 5) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", FIXTURES, de->d_name);
		f = fopen(path, "r");
		if (!f || !fgets(line, sizeof(line), f))
			line[0] = '\0';
		if (f)
			fclose(f);
		line[strcspn(line, "\n")] = '\0';
		n = load_path(&cfg, path, &errs);
		if (de->d_name[0] == 'g') {
			good++;
			CHECK(n == 0, "%s: %s", de->d_name, errs);
		} else {
			bad++;
			CHECK(strncmp(line, "# expect: ", 10) == 0, "%s lacks '# expect: key'", de->d_name);
			CHECK(n > 0 && names_key(errs, line + 10), "%s: want an error naming %s, got %d:\n%s",
			      de->d_name, line + 10, n, errs);
		}
		free(errs);
		config_free(&cfg);
	}
	closedir(d);
	CHECK(bad >= 20, "only %d bad fixtures", bad);
	CHECK(good >= 2, "only %d good fixtures", good);
}

static char *capture_print(const struct config *cfg)
{
	char *out = NULL;
	size_t len;
	FILE *f = open_memstream(&out, &len);

	config_print(cfg, f);
	fclose(f);
	return out;
}

static void test_secrets(void)
{
	struct config cfg;
	char *errs = NULL, *out;
	int n;

	n = load_path(&cfg, FIXTURES "/good_secret.yaml", &errs);
	CHECK_INT(n, 0);
	CHECK_STR(cfg.smtp_password, "Smtp-Secret-4d8e");
	CHECK_STR(cfg.kafka_sasl_password, "not-the-real-password-7f3a"); /* newline dropped */
	out = capture_print(&cfg);
	CHECK(strstr(out, "Smtp-Secret-4d8e") == NULL, "smtp password printed:\n%s", out);
	CHECK(strstr(out, "not-the-real-password") == NULL, "sasl password printed:\n%s", out);
	CHECK(strstr(out, "Db-Secret-91c2") == NULL, "database password printed:\n%s", out);
	CHECK(strstr(out, "  password: \"********\"\n") != NULL, "mask missing:\n%s", out);
	CHECK(strstr(out, "postgresql://outboxd:********@127.0.0.1") != NULL, "url mask:\n%s", out);
	free(out);
	free(errs);
	config_free(&cfg);

	/* conninfo form, and an env secret error never echoes the value */
	setenv("OUTBOXD_DATABASE_URL", "host=db password='a b' user=x", 1);
	setenv("OUTBOXD_SMTP_PASSWORD", "Env\tSecret", 1);
	n = load_path(&cfg, NULL, &errs);
	CHECK(n >= 1 && strstr(errs, "Secret") == NULL, "%d: %s", n, errs);
	out = capture_print(&cfg);
	CHECK(strstr(out, "host=db password=******** user=x") != NULL, "%s", out);
	free(out);
	free(errs);
	config_free(&cfg);
	env_clear();
	setenv("OUTBOXD_DATABASE_URL", "postgres://u:p@ss@h/db?sslmode=require&password=q", 1);
	n = load_path(&cfg, NULL, &errs);
	CHECK_INT(n, 0);
	out = capture_print(&cfg);
	CHECK(strstr(out, "\"postgres://u:********@h/db?sslmode=require&password=********\"") != NULL, "%s", out);
	free(out);
	free(errs);
	config_free(&cfg);
	env_clear();

	/* the higher layer wins between a secret and its file */
	setenv("OUTBOXD_SMTP_PASSWORD", "from-env", 1);
	n = load_text(&cfg, "smtp:\n  username: u\n  password_file: " FIXTURES "/secret.txt\n", &errs);
	CHECK_INT(n, 0);
	CHECK_STR(cfg.smtp_password, "from-env");
	free(errs);
	config_free(&cfg);
	env_clear();
	setenv("OUTBOXD_SMTP_PASSWORD_FILE", FIXTURES "/secret.txt", 1);
	n = load_text(&cfg, "smtp:\n  username: u\n  password: from-file\n", &errs);
	CHECK_INT(n, 0);
	CHECK_STR(cfg.smtp_password, "not-the-real-password-7f3a");
	free(errs);
	config_free(&cfg);
	env_clear();

	/* every trailing CR and LF goes, as docs/configuration.md says; inner text stays */
	{
		char path[] = "/tmp/outboxd-test-secret-XXXXXX";
		int fd = mkstemp(path);
		FILE *f = fdopen(fd, "w");

		fputs("token-with-two-newlines-8e1d\r\n\n", f);
		fclose(f);
		setenv("OUTBOXD_SMTP_PASSWORD_FILE", path, 1);
		n = load_text(&cfg, "smtp:\n  username: u\n", &errs);
		CHECK_INT(n, 0);
		CHECK_STR(cfg.smtp_password, "token-with-two-newlines-8e1d");
		free(errs);
		config_free(&cfg);
		env_clear();
		unlink(path);
	}
}

/* Printing then loading gives the same printout (sections contiguous, values re-parse). */
static void test_print_roundtrip(void)
{
	struct config a, b;
	char *errs = NULL, *pa, *pb, path[] = "/tmp/outboxd-test-print-XXXXXX";
	int n = load_path(&a, FIXTURES "/good_full.yaml", &errs), fd;
	FILE *f;

	CHECK_INT(n, 0);
	free(errs);
	pa = capture_print(&a);
	fd = mkstemp(path);
	f = fdopen(fd, "w");
	/* a masked secret cannot round-trip by design: drop it and keep its _file path */
	{
		const char *mask = "  password: \"********\"\n", *at = strstr(pa, mask);

		CHECK(at != NULL, "masked password missing");
		if (at) {
			fwrite(pa, 1, (size_t)(at - pa), f);
			fputs(at + strlen(mask), f);
		}
	}
	fclose(f);
	n = load_path(&b, path, &errs);
	unlink(path);
	CHECK_INT(n, 0);
	pb = capture_print(&b);
	CHECK(strcmp(pa, pb) == 0, "round trip differs:\n%s\n---\n%s", pa, pb);
	free(pa);
	free(pb);
	free(errs);
	config_free(&a);
	config_free(&b);
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = calloc(1, (size_t)n + 1);
	if (fread(buf, 1, (size_t)n, f) != (size_t)n)
		buf[0] = '\0';
	fclose(f);
	return buf;
}

static void test_generated_files(void)
{
	char *gen = NULL, *file, *docs = NULL, *md, *begin, *end;
	size_t len;
	FILE *f = open_memstream(&gen, &len);
	struct config ex, def;
	char *errs = NULL, *pe, *pd;

	CHECK_INT(config_print_example(f), 0);
	fclose(f);
	file = slurp("ops/outboxd.example.yaml");
	CHECK(file && strcmp(file, gen) == 0,
	      "ops/outboxd.example.yaml is out of date: outboxd check-config --example > ops/outboxd.example.yaml");
	free(file);
	free(gen);

	/* the example holds every key at its default */
	CHECK_INT(load_path(&ex, "ops/outboxd.example.yaml", &errs), 0);
	free(errs);
	CHECK_INT(load_path(&def, NULL, &errs), 0);
	free(errs);
	pe = capture_print(&ex);
	pd = capture_print(&def);
	CHECK(strcmp(pe, pd) == 0, "example differs from defaults");
	free(pe);
	free(pd);
	config_free(&ex);
	config_free(&def);

	f = open_memstream(&docs, &len);
	config_print_docs(f);
	fclose(f);
	md = slurp("docs/configuration.md");
	begin = md ? strstr(md, "<!-- BEGIN KEYS") : NULL;
	begin = begin ? strchr(begin, '\n') : NULL;
	end = begin ? strstr(begin, "<!-- END KEYS -->") : NULL;
	CHECK(end != NULL, "docs/configuration.md lacks the BEGIN/END KEYS markers");
	if (end) {
		begin++;
		CHECK((size_t)(end - begin) == strlen(docs) && strncmp(begin, docs, strlen(docs)) == 0,
		      "docs/configuration.md key table is out of date: regenerate with outboxd check-config --docs");
	}
	free(md);
	free(docs);
}

static void test_reloadable(void)
{
	CHECK_INT(config_key_reloadable("log.level"), 1);
	CHECK_INT(config_key_reloadable("smtp.rate_limit"), 1);
	CHECK_INT(config_key_reloadable("dispatcher.outcome_delay"), 1);
	CHECK_INT(config_key_reloadable("smtp.breaker.failures"), 1);
	CHECK_INT(config_key_reloadable("status.max_mirror_lag"), 1);
	CHECK_INT(config_key_reloadable("dispatcher.batch_size"), 1);
	CHECK_INT(config_key_reloadable("smtp.url"), 0);
	CHECK_INT(config_key_reloadable("database.url"), 0);
	CHECK_INT(config_key_reloadable("no.such.key"), 0);
}

struct seen_keys {
	char text[512];
};

static void note_key(void *arg, const char *path, int applied)
{
	struct seen_keys *s = arg;
	size_t n = strlen(s->text);

	snprintf(s->text + n, sizeof(s->text) - n, "%s%s=%s", n ? " " : "", path, applied ? "applied" : "restart");
}

/* Reload goes through the table: changed reloadable keys move into the running
 * configuration, the others are reported and left alone. */
static void test_reload_table(void)
{
	struct config run, fresh;
	struct seen_keys seen = { "" };
	char *errs = NULL;

	env_clear();
	CHECK_INT(load_text(&run, "log:\n  level: info\nsmtp:\n  pool_size: 4\n  rate_limit: 10\n", &errs), 0);
	free(errs);
	errs = NULL;
	CHECK_INT(load_text(&fresh,
			    "log:\n  level: debug\nsmtp:\n  pool_size: 8\n  rate_limit: 10\n  from: a@x.org\n"
			    "dispatcher:\n  poll_interval: 250ms\n",
			    &errs),
		  0);
	free(errs);
	CHECK_INT(config_reload(&run, &fresh, note_key, &seen), 4);
	CHECK_STR(seen.text,
		  "dispatcher.poll_interval=applied smtp.from=restart smtp.pool_size=restart log.level=applied");
	CHECK_STR(run.log_level, "debug");
	CHECK_STR(fresh.log_level, "info"); /* the old value, freed with fresh */
	CHECK_INT(run.poll_interval_ms, 250);
	CHECK_INT(run.smtp_pool_size, 4);
	CHECK(run.smtp_from == NULL || run.smtp_from[0] == '\0', "smtp.from kept");
	CHECK(run.smtp_rate_limit == 10, "rate limit unchanged");
	seen.text[0] = '\0';
	CHECK_INT(config_reload(&run, &run, note_key, &seen), 0);
	CHECK_STR(seen.text, "");
	config_free(&run);
	config_free(&fresh);
}

static void test_check_main(void)
{
	char *ok[] = { "check-config", "--config", FIXTURES "/good_empty.yaml", NULL };
	char *bad[] = { "check-config", "--config", FIXTURES "/bad_int_float.yaml", NULL };
	char *missing[] = { "check-config", "--config", "/nonexistent/outboxd.yaml", NULL };
	char *usage[] = { "check-config", "--frobnicate", NULL };
	char *noarg[] = { "check-config", "--config", NULL };
	FILE *saved = stderr;

	/* keep the expected error lines out of the test log */
	stderr = fopen("/dev/null", "w");
	/* check-config refuses a configuration without a database URL */
	CHECK_INT(config_check_main(3, ok), 2);
	setenv("OUTBOXD_DATABASE_URL", "postgresql://127.0.0.1/app", 1);
	CHECK_INT(config_check_main(3, ok), 0);
	unsetenv("OUTBOXD_DATABASE_URL");
	CHECK_INT(config_check_main(3, bad), 2);
	CHECK_INT(config_check_main(3, missing), 2);
	CHECK_INT(config_check_main(2, usage), 2);
	CHECK_INT(config_check_main(2, noarg), 2);
	fclose(stderr);
	stderr = saved;
}

int main(void)
{
	env_clear();
	test_defaults();
	test_file_env_precedence();
	test_values();
	test_bad_inline();
	test_bad_env();
	test_fixtures();
	test_secrets();
	test_print_roundtrip();
	test_generated_files();
	test_reloadable();
	test_reload_table();
	test_check_main();
	return test_summary("config");
}
