/* smtp_class: the reply/result rule table. libcurl's CURLcode does not separate 4xx from
 * 5xx and the response code is only the last reply seen (possibly a stale 354 from DATA),
 * so both are read together, plus whether the connection was reused and whether the whole
 * payload was handed over. Rows are tried in order; the first match wins. */
#include "smtp_class.h"

#include <curl/curl.h>
#include <limits.h>
#include <stddef.h>

#define ANY_CODE (-1)

enum {
	NEED_REUSED = SMTP_F_REUSED,
	NEED_DATA = SMTP_F_DATA_SENT,
	NEED_AFTER = 0x100, /* reply to the final "." : payload sent or cached connection
			       (a cached connection has no greeting, so an error there is
			       not a greeting refusal) */
};

struct rule {
	int curlcode;  /* ANY_CODE matches every code */
	long lo, hi;   /* response code range, inclusive */
	unsigned need; /* NEED_* bits that must hold */
	enum smtp_verdict verdict;
	unsigned char breaker;   /* breaker_failure */
	unsigned char answered;  /* relay_answered */
	unsigned char charge;    /* charge_attempt */
	unsigned char keep_code; /* report response_code as the deciding code */
	const char *why;
};

#define R_ANY LONG_MIN, LONG_MAX

static const struct rule rules[] = {
	{ CURLE_OK, R_ANY, 0, SMTP_OK, 0, 1, 0, 1, "accepted" },

	/* No reply to the final "." (timeout or reset): the relay may have queued it. */
	{ CURLE_OPERATION_TIMEDOUT, 354, 354, 0, SMTP_UNKNOWN, 1, 0, 1, 0, "timeout after DATA" },
	{ CURLE_OPERATION_TIMEDOUT, R_ANY, NEED_DATA, SMTP_UNKNOWN, 1, 0, 1, 0, "timeout after DATA" },
	{ CURLE_OPERATION_TIMEDOUT, R_ANY, 0, SMTP_RETRY, 1, 0, 1, 0, "timeout before DATA" },
	{ CURLE_RECV_ERROR, 354, 354, 0, SMTP_UNKNOWN, 1, 0, 1, 0, "connection lost after DATA" },
	{ CURLE_RECV_ERROR, R_ANY, NEED_DATA, SMTP_UNKNOWN, 1, 0, 1, 0, "connection lost after DATA" },
	{ CURLE_RECV_ERROR, 0, 0, NEED_REUSED, SMTP_RETRY_NOW, 0, 0, 0, 0, "cached connection was closed" },
	{ CURLE_RECV_ERROR, R_ANY, 0, SMTP_RETRY, 1, 0, 1, 0, "connection lost" },
	{ CURLE_GOT_NOTHING, 354, 354, 0, SMTP_UNKNOWN, 1, 0, 1, 0, "connection lost after DATA" },
	{ CURLE_GOT_NOTHING, R_ANY, NEED_DATA, SMTP_UNKNOWN, 1, 0, 1, 0, "connection lost after DATA" },
	{ CURLE_GOT_NOTHING, 0, 0, NEED_REUSED, SMTP_RETRY_NOW, 0, 0, 0, 0, "cached connection was closed" },
	{ CURLE_GOT_NOTHING, R_ANY, 0, SMTP_RETRY, 1, 0, 1, 0, "connection lost" },

	/* MAIL/RCPT/DATA refused, or the upload broke. */
	{ CURLE_SEND_ERROR, 354, 354, 0, SMTP_UNKNOWN, 1, 0, 1, 0, "send failed during DATA" },
	{ CURLE_SEND_ERROR, 421, 421, 0, SMTP_RETRY, 1, 0, 1, 1, "relay closing (421)" },
	{ CURLE_SEND_ERROR, 530, 530, 0, SMTP_CONFIG, 0, 1, 0, 1, "authentication required (530)" },
	{ CURLE_SEND_ERROR, 535, 535, 0, SMTP_CONFIG, 0, 1, 0, 1, "authentication failed (535)" },
	{ CURLE_SEND_ERROR, 538, 538, 0, SMTP_CONFIG, 0, 1, 0, 1, "encryption required (538)" },
	{ CURLE_SEND_ERROR, 400, 499, 0, SMTP_RETRY, 0, 1, 1, 1, "transient refusal (4xx)" },
	{ CURLE_SEND_ERROR, 500, 599, 0, SMTP_PERMANENT, 0, 1, 1, 1, "refused (5xx)" },
	{ CURLE_SEND_ERROR, R_ANY, NEED_DATA, SMTP_UNKNOWN, 1, 0, 1, 0, "send failed after DATA" },
	{ CURLE_SEND_ERROR, 0, 0, NEED_REUSED, SMTP_RETRY_NOW, 0, 0, 0, 0, "cached connection was closed" },
	{ CURLE_SEND_ERROR, R_ANY, 0, SMTP_RETRY, 1, 0, 1, 0, "send failed" },
	{ CURLE_UPLOAD_FAILED, 354, 354, 0, SMTP_UNKNOWN, 1, 0, 1, 0, "upload failed during DATA" },
	{ CURLE_UPLOAD_FAILED, R_ANY, NEED_DATA, SMTP_UNKNOWN, 1, 0, 1, 0, "upload failed after DATA" },
	{ CURLE_UPLOAD_FAILED, R_ANY, 0, SMTP_RETRY, 1, 0, 1, 0, "upload failed" },

	/* Greeting or final-"." reply curl did not like. */
	{ CURLE_WEIRD_SERVER_REPLY, 354, 354, 0, SMTP_UNKNOWN, 1, 0, 1, 0, "aborted during DATA" },
	{ CURLE_WEIRD_SERVER_REPLY, 421, 421, 0, SMTP_RETRY, 1, 0, 1, 1, "relay closing (421)" },
	{ CURLE_WEIRD_SERVER_REPLY, 530, 530, 0, SMTP_CONFIG, 0, 1, 0, 1, "authentication required (530)" },
	{ CURLE_WEIRD_SERVER_REPLY, 535, 535, 0, SMTP_CONFIG, 0, 1, 0, 1, "authentication failed (535)" },
	{ CURLE_WEIRD_SERVER_REPLY, 538, 538, 0, SMTP_CONFIG, 0, 1, 0, 1, "encryption required (538)" },
	{ CURLE_WEIRD_SERVER_REPLY, 200, 299, NEED_AFTER, SMTP_OK, 0, 1, 0, 1, "accepted (2xx other than 250)" },
	{ CURLE_WEIRD_SERVER_REPLY, 400, 499, NEED_AFTER, SMTP_RETRY, 0, 1, 1, 1, "message deferred (4xx)" },
	{ CURLE_WEIRD_SERVER_REPLY, 500, 599, NEED_AFTER, SMTP_PERMANENT, 0, 1, 1, 1, "message refused (5xx)" },
	/* A code outside 2xx-5xx (199, 999), or a 3xx, after the whole payload went: the
	 * relay may have queued it. Charged, so max_attempts bounds how often it is sent again. */
	{ CURLE_WEIRD_SERVER_REPLY, LONG_MIN, 199, NEED_DATA, SMTP_UNKNOWN, 1, 0, 1, 0,
	  "reply outside 2xx-5xx after DATA" },
	{ CURLE_WEIRD_SERVER_REPLY, 600, LONG_MAX, NEED_DATA, SMTP_UNKNOWN, 1, 0, 1, 0,
	  "reply outside 2xx-5xx after DATA" },
	{ CURLE_WEIRD_SERVER_REPLY, 300, 399, NEED_DATA, SMTP_UNKNOWN, 1, 0, 1, 1, "3xx reply to the end of data" },
	{ CURLE_WEIRD_SERVER_REPLY, 100, 599, 0, SMTP_RETRY, 1, 0, 0, 1, "greeting refused" },
	{ CURLE_WEIRD_SERVER_REPLY, R_ANY, 0, SMTP_RETRY, 1, 0, 1, 0, "unexpected server reply" },

	/* Our configuration: pause the lane, do not burn the row's attempts. */
	{ CURLE_REMOTE_ACCESS_DENIED, R_ANY, 0, SMTP_CONFIG, 0, 0, 0, 1, "EHLO/HELO refused" },
	{ CURLE_USE_SSL_FAILED, R_ANY, 0, SMTP_CONFIG, 0, 0, 0, 1, "STARTTLS refused" },
	{ CURLE_LOGIN_DENIED, R_ANY, 0, SMTP_CONFIG, 0, 0, 0, 1, "login denied" },
	{ CURLE_AUTH_ERROR, R_ANY, 0, SMTP_CONFIG, 0, 0, 0, 1, "authentication error" },
	{ CURLE_PEER_FAILED_VERIFICATION, R_ANY, 0, SMTP_CONFIG, 0, 0, 0, 0, "TLS peer verification failed" },
	{ CURLE_SSL_CERTPROBLEM, R_ANY, 0, SMTP_CONFIG, 0, 0, 0, 0, "TLS client certificate problem" },
	{ CURLE_SSL_CIPHER, R_ANY, 0, SMTP_CONFIG, 0, 0, 0, 0, "TLS cipher problem" },
	{ CURLE_SSL_CACERT_BADFILE, R_ANY, 0, SMTP_CONFIG, 0, 0, 0, 0, "TLS CA file problem" },
	{ CURLE_SSL_CRL_BADFILE, R_ANY, 0, SMTP_CONFIG, 0, 0, 0, 0, "TLS CRL file problem" },
	{ CURLE_SSL_ISSUER_ERROR, R_ANY, 0, SMTP_CONFIG, 0, 0, 0, 0, "TLS issuer check failed" },
	{ CURLE_SSL_PINNEDPUBKEYNOTMATCH, R_ANY, 0, SMTP_CONFIG, 0, 0, 0, 0, "TLS pinned key mismatch" },
	{ CURLE_SSL_INVALIDCERTSTATUS, R_ANY, 0, SMTP_CONFIG, 0, 0, 0, 0, "TLS certificate status invalid" },
	{ CURLE_SSL_ENGINE_NOTFOUND, R_ANY, 0, SMTP_CONFIG, 0, 0, 0, 0, "TLS engine problem" },
	{ CURLE_SSL_ENGINE_SETFAILED, R_ANY, 0, SMTP_CONFIG, 0, 0, 0, 0, "TLS engine problem" },
	{ CURLE_SSL_ENGINE_INITFAILED, R_ANY, 0, SMTP_CONFIG, 0, 0, 0, 0, "TLS engine problem" },
	{ CURLE_SSL_CLIENTCERT, R_ANY, 0, SMTP_CONFIG, 0, 0, 0, 0, "TLS client certificate required" },
	{ CURLE_UNSUPPORTED_PROTOCOL, R_ANY, 0, SMTP_CONFIG, 0, 0, 0, 0, "unsupported protocol" },
	{ CURLE_URL_MALFORMAT, R_ANY, 0, SMTP_CONFIG, 0, 0, 0, 0, "malformed URL" },
	{ CURLE_NOT_BUILT_IN, R_ANY, 0, SMTP_CONFIG, 0, 0, 0, 0, "feature not built in" },
	{ CURLE_FAILED_INIT, R_ANY, 0, SMTP_CONFIG, 0, 0, 0, 0, "libcurl init failed" },
	{ CURLE_BAD_FUNCTION_ARGUMENT, R_ANY, 0, SMTP_CONFIG, 0, 0, 0, 0, "bad libcurl argument" },
	{ CURLE_UNKNOWN_OPTION, R_ANY, 0, SMTP_CONFIG, 0, 0, 0, 0, "unknown libcurl option" },
	{ CURLE_INTERFACE_FAILED, R_ANY, 0, SMTP_CONFIG, 0, 0, 0, 0, "network interface failed" },

	/* Relay unreachable: nothing reached it, so no attempt is charged (the breaker bounds
	 * how often this can repeat). */
	{ CURLE_COULDNT_CONNECT, R_ANY, 0, SMTP_RETRY, 1, 0, 0, 0, "could not connect" },
	{ CURLE_COULDNT_RESOLVE_HOST, R_ANY, 0, SMTP_RETRY, 1, 0, 0, 0, "could not resolve host" },
	{ CURLE_COULDNT_RESOLVE_PROXY, R_ANY, 0, SMTP_RETRY, 1, 0, 0, 0, "could not resolve proxy" },
	{ CURLE_PROXY, R_ANY, 0, SMTP_RETRY, 1, 0, 0, 0, "proxy handshake failed" },
	{ CURLE_SSL_CONNECT_ERROR, R_ANY, 0, SMTP_RETRY, 1, 0, 0, 0, "TLS handshake failed" },

	/* Local trouble: says nothing about the relay or the message. */
	{ CURLE_OUT_OF_MEMORY, 354, 354, 0, SMTP_UNKNOWN, 0, 0, 0, 0, "out of memory after DATA" },
	{ CURLE_OUT_OF_MEMORY, R_ANY, NEED_DATA, SMTP_UNKNOWN, 0, 0, 0, 0, "out of memory after DATA" },
	{ CURLE_OUT_OF_MEMORY, R_ANY, 0, SMTP_RETRY, 0, 0, 0, 0, "out of memory" },
	{ CURLE_ABORTED_BY_CALLBACK, 354, 354, 0, SMTP_UNKNOWN, 0, 0, 0, 0, "aborted after DATA" },
	{ CURLE_ABORTED_BY_CALLBACK, R_ANY, NEED_DATA, SMTP_UNKNOWN, 0, 0, 0, 0, "aborted after DATA" },
	{ CURLE_ABORTED_BY_CALLBACK, R_ANY, 0, SMTP_RETRY_NOW, 0, 0, 0, 0, "aborted locally" },
	{ CURLE_READ_ERROR, R_ANY, 0, SMTP_RETRY, 0, 0, 1, 0, "message read callback failed" },

	/* Anything else: cautious. Past DATA it may have been queued. */
	{ ANY_CODE, 354, 354, 0, SMTP_UNKNOWN, 1, 0, 1, 0, "unexpected error after DATA" },
	{ ANY_CODE, R_ANY, NEED_DATA, SMTP_UNKNOWN, 1, 0, 1, 0, "unexpected error after DATA" },
	{ ANY_CODE, R_ANY, 0, SMTP_RETRY, 1, 0, 1, 0, "unexpected error" },
};

struct smtp_outcome smtp_classify(int curlcode, long response_code, int flags)
{
	unsigned have = (unsigned)flags & (SMTP_F_REUSED | SMTP_F_DATA_SENT);
	struct smtp_outcome o = { SMTP_RETRY, 0, 1, 0, 1, "unexpected error" };
	size_t i;

	if (have != 0)
		have |= NEED_AFTER;
	for (i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
		const struct rule *r = &rules[i];

		if (r->curlcode != ANY_CODE && r->curlcode != curlcode)
			continue;
		if (response_code < r->lo || response_code > r->hi)
			continue;
		if ((r->need & have) != r->need)
			continue;
		o.verdict = r->verdict;
		o.breaker_failure = r->breaker;
		o.relay_answered = r->answered;
		o.charge_attempt = r->charge;
		o.why = r->why;
		o.code = r->keep_code && response_code >= 100 && response_code <= 599 ? (int)response_code : 0;
		return o;
	}
	return o; /* unreachable: the last row matches everything */
}

struct smtp_outcome smtp_classify_event(enum smtp_event ev, int code, int flags)
{
	int after = flags & SMTP_F_DATA_SENT;

	switch (ev) {
	case SMTP_EV_ACCEPTED:
		return smtp_classify(CURLE_OK, code, flags);
	case SMTP_EV_REFUSED:
		return smtp_classify(CURLE_SEND_ERROR, code, flags & ~SMTP_F_DATA_SENT);
	case SMTP_EV_DATA_REFUSED:
		return smtp_classify(CURLE_WEIRD_SERVER_REPLY, code, flags | SMTP_F_DATA_SENT);
	case SMTP_EV_GREETING:
		return smtp_classify(CURLE_WEIRD_SERVER_REPLY, code, 0);
	case SMTP_EV_EHLO_REFUSED:
		return smtp_classify(CURLE_REMOTE_ACCESS_DENIED, code, 0);
	case SMTP_EV_STARTTLS_FAILED:
		return smtp_classify(CURLE_USE_SSL_FAILED, code, 0);
	case SMTP_EV_AUTH_FAILED:
		return smtp_classify(CURLE_LOGIN_DENIED, code, 0);
	case SMTP_EV_TLS_VERIFY:
		return smtp_classify(CURLE_PEER_FAILED_VERIFICATION, 0, 0);
	case SMTP_EV_TLS_HANDSHAKE:
		return smtp_classify(CURLE_SSL_CONNECT_ERROR, 0, 0);
	case SMTP_EV_CONNECT:
		return smtp_classify(CURLE_COULDNT_CONNECT, 0, 0);
	case SMTP_EV_RESOLVE:
		return smtp_classify(CURLE_COULDNT_RESOLVE_HOST, 0, 0);
	case SMTP_EV_TIMEOUT:
		return smtp_classify(CURLE_OPERATION_TIMEDOUT, 0, flags);
	case SMTP_EV_CLOSED:
		return smtp_classify(CURLE_RECV_ERROR, 0, flags);
	case SMTP_EV_MALFORMED:
		/* after the final "." garbage says nothing about whether it was queued */
		return smtp_classify(after ? CURLE_RECV_ERROR : CURLE_WEIRD_SERVER_REPLY, 0, flags);
	case SMTP_EV_LOCAL:
		return smtp_classify(CURLE_OUT_OF_MEMORY, 0, flags);
	case SMTP_EV_LINE_TOO_LONG: {
		/* no relay can take it (RFC 5321 §4.5.3.1.6); nothing was sent */
		struct smtp_outcome o = { SMTP_PERMANENT, 0, 0, 0, 1, "message has a line longer than 998 octets" };
		return o;
	}
	}
	return smtp_classify(-1, 0, flags);
}

const char *smtp_verdict_name(enum smtp_verdict v)
{
	switch (v) {
	case SMTP_OK:
		return "ok";
	case SMTP_RETRY:
		return "retry";
	case SMTP_PERMANENT:
		return "permanent";
	case SMTP_CONFIG:
		return "config";
	case SMTP_UNKNOWN:
		return "unknown";
	case SMTP_RETRY_NOW:
		return "retry_now";
	}
	return "invalid";
}
