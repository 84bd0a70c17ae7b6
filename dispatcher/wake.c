/* wake: see wake.h. */
#include "wake.h"

int wake_set_idle(struct pgconn *c, const char *owner, const char *channel, int idle, pg_query_cb cb, void *arg)
{
	const char *p[3] = { owner, idle ? "true" : "false", channel };

	return pg_query(c, "SELECT outbox.set_idle($1, $2::boolean, $3)", 3, p, 10000, cb, arg);
}
