/* hostport: the one reader of "host", "host:port" and "[v6]:port" as written in settings
 * (SMTP URLs, Kafka brokers, the HTTP listen address). It splits and checks the syntax;
 * it never resolves a name. */
#ifndef OUTBOXD_HOSTPORT_H
#define OUTBOXD_HOSTPORT_H

#include <stddef.h>

struct hostport {
	const char *host; /* points into the input; brackets of an IPv6 literal removed */
	size_t host_len;
	const char *port; /* NULL when the input has no ":port" */
	size_t port_len;
	int ipv6; /* the host was written in brackets */
};

/* Splits v[0..n). Host names may hold letters, digits, '-', '.', '_'; IPv6 literals go
 * in brackets. Returns 0, or -1 with the reason in msg. The port is not checked here. */
int hostport_split(const char *v, size_t n, struct hostport *hp, char *msg, size_t msglen);

/* The decimal port p[0..n) as a number 0-65535 (no sign, no leading zero except "0"
 * itself), or -1. */
long hostport_port(const char *p, size_t n);

#endif
