/* outboxd command line: parses the subcommand and hands over to the module that owns it. */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "dispatcher.h"
#include "migrate.h"
#include "status.h"

static void usage(FILE *out)
{
	fprintf(out,
		"outboxd %s - transactional outbox dispatcher for PostgreSQL (SMTP and Kafka)\n"
		"\n"
		"usage: outboxd <command> [options]\n"
		"\n"
		"commands:\n"
		"  run [--config FILE]            claim and deliver messages; mirror events to Kafka\n"
		"  migrate [--database-url URL] [--status] [--dry-run] [--migrations DIR] [--sql DIR]\n"
		"                                 apply pending migrations, then re-apply sql/*.sql\n"
		"  status [--config FILE] [--json] queue depth, oldest pending age, mirror lag;\n"
		"                                 exit 1 when a health threshold is exceeded\n"
		"  check-config [--config FILE] [--print]\n"
		"                                 validate the configuration; exit 2 naming each bad key\n"
		"  --help, --version\n"
		"\n"
		"Every configuration key can be set from the environment as OUTBOXD_<KEY>, for example\n"
		"OUTBOXD_DATABASE_URL, OUTBOXD_SMTP_URL, OUTBOXD_SMTP_TLS, OUTBOXD_SMTP_FROM,\n"
		"OUTBOXD_KAFKA_BROKERS and OUTBOXD_HTTP_LISTEN.\n"
		"\n"
		"exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error\n",
		OUTBOXD_VERSION);
}

int main(int argc, char **argv)
{
	const char *cmd;

	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	cmd = argv[1];
	if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0 || strcmp(cmd, "version") == 0) {
		printf("outboxd %s\n", OUTBOXD_VERSION);
		return 0;
	}
	if (strcmp(cmd, "migrate") == 0)
		return migrate_main(argc - 1, argv + 1);
	if (strcmp(cmd, "run") == 0)
		return dispatcher_main(argc - 1, argv + 1);
	if (strcmp(cmd, "check-config") == 0)
		return config_check_main(argc - 1, argv + 1);
	if (strcmp(cmd, "status") == 0)
		return status_main(argc - 1, argv + 1);
	fprintf(stderr, "outboxd: unknown command '%s' (see outboxd --help)\n", cmd);
	return 2;
}
