/* kafka: the librdkafka binding: one idempotent producer whose delivery reports are served
 * on the event loop, and the table that maps librdkafka's errors to outcomes. The only
 * module that includes rdkafka.h; mirror.c builds on it. */
#ifndef OUTBOXD_KAFKA_H
#define OUTBOXD_KAFKA_H

#include <stddef.h>
#include <stdint.h>

struct event_base;

/* What became of one record (a delivery report or a refused produce call). */
enum kafka_outcome {
	KAFKA_OK,         /* persisted (or a duplicate of a persisted record) */
	KAFKA_RETRY,      /* not delivered this time: leave the row pending, send it again */
	KAFKA_PERMANENT,  /* Kafka will never take it (too large, not authorised, invalid) */
	KAFKA_FATAL,      /* the producer is unusable: it is recreated */
	KAFKA_QUEUE_FULL, /* produce only: the local queue is full; wait for delivery reports */
};

/* Maps a librdkafka error code (rd_kafka_resp_err_t) to an outcome. */
enum kafka_outcome kafka_classify(int err);
/* "ok", "retry", "permanent", "fatal" or "queue_full" (static string). */
const char *kafka_outcome_name(enum kafka_outcome o);

struct kafka_pub;

/* One delivery report; the strings live only during the callback. */
struct kafka_delivery {
	int64_t id; /* the row id given to kafka_pub_produce() */
	enum kafka_outcome outcome;
	int err;            /* rd_kafka_resp_err_t */
	const char *reason; /* librdkafka's text for err */
	int possibly_persisted;
	int32_t partition; /* KAFKA_OK only */
	int64_t offset;    /* KAFKA_OK only */
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
	const char *const *extra; /* NULL-terminated name, value pairs (e.g. test.mock.*) */
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
 * are served on base when they arrive; the owner also calls kafka_pub_poll() periodically
 * (librdkafka signals the queue only when it goes from empty to non-empty). Returns NULL
 * with errbuf set on a configuration error. */
struct kafka_pub *kafka_pub_new(struct event_base *base, const struct kafka_pub_opts *o,
				const struct kafka_pub_callbacks *cb, void *arg, char *errbuf, size_t errlen);
/* Queues a record (copied). Returns KAFKA_OK when queued (its outcome comes later as a
 * delivery report), KAFKA_QUEUE_FULL when the local queue is full, KAFKA_RETRY when it
 * could not be queued for another transient reason, KAFKA_PERMANENT (reason in errbuf) or
 * KAFKA_FATAL. */
enum kafka_outcome kafka_pub_produce(struct kafka_pub *p, const struct kafka_record *r, int *err, char *errbuf,
				     size_t errlen);
/* Serves delivery reports now (also done on the loop). */
void kafka_pub_poll(struct kafka_pub *p);
/* 1 while every broker is unreachable (since the last successful delivery). */
int kafka_pub_brokers_down(const struct kafka_pub *p);
/* Records queued or in flight without a delivery report yet. */
int kafka_pub_outq_len(struct kafka_pub *p);
/* Drops queued (and with inflight, in-flight) records; their reports say KAFKA_RETRY. */
void kafka_pub_purge(struct kafka_pub *p, int inflight);
/* Times the producer was replaced after a fatal error. */
unsigned kafka_pub_recreated(const struct kafka_pub *p);
/* The rd_kafka_t handle, for tests (mock cluster, rd_kafka_test_fatal_error). */
void *kafka_pub_handle(struct kafka_pub *p);
/* Purges what is left and destroys the producer (never blocks on the brokers); no callback
 * runs once kafka_pub_free is called. NULL is fine. */
void kafka_pub_free(struct kafka_pub *p);

#endif
