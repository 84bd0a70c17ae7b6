/* mirror: publishes outbox.events to Kafka (through kafka.c) on the dispatcher's loop, in
 * commit order per key, marking rows published only from delivery reports. One active
 * publisher among replicas (a session advisory lock). */
#ifndef OUTBOXD_MIRROR_H
#define OUTBOXD_MIRROR_H

#include <stddef.h>

struct event_base;
struct config;
struct telemetry;
struct kafka_mirror;

/* The mirror's life: campaign for the lock, set the session up, publish; on a stop, flush
 * the producer, record the last results, stop. Losing the session goes back to FOLLOWER
 * (or, while stopping, forgets what was in flight). */
enum mirror_state {
	MIRROR_FOLLOWER,   /* no lock; the tick campaigns for it */
	MIRROR_LOCKING,    /* pg_try_advisory_lock() in flight */
	MIRROR_SETTING_UP, /* lock held; LISTEN and the lifecycle-event setting in flight */
	MIRROR_LEADING,    /* reading, producing, recording results */
	MIRROR_FLUSHING,   /* stopping: no new reads; the producer flushes what is in flight */
	MIRROR_RECORDING,  /* stopping: the producer is done; the last results are written */
	MIRROR_STOPPED,
};

/* "follower", "locking", ... (static string). */
const char *mirror_state_name(enum mirror_state s);

/* Starts the mirror (kafka.brokers must be non-empty): its own PostgreSQL connection,
 * the leader election and the producer. owner is the dispatcher's owner id (the mirror
 * registers as owner + ":mirror"). Returns NULL with errbuf set on a configuration error.
 * The mirror keeps pointers to cfg and tm, which must outlive it. */
struct kafka_mirror *kafka_mirror_new(struct event_base *base, const struct config *cfg, struct telemetry *tm,
				      const char *owner, char *errbuf, size_t errlen);

/* The mirror's periodic duties, every 250 ms from the dispatcher's maintenance tick:
 * serve producer reports, campaign for the lock, the read safety net (every second),
 * write delivery results, the Kafka breaker gauge, and the steps of a stop. */
void kafka_mirror_tick(struct kafka_mirror *m);

/* Begins a graceful stop: no new reads, flush what is in flight within the drain
 * timeout, write the delivery results, leave unacknowledged rows unpublished. */
void kafka_mirror_stop(struct kafka_mirror *m);

/* 1 once a stop has finished (or when m is NULL). */
int kafka_mirror_stopped(const struct kafka_mirror *m);

/* Frees everything (after a stop, or at once on a fast exit); no callback runs once it is
 * called. NULL is fine. */
void kafka_mirror_free(struct kafka_mirror *m);

#endif
