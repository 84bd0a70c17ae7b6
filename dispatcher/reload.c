/* reload: SIGHUP loads the configuration again and applies the keys that may change at
 * runtime; an invalid file leaves the running configuration whole. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "core.h"
#include "log.h"
#include "smtp.h"

void reload_config(struct dispatcher *d)
{
	struct config nc;
	enum log_level level;
	char *errtext = NULL;
	size_t errsize = 0;
	FILE *errs = open_memstream(&errtext, &errsize);
	int errors = config_load(&nc, d->config_path, errs ? errs : stderr);

	if (errs != NULL) {
		/* each error becomes one JSON log line: stderr carries nothing else */
		char *line, *save = NULL;
		fclose(errs);
		for (line = strtok_r(errtext, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
			log_error("configuration error", "serror", line, NULL);
		free(errtext);
	}
	if (errors != 0) {
		log_error("configuration reload refused: keeping the running configuration", "ierrors",
			  (long long)errors, NULL);
		config_free(&nc);
		return;
	}
	if (log_level_parse(nc.log_level, &level) == 0)
		log_set_level(level);
	{
		char *tmp = d->cfg->log_level;
		d->cfg->log_level = nc.log_level;
		nc.log_level = tmp;
	}
	d->cfg->batch_size = nc.batch_size;
	d->cfg->poll_interval_ms = nc.poll_interval_ms;
	d->cfg->outcome_delay_ms = nc.outcome_delay_ms;
	d->cfg->smtp_rate_limit = nc.smtp_rate_limit;
	d->cfg->status_max_oldest_pending_ms = nc.status_max_oldest_pending_ms;
	d->cfg->status_max_failed_last_hour = nc.status_max_failed_last_hour;
	d->cfg->status_max_mirror_lag_ms = nc.status_max_mirror_lag_ms;
	smtp_set_rate(d->smtp, nc.smtp_rate_limit);
	d->cfg->smtp_breaker_threshold = nc.smtp_breaker_threshold;
	d->cfg->smtp_breaker_open_ms = nc.smtp_breaker_open_ms;
	breaker_set_limits(&d->breaker, (unsigned)nc.smtp_breaker_threshold, (uint64_t)nc.smtp_breaker_open_ms,
			   (uint64_t)nc.smtp_breaker_open_ms * 8);
	dispatcher_tick_reschedule(d);
	log_info("configuration reloaded", "slog_level", d->cfg->log_level, "ibatch",
		 (long long)d->cfg->batch_size, "dsmtp_rate_limit", d->cfg->smtp_rate_limit, NULL);
	config_free(&nc);
}
