/* hostport: see hostport.h. */
#include "hostport.h"

#include <stdio.h>
#include <string.h>

static int host_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
	       c == '_';
}

int hostport_split(const char *v, size_t n, struct hostport *hp, char *msg, size_t msglen)
{
	const char *end = v + n, *colon;

	memset(hp, 0, sizeof(*hp));
	if (n > 0 && v[0] == '[') {
		const char *close = memchr(v, ']', n);

		if (!close || close == v + 1) {
			snprintf(msg, msglen, "bad IPv6 address: expected [addr]:port");
			return -1;
		}
		for (const char *p = v + 1; p < close; p++)
			if (!strchr("0123456789abcdefABCDEF:.", *p)) {
				snprintf(msg, msglen, "bad IPv6 address");
				return -1;
			}
		colon = close + 1 < end && close[1] == ':' ? close + 1 : NULL;
		if (close + 1 < end && !colon) {
			snprintf(msg, msglen, "expected :port after ]");
			return -1;
		}
		hp->host = v + 1;
		hp->host_len = (size_t)(close - v - 1);
		hp->ipv6 = 1;
	} else {
		colon = memrchr(v, ':', n);
		if (colon && memchr(v, ':', (size_t)(colon - v))) {
			snprintf(msg, msglen, "IPv6 addresses must be written in brackets: [::1]:port");
			return -1;
		}
		if ((colon ? colon : end) == v) {
			snprintf(msg, msglen, "host missing");
			return -1;
		}
		for (const char *p = v; p < (colon ? colon : end); p++)
			if (!host_char(*p)) {
				snprintf(msg, msglen, "bad character '%c' in host name", *p);
				return -1;
			}
		hp->host = v;
		hp->host_len = (size_t)((colon ? colon : end) - v);
	}
	if (colon) {
		hp->port = colon + 1;
		hp->port_len = (size_t)(end - colon - 1);
	}
	return 0;
}

long hostport_port(const char *p, size_t n)
{
	long v = 0;

	if (n == 0 || n > 5 || (p[0] == '0' && n > 1))
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		v = v * 10 + (p[i] - '0');
	}
	return v <= 65535 ? v : -1;
}
