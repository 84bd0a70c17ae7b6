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
#define SMTP_F_REUSED    0x1 /* the transfer ran on a cached connection
				(CURLINFO_NUM_CONNECTS == 0) */
#define SMTP_F_DATA_SENT 0x2 /* the read callback handed over the whole message
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

/* "ok", "retry", "permanent", "config", "unknown", "retry_now" (static string). */
const char *smtp_verdict_name(enum smtp_verdict v);

#endif
