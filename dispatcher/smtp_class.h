/* smtp_class: turns the end of one SMTP transfer (libcurl result code, last SMTP reply,
 * what we know about the connection) into a delivery verdict, from one rule table. */
#ifndef OUTBOXD_SMTP_CLASS_H
#define OUTBOXD_SMTP_CLASS_H

enum smtp_verdict {
	SMTP_OK,        /* accepted: mark sent */
	SMTP_RETRY,     /* transient: back off and retry */
	SMTP_PERMANENT, /* refused for good: mark failed */
	SMTP_CONFIG,    /* our setup is wrong (auth, TLS, URL): pause the lane, alert,
			   put the row back without charging an attempt */
	SMTP_UNKNOWN,   /* the payload may have been queued: retry with the same
			   Message-ID, record the possible duplicate */
	SMTP_RETRY_NOW, /* a cached connection was dead before anything was sent:
			   resend at once, no attempt charged, no backoff */
};

/* Bits for the flags argument of smtp_classify(). Bit 0 keeps the meaning of the
 * older "reused_connection" boolean, so passing 0/1 there still works. */
#define SMTP_F_REUSED                                                                                                  \
	0x1 /* the transfer ran on a cached connection
				(CURLINFO_NUM_CONNECTS == 0) */
#define SMTP_F_DATA_SENT                                                                                               \
	0x2 /* the read callback handed over the whole message
				(returned 0 = EOF), so curl went on to send the final "." */

struct smtp_outcome {
	enum smtp_verdict verdict;
	int code;            /* the SMTP reply that decided it (100..599), else 0; a stale
				354 left over from DATA is reported as 0 */
	int breaker_failure; /* counts against the relay's circuit breaker */
	int relay_answered;  /* the relay spoke sensible SMTP: count as breaker success
				(when neither is set, release the probe: breaker_cancel) */
	int charge_attempt;  /* counts as one of the row's delivery attempts */
	const char *why;     /* short static explanation for last_error / logs */
};

/* Classifies one finished transfer. curlcode is the CURLcode from CURLMSG_DONE,
 * response_code is CURLINFO_RESPONSE_CODE (the last reply seen, may be 0 or stale),
 * flags is a mix of SMTP_F_*. Pure function; never fails. */
struct smtp_outcome smtp_classify(int curlcode, long response_code, int flags);

/* How an SMTP exchange ended, said without libcurl (the native engine speaks SMTP
 * itself). Each event is classified through the row of the table above that libcurl's
 * equivalent result hits, so both engines reach the same verdict for the same relay
 * behaviour. */
enum smtp_event {
	SMTP_EV_ACCEPTED,        /* 2xx to the final "." or BDAT LAST */
	SMTP_EV_REFUSED,         /* MAIL, RCPT or DATA answered with `code` (not 2xx/3xx) */
	SMTP_EV_DATA_REFUSED,    /* the final "." or BDAT LAST answered 4xx/5xx */
	SMTP_EV_GREETING,        /* greeting other than 220 */
	SMTP_EV_EHLO_REFUSED,    /* EHLO and HELO refused */
	SMTP_EV_STARTTLS_FAILED, /* TLS required but STARTTLS not offered or refused */
	SMTP_EV_AUTH_FAILED,     /* AUTH refused, or no mechanism in common */
	SMTP_EV_TLS_VERIFY,      /* certificate or host name refused */
	SMTP_EV_TLS_HANDSHAKE,   /* TLS handshake failed otherwise */
	SMTP_EV_CONNECT,         /* TCP connection refused or unreachable */
	SMTP_EV_RESOLVE,         /* host name did not resolve */
	SMTP_EV_TIMEOUT,         /* a phase timeout ran out */
	SMTP_EV_CLOSED,          /* connection closed or reset */
	SMTP_EV_MALFORMED,       /* a reply that is not SMTP (ends the connection) */
	SMTP_EV_LOCAL,           /* local failure (out of memory) */
	SMTP_EV_LINE_TOO_LONG,   /* the message holds a line over 998 octets */
};

/* Classifies an engine-neutral event; code is the deciding reply (0 if none), flags a mix
 * of SMTP_F_*. Pure function; never fails. */
struct smtp_outcome smtp_classify_event(enum smtp_event ev, int code, int flags);

/* "ok", "retry", "permanent", "config", "unknown", "retry_now" (static string). */
const char *smtp_verdict_name(enum smtp_verdict v);

#endif
