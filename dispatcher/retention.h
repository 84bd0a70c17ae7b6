/* Retention: removes finished rows past their per-state retention (outbox.purge()), in
 * small batches on its own database connection, on one dispatcher at a time (the holder of
 * the retention advisory lock), stepping aside while the queue has a backlog or the
 * database is slow. Never blocks the loop. */
#ifndef OUTBOXD_RETENTION_H
#define OUTBOXD_RETENTION_H

#include <stddef.h>

struct event_base;
struct config;
struct telemetry;
struct retention;

/* Creates the module and its connection ("outboxd-retention"). It only runs when
 * retention.enabled is on and this process wins the lock. cfg must outlive the module; its
 * retention.* keys are read at each use, so a reload that changes them takes effect at
 * once. Returns NULL with errbuf set. */
struct retention *retention_new(struct event_base *base, const struct config *cfg, struct telemetry *tm, char *errbuf,
				size_t errlen);

/* Called once a second by the dispatcher's maintenance tick: elects, starts passes. */
void retention_tick(struct retention *r);

/* Stops starting batches (shutdown); a batch running on the server finishes or is cut off
 * when the connection closes, and rolls back whole. */
void retention_stop(struct retention *r);

void retention_free(struct retention *r);

#endif
