/*
 * curl_smtp_loop: the cost of libcurl's SMTP alone, as a reference for smtp_bench.py.
 *
 * Sends COUNT copies of one prebuilt message (2 KB body, headers of the size outboxd
 * writes) to URL over SESSIONS threads, each with one easy handle whose connection is
 * reused, exactly as outboxd's workers use libcurl, but with no database, no MIME building
 * and no bookkeeping. Prints one line:
 *
 *   curl_smtp_loop: <sent> msgs <sessions> sessions: <rate> msg/s, cpu <us> us/msg
 *
 *   curl_smtp_loop smtp://127.0.0.1:2525 20000 4
 */
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench_message.h"

#define MAX_SESSIONS 256

static const char *url;
static long per_session;
static char message[BENCH_MESSAGE_MAX];
static size_t message_len;

struct reader {
	size_t off;
};

static size_t read_cb(char *dst, size_t size, size_t nmemb, void *arg)
{
	struct reader *r = arg;
	size_t left = message_len - r->off;
	size_t n = size * nmemb < left ? size * nmemb : left;

	memcpy(dst, message + r->off, n);
	r->off += n;
	return n;
}

static void *session(void *arg)
{
	CURL *h = curl_easy_init();
	struct curl_slist *rcpt = curl_slist_append(NULL, "<rcpt@example.com>");
	struct reader r;
	long *failed = arg;

	if (h == NULL || rcpt == NULL) {
		*failed = per_session;
		goto out;
	}
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_MAIL_FROM, "<bench@example.org>");
	curl_easy_setopt(h, CURLOPT_MAIL_RCPT, rcpt);
	curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(h, CURLOPT_READFUNCTION, read_cb);
	curl_easy_setopt(h, CURLOPT_READDATA, &r);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	for (long i = 0; i < per_session; i++) {
		CURLcode rc;

		r.off = 0;
		rc = curl_easy_perform(h);
		if (rc != CURLE_OK) {
			fprintf(stderr, "curl_smtp_loop: %s\n", curl_easy_strerror(rc));
			(*failed)++;
		}
	}
out:
	curl_slist_free_all(rcpt);
	curl_easy_cleanup(h);
	return NULL;
}

static void build_message(void)
{
	message_len = bench_message(message);
}

int main(int argc, char **argv)
{
	pthread_t threads[MAX_SESSIONS];
	long failed[MAX_SESSIONS] = { 0 };
	struct timespec t0, t1;
	struct rusage ru;
	long count, sessions, sent, bad = 0;
	double elapsed, cpu;

	if (argc != 4 || (count = atol(argv[2])) <= 0 || (sessions = atol(argv[3])) <= 0 ||
	    sessions > MAX_SESSIONS || count < sessions) {
		fprintf(stderr, "usage: curl_smtp_loop URL COUNT SESSIONS (1..%d, at most COUNT)\n", MAX_SESSIONS);
		return 2;
	}
	url = argv[1];
	per_session = count / sessions;
	sent = per_session * sessions;
	build_message();
	curl_global_init(CURL_GLOBAL_ALL);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < sessions; i++)
		if (pthread_create(&threads[i], NULL, session, &failed[i]) != 0) {
			fprintf(stderr, "curl_smtp_loop: cannot start a thread\n");
			return 1;
		}
	for (long i = 0; i < sessions; i++) {
		pthread_join(threads[i], NULL);
		bad += failed[i];
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	getrusage(RUSAGE_SELF, &ru);
	curl_global_cleanup();

	elapsed = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	      (double)ru.ru_stime.tv_usec / 1e6;
	if (bad > 0) {
		fprintf(stderr, "curl_smtp_loop: %ld of %ld transfers failed\n", bad, sent);
		return 1;
	}
	printf("curl_smtp_loop: %ld msgs %ld sessions: %.0f msg/s, cpu %.1f us/msg\n", sent, sessions,
	       (double)sent / elapsed, cpu / (double)sent * 1e6);
	return 0;
}
