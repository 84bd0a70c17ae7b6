/* Configuration: the one table of every key, the strict value parsers, the YAML loader
 * (libcyaml reads every scalar as text; this file does all typing and validation), the
 * OUTBOXD_* environment overlay, secret files, check-config and the generated docs. */
#include "config.h"
#include "address.h"
#include "file.h"
#include "hostport.h"
#include "log.h"

#include <arpa/inet.h>
#include <cyaml/cyaml.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum key_type {
	KT_STRING,      /* free text, no control characters */
	KT_SECRET,      /* like KT_STRING, never printed or echoed in errors */
	KT_SECRET_FILE, /* path whose content becomes the secret at `target` */
	KT_INT,         /* int field */
	KT_INT64,       /* int64_t field */
	KT_BOOL,        /* int field, true/false only */
	KT_DURATION,    /* int64_t milliseconds, "<n><ms|s|m|h|d>" */
	KT_DOUBLE,      /* double field, finite */
	KT_ENUM,        /* int field holding the index into `choices` */
	KT_CHOICE,      /* string field holding one of `choices` */
};

/* key flags */
#define KF_RELOAD 1u   /* may change on SIGHUP without a restart */
#define KF_MASK_URL 2u /* may embed a password (URL user:pass@ or password=): mask on print */

typedef int (*key_check_fn)(const char *value, char *msg, size_t msglen);

struct config_key {
	const char *path; /* YAML path, dotted */
	enum key_type type;
	size_t offset;              /* into struct config */
	const char *def;            /* default, as text, parsed like any other value */
	int64_t min, max;           /* numeric bounds (ms for durations, bytes for sizes) */
	const char *const *choices; /* KT_ENUM / KT_CHOICE, NULL-terminated */
	key_check_fn check;         /* extra validation of the text (after typing) */
	size_t target;              /* KT_SECRET_FILE: offset of the secret it fills */
	unsigned flags;
	const char *doc; /* one line */
};

/* offsetof() that refuses to compile when the field's C type does not match the key
 * type the table claims, so a table row can never write the wrong width. */
#define FIELD(f, T)                                                                                                    \
	(offsetof(struct config, f) +                                                                                  \
	 0 * sizeof(char[1 - 2 * !__builtin_types_compatible_p(__typeof__(((struct config *)0)->f), T)]))
#define F_STR(f) FIELD(f, char *)
#define F_INT(f) FIELD(f, int)
#define F_I64(f) FIELD(f, int64_t)
#define F_DBL(f) FIELD(f, double)
/* enums are stored through an int: same size required */
#define F_ENUM(f)                                                                                                      \
	(offsetof(struct config, f) + 0 * sizeof(char[1 - 2 * (sizeof(((struct config *)0)->f) != sizeof(int))]))

#define MS(x) ((int64_t)(x))
#define SEC(x) ((int64_t)(x)*1000)
#define MIN(x) ((int64_t)(x)*60000)
#define HOUR(x) ((int64_t)(x)*3600000)
#define DAY(x) ((int64_t)(x)*86400000)

static const char *const tls_modes[] = { "required", "opportunistic", "none", NULL };
static const char *const smtp_engines[] = { "native", "libcurl", NULL };
static const char *const compressions[] = { "none", "gzip", "snappy", "lz4", "zstd", NULL };
static const char *const security_protocols[] = { "plaintext", "ssl", "sasl_plaintext", "sasl_ssl", NULL };
static const char *const sasl_mechanisms[] = { "", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", NULL };
static const char *const log_levels[] = { "debug", "info", "warn", "error", NULL };

static char *mask_credentials(const char *s);
static int check_smtp_url(const char *v, char *msg, size_t msglen);
static int check_listen(const char *v, char *msg, size_t msglen);
static int check_log_level(const char *v, char *msg, size_t msglen);
static int check_address(const char *v, char *msg, size_t msglen);
static int check_brokers(const char *v, char *msg, size_t msglen);
static int check_topic_prefix(const char *v, char *msg, size_t msglen);
static int check_readable(const char *v, char *msg, size_t msglen);
static int check_readable_or_dir(const char *v, char *msg, size_t msglen);
static int check_no_space(const char *v, char *msg, size_t msglen);

/* The table is laid out by hand, one key per two lines, for reading. */
/* clang-format off */
/* Every key, grouped by section (the printers rely on each section being contiguous). */
static const struct config_key keys[] = {
	{ "database.url", KT_STRING, F_STR(database_url), "", 0, 0, NULL, NULL, 0, KF_MASK_URL,
	  "PostgreSQL connection URL or conninfo (required; postgresql:// alone takes libpq's PG* environment)" },
	{ "database.password", KT_SECRET, F_STR(database_password), "", 0, 0, NULL, NULL, 0, 0,
	  "password for database.url's user, over one in the URL (secret; prefer database.password_file)" },
	{ "database.password_file", KT_SECRET_FILE, F_STR(database_password_file), "", 0, 0, NULL, NULL,
	  F_STR(database_password), 0,
	  "file holding the database password (a mounted Secret); trailing CR/LF characters are dropped" },
	{ "database.connect_timeout", KT_DURATION, F_I64(database_connect_timeout_ms), "5s", SEC(1),
	  MIN(5), NULL, NULL, 0, 0, "give up one connection attempt after this long" },
	{ "database.statement_timeout", KT_DURATION, F_I64(database_statement_timeout_ms), "30s", 0,
	  HOUR(1), NULL, NULL, 0, 0, "statement_timeout for the dispatcher's sessions; 0 = none" },

	{ "dispatcher.owner", KT_STRING, F_STR(owner), "", 0, 0, NULL, check_no_space, 0, 0,
	  "lease owner id written on claimed rows; empty = host:pid:random at start-up" },
	{ "dispatcher.batch_size", KT_INT, F_INT(batch_size), "100", 1, 10000, NULL, NULL, 0,
	  KF_RELOAD, "messages claimed per round trip" },
	{ "dispatcher.max_in_flight", KT_INT, F_INT(max_in_flight), "200", 1, 100000, NULL, NULL, 0,
	  0, "claimed messages not yet completed; claiming pauses above this" },
	{ "dispatcher.lease", KT_DURATION, F_I64(lease_ms), "5m", SEC(1), HOUR(24), NULL, NULL, 0, 0,
	  "how long a claim stays ours; another dispatcher may take the row after it" },
	{ "dispatcher.poll_interval", KT_DURATION, F_I64(poll_interval_ms), "1s", MS(10), HOUR(1),
	  NULL, NULL, 0, KF_RELOAD, "safety-net poll when no notification arrives" },
	{ "dispatcher.outcome_delay", KT_DURATION, F_I64(outcome_delay_ms), "10ms", 0, SEC(1), NULL,
	  NULL, 0, KF_RELOAD, "with half a batch or more in flight, longest an outcome waits to be written with others; 0 = at once" },
	{ "dispatcher.drain_timeout", KT_DURATION, F_I64(drain_timeout_ms), "20s", 0, MIN(10), NULL,
	  NULL, 0, 0, "on SIGTERM, wait this long for in-flight work before releasing it" },
	{ "dispatcher.retry_base", KT_DURATION, F_I64(retry_base_ms), "5s", MS(10), HOUR(1), NULL,
	  NULL, 0, 0, "first retry delay; doubles per attempt with full jitter" },
	{ "dispatcher.retry_cap", KT_DURATION, F_I64(retry_cap_ms), "1h", MS(10), HOUR(168), NULL,
	  NULL, 0, 0, "longest retry delay" },
	{ "dispatcher.reconnect_max", KT_DURATION, F_I64(reconnect_max_ms), "1s", MS(10), MIN(1),
	  NULL, NULL, 0, 0, "cap of the database reconnect backoff" },

	{ "smtp.url", KT_STRING, F_STR(smtp_url), "smtp://127.0.0.1:25", 0, 0, NULL, check_smtp_url,
	  0, 0, "relay: smtp://host[:port] (STARTTLS per smtp.tls) or smtps://host[:port]" },
	{ "smtp.engine", KT_ENUM, F_ENUM(smtp_engine), "native", 0, 0, smtp_engines, NULL, 0, 0,
	  "SMTP client: native (pipelining, chunking, one transaction for all recipients) or libcurl (one transaction per recipient)" },
	{ "smtp.tls", KT_ENUM, F_ENUM(smtp_tls), "required", 0, 0, tls_modes, NULL, 0, 0,
	  "STARTTLS on smtp://: required, opportunistic (may be stripped) or none" },
	{ "smtp.from", KT_STRING, F_STR(smtp_from), "", 0, 0, NULL, check_address, 0, 0,
	  "sender for messages whose sender column is NULL" },
	{ "smtp.helo_name", KT_STRING, F_STR(smtp_helo), "", 0, 0, NULL, check_no_space, 0, 0,
	  "name sent in EHLO (and HELO); empty = the URL path if any, else localhost" },
	{ "smtp.username", KT_STRING, F_STR(smtp_username), "", 0, 0, NULL, NULL, 0, 0,
	  "AUTH user; empty = no AUTH" },
	{ "smtp.password", KT_SECRET, F_STR(smtp_password), "", 0, 0, NULL, NULL, 0, 0,
	  "AUTH password (secret; prefer smtp.password_file)" },
	{ "smtp.password_file", KT_SECRET_FILE, F_STR(smtp_password_file), "", 0, 0, NULL, NULL,
	  F_STR(smtp_password), 0, "file holding the AUTH password; trailing CR/LF characters are dropped" },
	{ "smtp.ca_file", KT_STRING, F_STR(smtp_ca_file), "", 0, 0, NULL, check_readable, 0, 0,
	  "CA bundle used to verify the relay; empty = system store" },
	{ "smtp.oauth_token_file", KT_STRING, F_STR(smtp_oauth_token_file), "", 0, 0, NULL,
	  check_readable, 0, 0,
	  "file holding an OAuth 2 bearer token for AUTH XOAUTH2 with smtp.username (native engine); re-read when it changes" },
	{ "smtp.messages_per_connection", KT_INT, F_INT(smtp_max_messages), "100", 1, 1000000, NULL,
	  NULL, 0, 0, "messages sent on one connection before it is closed and a new one opened (native engine)" },
	{ "smtp.pool_size", KT_INT, F_INT(smtp_pool_size), "4", 1, 256, NULL, NULL, 0, 0,
	  "connections kept to the relay" },
	{ "smtp.connect_timeout", KT_DURATION, F_I64(smtp_connect_timeout_ms), "10s", MS(100), MIN(5),
	  NULL, NULL, 0, 0, "TCP + TLS + greeting" },
	{ "smtp.timeout", KT_DURATION, F_I64(smtp_timeout_ms), "10m", SEC(1), HOUR(1), NULL, NULL, 0,
	  0, "longest wait for the relay, including the reply to DATA (native: caps each RFC 5321 phase timeout; libcurl: the whole transaction)" },
	{ "smtp.rate_limit", KT_DOUBLE, F_DBL(smtp_rate_limit), "0", 0, 1000000, NULL, NULL, 0,
	  KF_RELOAD, "messages per second; 0 = unlimited" },
	{ "smtp.breaker.failures", KT_INT, F_INT(smtp_breaker_threshold), "5", 1, 1000, NULL, NULL,
	  0, KF_RELOAD, "consecutive connection-level failures that open the breaker" },
	{ "smtp.breaker.open_for", KT_DURATION, F_I64(smtp_breaker_open_ms), "30s", MS(100), HOUR(1),
	  NULL, NULL, 0, KF_RELOAD, "how long the breaker stays open before one probe" },

	{ "kafka.brokers", KT_STRING, F_STR(kafka_brokers), "", 0, 0, NULL, check_brokers, 0, 0,
	  "bootstrap servers host:port[,host:port]; empty = mirror off" },
	{ "kafka.topic_prefix", KT_STRING, F_STR(kafka_topic_prefix), "outbox.event.", 0, 0, NULL,
	  check_topic_prefix, 0, 0, "topic = prefix + aggregate_type unless the row names a topic" },
	{ "kafka.compression", KT_CHOICE, F_STR(kafka_compression), "lz4", 0, 0, compressions, NULL,
	  0, 0, "producer compression codec" },
	{ "kafka.message_timeout", KT_DURATION, F_I64(kafka_message_timeout_ms), "0s", 0, HOUR(24),
	  NULL, NULL, 0, 0, "message.timeout.ms; 0 = never time out (keeps per-key order)" },
	{ "kafka.batch_size", KT_INT, F_INT(kafka_batch_size), "500", 1, 100000, NULL, NULL, 0, 0,
	  "events read from PostgreSQL per round" },
	{ "kafka.security_protocol", KT_CHOICE, F_STR(kafka_security_protocol), "plaintext", 0, 0,
	  security_protocols, NULL, 0, 0, "security.protocol" },
	{ "kafka.sasl_mechanism", KT_CHOICE, F_STR(kafka_sasl_mechanism), "", 0, 0, sasl_mechanisms,
	  NULL, 0, 0, "sasl.mechanism; required with sasl_* protocols" },
	{ "kafka.sasl_username", KT_STRING, F_STR(kafka_sasl_username), "", 0, 0, NULL, NULL, 0, 0,
	  "SASL user" },
	{ "kafka.sasl_password", KT_SECRET, F_STR(kafka_sasl_password), "", 0, 0, NULL, NULL, 0, 0,
	  "SASL password (secret; prefer kafka.sasl_password_file)" },
	{ "kafka.sasl_password_file", KT_SECRET_FILE, F_STR(kafka_sasl_password_file), "", 0, 0, NULL,
	  NULL, F_STR(kafka_sasl_password), 0,
	  "file holding the SASL password; trailing CR/LF characters are dropped" },
	{ "kafka.ssl_ca_file", KT_STRING, F_STR(kafka_ssl_ca_file), "", 0, 0, NULL, check_readable_or_dir, 0,
	  0, "CA bundle for ssl / sasl_ssl; empty = system store" },
	{ "kafka.lifecycle_events", KT_BOOL, F_INT(lifecycle_events), "true", 0, 1, NULL, NULL, 0, 0,
	  "write and mirror email.queued/sent/retry/failed/dead events (always off without kafka.brokers)" },

	{ "http.listen", KT_STRING, F_STR(http_listen), "127.0.0.1:9187", 0, 0, NULL, check_listen, 0,
	  0, "host:port for /health, /metrics and the web console; empty = no HTTP server" },
	{ "http.max_connections", KT_INT, F_INT(http_max_connections), "64", 1, 10000, NULL, NULL, 0,
	  0, "open HTTP connections at most; one more replaces an idle keep-alive one, else is closed unanswered" },
	{ "http.request_timeout", KT_DURATION, F_I64(http_request_timeout_ms), "10s", MS(100), MIN(10),
	  NULL, NULL, 0, 0, "an HTTP client that has not sent a whole request this long after connecting or after the previous answer is disconnected (idle or slow)" },
	{ "http.console", KT_BOOL, F_INT(http_console), "true", 0, 1, NULL, NULL, 0, 0,
	  "serve the web console at / on the HTTP port (its own database connection)" },
	{ "http.console_token", KT_SECRET, F_STR(http_console_token), "", 0, 0, NULL, NULL, 0, 0,
	  "token enabling the console's requeue and cancel (secret; prefer http.console_token_file)" },
	{ "http.console_token_file", KT_SECRET_FILE, F_STR(http_console_token_file), "", 0, 0, NULL,
	  NULL, F_STR(http_console_token), 0,
	  "file holding the token that enables the console's requeue and cancel; empty = read-only" },
	{ "http.console_show_body", KT_BOOL, F_INT(http_console_show_body), "false", 0, 1, NULL, NULL,
	  0, 0, "the console shows message bodies and extra headers" },

	{ "log.level", KT_CHOICE, F_STR(log_level), "info", 0, 0, log_levels, check_log_level, 0,
	  KF_RELOAD, "lowest level written: debug, info, warn or error" },

	{ "retention.enabled", KT_BOOL, F_INT(retention_enabled), "true", 0, 1, NULL, NULL, 0, KF_RELOAD,
	  "remove finished rows after the retentions below (one dispatcher at a time does it)" },
	{ "retention.sent", KT_DURATION, F_I64(retention_sent_ms), "7d", 0, DAY(3650), NULL, NULL, 0,
	  KF_RELOAD, "how long sent messages are kept after sending; 0 = forever" },
	{ "retention.cancelled", KT_DURATION, F_I64(retention_cancelled_ms), "7d", 0, DAY(3650), NULL, NULL,
	  0, KF_RELOAD, "how long cancelled messages are kept; 0 = forever" },
	{ "retention.failed", KT_DURATION, F_I64(retention_failed_ms), "30d", 0, DAY(3650), NULL, NULL, 0,
	  KF_RELOAD, "how long failed messages (and events Kafka refused) are kept; 0 = forever" },
	{ "retention.dead", KT_DURATION, F_I64(retention_dead_ms), "30d", 0, DAY(3650), NULL, NULL, 0,
	  KF_RELOAD, "how long dead messages (attempts exhausted) are kept; 0 = forever" },
	{ "retention.published", KT_DURATION, F_I64(retention_published_ms), "7d", 0, DAY(3650), NULL, NULL,
	  0, KF_RELOAD, "how long events are kept after Kafka took them; 0 = forever (unpublished: always)" },
	{ "retention.interval", KT_DURATION, F_I64(retention_interval_ms), "1m", SEC(1), DAY(1), NULL, NULL,
	  0, KF_RELOAD, "time between the end of one retention pass and the start of the next" },
	{ "retention.batch_size", KT_INT, F_INT(retention_batch_size), "1000", 10, 100000, NULL, NULL, 0,
	  KF_RELOAD, "rows looked at per table in one purge batch" },
	{ "retention.pause", KT_DURATION, F_I64(retention_pause_ms), "50ms", 0, MIN(1), NULL, NULL, 0,
	  KF_RELOAD, "least time between two batches (more while the queue has a backlog or the database is slow)" },

	{ "status.max_oldest_pending", KT_DURATION, F_I64(status_max_oldest_pending_ms), "5m", SEC(1),
	  HOUR(720), NULL, NULL, 0, KF_RELOAD, "`outboxd status` fails when the oldest due message is older" },
	{ "status.max_failed_last_hour", KT_INT64, F_I64(status_max_failed_last_hour), "100", 0,
	  1000000000, NULL, NULL, 0, KF_RELOAD, "`outboxd status` fails above this many failed/dead in the last hour" },
	{ "status.max_mirror_lag", KT_DURATION, F_I64(status_max_mirror_lag_ms), "5m", SEC(1),
	  HOUR(720), NULL, NULL, 0, KF_RELOAD, "`outboxd status` fails when the oldest unpublished event is older" },
};
/* clang-format on */

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

enum source { SRC_DEFAULT, SRC_FILE, SRC_ENV };

/* Error sink: counts and writes "key.path[ (ENV)]: reason" lines. */
struct errs {
	FILE *out;
	int n;
};

__attribute__((format(printf, 2, 3))) static void err_raw(struct errs *e, const char *fmt, ...)
{
	va_list ap;

	e->n++;
	if (!e->out)
		return;
	va_start(ap, fmt);
	vfprintf(e->out, fmt, ap);
	va_end(ap);
	fputc('\n', e->out);
}

static void env_name(const struct config_key *k, char *out, size_t len)
{
	size_t i = 0;

	snprintf(out, len, "OUTBOXD_");
	i = strlen(out);
	for (const char *p = k->path; *p && i + 1 < len; p++)
		out[i++] = *p == '.' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
	out[i] = '\0';
}

__attribute__((format(printf, 4, 5))) static void err_key(struct errs *e, const struct config_key *k, enum source src,
							  const char *fmt, ...)
{
	char env[96];
	va_list ap;

	e->n++;
	if (!e->out)
		return;
	fputs(k->path, e->out);
	if (src == SRC_ENV) {
		env_name(k, env, sizeof(env));
		fprintf(e->out, " (%s)", env);
	}
	fputs(": ", e->out);
	va_start(ap, fmt);
	vfprintf(e->out, fmt, ap);
	va_end(ap);
	fputc('\n', e->out);
}

/* Quotes a user value for an error message: control characters escaped, long values cut. */
static const char *show(const char *v, char *buf, size_t len)
{
	size_t o = 0;

	buf[o++] = '"';
	for (const unsigned char *p = (const unsigned char *)v; *p && o + 8 < len; p++) {
		if (*p == '"' || *p == '\\')
			o += (size_t)snprintf(buf + o, len - o, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			o += (size_t)snprintf(buf + o, len - o, "\\x%02x", *p);
		else
			buf[o++] = (char)*p;
	}
	if (strlen(v) > o)
		o += (size_t)snprintf(buf + o, len - o, "...");
	snprintf(buf + o, len - o, "\"");
	return buf;
}

/* ---- strict scalar parsers: return 0, or -1 with a reason in msg ---- */

static int parse_digits(const char **s, int64_t *out, char *msg, size_t msglen)
{
	const char *p = *s;
	int64_t v = 0;

	if (*p < '0' || *p > '9') {
		snprintf(msg, msglen, "expected a decimal number");
		return -1;
	}
	if (p[0] == '0' && p[1] >= '0' && p[1] <= '9') {
		snprintf(msg, msglen, "leading zeros are not allowed (octal is not supported)");
		return -1;
	}
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > (INT64_MAX - (*p - '0')) / 10) {
			snprintf(msg, msglen, "number too large");
			return -1;
		}
		v = v * 10 + (*p - '0');
	}
	*s = p;
	*out = v;
	return 0;
}

static int parse_int(const char *s, int64_t *out, char *msg, size_t msglen)
{
	int neg = *s == '-';
	const char *p = s + neg;

	if (*s == '\0') {
		snprintf(msg, msglen, "empty value, expected an integer");
		return -1;
	}
	if (parse_digits(&p, out, msg, msglen) < 0)
		return -1;
	if (*p != '\0') {
		snprintf(msg, msglen, "%s",
			 *p == '.' || *p == 'e' || *p == 'E' ? "expected a whole number"
			 : (*p == 'x' || *p == 'X')          ? "hexadecimal is not supported"
							     : "expected a plain decimal integer without unit");
		return -1;
	}
	if (neg)
		*out = -*out;
	return 0;
}

struct unit {
	const char *name;
	int64_t mult;
};

static const struct unit duration_units[] = { { "ms", 1 },      { "s", 1000 },     { "m", 60000 },
					      { "h", 3600000 }, { "d", 86400000 }, { NULL, 0 } };

/* "<digits><unit>"; a bare "0" is accepted because zero needs no unit. */
static int parse_with_unit(const char *s, const struct unit *units, const char *example, int64_t *out, char *msg,
			   size_t msglen)
{
	const char *p = s;
	int64_t v;

	if (*s == '\0') {
		snprintf(msg, msglen, "empty value, expected a number with a unit such as %s", example);
		return -1;
	}
	if (parse_digits(&p, &v, msg, msglen) < 0)
		return -1;
	if (*p == '.') {
		snprintf(msg, msglen, "whole numbers only: use a smaller unit (1500ms, not 1.5s)");
		return -1;
	}
	if (*p == '\0') {
		if (v == 0) {
			*out = 0;
			return 0;
		}
		snprintf(msg, msglen, "unit required, for example %s", example);
		return -1;
	}
	for (const struct unit *u = units; u->name; u++) {
		if (strcmp(p, u->name) == 0) {
			if (v > INT64_MAX / u->mult) {
				snprintf(msg, msglen, "number too large");
				return -1;
			}
			*out = v * u->mult;
			return 0;
		}
	}
	snprintf(msg, msglen, "unknown unit \"%.16s\" (use %s%s%s%s%s%s%s)", p, units[0].name,
		 units[1].name ? ", " : "", units[1].name ? units[1].name : "", units[2].name ? ", " : "",
		 units[2].name ? units[2].name : "", units[3].name ? " or " : "", units[3].name ? units[3].name : "");
	return -1;
}

/* Plain decimal notation only: no hex floats, inf, nan, or leading "+"/".". */
static int parse_double(const char *s, double *out, char *msg, size_t msglen)
{
	const char *p = s;
	char *end;

	if (*p == '-')
		p++;
	if (!(*p >= '0' && *p <= '9') || (p[0] == '0' && p[1] >= '0' && p[1] <= '9'))
		goto bad;
	while (*p >= '0' && *p <= '9')
		p++;
	if (*p == '.') {
		p++;
		if (!(*p >= '0' && *p <= '9'))
			goto bad;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if (*p == 'e' || *p == 'E') {
		p++;
		if (*p == '+' || *p == '-')
			p++;
		if (!(*p >= '0' && *p <= '9'))
			goto bad;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if (*p != '\0')
		goto bad;
	errno = 0;
	*out = strtod(s, &end);
	if (errno == ERANGE || !isfinite(*out)) {
		snprintf(msg, msglen, "number out of range");
		return -1;
	}
	return 0;
bad:
	snprintf(msg, msglen, "%s", *s ? "expected a decimal number such as 2.5" : "empty value, expected a number");
	return -1;
}

static int parse_bool(const char *s, int *out, char *msg, size_t msglen)
{
	if (strcmp(s, "true") == 0)
		*out = 1;
	else if (strcmp(s, "false") == 0)
		*out = 0;
	else {
		snprintf(msg, msglen, "%s", *s ? "expected true or false" : "empty value, expected true or false");
		return -1;
	}
	return 0;
}

static int has_control(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return 1;
	return 0;
}

/* ---- per-key validators ---- */

/* host:port, host a name, an IPv4 address or a bracketed IPv6 address. */
static int check_hostport(const char *v, size_t n, int port_required, char *msg, size_t msglen)
{
	struct hostport hp;

	if (hostport_split(v, n, &hp, msg, msglen) < 0)
		return -1;
	if (!hp.port) {
		if (!port_required)
			return 0;
		snprintf(msg, msglen, "expected host:port");
		return -1;
	}
	if (hostport_port(hp.port, hp.port_len) < 1) {
		snprintf(msg, msglen, "port must be a number from 1 to 65535");
		return -1;
	}
	return 0;
}

static int check_smtp_url(const char *v, char *msg, size_t msglen)
{
	const char *host, *slash;

	if (strncmp(v, "smtp://", 7) == 0)
		host = v + 7;
	else if (strncmp(v, "smtps://", 8) == 0)
		host = v + 8;
	else {
		snprintf(msg, msglen, "must start with smtp:// or smtps://");
		return -1;
	}
	slash = strchr(host, '/');
	if (!slash)
		slash = host + strlen(host);
	if (memchr(host, '@', (size_t)(slash - host))) {
		snprintf(msg, msglen, "credentials do not belong in the URL: use smtp.username and smtp.password_file");
		return -1;
	}
	if (slash == host) {
		snprintf(msg, msglen, "host missing after the scheme");
		return -1;
	}
	if (strchr(slash, ' ')) { /* the path is the EHLO name, as smtp.helo_name */
		snprintf(msg, msglen, "the EHLO name after the host must not contain spaces");
		return -1;
	}
	return check_hostport(host, (size_t)(slash - host), 0, msg, msglen);
}

static int check_listen(const char *v, char *msg, size_t msglen)
{
	struct hostport hp;
	char host[INET6_ADDRSTRLEN + 1];
	struct in6_addr a;

	if (*v == '\0')
		return 0;
	if (check_hostport(v, strlen(v), 1, msg, msglen) < 0 || hostport_split(v, strlen(v), &hp, msg, msglen) < 0)
		return -1;
	/* the listener binds without a name lookup (http.c) */
	if (hp.host_len < sizeof(host)) {
		memcpy(host, hp.host, hp.host_len);
		host[hp.host_len] = '\0';
		if (strcmp(host, "localhost") == 0 || inet_pton(hp.ipv6 ? AF_INET6 : AF_INET, host, &a) == 1)
			return 0;
	}
	snprintf(msg, msglen, "host must be a numeric IPv4 address, [IPv6] address or localhost");
	return -1;
}

static int check_log_level(const char *v, char *msg, size_t msglen)
{
	enum log_level l;

	if (log_level_parse(v, &l) < 0) {
		snprintf(msg, msglen, "unknown log level");
		return -1;
	}
	return 0;
}

static int check_address(const char *v, char *msg, size_t msglen)
{
	struct address_mailbox mb;
	const char *why = *v ? address_mailbox_parse(v, &mb) : NULL;

	if (why != NULL) {
		snprintf(msg, msglen, "expected an email address (user@domain or \"Name <user@domain>\"): %s", why);
		return -1;
	}
	return 0;
}

static int check_no_space(const char *v, char *msg, size_t msglen)
{
	if (strpbrk(v, " ")) {
		snprintf(msg, msglen, "must not contain spaces");
		return -1;
	}
	return 0;
}

static int check_brokers(const char *v, char *msg, size_t msglen)
{
	const char *p = v;
	size_t index = 1;

	if (*v == '\0')
		return 0;
	for (;; index++) {
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);
		const char *scheme = memmem(p, n, "://", 3);

		if (scheme) {
			n -= (size_t)(scheme + 3 - p);
			p = scheme + 3;
		}
		if (check_hostport(p, n, 0, msg, msglen) < 0) {
			size_t used = strlen(msg);

			snprintf(msg + used, msglen - used, " (broker %zu of the list)", index);
			return -1;
		}
		if (!comma)
			return 0;
		p = comma + 1;
	}
}

static int check_topic_prefix(const char *v, char *msg, size_t msglen)
{
	if (strlen(v) > 200) {
		snprintf(msg, msglen, "longer than 200 characters");
		return -1;
	}
	for (const char *p = v; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' ||
		      *p == '_' || *p == '-')) {
			snprintf(msg, msglen, "Kafka topic names allow only letters, digits, '.', '_' and '-'");
			return -1;
		}
	return 0;
}

/* A file read after start-up: a FIFO would block the daemon in open(), a device never ends. */
static int check_file(const char *v, int allow_dir, char *msg, size_t msglen)
{
	int err = *v ? file_check(v, allow_dir) : 0;

	if (err != 0) {
		snprintf(msg, msglen, "cannot read %s: %s", v, file_strerror(err));
		return -1;
	}
	return 0;
}

static int check_readable(const char *v, char *msg, size_t msglen)
{
	return check_file(v, 0, msg, msglen);
}

/* librdkafka's ssl.ca.location also takes a directory of CA certificates. */
static int check_readable_or_dir(const char *v, char *msg, size_t msglen)
{
	return check_file(v, 1, msg, msglen);
}

/* ---- the config object ---- */

static void *field_ptr(struct config *cfg, size_t off)
{
	return (char *)cfg + off;
}

static const void *field_cptr(const struct config *cfg, size_t off)
{
	return (const char *)cfg + off;
}

static int is_stringish(enum key_type t)
{
	return t == KT_STRING || t == KT_SECRET || t == KT_SECRET_FILE || t == KT_CHOICE;
}

void config_free(struct config *cfg)
{
	for (size_t i = 0; i < NKEYS; i++) {
		if (is_stringish(keys[i].type)) {
			char **s = field_ptr(cfg, keys[i].offset);

			if (*s && (keys[i].type == KT_SECRET))
				explicit_bzero(*s, strlen(*s));
			free(*s);
		}
	}
	memset(cfg, 0, sizeof(*cfg));
}

/* Parses text for key k into cfg. Returns 0, or -1 with a reason in msg. Strings are
 * replaced (the old one freed); -1 on OOM too. */
static int key_set(struct config *cfg, const struct config_key *k, const char *text, char *msg, size_t msglen)
{
	int64_t v = 0;
	double d;
	int b;

	if (has_control(text)) {
		snprintf(msg, msglen, "control characters (tab, newline, ...) are not allowed");
		return -1;
	}
	if (strcmp(text, "~") == 0) {
		snprintf(msg, msglen, "null (~) is not a value; write \"\" for empty");
		return -1;
	}
	switch (k->type) {
	case KT_STRING:
	case KT_SECRET:
	case KT_SECRET_FILE:
	case KT_CHOICE: {
		char **s = field_ptr(cfg, k->offset);
		char *copy;

		if (k->type == KT_CHOICE) {
			int found = 0;

			for (const char *const *c = k->choices; *c; c++)
				found |= strcmp(*c, text) == 0;
			if (!found && !(k->check && k->check(text, msg, msglen) == 0)) {
				size_t o = (size_t)snprintf(msg, msglen, "must be one of");

				for (const char *const *c = k->choices; *c && o < msglen; c++)
					o += (size_t)snprintf(msg + o, msglen - o, "%s %s%s%s",
							      c == k->choices ? "" : ",", **c ? "" : "\"", *c,
							      **c ? "" : "\"");
				return -1;
			}
		} else if (k->check && k->check(text, msg, msglen) < 0) {
			return -1;
		}
		if (k->check == check_log_level) {
			enum log_level l;

			if (log_level_parse(text, &l) == 0)
				text = log_level_name(l);
		}
		copy = strdup(text);
		if (!copy) {
			snprintf(msg, msglen, "out of memory");
			return -1;
		}
		if (*s && k->type == KT_SECRET)
			explicit_bzero(*s, strlen(*s));
		free(*s);
		*s = copy;
		return 0;
	}
	case KT_INT:
	case KT_INT64:
		if (parse_int(text, &v, msg, msglen) < 0)
			return -1;
		break;
	case KT_DURATION:
		if (parse_with_unit(text, duration_units, "30s, 250ms, 5m, 1h or 7d", &v, msg, msglen) < 0)
			return -1;
		break;
	case KT_BOOL:
		if (parse_bool(text, &b, msg, msglen) < 0)
			return -1;
		*(int *)field_ptr(cfg, k->offset) = b;
		return 0;
	case KT_DOUBLE:
		if (parse_double(text, &d, msg, msglen) < 0)
			return -1;
		if (d < (double)k->min || d > (double)k->max) {
			snprintf(msg, msglen, "must be between %" PRId64 " and %" PRId64, k->min, k->max);
			return -1;
		}
		*(double *)field_ptr(cfg, k->offset) = d;
		return 0;
	case KT_ENUM:
		for (int i = 0; k->choices[i]; i++) {
			if (strcmp(k->choices[i], text) == 0) {
				*(int *)field_ptr(cfg, k->offset) = i;
				return 0;
			}
		}
		{
			size_t o = (size_t)snprintf(msg, msglen, "must be one of");

			for (const char *const *c = k->choices; *c && o < msglen; c++)
				o += (size_t)snprintf(msg + o, msglen - o, "%s %s", c == k->choices ? "" : ",", *c);
		}
		return -1;
	}
	if (v < k->min || v > k->max) {
		char lo[32], hi[32];

		if (k->type == KT_DURATION) {
			const struct unit *u = duration_units;
			int64_t bounds[2] = { k->min, k->max };
			char *outs[2] = { lo, hi };

			for (int j = 0; j < 2; j++) {
				const struct unit *best = &u[0];

				for (const struct unit *x = u; x->name; x++)
					if (bounds[j] != 0 && bounds[j] % x->mult == 0)
						best = x;
				snprintf(outs[j], 32, "%" PRId64 "%s", bounds[j] / best->mult, best->name);
			}
		} else {
			snprintf(lo, sizeof(lo), "%" PRId64, k->min);
			snprintf(hi, sizeof(hi), "%" PRId64, k->max);
		}
		snprintf(msg, msglen, "must be between %s and %s", lo, hi);
		return -1;
	}
	if (k->type == KT_INT)
		*(int *)field_ptr(cfg, k->offset) = (int)v;
	else
		*(int64_t *)field_ptr(cfg, k->offset) = v;
	return 0;
}

static const struct config_key *key_find(const char *path)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (strcmp(keys[i].path, path) == 0)
			return &keys[i];
	return NULL;
}

/* Whether the field of key k holds the same value in a and b. */
static int field_equal(const struct config *a, const struct config *b, const struct config_key *k)
{
	const void *x = field_cptr(a, k->offset), *y = field_cptr(b, k->offset);

	switch (k->type) {
	case KT_STRING:
	case KT_SECRET:
	case KT_SECRET_FILE:
	case KT_CHOICE: {
		const char *s = *(char *const *)x, *t = *(char *const *)y;
		return (s == NULL && t == NULL) || (s && t && strcmp(s, t) == 0);
	}
	case KT_INT:
	case KT_BOOL:
	case KT_ENUM:
		return *(const int *)x == *(const int *)y;
	case KT_INT64:
	case KT_DURATION:
		return *(const int64_t *)x == *(const int64_t *)y;
	case KT_DOUBLE:
		return *(const double *)x == *(const double *)y;
	}
	return 0;
}

/* Exchanges the field of key k between a and b (strings change owner with it). */
static void field_swap(struct config *a, struct config *b, const struct config_key *k)
{
	char tmp[sizeof(int64_t) > sizeof(double) ? sizeof(int64_t) : sizeof(double)];
	size_t n = is_stringish(k->type)                                             ? sizeof(char *)
		   : (k->type == KT_INT || k->type == KT_BOOL || k->type == KT_ENUM) ? sizeof(int)
		   : k->type == KT_DOUBLE                                            ? sizeof(double)
										     : sizeof(int64_t);

	memcpy(tmp, field_ptr(a, k->offset), n);
	memcpy(field_ptr(a, k->offset), field_ptr(b, k->offset), n);
	memcpy(field_ptr(b, k->offset), tmp, n);
}

int config_reload(struct config *running, struct config *fresh, config_change_fn fn, void *arg)
{
	int changed = 0;

	for (size_t i = 0; i < NKEYS; i++) {
		const struct config_key *k = &keys[i];
		int applied = (k->flags & KF_RELOAD) != 0;

		if (field_equal(running, fresh, k))
			continue;
		if (applied)
			field_swap(running, fresh, k);
		changed++;
		if (fn)
			fn(arg, k->path, applied);
	}
	return changed;
}

int config_key_reloadable(const char *path)
{
	const struct config_key *k = key_find(path);

	return k && (k->flags & KF_RELOAD);
}

/* ---- the YAML schema, built from the table ----
 * Every mapping is loaded as an array of pointers, one per child: a char * for a leaf
 * (every scalar stays text), a void ** for a nested mapping. */

#define MAX_FIELDS (3 * NKEYS + 4)
#define NAME_POOL 4096

struct yschema {
	cyaml_schema_field_t fields[MAX_FIELDS];
	size_t nfields;
	char names[NAME_POOL];
	size_t nnames;
	cyaml_schema_value_t root;
};

/* Length of the segment of `path` after `prefix` (prefix "" or ending without '.'), or 0
 * when path is not below prefix. Sets *leaf when that segment is the last one. */
static size_t child_segment(const char *path, const char *prefix, size_t plen, const char **seg, int *leaf)
{
	const char *s, *dot;

	if (plen > 0) {
		if (strncmp(path, prefix, plen) != 0 || path[plen] != '.')
			return 0;
		s = path + plen + 1;
	} else {
		s = path;
	}
	dot = strchr(s, '.');
	*seg = s;
	*leaf = dot == NULL;
	return dot ? (size_t)(dot - s) : strlen(s);
}

static const char *pool_name(struct yschema *ys, const char *s, size_t n)
{
	char *out = ys->names + ys->nnames;

	if (ys->nnames + n + 1 > sizeof(ys->names))
		abort(); /* the table is static: a unit test proves it fits */
	memcpy(out, s, n);
	out[n] = '\0';
	ys->nnames += n + 1;
	return out;
}

/* Builds the field list for the mapping at `prefix` (length plen) and returns it. */
static const cyaml_schema_field_t *schema_node(struct yschema *ys, const char *prefix, size_t plen, size_t *count)
{
	const char *segs[NKEYS];
	size_t lens[NKEYS];
	int leafs[NKEYS];
	size_t n = 0, start = ys->nfields;

	for (size_t i = 0; i < NKEYS; i++) {
		const char *seg;
		int leaf, dup = 0;
		size_t len = child_segment(keys[i].path, prefix, plen, &seg, &leaf);

		if (len == 0)
			continue;
		for (size_t j = 0; j < n; j++)
			dup |= lens[j] == len && memcmp(segs[j], seg, len) == 0;
		if (!dup) {
			segs[n] = seg;
			lens[n] = len;
			leafs[n] = leaf;
			n++;
		}
	}
	if (ys->nfields + n + 1 > MAX_FIELDS)
		abort();
	ys->nfields += n + 1;
	memset(&ys->fields[start], 0, (n + 1) * sizeof(ys->fields[0]));
	for (size_t j = 0; j < n; j++) {
		cyaml_schema_field_t *f = &ys->fields[start + j];

		f->key = pool_name(ys, segs[j], lens[j]);
		f->data_offset = (uint32_t)(j * sizeof(void *));
		f->value.flags = CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL;
		if (leafs[j]) {
			f->value.type = CYAML_STRING;
			f->value.data_size = 1;
			f->value.string.min = 0;
			f->value.string.max = CYAML_UNLIMITED;
		} else {
			/* segs[j] points into a key path; that path up to this segment is
			 * the child's prefix */
			const char *sub_prefix = segs[j] - (plen ? plen + 1 : 0);
			size_t sub_plen = (plen ? plen + 1 : 0) + lens[j], sub_count;

			f->value.type = CYAML_MAPPING;
			f->value.mapping.fields = schema_node(ys, sub_prefix, sub_plen, &sub_count);
			f->value.data_size = (uint32_t)(sub_count * sizeof(void *));
		}
	}
	*count = n;
	return &ys->fields[start];
}

static void schema_build(struct yschema *ys)
{
	size_t n;

	ys->nfields = 0;
	ys->nnames = 0;
	memset(&ys->root, 0, sizeof(ys->root));
	ys->root.type = CYAML_MAPPING;
	ys->root.flags = CYAML_FLAG_POINTER;
	ys->root.mapping.fields = schema_node(ys, "", 0, &n);
	ys->root.data_size = (uint32_t)(n * sizeof(void *));
}

/* Finds the text loaded for path, or NULL when the file does not set it. */
static const char *tree_lookup(const struct yschema *ys, void *const *node, const char *path)
{
	const cyaml_schema_field_t *fields = ys->root.mapping.fields;

	while (node) {
		const char *dot = strchr(path, '.');
		size_t n = dot ? (size_t)(dot - path) : strlen(path);
		const cyaml_schema_field_t *f = fields;

		while (f->key && !(strlen(f->key) == n && memcmp(f->key, path, n) == 0))
			f++;
		if (!f->key)
			return NULL;
		if (!dot)
			return node[f->data_offset / sizeof(void *)];
		node = node[f->data_offset / sizeof(void *)];
		fields = f->value.mapping.fields;
		path = dot + 1;
	}
	return NULL;
}

/* libcyaml reports problems through its logger: the message, then a backtrace of
 * enclosing mapping fields, innermost first. Keep both to rebuild the key path. */
struct ylog {
	char message[256];
	char path[256];
	int in_backtrace;
};

/* Copies at most n bytes of src into dst (size len), always terminated, cutting if needed. */
static void copy_cut(char *dst, size_t len, const char *src, size_t n)
{
	if (n >= len)
		n = len - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

static void ylog_fn(cyaml_log_t level, void *ctx, const char *fmt, va_list args)
{
	struct ylog *yl = ctx;
	char line[512];
	const char *p;
	size_t n;

	if (level < CYAML_LOG_ERROR)
		return;
	vsnprintf(line, sizeof(line), fmt, args);
	n = strlen(line);
	while (n && (line[n - 1] == '\n' || line[n - 1] == ' '))
		line[--n] = '\0';
	p = line;
	if (strncmp(p, "Load: ", 6) == 0)
		p += 6;
	if (strcmp(p, "Backtrace:") == 0) {
		yl->in_backtrace = 1;
		return;
	}
	if (yl->in_backtrace) {
		const char *q = strstr(p, "in mapping field '"), *e;
		char tmp[sizeof(yl->path)];
		size_t seg, old = strlen(yl->path);

		if (!q)
			return;
		q += strlen("in mapping field '");
		e = strchr(q, '\'');
		if (!e)
			return;
		seg = (size_t)(e - q);
		/* innermost first: prepend */
		if (seg + 1 + old >= sizeof(tmp))
			return; /* deeper than any key: cannot happen with this table */
		memcpy(tmp, q, seg);
		tmp[seg] = '.';
		memcpy(tmp + seg + (old ? 1 : 0), yl->path, old + 1);
		memcpy(yl->path, tmp, sizeof(tmp));
		return;
	}
	if (!yl->message[0])
		copy_cut(yl->message, sizeof(yl->message), p, strlen(p));
}

/* First line number (1-based) whose indentation contains a tab, or 0. */
static int first_tab_line(const char *data, size_t len)
{
	int line = 1, at_start = 1;

	for (size_t i = 0; i < len; i++) {
		if (data[i] == '\n') {
			line++;
			at_start = 1;
		} else if (at_start && data[i] == '\t') {
			return line;
		} else if (data[i] != ' ') {
			at_start = 0;
		}
	}
	return 0;
}

static void report_yaml_error(struct errs *e, const char *file, const struct ylog *yl, cyaml_err_t err,
			      const char *data, size_t len)
{
	const char *m = yl->message;
	const char *where = yl->path[0] ? yl->path : file;
	const char *sep = yl->path[0] ? "." : ": ";

	if (strncmp(m, "Unexpected key: ", 16) == 0) {
		if (yl->path[0])
			err_raw(e, "%s%s%s: unknown key", where, sep, m + 16);
		else
			err_raw(e, "%s: unknown key", m + 16);
	} else if (strncmp(m, "Mapping field already seen: ", 28) == 0) {
		err_raw(e, "%s: duplicate key", yl->path[0] ? yl->path : m + 28);
	} else if (strncmp(m, "Expecting MAPPING", 17) == 0) {
		if (yl->path[0])
			err_raw(e, "%s: expected a mapping of keys, got %s (an empty section needs {})", where,
				strstr(m, "SEQUENCE") ? "a sequence" : "a single value");
		else
			err_raw(e, "%s: the document must be a mapping of sections (database:, smtp:, ...)", file);
	} else if (strncmp(m, "Expecting STRING", 16) == 0) {
		err_raw(e, "%s: expected a single value, got %s", where,
			strstr(m, "SEQUENCE") ? "a sequence" : "a mapping");
	} else if (strncmp(m, "libyaml: ", 9) == 0) {
		int tab = first_tab_line(data, len);

		if (tab)
			err_raw(e, "%s: YAML syntax error in %s: %s (line %d is indented with a tab; use spaces)",
				where, file, m + 9, tab);
		else
			err_raw(e, "%s: YAML syntax error in %s: %s", where, file, m + 9);
	} else {
		err_raw(e, "%s: cannot load %s: %s%s%s", where, file, cyaml_strerror(err), m[0] ? ": " : "", m);
	}
}

const char *config_secret_strerror(int err)
{
	return file_strerror(err);
}

/* The line of a "---" that starts a second YAML document (a first one may open with
 * "---"), or 0. */
static int second_document_line(const char *data)
{
	int line = 1, content = 0;

	for (const char *p = data; *p; line++) {
		const char *eol = strchr(p, '\n');
		size_t n = eol ? (size_t)(eol - p) : strlen(p);
		const char *q = p;

		if (n >= 3 && strncmp(p, "---", 3) == 0 && (n == 3 || p[3] == ' ' || p[3] == '\t' || p[3] == '\r')) {
			if (content)
				return line;
			content = 1; /* an explicit first document */
		} else {
			while (q < p + n && (*q == ' ' || *q == '\t' || *q == '\r'))
				q++;
			if (q < p + n && *q != '#')
				content = 1;
		}
		if (!eol)
			break;
		p = eol + 1;
	}
	return 0;
}

/* An OUTBOXD_* variable that names no key is a typo or a key of another version: said,
 * not silently ignored (a warning, so one environment can serve two versions). */
static void report_unknown_env(FILE *errs)
{
	extern char **environ;
	/* read by `outboxd migrate`, not keys: the same environment serves both commands */
	static const char *const other[] = { "OUTBOXD_MIGRATIONS_DIR", "OUTBOXD_SQL_DIR" };

	for (char **ev = environ; ev && *ev; ev++) {
		const char *eq = strchr(*ev, '=');
		size_t n = eq ? (size_t)(eq - *ev) : strlen(*ev);
		int known = 0;

		if (strncmp(*ev, "OUTBOXD_", 8) != 0)
			continue;
		for (size_t i = 0; i < sizeof(other) / sizeof(other[0]) && !known; i++)
			known = strlen(other[i]) == n && strncmp(other[i], *ev, n) == 0;
		for (size_t i = 0; i < NKEYS && !known; i++) {
			char env[96];

			env_name(&keys[i], env, sizeof(env));
			known = strlen(env) == n && strncmp(env, *ev, n) == 0;
		}
		if (!known) {
			char name[96];

			snprintf(name, sizeof(name), "%.*s", (int)n, *ev); /* never the value: a secret? */
			if (errs)
				fprintf(errs, "warning: %s is not a configuration key's variable; ignored\n", name);
			else
				log_warn("unknown OUTBOXD_* variable ignored", LOG_S("variable", name));
		}
	}
}

/* ---- loading ---- */

struct layer {
	const char *text[NKEYS];
	enum source src[NKEYS];
};

/* Reads a secret file: content minus trailing CR/LF. NULL with errno-style *err on failure. */
char *config_secret_read(const char *path, int *err)
{
	size_t len = 0;
	char *s = file_read(path, 65536, &len, err);

	if (!s)
		return NULL;
	if (memchr(s, '\0', len)) {
		explicit_bzero(s, len);
		free(s);
		*err = EINVAL;
		return NULL;
	}
	while (len && (s[len - 1] == '\n' || s[len - 1] == '\r'))
		s[--len] = '\0';
	return s;
}

/* When both a secret and its _file are set, the higher source wins; both from the same
 * source is an error because the intent is ambiguous. */
static void secrets_resolve(struct layer *ly, struct errs *e)
{
	for (size_t i = 0; i < NKEYS; i++) {
		const struct config_key *f = &keys[i];

		if (f->type != KT_SECRET_FILE)
			continue;
		for (size_t j = 0; j < NKEYS; j++) {
			if (keys[j].type != KT_SECRET || keys[j].offset != f->target)
				continue;
			if (!*ly->text[i] || !*ly->text[j])
				continue;
			if (ly->src[i] == ly->src[j]) {
				err_key(e, f, ly->src[i], "set together with %s; use only one", keys[j].path);
				ly->text[i] = ""; /* one error is enough: do not read the file too */
			} else if (ly->src[i] > ly->src[j])
				ly->text[j] = "";
			else
				ly->text[i] = "";
		}
	}
}

static void secrets_load(struct config *cfg, const struct layer *ly, struct errs *e)
{
	for (size_t i = 0; i < NKEYS; i++) {
		const struct config_key *k = &keys[i];
		const char *path;
		char **target;
		char *s;
		int err = 0;

		if (k->type != KT_SECRET_FILE)
			continue;
		path = *(char *const *)field_cptr(cfg, k->offset);
		if (!path || !*path)
			continue;
		s = config_secret_read(path, &err);
		if (!s) {
			err_key(e, k, ly->src[i], "cannot read %s: %s", path,
				err == EINVAL ? "contains a NUL byte" : file_strerror(err));
			continue;
		}
		if (!*s || has_control(s)) {
			err_key(e, k, ly->src[i], "%s %s", path, *s ? "contains control characters" : "is empty");
			free(s);
			continue;
		}
		target = field_ptr(cfg, k->target);
		if (*target)
			explicit_bzero(*target, strlen(*target));
		free(*target);
		*target = s;
	}
}

static void cross_check(const struct config *cfg, const struct layer *ly, struct errs *e)
{
	const struct config_key *k;
	int sasl = strncmp(cfg->kafka_security_protocol, "sasl_", 5) == 0;

	if (cfg->retry_base_ms > cfg->retry_cap_ms) {
		k = key_find("dispatcher.retry_base");
		err_key(e, k, ly->src[k - keys], "larger than dispatcher.retry_cap");
	}
	if (cfg->smtp_tls == SMTP_TLS_NONE && strncmp(cfg->smtp_url, "smtps://", 8) == 0) {
		k = key_find("smtp.tls");
		err_key(e, k, ly->src[k - keys], "none contradicts the smtps:// URL in smtp.url");
	}
	if (cfg->smtp_password[0] && !cfg->smtp_username[0]) {
		k = key_find("smtp.username");
		err_key(e, k, ly->src[k - keys], "empty while a password is set");
	}
	if (cfg->smtp_oauth_token_file[0] && !cfg->smtp_username[0]) {
		k = key_find("smtp.username");
		err_key(e, k, ly->src[k - keys], "empty while smtp.oauth_token_file is set");
	}
	if (cfg->smtp_oauth_token_file[0] && cfg->smtp_engine != SMTP_ENGINE_NATIVE) {
		k = key_find("smtp.oauth_token_file");
		err_key(e, k, ly->src[k - keys], "XOAUTH2 needs smtp.engine: native");
	}
	if (sasl && !cfg->kafka_sasl_mechanism[0]) {
		k = key_find("kafka.sasl_mechanism");
		err_key(e, k, ly->src[k - keys], "required with security_protocol %s", cfg->kafka_security_protocol);
	}
	if (cfg->http_console_token[0] && strlen(cfg->http_console_token) < 16) {
		k = key_find("http.console_token");
		err_key(e, k, ly->src[k - keys], "shorter than 16 characters: too easy to guess");
	}
	if (!sasl && cfg->kafka_sasl_mechanism[0]) {
		k = key_find("kafka.sasl_mechanism");
		err_key(e, k, ly->src[k - keys], "set but kafka.security_protocol is %s", cfg->kafka_security_protocol);
	}
}

/* Defaults, then the file (path may be NULL), then the environment when use_env. */
static int config_build(struct config *cfg, const char *path, int use_env, FILE *errs)
{
	struct errs e = { errs, 0 };
	struct layer ly;
	struct yschema ys;
	struct ylog yl;
	cyaml_config_t ycfg = { .log_fn = ylog_fn,
				.log_ctx = &yl,
				.mem_fn = cyaml_mem,
				.log_level = CYAML_LOG_ERROR,
				.flags = CYAML_CFG_DEFAULT };
	const cyaml_config_t *yc = &ycfg;
	void **tree = NULL;
	char *data = NULL;
	size_t len = 0;
	char msg[256], shown[96];

	memset(cfg, 0, sizeof(*cfg));
	memset(&yl, 0, sizeof(yl));
	schema_build(&ys);
	for (size_t i = 0; i < NKEYS; i++) {
		ly.text[i] = keys[i].def;
		ly.src[i] = SRC_DEFAULT;
	}
	if (path) {
		int err = 0;

		data = file_read(path, 1 << 20, &len, &err);
		if (!data) {
			err_raw(&e, "--config %s: cannot read configuration file: %s", path, file_strerror(err));
		} else {
			cyaml_err_t ce = cyaml_load_data((const uint8_t *)data, len, yc, &ys.root,
							 (cyaml_data_t **)&tree, NULL);
			int line = second_document_line(data);

			if (line > 0)
				err_raw(&e,
					"%s:%d: a second YAML document: only the first is read; put every key in one",
					path, line);

			if (ce != CYAML_OK) {
				report_yaml_error(&e, path, &yl, ce, data, len);
				tree = NULL;
			}
		}
		for (size_t i = 0; tree && i < NKEYS; i++) {
			const char *t = tree_lookup(&ys, tree, keys[i].path);

			if (t) {
				ly.text[i] = t;
				ly.src[i] = SRC_FILE;
			}
		}
	}
	for (size_t i = 0; use_env && i < NKEYS; i++) {
		char env[96];
		const char *t;

		env_name(&keys[i], env, sizeof(env));
		t = getenv(env);
		if (t) {
			ly.text[i] = t;
			ly.src[i] = SRC_ENV;
		}
	}
	if (use_env)
		report_unknown_env(errs);
	secrets_resolve(&ly, &e);
	for (size_t i = 0; i < NKEYS; i++) {
		const struct config_key *k = &keys[i];

		if (key_set(cfg, k, ly.text[i], msg, sizeof(msg)) == 0)
			continue;
		if (k->type == KT_SECRET) {
			err_key(&e, k, ly.src[i], "%s", msg);
		} else {
			/* a URL may carry a password even in a key that is not a secret */
			char *masked = mask_credentials(ly.text[i]);

			err_key(&e, k, ly.src[i], "%s: %s", show(masked ? masked : "?", shown, sizeof(shown)), msg);
			free(masked);
		}
		/* keep the field usable: fall back to the default */
		if (ly.src[i] != SRC_DEFAULT && key_set(cfg, k, k->def, msg, sizeof(msg)) < 0)
			err_key(&e, k, SRC_DEFAULT, "bad default: %s", msg);
	}
	secrets_load(cfg, &ly, &e);
	cross_check(cfg, &ly, &e);
	if (tree)
		cyaml_free(yc, &ys.root, tree, 0);
	free(data);
	return e.n;
}

int config_load(struct config *cfg, const char *path, FILE *errs)
{
	return config_build(cfg, path, 1, errs);
}

int config_require(const struct config *cfg, FILE *errs)
{
	struct errs e = { errs, 0 };

	/* An empty URL would fall back to libpq's defaults (a local socket) and a
	 * misconfigured deployment would retry forever instead of saying why. */
	if (cfg->database_url == NULL || cfg->database_url[0] == '\0')
		err_raw(&e, "database.url (OUTBOXD_DATABASE_URL): required; for example "
			    "postgresql://outboxd@db.internal/app (postgresql:// alone takes libpq's PG* environment)");
	return e.n;
}

/* ---- printing ---- */

static void print_quoted(FILE *out, const char *s)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(out, "\\x%02x", *p);
		else
			fputc(*p, out);
	}
	fputc('"', out);
}

/* Copy of s with any embedded password replaced by ********: URL user:pass@ and
 * conninfo/query password=value. Caller frees; NULL on OOM. */
static char *mask_credentials(const char *s)
{
	size_t n = strlen(s);
	char *out = malloc(2 * n + 32), *o = out;
	const char *p = s, *scheme = strstr(s, "://");
	int masked_url = 0;

	if (!out)
		return NULL;
	while (*p) {
		if (scheme && !masked_url && p == scheme + 3) {
			const char *end = strpbrk(p, "/?#"), *at, *colon;

			/* the last '@' of the authority: an unencoded '@' may sit in the password */
			end = end ? end : p + strlen(p);
			at = memrchr(p, '@', (size_t)(end - p));
			masked_url = 1;
			if (at && (colon = memchr(p, ':', (size_t)(at - p)))) {
				memcpy(o, p, (size_t)(colon + 1 - p));
				o += colon + 1 - p;
				o = stpcpy(o, "********");
				p = at;
				continue;
			}
		}
		if (strncmp(p, "password=", 9) == 0 && (p == s || strchr(" ?&", p[-1]))) {
			o = stpcpy(o, "password=********");
			p += 9;
			if (*p == '\'') {
				for (p++; *p && *p != '\''; p++)
					if (*p == '\\' && p[1])
						p++;
				if (*p)
					p++;
			} else {
				while (*p && *p != ' ' && *p != '&')
					p++;
			}
			continue;
		}
		*o++ = *p++;
	}
	*o = '\0';
	return out;
}

/* Text form of a key's current value, as the parser would accept it. Writes to buf. */
static const char *value_text(const struct config *cfg, const struct config_key *k, char *buf, size_t len)
{
	const void *f = field_cptr(cfg, k->offset);

	switch (k->type) {
	case KT_STRING:
	case KT_SECRET_FILE:
	case KT_CHOICE:
		return *(char *const *)f ? *(char *const *)f : "";
	case KT_SECRET:
		return *(char *const *)f && **(char *const *)f ? "********" : "";
	case KT_INT:
		snprintf(buf, len, "%d", *(const int *)f);
		return buf;
	case KT_INT64:
		snprintf(buf, len, "%" PRId64, *(const int64_t *)f);
		return buf;
	case KT_BOOL:
		return *(const int *)f ? "true" : "false";
	case KT_DOUBLE: {
		double d = *(const double *)f;

		for (int prec = 6; prec <= 17; prec++) {
			snprintf(buf, len, "%.*g", prec, d);
			if (strtod(buf, NULL) == d)
				break;
		}
		return buf;
	}
	case KT_ENUM: {
		int i = *(const int *)f;

		return i >= 0 && k->choices[i] ? k->choices[i] : "?";
	}
	case KT_DURATION: {
		const struct unit *u = duration_units, *best = u;
		int64_t v = *(const int64_t *)f;

		for (const struct unit *x = u; x->name; x++)
			if (v != 0 && v % x->mult == 0)
				best = x;
		snprintf(buf, len, "%" PRId64 "%s", v / best->mult, v == 0 ? "s" : best->name);
		return buf;
	}
	}
	return "";
}

#define MAX_DEPTH 8

/* Splits a dotted path into segments; returns their count. */
static size_t path_split(const char *path, const char **segs, size_t *lens)
{
	size_t n = 0;

	for (;;) {
		const char *dot = strchr(path, '.');

		segs[n] = path;
		lens[n++] = dot ? (size_t)(dot - path) : strlen(path);
		if (!dot || n == MAX_DEPTH)
			return n;
		path = dot + 1;
	}
}

/* Writes the table as nested YAML; with docs, each key gets its doc comment. Relies on
 * keys of one section being contiguous in the table (a unit test re-loads the output). */
static void print_yaml(const struct config *cfg, FILE *out, int docs)
{
	const char *psegs[MAX_DEPTH];
	size_t plens[MAX_DEPTH], pn = 0;

	for (size_t i = 0; i < NKEYS; i++) {
		const struct config_key *k = &keys[i];
		const char *segs[MAX_DEPTH];
		size_t lens[MAX_DEPTH], n = path_split(k->path, segs, lens), common = 0;
		char buf[64];
		const char *v;

		/* sections (all segments but the leaf) shared with the previous key */
		while (common + 1 < n && common + 1 < pn && lens[common] == plens[common] &&
		       memcmp(segs[common], psegs[common], lens[common]) == 0)
			common++;
		for (size_t j = common; j + 1 < n; j++) {
			if (j == 0 && i > 0)
				fputc('\n', out);
			fprintf(out, "%*s%.*s:\n", (int)(2 * j), "", (int)lens[j], segs[j]);
		}
		if (docs) {
			fprintf(out, "%*s# %s", (int)(2 * (n - 1)), "", k->doc);
			if (k->flags & KF_RELOAD)
				fputs(" (reloadable)", out);
			fputc('\n', out);
		}
		fprintf(out, "%*s%.*s: ", (int)(2 * (n - 1)), "", (int)lens[n - 1], segs[n - 1]);
		v = value_text(cfg, k, buf, sizeof(buf));
		if (is_stringish(k->type) && !(k->type == KT_CHOICE && *v)) {
			char *masked = (k->flags & KF_MASK_URL) ? mask_credentials(v) : NULL;

			/* out of memory while masking: print nothing that might be a secret */
			print_quoted(out, masked ? masked : (k->flags & KF_MASK_URL) ? "********" : v);
			free(masked);
		} else {
			fputs(v, out);
		}
		fputc('\n', out);
		memcpy(psegs, segs, sizeof(segs));
		memcpy(plens, lens, sizeof(lens));
		pn = n;
	}
}

void config_print(const struct config *cfg, FILE *out)
{
	print_yaml(cfg, out, 0);
}

int config_print_example(FILE *out)
{
	struct config d;
	int n = config_build(&d, NULL, 0, stderr);

	fputs("# outboxd configuration: every key with its default. Generated by\n"
	      "#   outboxd check-config --example > ops/outboxd.example.yaml\n"
	      "# Each key can also be set from the environment as OUTBOXD_<PATH>, upper case,\n"
	      "# dots as underscores (smtp.breaker.failures -> OUTBOXD_SMTP_BREAKER_FAILURES);\n"
	      "# the environment wins over this file. Durations take a unit: 250ms, 30s, 5m, 1h.\n"
	      "# Keys marked (reloadable) take effect on SIGHUP; the others need a restart.\n\n",
	      out);
	print_yaml(&d, out, 1);
	config_free(&d);
	return n;
}

static const char *type_name(const struct config_key *k)
{
	switch (k->type) {
	case KT_STRING:
		return "string";
	case KT_SECRET:
		return "secret";
	case KT_SECRET_FILE:
		return "path (secret file)";
	case KT_INT:
	case KT_INT64:
		return "integer";
	case KT_BOOL:
		return "bool";
	case KT_DURATION:
		return "duration";
	case KT_DOUBLE:
		return "number";
	case KT_ENUM:
	case KT_CHOICE:
		return "enum";
	}
	return "?";
}

void config_print_docs(FILE *out)
{
	fputs("| key | environment | type | default | allowed | reload | description |\n"
	      "| --- | --- | --- | --- | --- | --- | --- |\n",
	      out);
	for (size_t i = 0; i < NKEYS; i++) {
		const struct config_key *k = &keys[i];
		char env[96];

		env_name(k, env, sizeof(env));
		fprintf(out, "| `%s` | `%s` | %s | ", k->path, env, type_name(k));
		if (k->def[0])
			fprintf(out, "`%s`", k->def);
		else
			fputs("\"\"", out);
		fputs(" | ", out);
		if (k->choices) {
			for (const char *const *c = k->choices; *c; c++)
				fprintf(out, "%s%s", c == k->choices ? "" : ", ", **c ? *c : "\"\"");
		} else if (k->type == KT_INT || k->type == KT_INT64 || k->type == KT_DOUBLE) {
			fprintf(out, "%" PRId64 "..%" PRId64, k->min, k->max);
		} else if (k->type == KT_DURATION) {
			struct config tmp;
			char a[32], b[32];

			memset(&tmp, 0, sizeof(tmp));
			*(int64_t *)field_ptr(&tmp, k->offset) = k->min;
			char c[32], d[32];

			snprintf(c, sizeof(c), "%s", value_text(&tmp, k, a, sizeof(a)));
			*(int64_t *)field_ptr(&tmp, k->offset) = k->max;
			snprintf(d, sizeof(d), "%s", value_text(&tmp, k, b, sizeof(b)));
			fprintf(out, "%s..%s", c, d);
		}
		fprintf(out, " | %s | %s |\n", (k->flags & KF_RELOAD) ? "yes" : "no", k->doc);
	}
}

/* ---- outboxd check-config ---- */

static void check_usage(FILE *out)
{
	fputs("usage: outboxd check-config [--config FILE] [--print]\n"
	      "       outboxd check-config --docs | --example\n"
	      "  --config FILE  YAML file to check (the OUTBOXD_* environment applies on top)\n"
	      "  --print        print the effective configuration as YAML, secrets masked\n"
	      "  --docs         print the table of keys as Markdown\n"
	      "  --example      print an example file with every key and its default\n",
	      out);
}

int config_check_main(int argc, char **argv)
{
	const char *path = NULL;
	int print = 0, docs = 0, example = 0, n;
	struct config cfg;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "-c") == 0) {
			if (i + 1 >= argc || path) {
				fprintf(stderr, "check-config: %s\n",
					path ? "--config given twice" : "--config needs a file");
				check_usage(stderr);
				return 2;
			}
			path = argv[++i];
		} else if (strncmp(argv[i], "--config=", 9) == 0 && !path) {
			path = argv[i] + 9;
		} else if (strcmp(argv[i], "--print") == 0) {
			print = 1;
		} else if (strcmp(argv[i], "--docs") == 0) {
			docs = 1;
		} else if (strcmp(argv[i], "--example") == 0) {
			example = 1;
		} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			check_usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "check-config: unknown argument %s\n", argv[i]);
			check_usage(stderr);
			return 2;
		}
	}
	if (docs + example + (print || path) > 1) {
		fprintf(stderr, "check-config: --docs and --example stand alone\n");
		check_usage(stderr);
		return 2;
	}
	if (docs) {
		config_print_docs(stdout);
		return 0;
	}
	if (example)
		return config_print_example(stdout) ? 2 : 0;
	n = config_load(&cfg, path, stderr);
	n += config_require(&cfg, stderr);
	if (n == 0 && print)
		config_print(&cfg, stdout);
	config_free(&cfg);
	if (n) {
		fprintf(stderr, "check-config: %d error%s\n", n, n == 1 ? "" : "s");
		return 2;
	}
	fprintf(stderr, "check-config: configuration is valid\n");
	return 0;
}
