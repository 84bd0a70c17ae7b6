/* kafka: the librdkafka binding. One idempotent producer served on the event loop
 * (kafka_pub_*) and the error table (kafka_classify). The only file that includes
 * rdkafka.h; the mirror (mirror.c) sees only kafka.h. */
#include "kafka.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "log.h"

/* ======================================================================================
 * Error classification
 * ====================================================================================== */

enum kafka_outcome kafka_classify(int code)
{
	switch ((rd_kafka_resp_err_t)code) {
	case RD_KAFKA_RESP_ERR_NO_ERROR:
	case RD_KAFKA_RESP_ERR_DUPLICATE_SEQUENCE_NUMBER: /* already persisted by this producer */
		return KAFKA_OK;
	/* The record itself or its topic is refused: sending it again cannot help. */
	case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
	case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
	case RD_KAFKA_RESP_ERR_INVALID_RECORD:
	case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
	case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
	case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
	case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
	case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
	case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
	case RD_KAFKA_RESP_ERR__INVALID_ARG:
		return KAFKA_PERMANENT;
	/* The producer instance is unusable (idempotence state lost, fenced, not allowed). */
	case RD_KAFKA_RESP_ERR__FATAL:
	case RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER:
	case RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH:
	case RD_KAFKA_RESP_ERR_PRODUCER_FENCED:
	case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
		return KAFKA_FATAL;
	default:
		/* Timeouts, purges, transport: nothing proves the record is refused. */
		return KAFKA_RETRY;
	}
}

const char *kafka_outcome_name(enum kafka_outcome o)
{
	switch (o) {
	case KAFKA_OK:
		return "ok";
	case KAFKA_RETRY:
		return "retry";
	case KAFKA_PERMANENT:
		return "permanent";
	case KAFKA_FATAL:
		return "fatal";
	case KAFKA_QUEUE_FULL:
		return "queue_full";
	}
	return "unknown";
}

/* ======================================================================================
 * Publisher: one idempotent producer whose delivery reports run on the loop
 * ====================================================================================== */

struct kafka_pub {
	struct event_base *base;
	rd_kafka_conf_t *tmpl; /* kept to build a new producer after a fatal error */
	rd_kafka_t *rk;
	rd_kafka_queue_t *mainq;
	int fds[2]; /* librdkafka writes to fds[1] when the main queue fills */
	struct event *ev_wake, *ev_fatal;
	struct kafka_pub_callbacks cb;
	void *arg;
	unsigned recreated;
	int brokers_down; /* all brokers unreachable since the last good report */
};

static void pub_serve(struct kafka_pub *p)
{
	if (p->rk == NULL)
		return;
	while (rd_kafka_poll(p->rk, 0) > 0)
		;
}

static void pub_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	struct kafka_pub *p = opaque;
	struct kafka_delivery d;

	(void)rk;
	if (p->cb.on_delivery == NULL)
		return;
	memset(&d, 0, sizeof d);
	d.id = (int64_t)(intptr_t)m->_private;
	d.err = m->err;
	d.reason = rd_kafka_err2str(m->err);
	d.outcome = kafka_classify(m->err);
	/* A record caught in a fatal error is sent again by the new producer. */
	if (d.outcome == KAFKA_FATAL)
		d.outcome = KAFKA_RETRY;
	d.possibly_persisted = rd_kafka_message_status(m) == RD_KAFKA_MSG_STATUS_POSSIBLY_PERSISTED;
	if (d.outcome == KAFKA_OK) {
		d.partition = m->partition;
		d.offset = m->offset;
		p->brokers_down = 0;
	}
	p->cb.on_delivery(p->arg, &d);
}

static void pub_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	struct kafka_pub *p = opaque;

	if (err == RD_KAFKA_RESP_ERR__FATAL) {
		char why[512];
		rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, why, sizeof why);
		log_error("kafka producer fatal error: recreating the producer",
			  LOG_S("error", rd_kafka_err2name(orig)), LOG_S("reason", why));
		event_active(p->ev_fatal, 0, 0);
		return;
	}
	if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
		if (!p->brokers_down)
			log_warn("kafka: all brokers are down; events wait in PostgreSQL", LOG_S("reason", reason));
		p->brokers_down = 1;
		return;
	}
	/* Transport errors are retried by librdkafka and often come with misleading hints. */
	log_write(err == RD_KAFKA_RESP_ERR__TRANSPORT ? LOG_DEBUG : LOG_WARN, "kafka client error",
		  LOG_S("error", rd_kafka_err2name((rd_kafka_resp_err_t)err)), LOG_S("reason", reason));
}

static void pub_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	/* Syslog levels; connection failures come at 3 and are retried, so they are warnings. */
	enum log_level l = level <= 2 ? LOG_ERROR : level <= 4 ? LOG_WARN : level <= 6 ? LOG_INFO : LOG_DEBUG;

	/* A broker that has just started answers the idempotent producer's first PID request
	 * with "coordinator load in progress" and librdkafka retries: routine (every `KAFKA=1
	 * make run` meets it), so not a warning. */
	if (l == LOG_WARN && strcmp(fac, "GETPID") == 0 && strstr(buf, "retrying") != NULL)
		l = LOG_INFO;

	(void)rk;
	log_write(l, "librdkafka", LOG_S("facility", fac), LOG_S("text", buf));
}

static void pub_stop_handle(struct kafka_pub *p)
{
	if (p->rk == NULL)
		return;
	/* Every handle we hold must go before rd_kafka_destroy(), or it waits for ever. */
	rd_kafka_queue_io_event_enable(p->mainq, -1, NULL, 0);
	rd_kafka_queue_destroy(p->mainq);
	p->mainq = NULL;
	/* Without a flush, rd_kafka_destroy() drops what is queued without delivery reports. */
	rd_kafka_destroy(p->rk);
	p->rk = NULL;
}

static int pub_start_handle(struct kafka_pub *p, char *errbuf, size_t errlen)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_dup(p->tmpl);

	p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errbuf, errlen);
	if (p->rk == NULL) {
		rd_kafka_conf_destroy(conf);
		return -1;
	}
	rd_kafka_set_log_queue(p->rk, NULL);
	p->mainq = rd_kafka_queue_get_main(p->rk);
	rd_kafka_queue_io_event_enable(p->mainq, p->fds[1], "1", 1);
	p->brokers_down = 0;
	return 0;
}

static void pub_on_wake(evutil_socket_t fd, short what, void *arg)
{
	struct kafka_pub *p = arg;
	char junk[256];

	(void)what;
	while (read(fd, junk, sizeof junk) > 0)
		;
	pub_serve(p);
}

static void pub_on_fatal(evutil_socket_t fd, short what, void *arg)
{
	struct kafka_pub *p = arg;
	char err[512];

	(void)fd;
	(void)what;
	if (p->rk == NULL || rd_kafka_fatal_error(p->rk, NULL, 0) == RD_KAFKA_RESP_ERR_NO_ERROR)
		return;
	/* Collect a report for everything outstanding (they say retry), then start afresh. */
	rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
	pub_serve(p);
	pub_stop_handle(p);
	p->recreated++;
	if (pub_start_handle(p, err, sizeof err) != 0) {
		/* The same configuration worked before; try again in a second. */
		log_error("kafka: cannot recreate the producer", LOG_S("error", err));
		struct timeval tv = { 1, 0 };
		event_add(p->ev_fatal, &tv);
		return;
	}
	log_info("kafka producer recreated", LOG_I("recreated", (long long)p->recreated));
	if (p->cb.on_recreated)
		p->cb.on_recreated(p->arg);
}

static int conf_set(rd_kafka_conf_t *c, const char *name, const char *value, char *errbuf, size_t errlen)
{
	char e[256];

	if (value == NULL || value[0] == '\0')
		return 0;
	if (rd_kafka_conf_set(c, name, value, e, sizeof e) != RD_KAFKA_CONF_OK) {
		/* Never echo the value: it may be a password. */
		snprintf(errbuf, errlen, "kafka setting %s refused: %s", name, e);
		return -1;
	}
	return 0;
}

static rd_kafka_conf_t *pub_build_conf(struct kafka_pub *p, const struct kafka_pub_opts *o, char *errbuf, size_t errlen)
{
	rd_kafka_conf_t *c = rd_kafka_conf_new();
	char timeout[32];
	int bad = 0;

	snprintf(timeout, sizeof timeout, "%lld", (long long)o->message_timeout_ms);
	bad |= conf_set(c, "bootstrap.servers", o->brokers, errbuf, errlen);
	bad |= conf_set(c, "client.id", "outboxd-mirror", errbuf, errlen);
	/* Idempotence: acks=all, at most 5 in flight, retries: per-partition order, no
	 * duplicates within one producer session. */
	bad |= conf_set(c, "enable.idempotence", "true", errbuf, errlen);
	bad |= conf_set(c, "acks", "all", errbuf, errlen);
	bad |= conf_set(c, "partitioner", "murmur2_random", errbuf, errlen);
	bad |= conf_set(c, "compression.codec", o->compression, errbuf, errlen);
	bad |= conf_set(c, "message.timeout.ms", timeout, errbuf, errlen);
	bad |= conf_set(c, "log.queue", "true", errbuf, errlen);
	bad |= conf_set(c, "security.protocol", o->security_protocol, errbuf, errlen);
	bad |= conf_set(c, "sasl.mechanisms", o->sasl_mechanism, errbuf, errlen);
	bad |= conf_set(c, "sasl.username", o->sasl_username, errbuf, errlen);
	bad |= conf_set(c, "sasl.password", o->sasl_password, errbuf, errlen);
	bad |= conf_set(c, "ssl.ca.location", o->ssl_ca_file, errbuf, errlen);
	for (const char *const *x = o->extra; x && x[0] && x[1]; x += 2)
		bad |= conf_set(c, x[0], x[1], errbuf, errlen);
	if (bad) {
		rd_kafka_conf_destroy(c);
		return NULL;
	}
	rd_kafka_conf_set_dr_msg_cb(c, pub_dr);
	rd_kafka_conf_set_error_cb(c, pub_error);
	rd_kafka_conf_set_log_cb(c, pub_log);
	rd_kafka_conf_set_opaque(c, p);
	return c;
}

struct kafka_pub *kafka_pub_new(struct event_base *base, const struct kafka_pub_opts *o,
				const struct kafka_pub_callbacks *cb, void *arg, char *errbuf, size_t errlen)
{
	struct kafka_pub *p = calloc(1, sizeof *p);

	if (p == NULL) {
		snprintf(errbuf, errlen, "out of memory");
		return NULL;
	}
	p->base = base;
	p->fds[0] = p->fds[1] = -1;
	if (cb)
		p->cb = *cb;
	p->arg = arg;
	if (pipe2(p->fds, O_NONBLOCK | O_CLOEXEC) != 0) {
		snprintf(errbuf, errlen, "pipe: %s", strerror(errno));
		goto fail;
	}
	p->tmpl = pub_build_conf(p, o, errbuf, errlen);
	if (p->tmpl == NULL)
		goto fail;
	p->ev_wake = event_new(base, p->fds[0], EV_READ | EV_PERSIST, pub_on_wake, p);
	p->ev_fatal = evtimer_new(base, pub_on_fatal, p);
	if (!p->ev_wake || !p->ev_fatal) {
		snprintf(errbuf, errlen, "out of memory");
		goto fail;
	}
	if (pub_start_handle(p, errbuf, errlen) != 0)
		goto fail;
	event_add(p->ev_wake, NULL);
	return p;
fail:
	kafka_pub_free(p);
	return NULL;
}

enum kafka_outcome kafka_pub_produce(struct kafka_pub *p, const struct kafka_record *r, int *err, char *errbuf,
				     size_t errlen)
{
	rd_kafka_headers_t *h;
	rd_kafka_resp_err_t e;
	enum kafka_outcome o;

	*err = 0;
	if (p->rk == NULL) {
		snprintf(errbuf, errlen, "no producer");
		return KAFKA_RETRY;
	}
	h = rd_kafka_headers_new((size_t)(r->nheaders > 0 ? r->nheaders : 1));
	for (int i = 0; i < r->nheaders; i++)
		rd_kafka_header_add(h, r->headers[2 * i], -1, r->headers[2 * i + 1], -1);
	e = rd_kafka_producev(p->rk, RD_KAFKA_V_TOPIC(r->topic), RD_KAFKA_V_KEY(r->key, r->key_len),
			      RD_KAFKA_V_VALUE((void *)r->value, r->value_len),
			      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h),
			      RD_KAFKA_V_OPAQUE((void *)(intptr_t)r->id), RD_KAFKA_V_END);
	if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
		return KAFKA_OK;
	rd_kafka_headers_destroy(h); /* still ours when the call failed */
	*err = e;
	snprintf(errbuf, errlen, "%s", rd_kafka_err2str(e));
	if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL)
		return KAFKA_QUEUE_FULL;
	o = kafka_classify(e);
	if (o == KAFKA_FATAL)
		event_active(p->ev_fatal, 0, 0);
	return o;
}

void kafka_pub_poll(struct kafka_pub *p)
{
	pub_serve(p);
}

int kafka_pub_brokers_down(const struct kafka_pub *p)
{
	return p->brokers_down;
}

int kafka_pub_outq_len(struct kafka_pub *p)
{
	return p->rk ? rd_kafka_outq_len(p->rk) : 0;
}

void kafka_pub_purge(struct kafka_pub *p, int inflight)
{
	if (p->rk == NULL)
		return;
	rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | (inflight ? RD_KAFKA_PURGE_F_INFLIGHT : 0));
}

unsigned kafka_pub_recreated(const struct kafka_pub *p)
{
	return p->recreated;
}

void *kafka_pub_handle(struct kafka_pub *p)
{
	return p->rk;
}

void kafka_pub_free(struct kafka_pub *p)
{
	if (p == NULL)
		return;
	/* the teardown contract: the last reports below go nowhere */
	p->cb.on_delivery = NULL;
	p->cb.on_recreated = NULL;
	if (p->rk) {
		int left = rd_kafka_outq_len(p->rk);
		if (left > 0) {
			rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
			pub_serve(p);
		}
	}
	pub_stop_handle(p);
	if (p->ev_wake)
		event_free(p->ev_wake);
	if (p->ev_fatal)
		event_free(p->ev_fatal);
	if (p->tmpl)
		rd_kafka_conf_destroy(p->tmpl);
	if (p->fds[0] >= 0)
		close(p->fds[0]);
	if (p->fds[1] >= 0)
		close(p->fds[1]);
	free(p);
}
