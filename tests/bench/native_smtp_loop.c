/*
 * native_smtp_loop: the cost of the native SMTP engine alone (smtp_native.c through
 * smtp.h), as curl_smtp_loop.c is for libcurl: COUNT copies of one prebuilt message (2 KB
 * body, headers of the size outboxd writes) to URL over SESSIONS pooled connections, with
 * no database, no MIME building and no bookkeeping; the engine's queue is kept 2 x
 * SESSIONS deep. Prints one line:
 *
 *   native_smtp_loop: <sent> msgs <sessions> sessions: <rate> msg/s, cpu <us> us/msg
 *
 *   native_smtp_loop smtp://127.0.0.1:2525 20000 4
 *
 * Built by smtp_engines_bench.py against the objects of `make` (everything but main.o).
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "buf.h"
#include "config.h"
#include "smtp.h"

#include "bench_message.h"

static struct buf message;
static struct smtp_sink *sink;
static struct event_base *base;
static long count, submitted, finished, failed, window;

static void submit_more(void);

static void on_done(void *arg, size_t index, const struct smtp_result *r)
{
	(void)arg;
	(void)index;
	if (r->not_attempted || r->outcome.verdict != SMTP_OK) {
		if (failed++ < 5)
			fprintf(stderr, "native_smtp_loop: %s\n", r->text ? r->text : "failed");
	}
	finished++;
	if (finished == count)
		event_base_loopbreak(base);
	else
		submit_more();
}

static void submit_more(void)
{
	static const char *const rcpt[] = { "rcpt@example.com" };

	while (submitted < count && submitted - finished < window) {
		if (smtp_submit(sink, "bench@example.org", rcpt, 1, &message, on_done, NULL) != 0) {
			fprintf(stderr, "native_smtp_loop: cannot submit\n");
			exit(1);
		}
		submitted++;
	}
}

static int build_message(void)
{
	static char raw[BENCH_MESSAGE_MAX];
	size_t n = bench_message(raw);

	buf_init(&message);
	return buf_append(&message, raw, n);
}

int main(int argc, char **argv)
{
	struct config cfg;
	char err[256];
	struct timespec t0, t1;
	struct rusage ru;
	long sessions;
	double elapsed, cpu;

	if (argc != 4 || (count = atol(argv[2])) <= 0 || (sessions = atol(argv[3])) <= 0 || sessions > 256) {
		fprintf(stderr, "usage: native_smtp_loop URL COUNT SESSIONS (1..256)\n");
		return 2;
	}
	setenv("OUTBOXD_SMTP_URL", argv[1], 1);
	setenv("OUTBOXD_SMTP_TLS", "none", 1);
	setenv("OUTBOXD_SMTP_ENGINE", "native", 1);
	setenv("OUTBOXD_SMTP_POOL_SIZE", argv[3], 1);
	memset(&cfg, 0, sizeof(cfg));
	if (config_load(&cfg, NULL, stderr) != 0 || build_message() != 0)
		return 1;
	base = event_base_new();
	sink = base ? smtp_new(base, &cfg, err, sizeof(err)) : NULL;
	if (sink == NULL) {
		fprintf(stderr, "native_smtp_loop: %s\n", base ? err : "no event base");
		return 1;
	}
	window = 2 * sessions;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	submit_more();
	event_base_dispatch(base);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	getrusage(RUSAGE_SELF, &ru);
	elapsed = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	cpu = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	      (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
	printf("native_smtp_loop: %ld msgs %ld sessions: %.1f msg/s, cpu %.1f us/msg\n", count - failed, sessions,
	       (double)(count - failed) / elapsed, cpu / (double)count * 1e6);
	smtp_free(sink);
	event_base_free(base);
	config_free(&cfg);
	buf_free(&message);
	return failed ? 1 : 0;
}
