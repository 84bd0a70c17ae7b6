/* Kafka mirror placeholder until the librdkafka publisher lands: refuses to start. */
#include "kafka.h"

#include <stdio.h>

struct kafka_mirror {
	int stopped;
};

struct kafka_mirror *kafka_mirror_new(struct event_base *base, const struct config *cfg,
				      struct telemetry *tm, char *errbuf, size_t errlen)
{
	(void)base;
	(void)cfg;
	(void)tm;
	snprintf(errbuf, errlen, "kafka mirror not available in this build");
	return NULL;
}

void kafka_mirror_stop(struct kafka_mirror *m)
{
	if (m)
		m->stopped = 1;
}

int kafka_mirror_stopped(const struct kafka_mirror *m)
{
	return m == NULL || m->stopped;
}

void kafka_mirror_free(struct kafka_mirror *m)
{
	(void)m;
}
