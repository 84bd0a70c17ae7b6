/* Unit tests for the native SMTP engine (smtp_native.c through smtp.h) against a scripted
 * relay on the same event loop (loopback socket): one transaction for all recipients with
 * a result each, PIPELINING and lock step, CHUNKING, dot-stuffing, RSET before reuse, and
 * hostile relays (garbage, over-long lines, silence, a close after the dot). Runs under
 * valgrind with the other unit tests. */
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"
#include "smtp.h"
#include "testutil.h"

/* ---- the scripted relay ------------------------------------------------------------- */

struct relay {
	const char *greeting;   /* sent raw at connect */
	const char *ehlo_ext;   /* "250-PIPELINING\r\n..." lines before the final "250 OK" */
	const char *dot_reply;  /* raw reply to the final "." / BDAT LAST; NULL = close */
	int silent_mail;        /* from MAIL on, answer nothing (a hung relay) */
	const char *mail_reply; /* raw reply to MAIL, then close; NULL = "250" and go on */
	int mail_cap;           /* answer the 2nd MAIL on a connection with 452 (a per-connection cap) */
	int mails;              /* MAIL commands on the current connection */
	int silent;
	struct event_base *base;
	int fd;
	int conns;
	struct buf log;  /* every command line, '\n'-separated */
	struct buf body; /* the last message, unstuffed */
	struct bufferevent *bev;
	int in_data;
	size_t bdat_left;
	int bdat_last;
};

static void relay_send(struct relay *r, const char *s)
{
	bufferevent_write(r->bev, s, strlen(s));
}

static void relay_end_message(struct relay *r)
{
	if (r->dot_reply == NULL) {
		bufferevent_free(r->bev);
		r->bev = NULL;
		return;
	}
	relay_send(r, r->dot_reply);
}

static void relay_command(struct relay *r, const char *line)
{
	(void)!buf_puts(&r->log, line);
	(void)!buf_putc(&r->log, '\n');
	if (r->silent_mail && strncmp(line, "MAIL", 4) == 0)
		r->silent = 1;
	if (r->silent)
		return;
	if (strncmp(line, "EHLO", 4) == 0) {
		relay_send(r, "250-relay.test\r\n");
		relay_send(r, r->ehlo_ext);
		relay_send(r, "250 OK\r\n");
	} else if (strncmp(line, "MAIL", 4) == 0 && r->mail_reply) {
		/* straight to the socket (earlier replies are long gone), then hang up */
		(void)!write(bufferevent_getfd(r->bev), r->mail_reply, strlen(r->mail_reply));
		shutdown(bufferevent_getfd(r->bev), SHUT_RDWR);
	} else if (strncmp(line, "MAIL", 4) == 0 && r->mail_cap && ++r->mails > 1) {
		relay_send(r, "452 4.5.3 too many messages on this connection\r\n");
	} else if (strncmp(line, "MAIL", 4) == 0) {
		relay_send(r, "250 2.1.0 ok\r\n");
	} else if (strncmp(line, "RCPT TO:<perm", 13) == 0) {
		relay_send(r, "550 5.1.1 no such user\r\n");
	} else if (strncmp(line, "RCPT TO:<temp", 13) == 0) {
		relay_send(r, "451 4.3.0 later\r\n");
	} else if (strncmp(line, "RCPT", 4) == 0) {
		relay_send(r, "250 2.1.5 ok\r\n");
	} else if (strcmp(line, "DATA") == 0) {
		r->in_data = 1;
		buf_reset(&r->body);
		relay_send(r, "354 go ahead\r\n");
	} else if (strncmp(line, "BDAT ", 5) == 0) {
		r->bdat_left = strtoul(line + 5, NULL, 10);
		r->bdat_last = strstr(line, "LAST") != NULL;
		buf_reset(&r->body);
	} else if (strcmp(line, "QUIT") == 0) {
		relay_send(r, "221 bye\r\n");
	} else {
		relay_send(r, "250 ok\r\n");
	}
}

static void relay_read(struct bufferevent *bev, void *arg)
{
	struct relay *r = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	while (r->bev != NULL) {
		if (r->bdat_left > 0) {
			size_t n = evbuffer_get_length(in);
			if (n == 0)
				return;
			if (n > r->bdat_left)
				n = r->bdat_left;
			(void)!buf_reserve(&r->body, n);
			evbuffer_remove(in, r->body.data + r->body.len, n);
			r->body.len += n;
			r->body.data[r->body.len] = '\0';
			r->bdat_left -= n;
			if (r->bdat_left == 0 && r->bdat_last)
				relay_end_message(r);
			else if (r->bdat_left == 0)
				relay_send(r, "250 chunk ok\r\n");
			continue;
		}
		size_t len;
		char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF_STRICT);
		if (line == NULL)
			return;
		if (r->in_data) {
			if (strcmp(line, ".") == 0) {
				r->in_data = 0;
				relay_end_message(r);
			} else {
				(void)!buf_puts(&r->body, line[0] == '.' ? line + 1 : line);
				(void)!buf_puts(&r->body, "\r\n");
			}
		} else {
			relay_command(r, line);
		}
		free(line);
	}
}

static void relay_event(struct bufferevent *bev, short what, void *arg)
{
	struct relay *r = arg;
	(void)what;
	if (r->bev == bev) {
		bufferevent_free(bev);
		r->bev = NULL;
	}
}

static void relay_accept(evutil_socket_t fd, short what, void *arg)
{
	struct relay *r = arg;
	int c = accept(fd, NULL, NULL);
	(void)what;

	if (c < 0)
		return;
	evutil_make_socket_nonblocking(c);
	if (r->bev)
		bufferevent_free(r->bev);
	r->conns++;
	r->mails = 0;
	r->in_data = 0;
	r->bdat_left = 0;
	r->bev = bufferevent_socket_new(r->base, c, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(r->bev, relay_read, NULL, relay_event, r);
	bufferevent_enable(r->bev, EV_READ | EV_WRITE);
	relay_send(r, r->greeting);
}

/* ---- a run ---------------------------------------------------------------------------- */

#define MAXR 4
struct run {
	struct event_base *base;
	struct relay relay;
	struct event *ev_accept, *ev_guard;
	struct smtp_sink *sink;
	struct config cfg;
	int port;
	int done[MAXR];
	struct smtp_result res[MAXR];
	char text[MAXR][200];
	size_t want, got;
};

static void on_result(void *arg, size_t i, const struct smtp_result *r)
{
	struct run *t = arg;

	t->done[i]++;
	t->res[i] = *r;
	snprintf(t->text[i], sizeof(t->text[i]), "%s", r->text ? r->text : "");
	t->res[i].text = t->text[i];
	if (++t->got == t->want)
		event_base_loopbreak(t->base);
}

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
	struct run *t = arg;
	(void)fd;
	(void)what;
	event_base_loopbreak(t->base);
}

static int run_start(struct run *t, struct relay *script, const char *timeout)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	char url[64], err[256];

	memset(t, 0, sizeof(*t));
	t->relay = *script;
	buf_init(&t->relay.log);
	buf_init(&t->relay.body);
	t->base = event_base_new();
	t->relay.base = t->base;
	t->relay.fd = socket(AF_INET, SOCK_STREAM, 0);
	if (bind(t->relay.fd, (struct sockaddr *)&sa, sl) != 0 || listen(t->relay.fd, 8) != 0 ||
	    getsockname(t->relay.fd, (struct sockaddr *)&sa, &sl) != 0)
		return -1;
	evutil_make_socket_nonblocking(t->relay.fd);
	t->port = ntohs(sa.sin_port);
	snprintf(url, sizeof(url), "smtp://127.0.0.1:%d", t->port);
	setenv("OUTBOXD_SMTP_URL", url, 1);
	setenv("OUTBOXD_SMTP_TLS", "none", 1);
	setenv("OUTBOXD_SMTP_ENGINE", "native", 1);
	setenv("OUTBOXD_SMTP_POOL_SIZE", "1", 1);
	setenv("OUTBOXD_SMTP_TIMEOUT", timeout, 1);
	setenv("OUTBOXD_SMTP_CONNECT_TIMEOUT", timeout, 1);
	if (config_load(&t->cfg, NULL, stderr) != 0)
		return -1;
	t->sink = smtp_new(t->base, &t->cfg, err, sizeof(err));
	if (t->sink == NULL) {
		fprintf(stderr, "smtp_new: %s\n", err);
		return -1;
	}
	t->ev_accept = event_new(t->base, t->relay.fd, EV_READ | EV_PERSIST, relay_accept, &t->relay);
	event_add(t->ev_accept, NULL);
	return 0;
}

/* Submits one message to rcpt[0..n) and runs the loop until every result came (or 10 s). */
static void run_send(struct run *t, const char *const *rcpt, size_t n, const struct buf *msg)
{
	struct timeval tv = { 10, 0 };

	t->want = t->got + n;
	memset(t->done, 0, sizeof(t->done));
	CHECK(smtp_submit(t->sink, "from@example.org", rcpt, n, msg, on_result, t) == 0, "submit");
	t->ev_guard = evtimer_new(t->base, on_guard, t);
	evtimer_add(t->ev_guard, &tv);
	event_base_dispatch(t->base);
	event_free(t->ev_guard);
	for (size_t i = 0; i < n; i++)
		CHECK(t->done[i] == 1, "recipient %zu reported %d times", i, t->done[i]);
}

static void run_end(struct run *t)
{
	smtp_free(t->sink);
	if (t->relay.bev)
		bufferevent_free(t->relay.bev);
	event_free(t->ev_accept);
	close(t->relay.fd);
	event_base_free(t->base);
	config_free(&t->cfg);
	buf_free(&t->relay.log);
	buf_free(&t->relay.body);
}

static int count(const char *hay, const char *needle)
{
	int n = 0;
	for (const char *p = hay ? strstr(hay, needle) : NULL; p; p = strstr(p + 1, needle))
		n++;
	return n;
}

static struct buf message(const char *text)
{
	struct buf b;
	buf_init(&b);
	(void)!buf_puts(&b, text);
	return b;
}

/* ---- cases ---------------------------------------------------------------------------- */

static void test_one_transaction(const char *ext, int chunking)
{
	struct relay script = { .greeting = "220 relay ESMTP\r\n",
				.ehlo_ext = ext,
				.dot_reply = "250 2.0.0 queued\r\n" };
	const char *rcpt[] = { "ok1@example.com", "perm@example.com", "temp@example.com", "ok2@example.com" };
	struct buf msg = message("Subject: t\r\n\r\n.leading dot\r\nbody\r\n");
	struct run t;

	CHECK(run_start(&t, &script, "5s") == 0, "start");
	run_send(&t, rcpt, 4, &msg);
	CHECK(t.res[0].outcome.verdict == SMTP_OK && t.res[0].outcome.code == 250, "ok1: %s", t.res[0].text);
	CHECK(t.res[1].outcome.verdict == SMTP_PERMANENT && t.res[1].outcome.code == 550, "perm: %s", t.res[1].text);
	CHECK(t.res[2].outcome.verdict == SMTP_RETRY && t.res[2].outcome.code == 451, "temp: %s", t.res[2].text);
	CHECK(t.res[3].outcome.verdict == SMTP_OK, "ok2: %s", t.res[3].text);
	CHECK_STR(t.res[1].text, "550 5.1.1 no such user");
	/* the accepted recipients' second report repeats the first: the breaker hears it once */
	CHECK(!t.res[0].shared && t.res[3].shared, "shared %d %d", t.res[0].shared, t.res[3].shared);
	CHECK_INT(count(t.relay.log.data, "MAIL FROM:<from@example.org>"), 1);
	CHECK_INT(count(t.relay.log.data, "RCPT TO:"), 4);
	CHECK_INT(count(t.relay.log.data, "BDAT"), chunking);
	CHECK_INT(count(t.relay.log.data, "DATA"), !chunking);
	/* the relay got the bytes back as written, once */
	CHECK_STR(t.relay.body.data, msg.data);
	/* a second message reuses the connection */
	run_send(&t, rcpt, 1, &msg);
	CHECK(t.res[0].outcome.verdict == SMTP_OK, "second: %s", t.res[0].text);
	CHECK_INT(t.relay.conns, 1);
	run_end(&t);
	buf_free(&msg);
}

static void test_rset_after_refusal(void)
{
	struct relay script = { .greeting = "220 relay\r\n",
				.ehlo_ext = "250-PIPELINING\r\n",
				.dot_reply = "250 queued\r\n" };
	const char *bad[] = { "perm@example.com" }, *good[] = { "ok@example.com" };
	struct buf msg = message("Subject: r\r\n\r\nx\r\n");
	struct run t;

	CHECK(run_start(&t, &script, "5s") == 0, "start");
	run_send(&t, bad, 1, &msg);
	CHECK(t.res[0].outcome.verdict == SMTP_PERMANENT, "refused: %s", t.res[0].text);
	run_send(&t, good, 1, &msg);
	CHECK(t.res[0].outcome.verdict == SMTP_OK, "next: %s", t.res[0].text);
	CHECK(strstr(t.relay.log.data, "DATA\nRSET\nMAIL") != NULL, "log: %s", t.relay.log.data);
	CHECK_INT(t.relay.conns, 1);
	run_end(&t);
	buf_free(&msg);
}

static void test_reconnect_after_mail_4xx(void)
{
	struct relay script = { .greeting = "220 relay\r\n",
				.ehlo_ext = "250-PIPELINING\r\n",
				.dot_reply = "250 queued\r\n",
				.mail_cap = 1 };
	const char *rcpt[] = { "ok@example.com" };
	struct buf msg = message("Subject: c\r\n\r\nx\r\n");
	struct run t;

	CHECK(run_start(&t, &script, "5s") == 0, "start");
	run_send(&t, rcpt, 1, &msg);
	CHECK(t.res[0].outcome.verdict == SMTP_OK, "first: %s", t.res[0].text);
	run_send(&t, rcpt, 1, &msg);
	CHECK(t.res[0].outcome.verdict == SMTP_RETRY && t.res[0].outcome.code == 452, "capped: %s", t.res[0].text);
	/* the next message goes on a new connection, which takes it */
	run_send(&t, rcpt, 1, &msg);
	CHECK(t.res[0].outcome.verdict == SMTP_OK, "third: %s", t.res[0].text);
	CHECK_INT(t.relay.conns, 2);
	run_end(&t);
	buf_free(&msg);
}

struct hostile {
	const char *what;
	const char *greeting;
	const char *dot_reply;
	int silent_mail;
	enum smtp_verdict want;
	const char *ext;
	const char *mail_reply;
};

static void test_hostile(void)
{
	static char longline[5000];
	const struct hostile cases[] = {
		{ "garbage greeting", "hello\r\n", "250 ok\r\n", 0, SMTP_RETRY, NULL, NULL },
		{ "greeting 554", "554 go away\r\n", "250 ok\r\n", 0, SMTP_RETRY, NULL, NULL },
		{ "over-long greeting", longline, "250 ok\r\n", 0, SMTP_RETRY, NULL, NULL },
		{ "garbage after the dot", "220 ok\r\n", "what?\r\n", 0, SMTP_UNKNOWN, NULL, NULL },
		{ "9xx after the dot", "220 ok\r\n", "999 what\r\n", 0, SMTP_UNKNOWN, NULL, NULL },
		{ "closed after the dot", "220 ok\r\n", NULL, 0, SMTP_UNKNOWN, NULL, NULL },
		{ "4xx after the dot", "220 ok\r\n", "451 4.3.0 later\r\n", 0, SMTP_RETRY, NULL, NULL },
		{ "silent MAIL", "220 ok\r\n", "250 ok\r\n", 1, SMTP_RETRY, NULL, NULL },
		/* BDAT and the body went out with MAIL, but MAIL was refused: not unknown */
		{ "MAIL 550 then close", "220 ok\r\n", "250 ok\r\n", 0, SMTP_PERMANENT,
		  "250-PIPELINING\r\n250-CHUNKING\r\n", "550 5.7.1 sender refused\r\n" },
		{ "MAIL 421 then close", "220 ok\r\n", "250 ok\r\n", 0, SMTP_RETRY,
		  "250-PIPELINING\r\n250-CHUNKING\r\n", "421 4.3.2 closing\r\n" },
	};
	const char *rcpt[] = { "a@example.com", "b@example.com" };
	struct buf msg = message("Subject: h\r\n\r\nx\r\n");

	memset(longline, 'x', sizeof(longline) - 3);
	memcpy(longline, "220 ", 4);
	memcpy(longline + sizeof(longline) - 3, "\r\n", 3);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct relay script = { .greeting = cases[i].greeting,
					.ehlo_ext = cases[i].ext ? cases[i].ext : "250-PIPELINING\r\n",
					.dot_reply = cases[i].dot_reply,
					.silent_mail = cases[i].silent_mail,
					.mail_reply = cases[i].mail_reply };
		struct run t;

		CHECK(run_start(&t, &script, "1s") == 0, "start");
		run_send(&t, rcpt, 2, &msg);
		for (int k = 0; k < 2; k++)
			CHECK(t.res[k].outcome.verdict == cases[i].want, "%s: recipient %d got %s (%s)", cases[i].what,
			      k, smtp_verdict_name(t.res[k].outcome.verdict), t.res[k].text);
		run_end(&t);
	}
	buf_free(&msg);
}

int main(void)
{
	/* as in outboxd: a relay that hangs up must not kill the process on the next write */
	signal(SIGPIPE, SIG_IGN);
	test_one_transaction("250-PIPELINING\r\n250-SIZE 100000\r\n", 0);
	test_one_transaction("", 0); /* lock step */
	test_one_transaction("250-PIPELINING\r\n250-CHUNKING\r\n", 1);
	test_one_transaction("250-CHUNKING\r\n", 1);
	test_rset_after_refusal();
	test_reconnect_after_mail_4xx();
	test_hostile();
	return test_summary("smtp_native");
}
