/* metrics: an in-process Prometheus registry (counters, gauges, histograms, labels,
 * scrape-time callbacks) rendered in the text exposition format 0.0.4. Single-threaded:
 * every call happens on the event loop. Also declares the families outboxd exports. */
#ifndef OUTBOXD_METRICS_H
#define OUTBOXD_METRICS_H

#include <stddef.h>

#include "buf.h"

#define METRICS_MUST_CHECK __attribute__((warn_unused_result))
#define METRICS_SENTINEL __attribute__((sentinel))

enum metrics_type { METRICS_COUNTER, METRICS_GAUGE, METRICS_HISTOGRAM };

/* Most label names a family may have. */
#define METRICS_MAX_LABELS 4

struct metrics;        /* the registry; owns every family and child */
struct metrics_family; /* one metric name, its HELP, type and label names */
struct metrics_child;  /* one label-value combination of a family; cache it */

/* Creates an empty registry. Returns NULL on OOM; free with metrics_free(). */
struct metrics *metrics_new(void) METRICS_MUST_CHECK;

/* Frees the registry with all its families and children (handles become invalid). */
void metrics_free(struct metrics *reg);

/*
 * Registers a family. name must be a valid metric name (counters must end in _total),
 * help is any text, label_names is a NULL-terminated list of at most METRICS_MAX_LABELS
 * valid label names (NULL for none; "le" is refused for histograms). For histograms,
 * buckets holds nbuckets finite, strictly increasing upper bounds (+Inf is implicit and
 * dropped if given); other types pass NULL, 0. Strings are copied.
 * Returns the family (owned by reg), or NULL on an invalid argument, a duplicate name,
 * or OOM. A family without labels has its only child created at once.
 */
struct metrics_family *metrics_family_new(struct metrics *reg, enum metrics_type type, const char *name,
					  const char *help, const char *const *label_names, const double *buckets,
					  size_t nbuckets);

/* Shorthands for metrics_family_new(); the variadic arguments are label names ending
 * with NULL (just NULL for an unlabelled family). */
struct metrics_family *metrics_counter_new(struct metrics *reg, const char *name, const char *help,
					   ...) METRICS_SENTINEL;
struct metrics_family *metrics_gauge_new(struct metrics *reg, const char *name, const char *help, ...) METRICS_SENTINEL;
struct metrics_family *metrics_histogram_new(struct metrics *reg, const char *name, const char *help,
					     const double *buckets, size_t nbuckets, ...) METRICS_SENTINEL;

/*
 * Registers an unlabelled counter or gauge whose value is fn(arg), called at every
 * render. Returns the family (owned by reg) or NULL like metrics_family_new().
 */
struct metrics_family *metrics_callback_new(struct metrics *reg, enum metrics_type type, const char *name,
					    const char *help, double (*fn)(void *arg), void *arg);

/* Adds a hook called once at the start of every render, before any callback, so a
 * collector can refresh a snapshot that several callback families read. Returns 0, or
 * -1 on OOM. Hooks run in the order added. */
int metrics_on_scrape(struct metrics *reg, void (*fn)(void *arg), void *arg) METRICS_MUST_CHECK;

/*
 * Returns the child of fam for the given label values (exactly one per label name,
 * then NULL), creating it on first use. Values are copied. Returns NULL when fam is
 * NULL, a value is missing, or on OOM. The handle lives as long as the registry, so
 * callers on a hot path look it up once and keep it.
 */
struct metrics_child *metrics_child(struct metrics_family *fam, ...) METRICS_SENTINEL;

/* Array form of metrics_child(): values holds one string per label name. */
struct metrics_child *metrics_childv(struct metrics_family *fam, const char *const *values);

/* Updates never allocate and accept a NULL child (doing nothing), so a failed
 * lookup degrades to a missing sample instead of a crash. */

/* Counter: adds 1. */
void metrics_inc(struct metrics_child *c);
/* Counter or gauge: adds v. Negative or NaN additions to a counter are ignored. */
void metrics_add(struct metrics_child *c, double v);
/* Gauge: sets the value. Ignored for counters and histograms. */
void metrics_set(struct metrics_child *c, double v);
/* Histogram: records one observation (NaN is ignored). */
void metrics_observe(struct metrics_child *c, double v);
/* Counter or gauge: the current value (0 for NULL or a histogram). */
double metrics_value(const struct metrics_child *c);
/* Histogram: the number of observations (0 otherwise). */
unsigned long long metrics_count(const struct metrics_child *c);

/* Appends the whole registry in text format 0.0.4 to out (families in registration
 * order, children in creation order). Runs the scrape hooks first. Returns 0, or -1
 * on OOM (out then holds a truncated exposition; the caller discards it). */
int metrics_render_buf(struct metrics *reg, struct buf *out) METRICS_MUST_CHECK;

/* Renders the registry into a new NUL-terminated string the caller frees with free().
 * Returns NULL on OOM. */
char *metrics_render(struct metrics *reg) METRICS_MUST_CHECK;

/* Formats v the way Prometheus reads it back exactly: shortest round-trip decimal,
 * "+Inf", "-Inf" or "NaN". dst needs at least 32 bytes. Returns dst. */
char *metrics_format_double(char *dst, size_t dstlen, double v);

/*
 * Bucket bounds used by outboxd's duration histograms (seconds) and its claim-size
 * histogram (rows), exported so dashboards and tests agree with the code.
 */
extern const double metrics_seconds_buckets[];
extern const size_t metrics_seconds_nbuckets;
extern const double metrics_latency_buckets[];
extern const size_t metrics_latency_nbuckets;
extern const double metrics_batch_buckets[];
extern const size_t metrics_batch_nbuckets;

/*
 * Every family outboxd exports, registered by outboxd_metrics_new(). Children whose
 * label values are fixed are created up front so the core just calls
 * metrics_inc(om->msg_sent). Families labelled by data (table names) are looked up
 * with metrics_child(om->table_dead_tuples, "messages", NULL).
 */
struct outboxd_metrics {
	/* outboxd_messages_total{outcome} */
	struct metrics_family *messages;
	struct metrics_child *msg_sent, *msg_retry, *msg_failed, *msg_dead, *msg_unknown, *msg_released;
	/* outboxd_smtp_replies_total{class} */
	struct metrics_family *smtp_replies;
	struct metrics_child *smtp_2xx, *smtp_4xx, *smtp_5xx, *smtp_none;
	/* outboxd_smtp_send_duration_seconds, outboxd_delivery_latency_seconds */
	struct metrics_child *smtp_send_duration, *delivery_latency;
	/* outboxd_queue_depth{state} */
	struct metrics_family *queue_depth;
	struct metrics_child *depth_pending, *depth_sending, *depth_sent, *depth_failed, *depth_dead, *depth_cancelled;
	struct metrics_child *oldest_pending_age;
	/* Kafka mirror */
	struct metrics_child *kafka_lag_rows, *kafka_lag_seconds, *kafka_mirror_enabled;
	struct metrics_family *kafka_publish;
	struct metrics_child *kafka_published, *kafka_failed, *kafka_retry;
	/* outboxd_breaker_state{sink}: 0 closed, 1 half-open, 2 open */
	struct metrics_family *breaker_state;
	struct metrics_child *breaker_smtp, *breaker_kafka;
	/* outboxd_breaker_transitions_total{sink,to}: to is closed|half_open|open */
	struct metrics_family *breaker_transitions;
	struct metrics_child *database_up, *listener_up;
	struct metrics_child *claim_batch_size, *in_flight;
	/* {table}, from pg_stat_user_tables */
	struct metrics_family *table_dead_tuples, *table_last_autovacuum;
	struct metrics_child *oldest_xact_age;
	struct metrics_family *build_info;
	struct metrics_child *up;
	/* retention: outboxd_retention_removed_total{table,state}, partitions dropped,
	 * time of the last finished pass, and whether this dispatcher is the one purging */
	struct metrics_family *retention_removed;
	struct metrics_child *retention_dropped, *retention_last_pass, *retention_leader;
	/* outboxd_lock_foreign_holder{lock}: 1 while a session that is not outboxd holds the
	 * mirror's or the retention's advisory lock, as this dispatcher last saw it */
	struct metrics_family *lock_foreign;
	struct metrics_child *lock_foreign_mirror, *lock_foreign_retention;
};

/*
 * Registers every outboxd family (including the process_* ones backed by procstat
 * and outboxd_build_info{version}) in reg. Returns a struct the caller frees with
 * outboxd_metrics_free() (its handles belong to reg), or NULL on OOM or when a name
 * is already registered; families registered before a failure stay in reg, which the
 * caller frees as usual.
 */
struct outboxd_metrics *outboxd_metrics_new(struct metrics *reg, const char *version) METRICS_MUST_CHECK;

/* Frees the struct returned by outboxd_metrics_new() (not the registry). NULL is fine. */
void outboxd_metrics_free(struct outboxd_metrics *om);

/* Registers the standard process_* families, computed from /proc at scrape time.
 * Returns 0, or -1 on OOM or a duplicate. */
int metrics_register_process(struct metrics *reg) METRICS_MUST_CHECK;

#endif
