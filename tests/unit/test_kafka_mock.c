/* The mirror's publisher against librdkafka's mock cluster: the error table, retried
 * request errors, a broker outage, a permanent refusal and a fatal error each end as the
 * mirror expects (delivered in order / delivered after the outage / failed / recreated). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "kafka.h"
#include "log.h"
#include "testutil.h"

#define MAXREC 2000

struct seen {
	int n, ok, retry, permanent, recreated;
	int64_t id[MAXREC];
	int32_t part[MAXREC];
	int64_t off[MAXREC];
	enum kafka_outcome out[MAXREC];
};

static void on_delivery(void *arg, const struct kafka_delivery *d)
{
	struct seen *s = arg;
	if (s->n < MAXREC) {
		s->id[s->n] = d->id;
		s->part[s->n] = d->partition;
		s->off[s->n] = d->offset;
		s->out[s->n] = d->outcome;
	}
	s->n++;
	s->ok += d->outcome == KAFKA_OK;
	s->retry += d->outcome == KAFKA_RETRY;
	s->permanent += d->outcome == KAFKA_PERMANENT;
}

static void on_recreated(void *arg)
{
	((struct seen *)arg)->recreated++;
}

static uint64_t ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The publisher under test: its owner serves it periodically, as the mirror's tick does. */
static struct kafka_pub *current_pub;

/* Runs the loop until s has `want` reports or timeout_ms passes. */
static void run_until(struct event_base *base, struct seen *s, int want, uint64_t timeout_ms)
{
	uint64_t end = ms() + timeout_ms;
	while (s->n < want && ms() < end) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		if (current_pub)
			kafka_pub_poll(current_pub);
		usleep(2000);
	}
}

static void run_for(struct event_base *base, uint64_t t)
{
	uint64_t end = ms() + t;
	while (ms() < end) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		if (current_pub)
			kafka_pub_poll(current_pub);
		usleep(2000);
	}
}

static struct kafka_pub *make_pub(struct event_base *base, struct seen *s, const char *timeout)
{
	static const char *const extra[] = { "test.mock.num.brokers", "3", "linger.ms", "5", NULL };
	struct kafka_pub_opts o = {
		.brokers = "unused:9092", .compression = "lz4", .security_protocol = "plaintext", .extra = extra
	};
	struct kafka_pub_callbacks cb = { on_delivery, on_recreated };
	char err[256] = "";
	struct kafka_pub *p;

	o.message_timeout_ms = atoll(timeout);
	memset(s, 0, sizeof *s);
	p = kafka_pub_new(base, &o, &cb, s, err, sizeof err);
	CHECK(p != NULL, "kafka_pub_new: %s", err);
	current_pub = p;
	return p;
}

/* Produces n records with ids first..first+n-1 over nkeys keys to topic t. */
static int produce(struct kafka_pub *p, const char *t, int64_t first, int n, int nkeys, size_t vlen)
{
	static char value[64 * 1024];
	int queued = 0;
	memset(value, 'v', sizeof value);
	for (int i = 0; i < n; i++) {
		char key[16], id[24];
		const char *h[] = { "id", id, "type", "T" };
		int err;
		char why[128];
		snprintf(key, sizeof key, "k%d", (int)((first + i) % nkeys));
		snprintf(id, sizeof id, "%lld", (long long)(first + i));
		struct kafka_record r = { .id = first + i,
					  .topic = t,
					  .key = key,
					  .key_len = strlen(key),
					  .value = value,
					  .value_len = vlen,
					  .headers = h,
					  .nheaders = 2 };
		enum kafka_outcome o = kafka_pub_produce(p, &r, &err, why, sizeof why);
		CHECK(o == KAFKA_OK, "produce %d: %s", i, why);
		queued += o == KAFKA_OK;
	}
	return queued;
}

/* Per key (id % nkeys), the offsets of successive ids grow: order kept per key. */
static int keys_in_order(const struct seen *s, int nkeys)
{
	for (int k = 0; k < nkeys; k++) {
		int64_t last_id = -1, last_off = -1;
		for (int64_t want = 0; want < 100000; want++) {
			int found = -1;
			if (want % nkeys != k)
				continue;
			for (int i = 0; i < s->n && i < MAXREC; i++)
				if (s->id[i] == want && s->out[i] == KAFKA_OK)
					found = i;
			if (found < 0)
				break;
			if (last_id >= 0 && s->off[found] <= last_off)
				return 0;
			last_id = want;
			last_off = s->off[found];
		}
	}
	return 1;
}

static void test_classify(void)
{
	CHECK_INT(kafka_classify(RD_KAFKA_RESP_ERR_NO_ERROR), KAFKA_OK);
	CHECK_INT(kafka_classify(RD_KAFKA_RESP_ERR_DUPLICATE_SEQUENCE_NUMBER), KAFKA_OK);
	CHECK_INT(kafka_classify(RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE), KAFKA_PERMANENT);
	CHECK_INT(kafka_classify(RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED), KAFKA_PERMANENT);
	CHECK_INT(kafka_classify(RD_KAFKA_RESP_ERR_INVALID_RECORD), KAFKA_PERMANENT);
	CHECK_INT(kafka_classify(RD_KAFKA_RESP_ERR__MSG_TIMED_OUT), KAFKA_RETRY);
	CHECK_INT(kafka_classify(RD_KAFKA_RESP_ERR__PURGE_QUEUE), KAFKA_RETRY);
	CHECK_INT(kafka_classify(RD_KAFKA_RESP_ERR__TRANSPORT), KAFKA_RETRY);
	CHECK_INT(kafka_classify(RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION), KAFKA_RETRY);
	CHECK_INT(kafka_classify(RD_KAFKA_RESP_ERR__FATAL), KAFKA_FATAL);
	CHECK_INT(kafka_classify(RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER), KAFKA_FATAL);
	CHECK_STR(kafka_outcome_name(KAFKA_PERMANENT), "permanent");
}

static void test_request_errors_retried(struct event_base *base)
{
	struct seen s;
	struct kafka_pub *p = make_pub(base, &s, "0");
	if (!p)
		return;
	rd_kafka_mock_cluster_t *mc = rd_kafka_handle_mock_cluster(kafka_pub_handle(p));
	CHECK(mc != NULL, "mock cluster");
	/* Produce is ApiKey 0: every one of these is retried inside librdkafka. */
	rd_kafka_mock_push_request_errors(mc, 0, 6, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
					  RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
					  RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
					  RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
					  RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT);
	int q = produce(p, "mock.retry", 0, 500, 10, 100);
	run_until(base, &s, q, 20000);
	CHECK_INT(s.ok, 500);
	CHECK_INT(s.retry + s.permanent, 0);
	CHECK(keys_in_order(&s, 10), "per-key order broken under retried request errors");
	current_pub = NULL;
	kafka_pub_free(p);
}

static void test_broker_down_waits(struct event_base *base)
{
	struct seen s;
	struct kafka_pub *p = make_pub(base, &s, "0");
	if (!p)
		return;
	rd_kafka_mock_cluster_t *mc = rd_kafka_handle_mock_cluster(kafka_pub_handle(p));
	int q = produce(p, "mock.down", 0, 50, 5, 100);
	run_until(base, &s, q, 10000);
	CHECK_INT(s.ok, 50);
	for (int b = 1; b <= 3; b++)
		rd_kafka_mock_broker_set_down(mc, b);
	q += produce(p, "mock.down", 50, 200, 5, 100);
	run_for(base, 1500);
	/* With no message timeout nothing fails while the brokers are away. */
	CHECK_INT(s.retry + s.permanent, 0);
	CHECK(s.ok < q, "delivered %d of %d while every broker was down", s.ok, q);
	for (int b = 1; b <= 3; b++)
		rd_kafka_mock_broker_set_up(mc, b);
	run_until(base, &s, q, 30000);
	CHECK_INT(s.ok, q);
	CHECK(keys_in_order(&s, 5), "per-key order broken across the outage");
	current_pub = NULL;
	kafka_pub_free(p);
}

static void test_timeout_reports_retry(struct event_base *base)
{
	struct seen s;
	struct kafka_pub *p = make_pub(base, &s, "1000");
	if (!p)
		return;
	rd_kafka_mock_cluster_t *mc = rd_kafka_handle_mock_cluster(kafka_pub_handle(p));
	int q = 0, ok = 0, retry0;

	/* The cluster, the idempotent producer's id and the leaders must be up before records
	 * time out on purpose; on a loaded machine that can take longer than the 1 s message
	 * timeout, so the first batch is offered again (a bounded number of times) until it
	 * goes through. */
	for (int attempt = 0; attempt < 10 && ok < 10; attempt++) {
		int ok0 = s.ok;

		q += produce(p, "mock.timeout", 0, 10, 2, 100);
		run_until(base, &s, q, 10000);
		ok = s.ok - ok0;
	}
	CHECK_INT(ok, 10);
	retry0 = s.retry;
	for (int b = 1; b <= 3; b++)
		rd_kafka_mock_broker_set_down(mc, b);
	q += produce(p, "mock.timeout", 10, 20, 2, 100);
	run_until(base, &s, q, 20000);
	/* A message timeout is a retry for the mirror: the row stays pending, the key is held. */
	CHECK_INT(s.retry - retry0, 20);
	CHECK_INT(s.permanent, 0);
	for (int b = 1; b <= 3; b++)
		rd_kafka_mock_broker_set_up(mc, b);
	current_pub = NULL;
	kafka_pub_free(p);
}

static void test_permanent_error(struct event_base *base)
{
	struct seen s;
	struct kafka_pub *p = make_pub(base, &s, "0");
	if (!p)
		return;
	rd_kafka_mock_cluster_t *mc = rd_kafka_handle_mock_cluster(kafka_pub_handle(p));
	int q = produce(p, "mock.perm", 0, 1, 1, 100);
	run_until(base, &s, q, 10000);
	CHECK_INT(s.ok, 1);
	rd_kafka_mock_push_request_errors(mc, 0, 1, RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
	q += produce(p, "mock.perm", 1, 1, 1, 100);
	run_until(base, &s, q, 10000);
	CHECK_INT(s.permanent, 1);
	CHECK(s.n >= 2 && s.id[1] == 1 && s.out[1] == KAFKA_PERMANENT, "record 1 refused for good");
	/* The others go on. */
	q += produce(p, "mock.perm", 2, 20, 3, 100);
	run_until(base, &s, q, 10000);
	CHECK_INT(s.ok, 21);
	rd_kafka_mock_push_request_errors(mc, 0, 1, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
	q += produce(p, "mock.perm", 100, 1, 1, 100);
	run_until(base, &s, q, 10000);
	CHECK_INT(s.permanent, 2);
	current_pub = NULL;
	kafka_pub_free(p);
}

static void test_fatal_recreates(struct event_base *base)
{
	struct seen s;
	struct kafka_pub *p = make_pub(base, &s, "0");
	if (!p)
		return;
	int q = produce(p, "mock.fatal", 0, 20, 2, 100);
	run_until(base, &s, q, 10000);
	CHECK_INT(s.ok, 20);
	rd_kafka_mock_cluster_t *mc = rd_kafka_handle_mock_cluster(kafka_pub_handle(p));
	/* Slow the broker so records are in flight when the producer dies. */
	rd_kafka_mock_broker_set_rtt(mc, -1, 500);
	q += produce(p, "mock.fatal", 20, 10, 2, 100);
	rd_kafka_test_fatal_error(kafka_pub_handle(p), RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
				  "injected by the test");
	run_until(base, &s, q, 10000);
	uint64_t end = ms() + 5000;
	while (s.recreated == 0 && ms() < end)
		run_for(base, 10);
	CHECK_INT(s.recreated, 1);
	CHECK_INT(kafka_pub_recreated(p), 1);
	/* Every record got a report; the ones caught by the fatal error say retry. */
	CHECK_INT(s.n, 30);
	CHECK_INT(s.ok + s.retry, 30);
	CHECK_INT(s.permanent, 0);
	/* The new producer works. */
	int before = s.ok;
	q += produce(p, "mock.fatal", 30, 10, 2, 100);
	run_until(base, &s, q, 10000);
	CHECK_INT(s.ok - before, 10);
	current_pub = NULL;
	kafka_pub_free(p);
}

int main(void)
{
	struct event_base *base = event_base_new();

	log_set_level(LOG_ERROR);
	test_classify();
	test_request_errors_retried(base);
	test_broker_down_waits(base);
	test_timeout_reports_retry(base);
	test_permanent_error(base);
	test_fatal_recreates(base);
	event_base_free(base);
	return test_summary("kafka_mock");
}
