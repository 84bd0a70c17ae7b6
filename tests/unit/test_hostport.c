/* Unit tests for hostport: one table of settings as operators write them, split into host
 * and port, or refused with a reason. */
#include <string.h>

#include "hostport.h"
#include "testutil.h"

static const struct {
	const char *in;
	int ok;
	const char *host; /* expected host when ok */
	const char *port; /* expected port text, NULL when absent */
	int ipv6;
} cases[] = {
	{ "relay.example.com", 1, "relay.example.com", NULL, 0 },
	{ "relay.example.com:587", 1, "relay.example.com", "587", 0 },
	{ "127.0.0.1:25", 1, "127.0.0.1", "25", 0 },
	{ "my_host-1.internal:9092", 1, "my_host-1.internal", "9092", 0 },
	{ "[::1]:9187", 1, "::1", "9187", 1 },
	{ "[::1]", 1, "::1", NULL, 1 },
	{ "[2001:db8::1]:25", 1, "2001:db8::1", "25", 1 },
	{ "[::ffff:192.0.2.1]:25", 1, "::ffff:192.0.2.1", "25", 1 },
	{ "host:", 1, "host", "", 0 },
	{ "", 0, NULL, NULL, 0 },
	{ ":25", 0, NULL, NULL, 0 },
	{ "::1:25", 0, NULL, NULL, 0 },
	{ "[]:25", 0, NULL, NULL, 0 },
	{ "[::1", 0, NULL, NULL, 0 },
	{ "[::1]25", 0, NULL, NULL, 0 },
	{ "[::g]:25", 0, NULL, NULL, 0 },
	{ "bad host:25", 0, NULL, NULL, 0 },
	{ "user@host:25", 0, NULL, NULL, 0 },
	{ "host/x:25", 0, NULL, NULL, 0 },
};

static void test_split(void)
{
	char msg[128];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct hostport hp;
		int rc;

		msg[0] = '\0';
		rc = hostport_split(cases[i].in, strlen(cases[i].in), &hp, msg, sizeof(msg));
		CHECK((rc == 0) == cases[i].ok, "\"%s\": rc %d (%s)", cases[i].in, rc, msg);
		if (rc != 0) {
			CHECK(msg[0] != '\0', "\"%s\": refused without a reason", cases[i].in);
			continue;
		}
		CHECK(hp.host_len == strlen(cases[i].host) && memcmp(hp.host, cases[i].host, hp.host_len) == 0,
		      "\"%s\": host %.*s", cases[i].in, (int)hp.host_len, hp.host);
		if (cases[i].port == NULL)
			CHECK(hp.port == NULL, "\"%s\": unexpected port", cases[i].in);
		else
			CHECK(hp.port != NULL && hp.port_len == strlen(cases[i].port) &&
				      memcmp(hp.port, cases[i].port, hp.port_len) == 0,
			      "\"%s\": port", cases[i].in);
		CHECK_INT(hp.ipv6, cases[i].ipv6);
	}
}

static void test_split_bounded(void)
{
	struct hostport hp;
	char msg[64];

	/* only n bytes are read: the ":99" after them is not part of the value */
	CHECK_INT(hostport_split("relay:25:99", 8, &hp, msg, sizeof(msg)), 0);
	CHECK(hp.port != NULL && hp.port_len == 2, "bounded port");
	CHECK_INT(hostport_split("[::1]:25", 5, &hp, msg, sizeof(msg)), 0);
	CHECK(hp.port == NULL && hp.host_len == 3, "bounded v6");
}

static void test_port(void)
{
	static const struct {
		const char *in;
		long want;
	} t[] = {
		{ "0", 0 },      { "1", 1 },       { "25", 25 },  { "65535", 65535 }, { "65536", -1 },
		{ "99999", -1 }, { "100000", -1 }, { "", -1 },    { "025", -1 },      { "-1", -1 },
		{ "+1", -1 },    { "2x", -1 },     { " 25", -1 }, { "00", -1 },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		CHECK(hostport_port(t[i].in, strlen(t[i].in)) == t[i].want, "port \"%s\"", t[i].in);
}

int main(void)
{
	test_split();
	test_split_bounded();
	test_port();
	return test_summary("hostport");
}
