/* Kafka mirror: publishes outbox.events to Kafka through librdkafka on the dispatcher's
 * loop, in commit order per key, marking rows published only from delivery reports.
 * One active publisher among replicas (session advisory lock). The only module that
 * includes rdkafka.h. */
#ifndef OUTBOXD_KAFKA_H
#define OUTBOXD_KAFKA_H

#include <stddef.h>

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

#endif
