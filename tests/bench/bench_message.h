/* bench_message: the one message the SMTP loop benchmarks (curl_smtp_loop.c,
 * native_smtp_loop.c) send: headers of the size outboxd writes and exactly BODY_BYTES of
 * body in CRLF lines, the last one cut short and ended with CRLF. */
#ifndef BENCH_MESSAGE_H
#define BENCH_MESSAGE_H

#include <stdio.h>
#include <string.h>

#define BODY_BYTES 2048
#define BENCH_MESSAGE_MAX (BODY_BYTES + 1024)

/* Writes the message into out (BENCH_MESSAGE_MAX bytes) and returns its length. */
static size_t bench_message(char *out)
{
	static const char line[] = "The quick brown fox jumps over the lazy dog; benchmark body text line.\r\n";
	size_t len, body = 0;

	len = (size_t)snprintf(out, BENCH_MESSAGE_MAX,
			       "Date: Thu, 26 Nov 2026 00:00:00 +0000\r\n"
			       "Message-ID: <00000000-0000-0000-0000-000000000000@outboxd>\r\n"
			       "From: bench@example.org\r\n"
			       "To: rcpt@example.com\r\n"
			       "Subject: bench 0\r\n"
			       "MIME-Version: 1.0\r\n"
			       "Content-Type: text/plain; charset=utf-8\r\n"
			       "Content-Transfer-Encoding: 7bit\r\n"
			       "\r\n");
	while (body < BODY_BYTES) {
		size_t k = sizeof(line) - 1;
		if (k > BODY_BYTES - body)
			k = BODY_BYTES - body;
		memcpy(out + len, line, k);
		len += k;
		body += k;
	}
	memcpy(out + len - 2, "\r\n", 2);
	return len;
}

#endif
