/* Kafka mirror: the librdkafka producer served on the event loop (kafka_pub_*), and the
 * mirror that elects one publisher, reads outbox.events in commit order, produces them and
 * records delivery reports in PostgreSQL (kafka_mirror_*). The only file that sees rdkafka.h. */
#include "kafka.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "backoff.h"
#include "breaker.h"
#include "buf.h"
#include "config.h"
#include "log.h"
#include "pg.h"
#include "telemetry.h"

/* The mirror's session advisory lock, "outboxka"; outbox.mirror_lock_key() says the same. */
#define MIRROR_LOCK_KEY "8031453476610927457"
/* Rows produced and not yet recorded in PostgreSQL; reading stops above this. */
#define MIRROR_MAX_INFLIGHT 20000
#define MIRROR_TICK_MS 250
#define ROW_BUCKETS 65536u
#define KEY_BUCKETS 16384u

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

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
	int fds[2];            /* librdkafka writes to fds[1] when the main queue fills */
	struct event *ev_wake, *ev_tick, *ev_fatal;
	struct kafka_pub_callbacks cb;
	void *arg;
	unsigned recreated;
	int destroying;        /* ignore reports while the handle is torn down */
	int brokers_down;      /* all brokers unreachable since the last good report */
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
	if (p->destroying || p->cb.on_delivery == NULL)
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
		log_error("kafka producer fatal error: recreating the producer", "serror",
			  rd_kafka_err2name(orig), "sreason", why, NULL);
		event_active(p->ev_fatal, 0, 0);
		return;
	}
	if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
		if (!p->brokers_down)
			log_warn("kafka: all brokers are down; events wait in PostgreSQL", "sreason", reason,
				 NULL);
		p->brokers_down = 1;
		return;
	}
	/* Transport errors are retried by librdkafka and often come with misleading hints. */
	log_write(err == RD_KAFKA_RESP_ERR__TRANSPORT ? LOG_DEBUG : LOG_WARN, "kafka client error",
		  "serror", rd_kafka_err2name((rd_kafka_resp_err_t)err), "sreason", reason, NULL);
}

static void pub_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	/* Syslog levels; connection failures come at 3 and are retried, so they are warnings. */
	enum log_level l = level <= 2 ? LOG_ERROR : level <= 4 ? LOG_WARN : level <= 6 ? LOG_INFO : LOG_DEBUG;

	(void)rk;
	log_write(l, "librdkafka", "sfacility", fac, "stext", buf, NULL);
}

static void pub_stop_handle(struct kafka_pub *p)
{
	if (p->rk == NULL)
		return;
	p->destroying = 1;
	/* Every handle we hold must go before rd_kafka_destroy(), or it waits for ever. */
	rd_kafka_queue_io_event_enable(p->mainq, -1, NULL, 0);
	rd_kafka_queue_destroy(p->mainq);
	p->mainq = NULL;
	rd_kafka_destroy(p->rk);
	p->rk = NULL;
	p->destroying = 0;
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

static void pub_on_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	/* The pipe is written only when the queue goes from empty to non-empty. */
	pub_serve(arg);
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
		/* The same configuration worked before; try again on the next tick. */
		log_error("kafka: cannot recreate the producer", "serror", err, NULL);
		struct timeval tv = { 1, 0 };
		event_add(p->ev_fatal, &tv);
		return;
	}
	log_info("kafka producer recreated", "irecreated", (long long)p->recreated, NULL);
	if (p->cb.on_recreated)
		p->cb.on_recreated(p->arg);
}

static int conf_set(rd_kafka_conf_t *c, const char *name, const char *value, char *errbuf,
		    size_t errlen)
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

static rd_kafka_conf_t *pub_build_conf(struct kafka_pub *p, const struct kafka_pub_opts *o,
				       char *errbuf, size_t errlen)
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
				const struct kafka_pub_callbacks *cb, void *arg, char *errbuf,
				size_t errlen)
{
	struct kafka_pub *p = calloc(1, sizeof *p);
	struct timeval tick = { 0, MIRROR_TICK_MS * 1000 };

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
	p->ev_tick = event_new(base, -1, EV_PERSIST, pub_on_tick, p);
	p->ev_fatal = evtimer_new(base, pub_on_fatal, p);
	if (!p->ev_wake || !p->ev_tick || !p->ev_fatal) {
		snprintf(errbuf, errlen, "out of memory");
		goto fail;
	}
	if (pub_start_handle(p, errbuf, errlen) != 0)
		goto fail;
	event_add(p->ev_wake, NULL);
	event_add(p->ev_tick, &tick);
	return p;
fail:
	kafka_pub_free(p);
	return NULL;
}

enum kafka_outcome kafka_pub_produce(struct kafka_pub *p, const struct kafka_record *r, int *err,
				     char *errbuf, size_t errlen)
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
		return KAFKA_RETRY;
	o = kafka_classify(e);
	if (o == KAFKA_FATAL)
		event_active(p->ev_fatal, 0, 0);
	return o;
}

void kafka_pub_poll(struct kafka_pub *p)
{
	pub_serve(p);
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
	if (p->ev_tick)
		event_free(p->ev_tick);
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

/* ======================================================================================
 * Mirror: leader election, commit-order reads, per-key hold, results in PostgreSQL
 * ====================================================================================== */

/* A key (aggregate id) with rows in the mirror's table or a hold. */
struct mkey {
	struct mkey *next;
	unsigned refs;   /* rows of the table that point here */
	int inflight;    /* rows produced without a delivery report */
	int64_t held;    /* > 0: a delivery of this row failed; later rows wait for it */
	char name[];
};

enum mrow_state { ROW_INFLIGHT, ROW_ACKED, ROW_FAILED };

/* A row produced (or refused) and not yet recorded in PostgreSQL: reads skip it. */
struct mrow {
	struct mrow *next;
	int64_t id;
	struct mkey *key;
	enum mrow_state st;
};

struct mark_pub {
	int64_t id;
	int32_t partition;
	int64_t offset;
};

struct mark_fail {
	int64_t id;
	char *reason;
};

struct marks {
	struct mark_pub *pub;
	size_t npub, cappub;
	struct mark_fail *fail;
	size_t nfail, capfail;
};

struct kafka_mirror {
	struct event_base *base;
	const struct config *cfg;
	struct telemetry *tm;
	struct pgconn *pg;
	struct kafka_pub *pub;
	char owner[300];
	int strict;              /* message timeout > 0: one record in flight per key */
	struct event *ev_tick, *ev_read, *ev_after, *ev_reset;
	unsigned ticks, next_lock_tick;

	/* leadership */
	int leader;              /* this session holds the lock */
	int ready;               /* leader and set up (LISTEN, settings) */
	int lock_query;

	/* reading */
	int read_inflight, rewind, queue_full, wait_dr, idle, idle_query;
	int64_t cursor;          /* rows <= cursor were read unless txid >= guard */
	char guard[32];          /* snapshot xmin of the previous read */

	/* rows and keys */
	struct mrow *rows[ROW_BUCKETS];
	struct mkey *keys[KEY_BUCKETS];
	size_t nrows, nkeys;
	int inflight;

	/* results */
	struct marks todo, sending;
	int mark_inflight;

	/* stop */
	int stopping, purged, stopped, freeing;
	uint64_t flush_deadline, final_deadline;
	enum breaker_state kstate;
};

static void mirror_kick(struct kafka_mirror *m);
static void mirror_check_stop(struct kafka_mirror *m);

static size_t hash_id(int64_t id)
{
	uint64_t x = (uint64_t)id * 0x9E3779B97F4A7C15ull;
	return (size_t)(x >> 40) & (ROW_BUCKETS - 1);
}

static size_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return (size_t)h & (KEY_BUCKETS - 1);
}

static struct mkey *key_get(struct kafka_mirror *m, const char *name, int create)
{
	size_t b = hash_str(name);
	struct mkey *k;

	for (k = m->keys[b]; k; k = k->next)
		if (strcmp(k->name, name) == 0)
			return k;
	if (!create)
		return NULL;
	k = calloc(1, sizeof *k + strlen(name) + 1);
	if (k == NULL)
		return NULL;
	strcpy(k->name, name);
	k->next = m->keys[b];
	m->keys[b] = k;
	m->nkeys++;
	return k;
}

/* Frees k when nothing refers to it and it holds nothing back. */
static void key_maybe_free(struct kafka_mirror *m, struct mkey *k)
{
	struct mkey **pp;

	if (k->refs || k->held || k->inflight)
		return;
	for (pp = &m->keys[hash_str(k->name)]; *pp; pp = &(*pp)->next)
		if (*pp == k) {
			*pp = k->next;
			free(k);
			m->nkeys--;
			return;
		}
}

static struct mrow *row_find(struct kafka_mirror *m, int64_t id)
{
	for (struct mrow *r = m->rows[hash_id(id)]; r; r = r->next)
		if (r->id == id)
			return r;
	return NULL;
}

static struct mrow *row_add(struct kafka_mirror *m, int64_t id, struct mkey *k, enum mrow_state st)
{
	struct mrow *r = calloc(1, sizeof *r);
	size_t b = hash_id(id);

	if (r == NULL)
		return NULL;
	r->id = id;
	r->key = k;
	r->st = st;
	r->next = m->rows[b];
	m->rows[b] = r;
	m->nrows++;
	k->refs++;
	if (st == ROW_INFLIGHT) {
		k->inflight++;
		m->inflight++;
	}
	return r;
}

static void row_remove(struct kafka_mirror *m, struct mrow *r)
{
	struct mrow **pp;

	for (pp = &m->rows[hash_id(r->id)]; *pp; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	if (r->st == ROW_INFLIGHT) {
		r->key->inflight--;
		m->inflight--;
	}
	r->key->refs--;
	key_maybe_free(m, r->key);
	m->nrows--;
	free(r);
}

static void key_hold(struct mkey *k, int64_t id)
{
	if (k->held == 0 || id < k->held)
		k->held = id;
}

static void marks_clear(struct marks *mk)
{
	for (size_t i = 0; i < mk->nfail; i++)
		free(mk->fail[i].reason);
	mk->npub = mk->nfail = 0;
}

static void marks_free(struct marks *mk)
{
	marks_clear(mk);
	free(mk->pub);
	free(mk->fail);
	memset(mk, 0, sizeof *mk);
}

static int marks_add_pub(struct marks *mk, int64_t id, int32_t part, int64_t off)
{
	if (mk->npub == mk->cappub) {
		size_t n = mk->cappub ? mk->cappub * 2 : 256;
		void *x = realloc(mk->pub, n * sizeof *mk->pub);
		if (x == NULL)
			return -1;
		mk->pub = x;
		mk->cappub = n;
	}
	mk->pub[mk->npub++] = (struct mark_pub){ id, part, off };
	return 0;
}

static int marks_add_fail(struct marks *mk, int64_t id, const char *reason)
{
	if (mk->nfail == mk->capfail) {
		size_t n = mk->capfail ? mk->capfail * 2 : 16;
		void *x = realloc(mk->fail, n * sizeof *mk->fail);
		if (x == NULL)
			return -1;
		mk->fail = x;
		mk->capfail = n;
	}
	mk->fail[mk->nfail].id = id;
	mk->fail[mk->nfail].reason = strdup(reason ? reason : "");
	mk->nfail++;
	return 0;
}

/* Forgets every row, key, hold and unwritten result: after a lost session the rows are
 * still pending in PostgreSQL and the next leader sends them again (consumers dedupe on
 * the id header). */
static void mirror_forget(struct kafka_mirror *m)
{
	for (size_t b = 0; b < ROW_BUCKETS; b++) {
		struct mrow *r = m->rows[b];
		while (r) {
			struct mrow *n = r->next;
			free(r);
			r = n;
		}
		m->rows[b] = NULL;
	}
	for (size_t b = 0; b < KEY_BUCKETS; b++) {
		struct mkey *k = m->keys[b];
		while (k) {
			struct mkey *n = k->next;
			free(k);
			k = n;
		}
		m->keys[b] = NULL;
	}
	m->nrows = m->nkeys = 0;
	m->inflight = 0;
	marks_clear(&m->todo);
	marks_clear(&m->sending);
	m->cursor = 0;
	snprintf(m->guard, sizeof m->guard, "0");
	m->rewind = m->queue_full = m->wait_dr = 0;
}

static void leadership_drop(struct kafka_mirror *m, const char *why)
{
	if (m->leader)
		log_warn("kafka mirror: leadership lost; in-flight results abandoned", "sreason", why,
			 "iin_flight", (long long)m->inflight, NULL);
	m->leader = m->ready = 0;
	m->lock_query = m->read_inflight = m->mark_inflight = 0;
	m->idle = m->idle_query = 0;
	mirror_forget(m);
	/* Records not yet sent would only be duplicates of what the next leader sends. */
	if (m->pub)
		kafka_pub_purge(m->pub, 0);
	m->next_lock_tick = m->ticks + 4;
}

/* ---- delivery reports ---- */

static void mirror_on_delivery(void *arg, const struct kafka_delivery *d)
{
	struct kafka_mirror *m = arg;
	struct mrow *r;

	if (m->freeing)
		return;
	r = row_find(m, d->id);
	m->queue_full = 0;
	m->wait_dr = 0;
	event_active(m->ev_after, 0, 0);
	if (r == NULL || r->st != ROW_INFLIGHT)
		return; /* abandoned with a lost session */
	switch (d->outcome) {
	case KAFKA_OK:
		r->st = ROW_ACKED;
		r->key->inflight--;
		m->inflight--;
		if (marks_add_pub(&m->todo, d->id, d->partition, d->offset) != 0)
			row_remove(m, r); /* out of memory: leave it pending, it is sent again */
		break;
	case KAFKA_PERMANENT:
		log_warn("kafka refused an event for good: marking it failed", "ievent", (long long)d->id,
			 "serror", d->reason, NULL);
		r->st = ROW_FAILED;
		r->key->inflight--;
		m->inflight--;
		if (marks_add_fail(&m->todo, d->id, d->reason) != 0)
			row_remove(m, r);
		break;
	default:
		/* Not delivered: the row stays pending and its key waits until it is sent again,
		 * so no later record of the key overtakes it. */
		log_write(m->stopping ? LOG_DEBUG : LOG_WARN, "kafka delivery failed; holding the key",
			  "ievent", (long long)d->id, "serror", d->reason, "bpossibly_persisted",
			  d->possibly_persisted, NULL);
		key_hold(r->key, d->id);
		row_remove(m, r);
		m->rewind = 1;
		telemetry_kafka_publish(m->tm, "retry", 1);
		break;
	}
}

static void mirror_on_recreated(void *arg)
{
	struct kafka_mirror *m = arg;

	/* Rows that got no report from the old producer are sent again, in id order. */
	for (size_t b = 0; b < ROW_BUCKETS; b++) {
		struct mrow *r = m->rows[b];
		while (r) {
			struct mrow *n = r->next;
			if (r->st == ROW_INFLIGHT) {
				key_hold(r->key, r->id);
				row_remove(m, r);
			}
			r = n;
		}
	}
	m->rewind = 1;
	m->queue_full = m->wait_dr = 0;
	mirror_kick(m);
}

/* ---- writing results ---- */

static void mark_done(void *arg, const struct pg_result *res, const char *err)
{
	struct kafka_mirror *m = arg;
	size_t npub = m->sending.npub, nfail = m->sending.nfail;

	if (m->freeing)
		return;
	m->mark_inflight = 0;
	if (res == NULL)
		return; /* the session is gone: leadership_drop() follows */
	if (!pg_result_ok(res)) {
		log_error("kafka mirror: cannot record delivery results; dropping the session",
			  "serror", err ? err : pg_result_error(res), NULL);
		event_active(m->ev_reset, 0, 0);
		return;
	}
	for (size_t i = 0; i < npub; i++) {
		struct mrow *r = row_find(m, m->sending.pub[i].id);
		if (r)
			row_remove(m, r);
	}
	for (size_t i = 0; i < nfail; i++) {
		struct mrow *r = row_find(m, m->sending.fail[i].id);
		if (r)
			row_remove(m, r);
	}
	marks_clear(&m->sending);
	if (npub)
		telemetry_kafka_publish(m->tm, "published", (unsigned)npub);
	if (nfail)
		telemetry_kafka_publish(m->tm, "failed", (unsigned)nfail);
	m->wait_dr = 0;
	event_active(m->ev_after, 0, 0);
}

/* Appends s as a double-quoted element of a PostgreSQL array literal. */
static int array_quote(struct buf *b, const char *s)
{
	int e = buf_putc(b, '"');
	for (; *s && e == 0; s++) {
		if (*s == '"' || *s == '\\')
			e |= buf_putc(b, '\\');
		e |= buf_putc(b, *s);
	}
	return e | buf_putc(b, '"');
}

static void mirror_flush_marks(struct kafka_mirror *m)
{
	struct buf ids, parts, offs, fids, ferrs;
	struct marks tmp;
	int e = 0;

	if (m->mark_inflight || !m->ready || !pg_ready(m->pg) || (m->todo.npub == 0 && m->todo.nfail == 0))
		return;
	/* The batch moves to `sending`; `todo` starts empty with the old buffers' space. */
	tmp = m->sending;
	m->sending = m->todo;
	m->todo = tmp;
	buf_init(&ids);
	buf_init(&parts);
	buf_init(&offs);
	buf_init(&fids);
	buf_init(&ferrs);
	e |= buf_putc(&ids, '{') | buf_putc(&parts, '{') | buf_putc(&offs, '{');
	for (size_t i = 0; i < m->sending.npub && e == 0; i++) {
		const struct mark_pub *p = &m->sending.pub[i];
		const char *sep = i ? "," : "";
		e |= buf_printf(&ids, "%s%lld", sep, (long long)p->id);
		e |= buf_printf(&parts, "%s%d", sep, (int)p->partition);
		e |= buf_printf(&offs, "%s%lld", sep, (long long)p->offset);
	}
	e |= buf_putc(&ids, '}') | buf_putc(&parts, '}') | buf_putc(&offs, '}');
	e |= buf_putc(&fids, '{') | buf_putc(&ferrs, '{');
	for (size_t i = 0; i < m->sending.nfail && e == 0; i++) {
		e |= buf_printf(&fids, "%s%lld", i ? "," : "", (long long)m->sending.fail[i].id);
		if (i)
			e |= buf_putc(&ferrs, ',');
		e |= array_quote(&ferrs, m->sending.fail[i].reason);
	}
	e |= buf_putc(&fids, '}') | buf_putc(&ferrs, '}');
	if (e == 0) {
		const char *p[5] = { ids.data, parts.data, offs.data, fids.data, ferrs.data };
		e = pg_query(m->pg,
			     "SELECT outbox.mirror_mark_published($1::bigint[], $2::integer[], $3::bigint[]), "
			     "outbox.mirror_mark_failed($4::bigint[], $5::text[])",
			     5, p, 30000, mark_done, m);
	}
	buf_free(&ids);
	buf_free(&parts);
	buf_free(&offs);
	buf_free(&fids);
	buf_free(&ferrs);
	if (e != 0) {
		/* Put the batch back and try again later. */
		tmp = m->todo;
		m->todo = m->sending;
		m->sending = tmp;
		for (size_t i = 0; i < m->sending.npub; i++)
			(void)marks_add_pub(&m->todo, m->sending.pub[i].id, m->sending.pub[i].partition,
					    m->sending.pub[i].offset);
		for (size_t i = 0; i < m->sending.nfail; i++)
			(void)marks_add_fail(&m->todo, m->sending.fail[i].id, m->sending.fail[i].reason);
		marks_clear(&m->sending);
		return;
	}
	m->mark_inflight = 1;
}

/* ---- reading and producing ---- */

static void idle_done(void *arg, const struct pg_result *res, const char *err)
{
	struct kafka_mirror *m = arg;

	if (m->freeing)
		return;
	m->idle_query = 0;
	if (res == NULL)
		return;
	if (!pg_result_ok(res)) {
		log_warn("kafka mirror: set_idle failed", "serror", err ? err : pg_result_error(res), NULL);
		return;
	}
	/* Read once more: a row may have committed before the registration did. */
	if (m->idle)
		mirror_kick(m);
}

static void mirror_set_idle(struct kafka_mirror *m, int idle)
{
	const char *p[2] = { m->owner, idle ? "true" : "false" };

	if (m->idle == idle || m->idle_query || !m->ready)
		return;
	if (pg_query(m->pg, "SELECT outbox.set_idle($1, $2::boolean, 'outbox_events')", 2, p, 10000,
		     idle_done, m) == 0) {
		m->idle = idle;
		m->idle_query = 1;
	}
}

/* Builds the record of result row i and produces it. */
static enum kafka_outcome produce_row(struct kafka_mirror *m, const struct pg_result *res, int i,
				      int64_t id, char *why, size_t whylen)
{
	const char *hdr[2 * 34];
	int nh = 0, err = 0;
	char topic[300];
	json_t *uh = NULL;
	enum kafka_outcome o;
	const char *headers = pg_value(res, i, 7);

	if (!pg_isnull(res, i, 2) && pg_value(res, i, 2)[0])
		snprintf(topic, sizeof topic, "%s", pg_value(res, i, 2));
	else
		snprintf(topic, sizeof topic, "%s%s", m->cfg->kafka_topic_prefix, pg_value(res, i, 3));
	hdr[nh * 2] = "id";
	hdr[nh++ * 2 + 1] = pg_value(res, i, 1);
	hdr[nh * 2] = "type";
	hdr[nh++ * 2 + 1] = pg_value(res, i, 5);
	if (!pg_isnull(res, i, 8)) {
		hdr[nh * 2] = "message_id";
		hdr[nh++ * 2 + 1] = pg_value(res, i, 8);
	}
	if (headers[0] && strcmp(headers, "{}") != 0) {
		/* Producer headers: a JSON object of strings, checked at INSERT. */
		uh = json_loads(headers, 0, NULL);
		const char *name;
		json_t *v;
		json_object_foreach(uh, name, v) {
			if (nh >= 34)
				break;
			if (!json_is_string(v) || strcmp(name, "id") == 0)
				continue;
			hdr[nh * 2] = name;
			hdr[nh++ * 2 + 1] = json_string_value(v);
		}
	}
	struct kafka_record rec = {
		.id = id,
		.topic = topic,
		.key = pg_value(res, i, 4),
		.key_len = strlen(pg_value(res, i, 4)),
		.value = pg_value(res, i, 6),
		.value_len = strlen(pg_value(res, i, 6)),
		.headers = hdr,
		.nheaders = nh,
	};
	o = kafka_pub_produce(m->pub, &rec, &err, why, whylen);
	json_decref(uh);
	if (o == KAFKA_RETRY && err == RD_KAFKA_RESP_ERR__QUEUE_FULL)
		m->queue_full = 1;
	return o;
}

static void read_done(void *arg, const struct pg_result *res, const char *err)
{
	struct kafka_mirror *m = arg;
	int n, produced = 0, skipped = 0, fresh = 0, stop = 0, behind = 0;
	int64_t old_cursor = m->cursor, max_id = m->cursor, first_unhandled = 0;
	int limit;

	if (m->freeing)
		return;
	limit = m->read_inflight;
	m->read_inflight = 0;
	if (res == NULL || !m->ready)
		return;
	if (!pg_result_ok(res)) {
		log_error("kafka mirror: reading events failed", "serror", err ? err : pg_result_error(res),
			  NULL);
		return; /* the tick reads again */
	}
	n = pg_ntuples(res);
	for (int i = 0; i < n; i++)
		if (!pg_isnull(res, i, 0) && atoll(pg_value(res, i, 0)) <= old_cursor)
			behind++;
	for (int i = 0; i < n && !stop; i++) {
		int64_t id;
		struct mkey *k;
		char why[256];
		enum kafka_outcome o;

		if (pg_isnull(res, i, 0))
			continue;
		id = atoll(pg_value(res, i, 0));
		if (id > max_id)
			max_id = id;
		if (row_find(m, id))
			continue; /* produced already, result not yet written */
		fresh++;
		k = key_get(m, pg_value(res, i, 4), 1);
		if (k == NULL) {
			first_unhandled = id;
			break;
		}
		/* Per-key order: nothing after a failed row of the key, and in strict mode
		 * (messages may time out) one record of a key in flight at a time. */
		if ((k->held && id > k->held) || (m->strict && k->inflight > 0)) {
			first_unhandled = first_unhandled ? first_unhandled : id;
			skipped++;
			key_maybe_free(m, k);
			continue;
		}
		o = produce_row(m, res, i, id, why, sizeof why);
		switch (o) {
		case KAFKA_OK:
			if (k->held == id)
				k->held = 0;
			if (row_add(m, id, k, ROW_INFLIGHT) == NULL) {
				stop = 1; /* out of memory: stop here, the row is read again */
				first_unhandled = first_unhandled ? first_unhandled : id;
			}
			produced++;
			break;
		case KAFKA_PERMANENT:
			log_warn("kafka refused an event for good: marking it failed", "ievent",
				 (long long)id, "serror", why, NULL);
			if (k->held == id)
				k->held = 0;
			if (row_add(m, id, k, ROW_FAILED) == NULL || marks_add_fail(&m->todo, id, why) != 0) {
				stop = 1;
				first_unhandled = first_unhandled ? first_unhandled : id;
			}
			break;
		case KAFKA_RETRY:
			if (m->queue_full) {
				/* The local queue is full: stop reading until reports drain it. */
				first_unhandled = first_unhandled ? first_unhandled : id;
				key_maybe_free(m, k);
				stop = 1;
				break;
			}
			log_warn("kafka produce refused; holding the key", "ievent", (long long)id,
				 "serror", why, NULL);
			key_hold(k, id);
			first_unhandled = first_unhandled ? first_unhandled : id;
			break;
		case KAFKA_FATAL:
			first_unhandled = first_unhandled ? first_unhandled : id;
			key_maybe_free(m, k);
			stop = 1;
			break;
		}
	}
	/* Rows up to the cursor were handled; a row left over lowers it so it is read again. */
	m->cursor = max_id;
	if (first_unhandled && first_unhandled - 1 < m->cursor)
		m->cursor = first_unhandled - 1;
	/* The guard moves on only when this read saw every row behind the cursor: rows behind
	 * it come first in the result, and when they fill the whole read (a large transaction
	 * that committed behind the cursor) the ones past the limit are still to be found with
	 * the old guard. Moving it would leave them pending for good. */
	if (n > 0 && !pg_isnull(res, 0, 9) && behind < limit)
		snprintf(m->guard, sizeof m->guard, "%s", pg_value(res, 0, 9));
	if (produced)
		mirror_set_idle(m, 0);
	if (m->queue_full || stop) {
		/* Reports wake the reader. */
	} else if (n >= limit && !pg_isnull(res, 0, 0)) {
		if (m->cursor > old_cursor || produced)
			mirror_kick(m);
		else
			m->wait_dr = 1;
	} else if (skipped) {
		m->wait_dr = 1;
	} else if (produced == 0 && fresh == 0) {
		mirror_set_idle(m, 1);
	}
	if (m->todo.nfail)
		mirror_flush_marks(m);
}

static void mirror_on_read(evutil_socket_t fd, short what, void *arg)
{
	struct kafka_mirror *m = arg;
	char cursor[32], limit[16];
	const char *p[3];
	int lim;

	(void)fd;
	(void)what;
	if (!m->ready || m->stopping || m->read_inflight || !m->pub || !pg_ready(m->pg))
		return;
	if (m->queue_full || m->wait_dr || m->inflight >= MIRROR_MAX_INFLIGHT)
		return;
	lim = m->cfg->kafka_batch_size;
	if (lim > MIRROR_MAX_INFLIGHT - m->inflight)
		lim = MIRROR_MAX_INFLIGHT - m->inflight;
	if (m->pub->brokers_down) {
		/* The breaker is open: events wait in PostgreSQL, and a single record probes the
		 * cluster; its delivery report closes the breaker again. */
		if (m->inflight > 0)
			return;
		lim = 1;
	}
	if (m->rewind) {
		/* After a failed delivery, read from the start of the pending rows. */
		m->cursor = 0;
		snprintf(m->guard, sizeof m->guard, "0");
		m->rewind = 0;
	}
	snprintf(cursor, sizeof cursor, "%lld", (long long)m->cursor);
	snprintf(limit, sizeof limit, "%d", lim);
	p[0] = cursor;
	p[1] = m->guard;
	p[2] = limit;
	if (pg_query(m->pg,
		     "SELECT id, event_id, topic, aggregate_type, aggregate_id, type, payload, headers, "
		     "message_id, snapshot_xmin FROM outbox.mirror_read($1::bigint, $2::xid8, $3::integer)",
		     3, p, 30000, read_done, m) == 0)
		m->read_inflight = lim;
}

static void mirror_kick(struct kafka_mirror *m)
{
	if (m->ready && !m->stopping)
		event_active(m->ev_read, 0, 0);
}

/* After a round of delivery reports: write results, read more, finish a stop. */
static void mirror_on_after(evutil_socket_t fd, short what, void *arg)
{
	struct kafka_mirror *m = arg;

	(void)fd;
	(void)what;
	mirror_flush_marks(m);
	if (m->stopping)
		mirror_check_stop(m);
	else
		mirror_kick(m);
}

/* ---- leadership ---- */

static void setup_done(void *arg, const struct pg_result *res, const char *err)
{
	struct kafka_mirror *m = arg;

	if (m->freeing || res == NULL || !m->leader)
		return;
	if (!pg_result_ok(res)) {
		log_error("kafka mirror: setting up the leader session failed", "serror",
			  err ? err : pg_result_error(res), NULL);
		event_active(m->ev_reset, 0, 0);
		return;
	}
	m->ready = 1;
	m->rewind = 1;
	log_info("kafka mirror: leader; publishing events", "sowner", m->owner, NULL);
	mirror_kick(m);
}

static void lock_done(void *arg, const struct pg_result *res, const char *err)
{
	struct kafka_mirror *m = arg;
	const char *p[1];

	if (m->freeing)
		return;
	m->lock_query = 0;
	if (res == NULL)
		return;
	if (!pg_result_ok(res) || pg_ntuples(res) != 1) {
		log_warn("kafka mirror: lock query failed", "serror", err ? err : pg_result_error(res), NULL);
		m->next_lock_tick = m->ticks + 8;
		return;
	}
	if (strcmp(pg_value(res, 0, 0), "t") != 0) {
		/* Another replica publishes; try again in 1-2 s. */
		m->next_lock_tick = m->ticks + 4 + (unsigned)(backoff_random64() % 5);
		return;
	}
	m->leader = 1;
	p[0] = m->cfg->lifecycle_events ? "true" : "false";
	if (pg_query(m->pg, "LISTEN outbox_events", 0, NULL, 10000, NULL, NULL) != 0 ||
	    pg_query(m->pg, "SELECT outbox.mirror_set_lifecycle_events($1::boolean)", 1, p, 10000,
		     setup_done, m) != 0)
		event_active(m->ev_reset, 0, 0);
}

static void mirror_try_lock(struct kafka_mirror *m)
{
	if (m->leader || m->lock_query || m->stopping || !pg_ready(m->pg))
		return;
	if (pg_query(m->pg, "SELECT pg_try_advisory_lock(" MIRROR_LOCK_KEY ")", 0, NULL, 10000, lock_done,
		     m) == 0)
		m->lock_query = 1;
}

static void mirror_on_connect(struct pgconn *c, void *arg)
{
	struct kafka_mirror *m = arg;

	(void)c;
	leadership_drop(m, "new session");
	mirror_try_lock(m);
}

static void mirror_on_disconnect(struct pgconn *c, void *arg, const char *reason)
{
	struct kafka_mirror *m = arg;

	(void)c;
	if (m->freeing)
		return;
	leadership_drop(m, reason);
	if (m->stopping)
		mirror_check_stop(m);
}

static void mirror_on_notify(struct pgconn *c, void *arg, const char *channel)
{
	(void)c;
	(void)channel;
	mirror_kick(arg);
}

static void mirror_on_reset(evutil_socket_t fd, short what, void *arg)
{
	struct kafka_mirror *m = arg;

	(void)fd;
	(void)what;
	/* A new session gives up the lock; the reconnect campaigns again. */
	leadership_drop(m, "session reset");
	pg_reset(m->pg, "kafka mirror session reset");
}

/* ---- the tick, stopping ---- */

static void mirror_check_stop(struct kafka_mirror *m)
{
	uint64_t now = now_ms();

	if (!m->stopping || m->stopped)
		return;
	if (m->pub)
		kafka_pub_poll(m->pub);
	if (!m->purged) {
		int left = m->pub ? kafka_pub_outq_len(m->pub) : 0;
		if (left > 0 && now < m->flush_deadline)
			return;
		if (left > 0) {
			log_warn("kafka mirror: flush timed out; unacknowledged events stay pending",
				 "icount", (long long)left, NULL);
			kafka_pub_purge(m->pub, 1);
			kafka_pub_poll(m->pub);
		}
		m->purged = 1;
		/* Whatever got no report stays pending. */
		mirror_on_recreated(m);
	}
	mirror_flush_marks(m);
	if ((m->todo.npub || m->todo.nfail || m->mark_inflight) && m->ready && now < m->final_deadline)
		return;
	if (m->todo.npub || m->todo.nfail || m->mark_inflight)
		log_warn("kafka mirror: exiting with unrecorded deliveries; they will be sent again",
			 "icount", (long long)(m->todo.npub + m->todo.nfail + m->sending.npub + m->sending.nfail),
			 NULL);
	kafka_pub_free(m->pub);
	m->pub = NULL;
	m->stopped = 1;
	log_info("kafka mirror stopped", NULL);
}

static void mirror_on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct kafka_mirror *m = arg;
	enum breaker_state ks;

	(void)fd;
	(void)what;
	m->ticks++;
	if (m->stopping) {
		mirror_check_stop(m);
		return;
	}
	if (!m->leader && m->ticks >= m->next_lock_tick)
		mirror_try_lock(m);
	if (m->ready && m->ticks % 4 == 0) {
		/* The safety net for lost notifications and rows held back by the xmin guard. */
		m->wait_dr = 0;
		mirror_kick(m);
	}
	if (m->ready)
		mirror_flush_marks(m);
	ks = m->pub && m->pub->brokers_down ? BREAKER_OPEN : BREAKER_CLOSED;
	if (ks != m->kstate || m->ticks % 4 == 0) {
		m->kstate = ks;
		telemetry_breaker(m->tm, "kafka", ks);
	}
}

/* ---- public API ---- */

struct kafka_mirror *kafka_mirror_new(struct event_base *base, const struct config *cfg,
				      struct telemetry *tm, char *errbuf, size_t errlen)
{
	struct kafka_mirror *m;
	struct kafka_pub_opts o;
	struct kafka_pub_callbacks cb = { mirror_on_delivery, mirror_on_recreated };
	struct pg_callbacks pcb = { mirror_on_connect, mirror_on_disconnect, mirror_on_notify };
	struct timeval tick = { 0, MIRROR_TICK_MS * 1000 };
	char host[128] = "";

	if (cfg->kafka_brokers == NULL || cfg->kafka_brokers[0] == '\0') {
		snprintf(errbuf, errlen, "kafka.brokers is empty");
		return NULL;
	}
	m = calloc(1, sizeof *m);
	if (m == NULL) {
		snprintf(errbuf, errlen, "out of memory");
		return NULL;
	}
	m->base = base;
	m->cfg = cfg;
	m->tm = tm;
	m->strict = cfg->kafka_message_timeout_ms > 0;
	snprintf(m->guard, sizeof m->guard, "0");
	gethostname(host, sizeof host - 1);
	if (cfg->owner && cfg->owner[0])
		snprintf(m->owner, sizeof m->owner, "%s:mirror", cfg->owner);
	else
		snprintf(m->owner, sizeof m->owner, "%s:%ld:mirror", host, (long)getpid());
	memset(&o, 0, sizeof o);
	o.brokers = cfg->kafka_brokers;
	o.compression = cfg->kafka_compression;
	o.message_timeout_ms = cfg->kafka_message_timeout_ms;
	o.security_protocol = cfg->kafka_security_protocol;
	o.sasl_mechanism = cfg->kafka_sasl_mechanism;
	o.sasl_username = cfg->kafka_sasl_username;
	o.sasl_password = cfg->kafka_sasl_password;
	o.ssl_ca_file = cfg->kafka_ssl_ca_file;
	m->pub = kafka_pub_new(base, &o, &cb, m, errbuf, errlen);
	if (m->pub == NULL)
		goto fail;
	m->ev_tick = event_new(base, -1, EV_PERSIST, mirror_on_tick, m);
	m->ev_read = event_new(base, -1, 0, mirror_on_read, m);
	m->ev_after = event_new(base, -1, 0, mirror_on_after, m);
	m->ev_reset = event_new(base, -1, 0, mirror_on_reset, m);
	if (!m->ev_tick || !m->ev_read || !m->ev_after || !m->ev_reset) {
		snprintf(errbuf, errlen, "out of memory");
		goto fail;
	}
	/* Server keepalives end a vanished leader's session (and its lock) within seconds. */
	m->pg = pg_new(base, "outboxd-mirror", cfg->database_url,
		       "-c statement_timeout=30000 -c idle_session_timeout=0 "
		       "-c idle_in_transaction_session_timeout=60000 -c tcp_keepalives_idle=5 "
		       "-c tcp_keepalives_interval=2 -c tcp_keepalives_count=3",
		       cfg->database_connect_timeout_ms, cfg->reconnect_max_ms, &pcb, m);
	if (m->pg == NULL) {
		snprintf(errbuf, errlen, "cannot create the mirror's database connection");
		goto fail;
	}
	event_add(m->ev_tick, &tick);
	log_info("kafka mirror started", "sbrokers", cfg->kafka_brokers, "scompression",
		 cfg->kafka_compression, "imessage_timeout_ms", (long long)cfg->kafka_message_timeout_ms,
		 "sorder", m->strict ? "one in flight per key" : "idempotent pipeline per key", NULL);
	return m;
fail:
	kafka_mirror_free(m);
	return NULL;
}

void kafka_mirror_stop(struct kafka_mirror *m)
{
	uint64_t now = now_ms(), drain;

	if (m == NULL || m->stopping)
		return;
	drain = m->cfg->drain_timeout_ms > 0 ? (uint64_t)m->cfg->drain_timeout_ms : 1000;
	m->stopping = 1;
	/* Three quarters of the drain time to flush, the rest (and a little more) to record. */
	m->flush_deadline = now + drain * 3 / 4;
	m->final_deadline = now + drain + 3000;
	event_del(m->ev_read);
	log_info("kafka mirror: stopping; flushing records in flight", "iin_flight",
		 (long long)(m->pub ? kafka_pub_outq_len(m->pub) : 0), NULL);
	mirror_check_stop(m);
}

int kafka_mirror_stopped(const struct kafka_mirror *m)
{
	return m == NULL || m->stopped;
}

void kafka_mirror_free(struct kafka_mirror *m)
{
	if (m == NULL)
		return;
	m->freeing = 1;
	/* The producer first: its last reports find the tables still there. */
	kafka_pub_free(m->pub);
	m->pub = NULL;
	pg_close(m->pg);
	if (m->ev_tick)
		event_free(m->ev_tick);
	if (m->ev_read)
		event_free(m->ev_read);
	if (m->ev_after)
		event_free(m->ev_after);
	if (m->ev_reset)
		event_free(m->ev_reset);
	mirror_forget(m);
	marks_free(&m->todo);
	marks_free(&m->sending);
	free(m);
}
