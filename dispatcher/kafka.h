/* Kafka mirror: publishes outbox.events to Kafka through librdkafka on the dispatcher's
 * loop, in commit order per key, marking rows published only from delivery reports.
 * One active publisher among replicas (session advisory lock). The only module that
 * includes rdkafka.h. */
#ifndef OUTBOXD_KAFKA_H
#define OUTBOXD_KAFKA_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct config;
struct telemetry;
struct kafka_mirror;

/* Starts the mirror (kafka.brokers must be non-empty): its own PostgreSQL connection,
 * the leader election and the producer. Returns NULL with errbuf set on a configuration
 * error. The mirror keeps pointers to cfg and tm, which must outlive it. */
struct kafka_mirror *kafka_mirror_new(struct event_base *base, const struct config *cfg,
				      struct telemetry *tm, char *errbuf, size_t errlen);

/* Begins a graceful stop: no new reads, flush what is in flight within the drain
 * timeout, write the delivery results, leave unacknowledged rows unpublished. */
void kafka_mirror_stop(struct kafka_mirror *m);

/* 1 once a stop has finished (or when m is NULL). */
int kafka_mirror_stopped(const struct kafka_mirror *m);

/* Frees everything (after a stop, or at once on a fast exit). NULL is fine. */
void kafka_mirror_free(struct kafka_mirror *m);

/* ---- The publisher underneath the mirror, exposed for the mock-cluster tests. ---- */

/* What became of one record (a delivery report or a refused produce call). */
enum kafka_outcome {
	KAFKA_OK,        /* persisted (or a duplicate of a persisted record) */
	KAFKA_RETRY,     /* not delivered this time: leave the row pending, send it again */
	KAFKA_PERMANENT, /* Kafka will never take it (too large, not authorised, invalid) */
	KAFKA_FATAL,     /* the producer is unusable: it is recreated */
};

/* Maps a librdkafka error code (rd_kafka_resp_err_t) to an outcome. */
enum kafka_outcome kafka_classify(int err);
/* "ok", "retry", "permanent" or "fatal" (static string). */
const char *kafka_outcome_name(enum kafka_outcome o);

struct kafka_pub;

/* One delivery report; the strings live only during the callback. */
struct kafka_delivery {
	int64_t id;          /* the row id given to kafka_pub_produce() */
	enum kafka_outcome outcome;
	int err;             /* rd_kafka_resp_err_t */
	const char *reason;  /* librdkafka's text for err */
	int possibly_persisted;
	int32_t partition;   /* KAFKA_OK only */
	int64_t offset;      /* KAFKA_OK only */
};

struct kafka_pub_callbacks {
	void (*on_delivery)(void *arg, const struct kafka_delivery *d);
	/* A fatal error replaced the producer: every record without a delivery report so far
	 * got a KAFKA_RETRY report first. */
	void (*on_recreated)(void *arg);
};

/* Producer settings. Strings are copied into librdkafka's configuration; "" = unset. */
struct kafka_pub_opts {
	const char *brokers;
	const char *compression;       /* none|gzip|snappy|lz4|zstd */
	int64_t message_timeout_ms;    /* 0 = never time out */
	const char *security_protocol; /* plaintext|ssl|sasl_plaintext|sasl_ssl */
	const char *sasl_mechanism, *sasl_username, *sasl_password, *ssl_ca_file;
	const char *const *extra;      /* NULL-terminated name, value pairs (e.g. test.mock.*) */
};

/* One record to produce; headers are name/value string pairs. */
struct kafka_record {
	int64_t id;
	const char *topic;
	const char *key;
	size_t key_len;
	const char *value;
	size_t value_len;
	const char *const *headers; /* 2 * nheaders strings */
	int nheaders;
};

/* Creates an idempotent producer (acks=all, murmur2_random) whose delivery reports and logs
 * are served on base. Returns NULL with errbuf set on a configuration error. */
struct kafka_pub *kafka_pub_new(struct event_base *base, const struct kafka_pub_opts *o,
				const struct kafka_pub_callbacks *cb, void *arg, char *errbuf,
				size_t errlen);
/* Queues a record (copied). Returns KAFKA_OK when queued (its outcome comes later as a
 * delivery report), KAFKA_RETRY when the local queue is full or the record could not be
 * queued for a transient reason, KAFKA_PERMANENT (reason in errbuf) or KAFKA_FATAL. */
enum kafka_outcome kafka_pub_produce(struct kafka_pub *p, const struct kafka_record *r,
				     int *err, char *errbuf, size_t errlen);
/* Serves delivery reports now (also done on the loop). */
void kafka_pub_poll(struct kafka_pub *p);
/* Records queued or in flight without a delivery report yet. */
int kafka_pub_outq_len(struct kafka_pub *p);
/* Drops queued (and with inflight, in-flight) records; their reports say KAFKA_RETRY. */
void kafka_pub_purge(struct kafka_pub *p, int inflight);
/* Times the producer was replaced after a fatal error. */
unsigned kafka_pub_recreated(const struct kafka_pub *p);
/* The rd_kafka_t handle, for tests (mock cluster, rd_kafka_test_fatal_error). */
void *kafka_pub_handle(struct kafka_pub *p);
/* Purges what is left, destroys the producer (never blocks on the brokers). NULL is fine. */
void kafka_pub_free(struct kafka_pub *p);

#endif
