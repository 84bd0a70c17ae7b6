/* mirror: the Kafka mirror. Elects one publisher among replicas (a session advisory lock),
 * reads outbox.events in commit order, produces them through kafka.c keeping per-key order,
 * and records delivery reports in PostgreSQL. Its life is one enum mirror_state, changed
 * only by mirror_set_state(). */
#include "mirror.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>

#include "backoff.h"
#include "breaker.h"
#include "clock.h"
#include "config.h"
#include "job.h"
#include "kafka.h"
#include "lockwatch.h"
#include "log.h"
#include "pg.h"
#include "pgarray.h"
#include "telemetry.h"
#include "wake.h"

/* The mirror's session advisory lock, "outboxka"; outbox.mirror_lock_key() says the same. */
#define MIRROR_LOCK_KEY "8031453476610927457"
/* Rows produced and not yet recorded in PostgreSQL; reading stops above this. */
#define MIRROR_MAX_INFLIGHT 20000
#define ROW_BUCKETS 65536u
#define KEY_BUCKETS 16384u

/* Columns of READ_SQL. */
enum read_col {
	E_ID,
	E_EVENT_ID,
	E_TOPIC,
	E_AGGREGATE_TYPE,
	E_AGGREGATE_ID,
	E_TYPE,
	E_PAYLOAD,
	E_HEADERS,
	E_MESSAGE_ID,
	E_SNAPSHOT_XMIN
};

static const char *const READ_SQL =
	"SELECT id, event_id, topic, aggregate_type, aggregate_id, type, payload, headers, "
	"message_id, snapshot_xmin FROM outbox.mirror_read($1::bigint, $2::xid8, $3::integer)";

/* Why the reader waits, besides a read in flight. */
enum read_wait {
	READ_GO,           /* nothing to wait for */
	READ_WAIT_REPORTS, /* delivery reports (or the safety net) free the keys the read skipped */
	READ_QUEUE_FULL,   /* the producer's local queue is full: only reports help */
};

/* A key (aggregate id) with rows in the mirror's table or a hold. */
struct mkey {
	struct mkey *next;
	unsigned refs; /* rows of the table that point here */
	int inflight;  /* rows produced without a delivery report */
	int64_t held;  /* > 0: a delivery of this row failed; later rows wait for it */
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
	int strict; /* message timeout > 0: one record in flight per key */
	struct event *ev_read, *ev_after, *ev_reset;
	unsigned ticks, next_lock_tick;
	enum mirror_state state;
	struct lock_watch watch; /* who holds the lock while this replica cannot have it */

	/* reading */
	int read_inflight; /* the limit of the read in flight, 0 = none */
	enum read_wait wait;
	int rewind;           /* read from the first pending row next time */
	int idle, idle_query; /* registered in outbox.dispatcher_idle; the query in flight */
	int64_t cursor;       /* rows <= cursor were read unless txid >= guard */
	char guard[32];       /* snapshot xmin of the previous read */

	/* rows and keys */
	struct mrow *rows[ROW_BUCKETS];
	struct mkey *keys[KEY_BUCKETS];
	size_t nrows, nkeys;
	int inflight;

	/* results */
	struct marks todo, sending;
	int mark_inflight;

	/* stop */
	uint64_t flush_deadline, final_deadline;
	enum breaker_state kstate;
};

static void mirror_kick(struct kafka_mirror *m);
static void mirror_check_stop(struct kafka_mirror *m);

const char *mirror_state_name(enum mirror_state s)
{
	static const char *const names[] = {
		[MIRROR_FOLLOWER] = "follower", [MIRROR_LOCKING] = "locking",   [MIRROR_SETTING_UP] = "setting_up",
		[MIRROR_LEADING] = "leading",   [MIRROR_FLUSHING] = "flushing", [MIRROR_RECORDING] = "recording",
		[MIRROR_STOPPED] = "stopped",
	};
	return (unsigned)s <= MIRROR_STOPPED ? names[s] : "invalid";
}

/* The only assignment of m->state. */
static void mirror_set_state(struct kafka_mirror *m, enum mirror_state s)
{
	if (m->state == s)
		return;
	log_debug("kafka mirror state", LOG_S("from", mirror_state_name(m->state)), LOG_S("to", mirror_state_name(s)));
	m->state = s;
}

static int mirror_stopping(const struct kafka_mirror *m)
{
	return m->state >= MIRROR_FLUSHING;
}

/* The session may write delivery results: it led when they were produced. A lost session
 * forgets them (mirror_forget), so while stopping the results left are still ours. */
static int mirror_may_record(const struct kafka_mirror *m)
{
	return m->state == MIRROR_LEADING || m->state == MIRROR_FLUSHING || m->state == MIRROR_RECORDING;
}

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
	m->rewind = 0;
	m->wait = READ_GO;
}

static void leadership_drop(struct kafka_mirror *m, const char *why)
{
	if (m->state == MIRROR_SETTING_UP || m->state == MIRROR_LEADING ||
	    (mirror_stopping(m) && (m->nrows || m->todo.npub || m->todo.nfail)))
		log_warn("kafka mirror: leadership lost; in-flight results abandoned", LOG_S("reason", why),
			 LOG_I("in_flight", (long long)m->inflight));
	if (!mirror_stopping(m))
		mirror_set_state(m, MIRROR_FOLLOWER);
	m->read_inflight = m->mark_inflight = 0;
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

	r = row_find(m, d->id);
	m->wait = READ_GO;
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
		log_warn("kafka refused an event for good: marking it failed", LOG_I("event", (long long)d->id),
			 LOG_S("error", d->reason));
		r->st = ROW_FAILED;
		r->key->inflight--;
		m->inflight--;
		if (marks_add_fail(&m->todo, d->id, d->reason) != 0)
			row_remove(m, r);
		break;
	default:
		/* Not delivered: the row stays pending and its key waits until it is sent again,
		 * so no later record of the key overtakes it. */
		log_write(mirror_stopping(m) ? LOG_DEBUG : LOG_WARN, "kafka delivery failed; holding the key",
			  LOG_I("event", (long long)d->id), LOG_S("error", d->reason),
			  LOG_B("possibly_persisted", d->possibly_persisted));
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
	m->wait = READ_GO;
	mirror_kick(m);
}

/* ---- writing results ---- */

static void mark_done(void *arg, const struct pg_result *res, const char *err)
{
	struct kafka_mirror *m = arg;
	size_t npub = m->sending.npub, nfail = m->sending.nfail;

	m->mark_inflight = 0;
	if (res == NULL)
		return; /* the session is gone: leadership_drop() follows */
	if (!pg_result_ok(res)) {
		log_error("kafka mirror: cannot record delivery results; dropping the session",
			  LOG_S("error", pg_failure(res, err)));
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
	if (m->wait == READ_WAIT_REPORTS)
		m->wait = READ_GO;
	event_active(m->ev_after, 0, 0);
}

/* Puts the batch in `sending` back in front of `todo`, to be written later. */
static void marks_unsend(struct kafka_mirror *m)
{
	struct marks tmp = m->todo;

	m->todo = m->sending;
	m->sending = tmp;
	for (size_t i = 0; i < m->sending.npub; i++)
		(void)marks_add_pub(&m->todo, m->sending.pub[i].id, m->sending.pub[i].partition,
				    m->sending.pub[i].offset);
	for (size_t i = 0; i < m->sending.nfail; i++)
		(void)marks_add_fail(&m->todo, m->sending.fail[i].id, m->sending.fail[i].reason);
	marks_clear(&m->sending);
}

static void mirror_flush_marks(struct kafka_mirror *m)
{
	struct pgarray_lit ids, parts, offs, fids, ferrs;
	const char *p[5];
	struct marks tmp;
	int e = -1;

	if (m->mark_inflight || !mirror_may_record(m) || !pg_ready(m->pg) || (m->todo.npub == 0 && m->todo.nfail == 0))
		return;
	/* The batch moves to `sending`; `todo` starts empty with the old buffers' space. */
	tmp = m->sending;
	m->sending = m->todo;
	m->todo = tmp;
	pgarray_lit_init(&ids);
	pgarray_lit_init(&parts);
	pgarray_lit_init(&offs);
	pgarray_lit_init(&fids);
	pgarray_lit_init(&ferrs);
	for (size_t i = 0; i < m->sending.npub; i++) {
		const struct mark_pub *mp = &m->sending.pub[i];
		pgarray_lit_int(&ids, (long long)mp->id);
		pgarray_lit_int(&parts, (long long)mp->partition);
		pgarray_lit_int(&offs, (long long)mp->offset);
	}
	for (size_t i = 0; i < m->sending.nfail; i++) {
		pgarray_lit_int(&fids, (long long)m->sending.fail[i].id);
		pgarray_lit_str(&ferrs, m->sending.fail[i].reason);
	}
	p[0] = pgarray_lit_close(&ids);
	p[1] = pgarray_lit_close(&parts);
	p[2] = pgarray_lit_close(&offs);
	p[3] = pgarray_lit_close(&fids);
	p[4] = pgarray_lit_close(&ferrs);
	if (p[0] && p[1] && p[2] && p[3] && p[4])
		e = pg_query(m->pg,
			     "SELECT outbox.mirror_mark_published($1::bigint[], $2::integer[], $3::bigint[]), "
			     "outbox.mirror_mark_failed($4::bigint[], $5::text[])",
			     5, p, 30000, mark_done, m);
	pgarray_lit_free(&ids);
	pgarray_lit_free(&parts);
	pgarray_lit_free(&offs);
	pgarray_lit_free(&fids);
	pgarray_lit_free(&ferrs);
	if (e != 0) {
		marks_unsend(m);
		return;
	}
	m->mark_inflight = 1;
}

/* ---- reading and producing ---- */

static void idle_done(void *arg, const struct pg_result *res, const char *err)
{
	struct kafka_mirror *m = arg;

	m->idle_query = 0;
	if (res == NULL)
		return;
	if (!pg_result_ok(res)) {
		log_warn("kafka mirror: set_idle failed", LOG_S("error", pg_failure(res, err)));
		return;
	}
	/* Read once more: a row may have committed before the registration did. */
	if (m->idle)
		mirror_kick(m);
}

static void mirror_set_idle(struct kafka_mirror *m, int idle)
{
	if (m->idle == idle || m->idle_query || m->state != MIRROR_LEADING)
		return;
	if (wake_set_idle(m->pg, m->owner, WAKE_CHANNEL_EVENTS, idle, idle_done, m) == 0) {
		m->idle = idle;
		m->idle_query = 1;
	}
}

/* Builds the record of result row i and produces it. */
static enum kafka_outcome produce_row(struct kafka_mirror *m, const struct pg_result *res, int i, int64_t id, char *why,
				      size_t whylen)
{
	const char *hdr[2 * 34];
	int nh = 0, err = 0;
	char topic[300];
	json_t *uh = NULL;
	enum kafka_outcome o;
	const char *headers = pg_value(res, i, E_HEADERS);
	const char *key = pg_value(res, i, E_AGGREGATE_ID), *value = pg_value(res, i, E_PAYLOAD);

	if (!pg_isnull(res, i, E_TOPIC) && pg_value(res, i, E_TOPIC)[0])
		snprintf(topic, sizeof topic, "%s", pg_value(res, i, E_TOPIC));
	else
		snprintf(topic, sizeof topic, "%s%s", m->cfg->kafka_topic_prefix, pg_value(res, i, E_AGGREGATE_TYPE));
	hdr[nh * 2] = "id";
	hdr[nh++ * 2 + 1] = pg_value(res, i, E_EVENT_ID);
	hdr[nh * 2] = "type";
	hdr[nh++ * 2 + 1] = pg_value(res, i, E_TYPE);
	if (!pg_isnull(res, i, E_MESSAGE_ID)) {
		hdr[nh * 2] = "message_id";
		hdr[nh++ * 2 + 1] = pg_value(res, i, E_MESSAGE_ID);
	}
	if (headers[0] && strcmp(headers, "{}") != 0) {
		/* Producer headers: a JSON object of strings, checked at INSERT. */
		const char *name;
		json_t *v;
		uh = json_loads(headers, 0, NULL);
		json_object_foreach (uh, name, v) {
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
		.key = key,
		.key_len = strlen(key),
		.value = value,
		.value_len = strlen(value),
		.headers = hdr,
		.nheaders = nh,
	};
	o = kafka_pub_produce(m->pub, &rec, &err, why, whylen);
	json_decref(uh);
	return o;
}

static void read_done(void *arg, const struct pg_result *res, const char *err)
{
	struct kafka_mirror *m = arg;
	struct mirror_read rd = { .cursor = m->cursor, .max_id = m->cursor };
	struct mirror_advance adv;
	int n;

	rd.limit = m->read_inflight;
	m->read_inflight = 0;
	if (res == NULL || m->state != MIRROR_LEADING)
		return;
	if (!pg_result_ok(res)) {
		log_error("kafka mirror: reading events failed", LOG_S("error", pg_failure(res, err)));
		return; /* the tick reads again */
	}
	n = rd.rows = pg_ntuples(res);
	for (int i = 0; i < n; i++)
		if (!pg_isnull(res, i, E_ID) && atoll(pg_value(res, i, E_ID)) <= rd.cursor)
			rd.behind++;
	for (int i = 0; i < n && !rd.stopped; i++) {
		int64_t id;
		struct mkey *k;
		char why[256];

		if (pg_isnull(res, i, E_ID))
			continue;
		id = atoll(pg_value(res, i, E_ID));
		if (id > rd.max_id)
			rd.max_id = id;
		if (row_find(m, id))
			continue; /* produced already, result not yet written */
		rd.fresh++;
		k = key_get(m, pg_value(res, i, E_AGGREGATE_ID), 1);
		if (k == NULL) {
			rd.first_unhandled = id;
			break;
		}
		/* Per-key order: nothing after a failed row of the key, and in strict mode
		 * (messages may time out) one record of a key in flight at a time. */
		if ((k->held && id > k->held) || (m->strict && k->inflight > 0)) {
			rd.first_unhandled = rd.first_unhandled ? rd.first_unhandled : id;
			rd.skipped++;
			key_maybe_free(m, k);
			continue;
		}
		switch (produce_row(m, res, i, id, why, sizeof why)) {
		case KAFKA_OK:
			if (k->held == id)
				k->held = 0;
			if (row_add(m, id, k, ROW_INFLIGHT) == NULL) {
				rd.stopped = 1; /* out of memory: stop here, the row is read again */
				rd.first_unhandled = rd.first_unhandled ? rd.first_unhandled : id;
			}
			rd.produced++;
			break;
		case KAFKA_PERMANENT:
			log_warn("kafka refused an event for good: marking it failed", LOG_I("event", (long long)id),
				 LOG_S("error", why));
			if (k->held == id)
				k->held = 0;
			if (row_add(m, id, k, ROW_FAILED) == NULL || marks_add_fail(&m->todo, id, why) != 0) {
				rd.stopped = 1;
				rd.first_unhandled = rd.first_unhandled ? rd.first_unhandled : id;
			}
			break;
		case KAFKA_QUEUE_FULL:
			/* The local queue is full: stop reading until reports drain it. */
			m->wait = READ_QUEUE_FULL;
			rd.first_unhandled = rd.first_unhandled ? rd.first_unhandled : id;
			key_maybe_free(m, k);
			rd.stopped = 1;
			break;
		case KAFKA_RETRY:
			log_warn("kafka produce refused; holding the key", LOG_I("event", (long long)id),
				 LOG_S("error", why));
			key_hold(k, id);
			rd.first_unhandled = rd.first_unhandled ? rd.first_unhandled : id;
			break;
		case KAFKA_FATAL:
			rd.first_unhandled = rd.first_unhandled ? rd.first_unhandled : id;
			key_maybe_free(m, k);
			rd.stopped = 1;
			break;
		}
	}
	rd.first_has_id = n > 0 && !pg_isnull(res, 0, E_ID);
	rd.has_xmin = n > 0 && !pg_isnull(res, 0, E_SNAPSHOT_XMIN);
	job_mirror_advance(&rd, &adv);
	m->cursor = adv.cursor;
	if (adv.guard_moves)
		snprintf(m->guard, sizeof m->guard, "%s", pg_value(res, 0, E_SNAPSHOT_XMIN));
	if (rd.produced)
		mirror_set_idle(m, 0);
	switch (adv.next) {
	case MIRROR_NEXT_READ:
		mirror_kick(m);
		break;
	case MIRROR_NEXT_WAIT:
		m->wait = READ_WAIT_REPORTS;
		break;
	case MIRROR_NEXT_IDLE:
		mirror_set_idle(m, 1);
		break;
	case MIRROR_NEXT_NOTHING:
		break;
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
	if (m->state != MIRROR_LEADING || m->read_inflight || !m->pub || !pg_ready(m->pg))
		return;
	if (m->wait != READ_GO || m->inflight >= MIRROR_MAX_INFLIGHT)
		return;
	lim = m->cfg->kafka_batch_size;
	if (lim > MIRROR_MAX_INFLIGHT - m->inflight)
		lim = MIRROR_MAX_INFLIGHT - m->inflight;
	if (kafka_pub_brokers_down(m->pub)) {
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
	if (pg_query(m->pg, READ_SQL, 3, p, 30000, read_done, m) == 0)
		m->read_inflight = lim;
}

static void mirror_kick(struct kafka_mirror *m)
{
	if (m->state == MIRROR_LEADING)
		event_active(m->ev_read, 0, 0);
}

/* After a round of delivery reports: write results, read more, finish a stop. */
static void mirror_on_after(evutil_socket_t fd, short what, void *arg)
{
	struct kafka_mirror *m = arg;

	(void)fd;
	(void)what;
	mirror_flush_marks(m);
	if (mirror_stopping(m))
		mirror_check_stop(m);
	else
		mirror_kick(m);
}

/* ---- leadership ---- */

static void setup_done(void *arg, const struct pg_result *res, const char *err)
{
	struct kafka_mirror *m = arg;

	if (res == NULL || m->state != MIRROR_SETTING_UP)
		return;
	if (!pg_result_ok(res)) {
		log_error("kafka mirror: setting up the leader session failed", LOG_S("error", pg_failure(res, err)));
		event_active(m->ev_reset, 0, 0);
		return;
	}
	mirror_set_state(m, MIRROR_LEADING);
	m->rewind = 1;
	log_info("kafka mirror: leader; publishing events", LOG_S("owner", m->owner));
	mirror_kick(m);
}

static void lock_done(void *arg, const struct pg_result *res, const char *err)
{
	struct kafka_mirror *m = arg;
	const char *p[1];

	if (m->state != MIRROR_LOCKING)
		return; /* stopping: a lock won now is let go with the session */
	mirror_set_state(m, MIRROR_FOLLOWER);
	if (res == NULL)
		return;
	if (!pg_result_ok(res) || pg_ntuples(res) != 1) {
		log_warn("kafka mirror: lock query failed", LOG_S("error", pg_failure(res, err)));
		m->next_lock_tick = m->ticks + 8;
		return;
	}
	if (strcmp(pg_value(res, 0, 0), "t") != 0) {
		/* Another replica publishes, or another login holds the key: try again in 1-2 s. */
		m->next_lock_tick = m->ticks + 4 + (unsigned)(backoff_random64() % 5);
		lock_watch_ask(&m->watch, m->pg);
		return;
	}
	lock_watch_clear(&m->watch);
	mirror_set_state(m, MIRROR_SETTING_UP);
	p[0] = m->cfg->lifecycle_events ? "true" : "false";
	if (pg_query(m->pg, "LISTEN outbox_events", 0, NULL, 10000, NULL, NULL) != 0 ||
	    pg_query(m->pg, "SELECT outbox.mirror_set_lifecycle_events($1::boolean)", 1, p, 10000, setup_done, m) != 0)
		event_active(m->ev_reset, 0, 0);
}

static void mirror_try_lock(struct kafka_mirror *m)
{
	if (m->state != MIRROR_FOLLOWER || !pg_ready(m->pg))
		return;
	if (pg_query(m->pg, "SELECT pg_try_advisory_lock(" MIRROR_LOCK_KEY ")", 0, NULL, 10000, lock_done, m) == 0)
		mirror_set_state(m, MIRROR_LOCKING);
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
	leadership_drop(m, reason);
	if (mirror_stopping(m))
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
	uint64_t now = clock_mono_ms();

	if (!mirror_stopping(m) || m->state == MIRROR_STOPPED)
		return;
	if (m->pub)
		kafka_pub_poll(m->pub);
	if (m->state == MIRROR_FLUSHING) {
		int left = m->pub ? kafka_pub_outq_len(m->pub) : 0;
		if (left > 0 && now < m->flush_deadline)
			return;
		if (left > 0) {
			log_warn("kafka mirror: flush timed out; unacknowledged events stay pending",
				 LOG_I("count", (long long)left));
			kafka_pub_purge(m->pub, 1);
			kafka_pub_poll(m->pub);
		}
		mirror_set_state(m, MIRROR_RECORDING);
		/* Whatever got no report stays pending. */
		mirror_on_recreated(m);
	}
	mirror_flush_marks(m);
	if ((m->todo.npub || m->todo.nfail || m->mark_inflight) && pg_ready(m->pg) && now < m->final_deadline)
		return;
	if (m->todo.npub || m->todo.nfail || m->mark_inflight)
		log_warn("kafka mirror: exiting with unrecorded deliveries; they will be sent again",
			 LOG_I("count",
			       (long long)(m->todo.npub + m->todo.nfail + m->sending.npub + m->sending.nfail)));
	kafka_pub_free(m->pub);
	m->pub = NULL;
	mirror_set_state(m, MIRROR_STOPPED);
	log_info("kafka mirror stopped", LOG_END);
}

void kafka_mirror_tick(struct kafka_mirror *m)
{
	enum breaker_state ks;

	m->ticks++;
	/* librdkafka signals its queue only when it turns non-empty: serve it here too */
	if (m->pub)
		kafka_pub_poll(m->pub);
	if (mirror_stopping(m)) {
		mirror_check_stop(m);
		return;
	}
	if (m->state == MIRROR_FOLLOWER && m->ticks >= m->next_lock_tick)
		mirror_try_lock(m);
	if (m->state == MIRROR_LEADING && m->ticks % 4 == 0) {
		/* The safety net for lost notifications and rows held back by the xmin guard. */
		if (m->wait == READ_WAIT_REPORTS)
			m->wait = READ_GO;
		mirror_kick(m);
	}
	if (m->state == MIRROR_LEADING)
		mirror_flush_marks(m);
	ks = m->pub && kafka_pub_brokers_down(m->pub) ? BREAKER_OPEN : BREAKER_CLOSED;
	if (ks != m->kstate || m->ticks % 4 == 0) {
		m->kstate = ks;
		telemetry_breaker(m->tm, "kafka", ks);
	}
}

/* ---- public API ---- */

struct kafka_mirror *kafka_mirror_new(struct event_base *base, const struct config *cfg, struct telemetry *tm,
				      const char *owner, char *errbuf, size_t errlen)
{
	struct kafka_mirror *m;
	struct kafka_pub_opts o;
	struct kafka_pub_callbacks cb = { mirror_on_delivery, mirror_on_recreated };
	struct pg_callbacks pcb = { mirror_on_connect, mirror_on_disconnect, mirror_on_notify };

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
	m->state = MIRROR_FOLLOWER;
	lock_watch_init(&m->watch, "mirror", tm);
	m->strict = cfg->kafka_message_timeout_ms > 0;
	snprintf(m->guard, sizeof m->guard, "0");
	snprintf(m->owner, sizeof m->owner, "%s:mirror", owner);
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
	m->ev_read = event_new(base, -1, 0, mirror_on_read, m);
	m->ev_after = event_new(base, -1, 0, mirror_on_after, m);
	m->ev_reset = event_new(base, -1, 0, mirror_on_reset, m);
	if (!m->ev_read || !m->ev_after || !m->ev_reset) {
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
	log_info("kafka mirror started", LOG_S("brokers", cfg->kafka_brokers),
		 LOG_S("compression", cfg->kafka_compression),
		 LOG_I("message_timeout_ms", (long long)cfg->kafka_message_timeout_ms),
		 LOG_S("order", m->strict ? "one in flight per key" : "idempotent pipeline per key"));
	return m;
fail:
	kafka_mirror_free(m);
	return NULL;
}

void kafka_mirror_stop(struct kafka_mirror *m)
{
	uint64_t now = clock_mono_ms(), drain;

	if (m == NULL || mirror_stopping(m))
		return;
	drain = m->cfg->drain_timeout_ms > 0 ? (uint64_t)m->cfg->drain_timeout_ms : 1000;
	mirror_set_state(m, MIRROR_FLUSHING);
	/* Three quarters of the drain time to flush, the rest (and a little more) to record. */
	m->flush_deadline = now + drain * 3 / 4;
	m->final_deadline = now + drain + 3000;
	event_del(m->ev_read);
	log_info("kafka mirror: stopping; flushing records in flight",
		 LOG_I("in_flight", (long long)(m->pub ? kafka_pub_outq_len(m->pub) : 0)));
	mirror_check_stop(m);
}

int kafka_mirror_stopped(const struct kafka_mirror *m)
{
	return m == NULL || m->state == MIRROR_STOPPED;
}

void kafka_mirror_free(struct kafka_mirror *m)
{
	if (m == NULL)
		return;
	/* Neither frees call back (the teardown contract), so the tables can go in any order. */
	kafka_pub_free(m->pub);
	pg_close(m->pg);
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
