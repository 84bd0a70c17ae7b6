/* wake: the consumer side of the wake protocol (sql/02_wake.sql). A consumer that found
 * its lane empty marks itself idle; producers' commits then NOTIFY the lane's channel,
 * and the consumer reads once more after marking, since a row may have committed before
 * the mark did. */
#ifndef OUTBOXD_WAKE_H
#define OUTBOXD_WAKE_H

#include "pg.h"

#define WAKE_CHANNEL_MESSAGES "outbox_messages"
#define WAKE_CHANNEL_EVENTS "outbox_events"

/* Queues outbox.set_idle(owner, idle, channel) on c; cb as for pg_query. Returns pg_query's
 * result (0 when queued). */
int wake_set_idle(struct pgconn *c, const char *owner, const char *channel, int idle, pg_query_cb cb, void *arg);

#endif
