/* Configuration: one table declares every key (YAML path, type, default, bounds,
 * reloadable, doc); values come from defaults, then a YAML file, then OUTBOXD_* env. */
#ifndef OUTBOXD_CONFIG_H
#define OUTBOXD_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum smtp_tls_mode { SMTP_TLS_REQUIRED, SMTP_TLS_OPPORTUNISTIC, SMTP_TLS_NONE };
enum smtp_engine_kind { SMTP_ENGINE_NATIVE, SMTP_ENGINE_LIBCURL };

/* Every duration is in milliseconds, every size in bytes. Strings are owned by the
 * config and freed by config_free(); NULL means unset. */
struct config {
	/* database */
	char *database_url;                    /* database.url (OUTBOXD_DATABASE_URL); required by run */
	char *database_password;               /* database.password or database.password_file: secret */
	char *database_password_file;          /* database.password_file: path */
	int64_t database_connect_timeout_ms;   /* database.connect_timeout */
	int64_t database_statement_timeout_ms; /* database.statement_timeout */

	/* dispatcher */
	char *owner;              /* dispatcher.owner: lease owner id; default host:pid:random */
	int batch_size;           /* dispatcher.batch_size */
	int max_in_flight;        /* dispatcher.max_in_flight */
	int64_t lease_ms;         /* dispatcher.lease */
	int64_t poll_interval_ms; /* dispatcher.poll_interval */
	int64_t outcome_delay_ms; /* dispatcher.outcome_delay */
	int64_t drain_timeout_ms; /* dispatcher.drain_timeout */
	int64_t retry_base_ms;    /* dispatcher.retry_base */
	int64_t retry_cap_ms;     /* dispatcher.retry_cap */
	int64_t reconnect_max_ms; /* dispatcher.reconnect_max */

	/* smtp */
	char *smtp_url;                    /* smtp.url: smtp://host:port or smtps://host:port */
	enum smtp_engine_kind smtp_engine; /* smtp.engine: native | libcurl */
	enum smtp_tls_mode smtp_tls;       /* smtp.tls: required | opportunistic | none */
	char *smtp_from;                   /* smtp.from: default sender */
	char *smtp_helo;                   /* smtp.helo_name */
	char *smtp_username;               /* smtp.username */
	char *smtp_password;               /* smtp.password or smtp.password_file: secret */
	char *smtp_password_file;          /* smtp.password_file: path, kept for re-reading */
	char *smtp_ca_file;                /* smtp.ca_file: extra CA bundle for verification */
	int smtp_pool_size;                /* smtp.pool_size: connections to the relay */
	int64_t smtp_connect_timeout_ms;   /* smtp.connect_timeout */
	int64_t smtp_timeout_ms;           /* smtp.timeout: whole transaction incl. the reply to DATA */
	double smtp_rate_limit;            /* smtp.rate_limit: messages/s, 0 = unlimited */
	int smtp_breaker_threshold;        /* smtp.breaker.failures */
	int64_t smtp_breaker_open_ms;      /* smtp.breaker.open_for */
	int smtp_max_messages;             /* smtp.messages_per_connection (native engine) */
	char *smtp_oauth_token_file;       /* smtp.oauth_token_file: XOAUTH2 bearer token, re-read when it changes */

	/* kafka */
	char *kafka_brokers;              /* kafka.brokers: "" = mirror off */
	char *kafka_topic_prefix;         /* kafka.topic_prefix: default "outbox.event." */
	char *kafka_compression;          /* kafka.compression: none|gzip|snappy|lz4|zstd */
	int64_t kafka_message_timeout_ms; /* kafka.message_timeout: 0 = never time out */
	int kafka_batch_size;             /* kafka.batch_size: events read per round */
	char *kafka_security_protocol;    /* kafka.security_protocol */
	char *kafka_sasl_mechanism;       /* kafka.sasl_mechanism */
	char *kafka_sasl_username;        /* kafka.sasl_username */
	char *kafka_sasl_password;        /* kafka.sasl_password / _file: secret */
	char *kafka_sasl_password_file;   /* kafka.sasl_password_file: path */
	char *kafka_ssl_ca_file;          /* kafka.ssl_ca_file */
	int lifecycle_events;             /* kafka.lifecycle_events: bool */

	/* http + logs */
	char *http_listen;             /* http.listen: "127.0.0.1:9187"; "" = off */
	int http_console;              /* http.console: serve the web console */
	char *http_console_token;      /* http.console_token(_file): secret; "" = read-only */
	char *http_console_token_file; /* http.console_token_file: path */
	int http_console_show_body;    /* http.console_show_body */
	char *log_level;               /* log.level */

	/* http limits */
	int http_max_connections;        /* http.max_connections */
	int64_t http_request_timeout_ms; /* http.request_timeout */

	/* retention (all reloadable; durations 0 = keep forever) */
	int retention_enabled;          /* retention.enabled */
	int64_t retention_sent_ms;      /* retention.sent */
	int64_t retention_cancelled_ms; /* retention.cancelled */
	int64_t retention_failed_ms;    /* retention.failed: messages and refused events */
	int64_t retention_dead_ms;      /* retention.dead */
	int64_t retention_published_ms; /* retention.published: events */
	int64_t retention_interval_ms;  /* retention.interval: between passes */
	int retention_batch_size;       /* retention.batch_size */
	int64_t retention_pause_ms;     /* retention.pause: least time between batches */

	/* status thresholds (outboxd status exit code) */
	int64_t status_max_oldest_pending_ms; /* status.max_oldest_pending */
	int64_t status_max_failed_last_hour;  /* status.max_failed_last_hour */
	int64_t status_max_mirror_lag_ms;     /* status.max_mirror_lag */
};

/* Fills `cfg` with defaults, then the YAML file `path` (may be NULL), then OUTBOXD_*
 * environment variables, then reads secret files, then validates every key.
 * Returns 0, or the number of errors, each written to `errs` as "key.path: reason\n"
 * (may be NULL). The caller frees cfg with config_free() in both cases. */
/* A secret file's content without trailing CR/LF (regular files only); NULL with *err set.
 * For commands that take no configuration file, such as migrate. */
char *config_secret_read(const char *path, int *err);
const char *config_secret_strerror(int err);

int config_load(struct config *cfg, const char *path, FILE *errs) __attribute__((warn_unused_result));

/* Checks the keys a command that talks to the database cannot do without (database.url);
 * writes one line per missing key to errs (may be NULL) and returns how many. */
int config_require(const struct config *cfg, FILE *errs) __attribute__((warn_unused_result));

/* Frees every string the config owns and zeroes it. */
void config_free(struct config *cfg);

/* Prints the effective configuration as YAML, secrets masked ("********" when set, and
 * any password inside database.url); the output loads back with config_load(). */
void config_print(const struct config *cfg, FILE *out);

/* Writes an example YAML file: every key with its doc comment and default (the content
 * of ops/outboxd.example.yaml). Returns the number of bad defaults, normally 0. */
int config_print_example(FILE *out) __attribute__((warn_unused_result));

/* Writes the Markdown table of every key (path, env, type, default, bounds, reload, doc). */
void config_print_docs(FILE *out);

/* `outboxd check-config [--config F] [--print] | --docs | --example`: exit 0 valid,
 * 2 invalid or bad usage; errors on stderr, one per line, each starting with the key. */
int config_check_main(int argc, char **argv);

/* Called by config_reload() for each key whose value changed; applied: the key is
 * reloadable and running now holds the new value, else a restart is needed. */
typedef void (*config_change_fn)(void *arg, const char *path, int applied);

/* Compares fresh with running key by key, through the key table: the value of each changed
 * reloadable key moves into running (fresh gets the old one, freed with it); every changed
 * key is reported to fn (may be NULL). Returns the number of changed keys. */
int config_reload(struct config *running, struct config *fresh, config_change_fn fn, void *arg);

/* Whether a key (YAML path) may change on SIGHUP without a restart. */
int config_key_reloadable(const char *path);

#endif
