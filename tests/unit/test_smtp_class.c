/* Unit tests for smtp_class: every row of the reply-classification table the SMTP sink
 * relies on (libcurl 7.88.1 behaviour), plus edge cases. */
#include <curl/curl.h>

#include "smtp_class.h"
#include "testutil.h"

#define RE SMTP_F_REUSED
#define DS SMTP_F_DATA_SENT

struct row {
	const char *what;
	int curlcode;
	long resp;
	int flags;
	enum smtp_verdict verdict;
	int breaker, answered, charge, code;
};

static const struct row rows[] = {
	/* what                                   curl  resp flags verdict         brk ans chg code */
	{ "250 accepted", CURLE_OK, 250, DS, SMTP_OK, 0, 1, 0, 250 },
	{ "ok on reused connection", CURLE_OK, 250, RE | DS, SMTP_OK, 0, 1, 0, 250 },
	{ "port closed", CURLE_COULDNT_CONNECT, 0, 0, SMTP_RETRY, 1, 0, 0, 0 },
	{ "dns failure", CURLE_COULDNT_RESOLVE_HOST, 0, 0, SMTP_RETRY, 1, 0, 0, 0 },
	{ "greeting 421", CURLE_WEIRD_SERVER_REPLY, 421, 0, SMTP_RETRY, 1, 0, 1, 421 },
	{ "greeting 554", CURLE_WEIRD_SERVER_REPLY, 554, 0, SMTP_RETRY, 1, 0, 0, 554 },
	{ "greeting 521", CURLE_WEIRD_SERVER_REPLY, 521, 0, SMTP_RETRY, 1, 0, 0, 521 },
	{ "greeting 450", CURLE_WEIRD_SERVER_REPLY, 450, 0, SMTP_RETRY, 1, 0, 0, 450 },
	{ "EHLO+HELO refused", CURLE_REMOTE_ACCESS_DENIED, 500, 0, SMTP_CONFIG, 0, 0, 0, 500 },
	{ "STARTTLS refused", CURLE_USE_SSL_FAILED, 0, 0, SMTP_CONFIG, 0, 0, 0, 0 },
	{ "STARTTLS refused 454", CURLE_USE_SSL_FAILED, 454, 0, SMTP_CONFIG, 0, 0, 0, 454 },
	{ "AUTH failed", CURLE_LOGIN_DENIED, 535, 0, SMTP_CONFIG, 0, 0, 0, 535 },
	{ "MAIL 450", CURLE_SEND_ERROR, 450, 0, SMTP_RETRY, 0, 1, 1, 450 },
	{ "RCPT 451", CURLE_SEND_ERROR, 451, RE, SMTP_RETRY, 0, 1, 1, 451 },
	{ "RCPT 452", CURLE_SEND_ERROR, 452, 0, SMTP_RETRY, 0, 1, 1, 452 },
	{ "MAIL 421 per-connection cap", CURLE_SEND_ERROR, 421, RE, SMTP_RETRY, 1, 0, 1, 421 },
	{ "RCPT 550", CURLE_SEND_ERROR, 550, 0, SMTP_PERMANENT, 0, 1, 1, 550 },
	{ "RCPT 551", CURLE_SEND_ERROR, 551, 0, SMTP_PERMANENT, 0, 1, 1, 551 },
	{ "RCPT 553", CURLE_SEND_ERROR, 553, 0, SMTP_PERMANENT, 0, 1, 1, 553 },
	{ "RCPT 552", CURLE_SEND_ERROR, 552, 0, SMTP_PERMANENT, 0, 1, 1, 552 },
	{ "DATA 500", CURLE_SEND_ERROR, 500, 0, SMTP_PERMANENT, 0, 1, 1, 500 },
	{ "DATA 554", CURLE_SEND_ERROR, 554, RE, SMTP_PERMANENT, 0, 1, 1, 554 },
	{ "MAIL 530 auth skipped", CURLE_SEND_ERROR, 530, 0, SMTP_CONFIG, 0, 1, 0, 530 },
	{ "MAIL 535", CURLE_SEND_ERROR, 535, 0, SMTP_CONFIG, 0, 1, 0, 535 },
	{ "MAIL 538", CURLE_SEND_ERROR, 538, 0, SMTP_CONFIG, 0, 1, 0, 538 },
	{ "final . 451", CURLE_WEIRD_SERVER_REPLY, 451, DS, SMTP_RETRY, 0, 1, 1, 451 },
	{ "final . 452 reused", CURLE_WEIRD_SERVER_REPLY, 452, RE, SMTP_RETRY, 0, 1, 1, 452 },
	{ "final . 550", CURLE_WEIRD_SERVER_REPLY, 550, DS, SMTP_PERMANENT, 0, 1, 1, 550 },
	{ "final . 552", CURLE_WEIRD_SERVER_REPLY, 552, RE | DS, SMTP_PERMANENT, 0, 1, 1, 552 },
	{ "final . 554", CURLE_WEIRD_SERVER_REPLY, 554, DS, SMTP_PERMANENT, 0, 1, 1, 554 },
	{ "final . 199", CURLE_WEIRD_SERVER_REPLY, 199, DS, SMTP_UNKNOWN, 1, 0, 1, 0 },
	{ "final . 100 reused", CURLE_WEIRD_SERVER_REPLY, 100, RE | DS, SMTP_UNKNOWN, 1, 0, 1, 0 },
	{ "final . 999", CURLE_WEIRD_SERVER_REPLY, 999, DS, SMTP_UNKNOWN, 1, 0, 1, 0 },
	{ "final . 600", CURLE_WEIRD_SERVER_REPLY, 600, DS, SMTP_UNKNOWN, 1, 0, 1, 0 },
	{ "final . 399", CURLE_WEIRD_SERVER_REPLY, 399, DS, SMTP_UNKNOWN, 1, 0, 1, 399 },
	{ "final . 251", CURLE_WEIRD_SERVER_REPLY, 251, DS, SMTP_OK, 0, 1, 0, 251 },
	{ "final . 421 and close", CURLE_WEIRD_SERVER_REPLY, 421, DS, SMTP_RETRY, 1, 0, 1, 421 },
	{ "next on that connection", CURLE_RECV_ERROR, 0, RE, SMTP_RETRY_NOW, 0, 0, 0, 0 },
	{ "send on dead cached conn", CURLE_SEND_ERROR, 0, RE, SMTP_RETRY_NOW, 0, 0, 0, 0 },
	{ "nothing on cached conn", CURLE_GOT_NOTHING, 0, RE, SMTP_RETRY_NOW, 0, 0, 0, 0 },
	{ "reset on fresh conn", CURLE_RECV_ERROR, 0, 0, SMTP_RETRY, 1, 0, 1, 0 },
	{ "reset after MAIL 250", CURLE_RECV_ERROR, 250, RE, SMTP_RETRY, 1, 0, 1, 0 },
	{ "reset after . (354)", CURLE_RECV_ERROR, 354, 0, SMTP_UNKNOWN, 1, 0, 1, 0 },
	{ "reset after . (354) reused", CURLE_RECV_ERROR, 354, RE | DS, SMTP_UNKNOWN, 1, 0, 1, 0 },
	{ "reset after ., resp 0", CURLE_RECV_ERROR, 0, DS, SMTP_UNKNOWN, 1, 0, 1, 0 },
	{ "reset after ., resp 0, reused", CURLE_RECV_ERROR, 0, RE | DS, SMTP_UNKNOWN, 1, 0, 1, 0 },
	{ "timeout after . (354)", CURLE_OPERATION_TIMEDOUT, 354, 0, SMTP_UNKNOWN, 1, 0, 1, 0 },
	{ "timeout after ., resp 0", CURLE_OPERATION_TIMEDOUT, 0, DS, SMTP_UNKNOWN, 1, 0, 1, 0 },
	{ "connect timeout", CURLE_OPERATION_TIMEDOUT, 0, 0, SMTP_RETRY, 1, 0, 1, 0 },
	{ "timeout waiting RCPT", CURLE_OPERATION_TIMEDOUT, 250, RE, SMTP_RETRY, 1, 0, 1, 0 },
	{ "timeout on greeting", CURLE_OPERATION_TIMEDOUT, 0, 0, SMTP_RETRY, 1, 0, 1, 0 },
	{ "abort in DATA 55/354", CURLE_SEND_ERROR, 354, 0, SMTP_UNKNOWN, 1, 0, 1, 0 },
	{ "abort in DATA 8/354", CURLE_WEIRD_SERVER_REPLY, 354, 0, SMTP_UNKNOWN, 1, 0, 1, 0 },
	{ "abort in DATA 55/550", CURLE_SEND_ERROR, 550, DS, SMTP_PERMANENT, 0, 1, 1, 550 },
	{ "abort in DATA 8/550", CURLE_WEIRD_SERVER_REPLY, 550, DS, SMTP_PERMANENT, 0, 1, 1, 550 },
	{ "send fail after data", CURLE_SEND_ERROR, 0, DS, SMTP_UNKNOWN, 1, 0, 1, 0 },
	{ "send fail fresh conn", CURLE_SEND_ERROR, 0, 0, SMTP_RETRY, 1, 0, 1, 0 },
	{ "weird reply, no code", CURLE_WEIRD_SERVER_REPLY, 0, 0, SMTP_RETRY, 1, 0, 1, 0 },
	{ "TLS handshake", CURLE_SSL_CONNECT_ERROR, 0, 0, SMTP_RETRY, 1, 0, 0, 0 },
	{ "TLS verify", CURLE_PEER_FAILED_VERIFICATION, 0, 0, SMTP_CONFIG, 0, 0, 0, 0 },
	{ "bad CA file", CURLE_SSL_CACERT_BADFILE, 0, 0, SMTP_CONFIG, 0, 0, 0, 0 },
	{ "bad URL", CURLE_URL_MALFORMAT, 0, 0, SMTP_CONFIG, 0, 0, 0, 0 },
	{ "unsupported proto", CURLE_UNSUPPORTED_PROTOCOL, 0, 0, SMTP_CONFIG, 0, 0, 0, 0 },
	{ "auth error", CURLE_AUTH_ERROR, 0, 0, SMTP_CONFIG, 0, 0, 0, 0 },
	{ "OOM after DATA", CURLE_OUT_OF_MEMORY, 354, 0, SMTP_UNKNOWN, 0, 0, 0, 0 },
	{ "send fail after data, reused", CURLE_SEND_ERROR, 0, RE | DS, SMTP_UNKNOWN, 1, 0, 1, 0 },
	{ "OOM", CURLE_OUT_OF_MEMORY, 0, 0, SMTP_RETRY, 0, 0, 0, 0 },
	{ "shutdown abort before DATA", CURLE_ABORTED_BY_CALLBACK, 250, 0, SMTP_RETRY_NOW, 0, 0, 0, 0 },
	{ "shutdown abort after DATA", CURLE_ABORTED_BY_CALLBACK, 354, DS, SMTP_UNKNOWN, 0, 0, 0, 0 },
	{ "read callback error", CURLE_READ_ERROR, 354, 0, SMTP_RETRY, 0, 0, 1, 0 },
	{ "unknown code", 9999, 0, 0, SMTP_RETRY, 1, 0, 1, 0 },
	{ "unknown code after DATA", 9999, 0, DS, SMTP_UNKNOWN, 1, 0, 1, 0 },
	{ "unknown code, 354", 9999, 354, 0, SMTP_UNKNOWN, 1, 0, 1, 0 },
	{ "negative code", -5, -1, 0, SMTP_RETRY, 1, 0, 1, 0 },
	{ "huge response", CURLE_SEND_ERROR, 100000, 0, SMTP_RETRY, 1, 0, 1, 0 },
	{ "flags: unknown bits ignored", CURLE_RECV_ERROR, 0, 0x40 | RE, SMTP_RETRY_NOW, 0, 0, 0, 0 },
};

static void test_table(void)
{
	size_t i;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row *r = &rows[i];
		struct smtp_outcome o = smtp_classify(r->curlcode, r->resp, r->flags);
		int ok = o.verdict == r->verdict && o.breaker_failure == r->breaker &&
			 o.relay_answered == r->answered && o.charge_attempt == r->charge && o.code == r->code &&
			 o.why != NULL && o.why[0] != '\0';
		CHECK(ok, "%s: got %s brk=%d ans=%d chg=%d code=%d (%s); want %s brk=%d ans=%d chg=%d code=%d", r->what,
		      smtp_verdict_name(o.verdict), o.breaker_failure, o.relay_answered, o.charge_attempt, o.code,
		      o.why ? o.why : "-", smtp_verdict_name(r->verdict), r->breaker, r->answered, r->charge, r->code);
	}
}

/* Invariants over a sweep of inputs: config never charges; breaker failure and relay
 * answered never both; retry-now never charges; ok never hits the breaker. */
static void test_invariants(void)
{
	static const long resps[] = { -1,  0,   100, 199, 220, 250, 251, 354, 421, 450, 452,
				      499, 500, 530, 535, 538, 550, 554, 599, 600, 999 };
	/* codes that cannot happen once a reply was read: a 354 with them is impossible */
	static const int pre_connect[] = { CURLE_COULDNT_RESOLVE_PROXY, CURLE_COULDNT_RESOLVE_HOST,
					   CURLE_COULDNT_CONNECT, CURLE_SSL_CONNECT_ERROR, CURLE_PROXY };
	int cc, f, bad = 0;
	size_t k;

	for (cc = -1; cc <= 100; cc++)
		for (k = 0; k < sizeof(resps) / sizeof(resps[0]); k++)
			for (f = 0; f < 4; f++) {
				struct smtp_outcome o = smtp_classify(cc, resps[k], f);
				int early = 0;
				size_t e;
				for (e = 0; e < sizeof(pre_connect) / sizeof(pre_connect[0]); e++)
					early |= cc == pre_connect[e];
				if ((o.verdict == SMTP_CONFIG && o.charge_attempt) ||
				    (o.breaker_failure && o.relay_answered) ||
				    (o.verdict == SMTP_RETRY_NOW && o.charge_attempt) ||
				    (o.verdict == SMTP_OK && o.breaker_failure) ||
				    (o.code != 0 && (o.code < 100 || o.code > 599)) ||
				    (resps[k] == 354 && cc != 0 && !early && o.verdict != SMTP_UNKNOWN &&
				     cc != CURLE_READ_ERROR && o.verdict != SMTP_CONFIG) ||
				    ((f & DS) && cc != 0 && o.verdict == SMTP_RETRY_NOW) ||
				    /* after the payload, a reply that is not 2xx/4xx/5xx is never
				       free: it may have been queued, so it is charged */
				    ((f & DS) && cc == CURLE_WEIRD_SERVER_REPLY &&
				     (resps[k] / 100 < 2 || resps[k] / 100 == 3 || resps[k] > 599) &&
				     (o.verdict != SMTP_UNKNOWN || !o.charge_attempt))) {
					bad++;
					fprintf(stderr, "invariant broken: cc=%d resp=%ld f=%d -> %s\n", cc, resps[k],
						f, smtp_verdict_name(o.verdict));
				}
			}
	CHECK_INT(bad, 0);
}

static void test_names(void)
{
	CHECK_STR(smtp_verdict_name(SMTP_OK), "ok");
	CHECK_STR(smtp_verdict_name(SMTP_RETRY), "retry");
	CHECK_STR(smtp_verdict_name(SMTP_PERMANENT), "permanent");
	CHECK_STR(smtp_verdict_name(SMTP_CONFIG), "config");
	CHECK_STR(smtp_verdict_name(SMTP_UNKNOWN), "unknown");
	CHECK_STR(smtp_verdict_name(SMTP_RETRY_NOW), "retry_now");
	CHECK_STR(smtp_verdict_name((enum smtp_verdict)77), "invalid");
}

/* The native engine reports the reply to the final "." as an event: same verdicts. */
static void test_events_after_data(void)
{
	static const int codes[] = { 100, 199, 399, 600, 999 };

	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		struct smtp_outcome o = smtp_classify_event(SMTP_EV_DATA_REFUSED, codes[i], 0);
		CHECK(o.verdict == SMTP_UNKNOWN && o.charge_attempt && o.breaker_failure,
		      "final reply %d: %s charge %d", codes[i], smtp_verdict_name(o.verdict), o.charge_attempt);
		CHECK(o.why != NULL && *o.why, "final reply %d: no reason", codes[i]);
	}
}

int main(void)
{
	test_events_after_data();
	test_table();
	test_invariants();
	test_names();
	return test_summary("smtp_class");
}
