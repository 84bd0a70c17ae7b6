/* reload: SIGHUP loads the configuration again and applies it through the key table
 * (config_reload): each changed reloadable key takes its new value in the running
 * configuration and, when a component keeps its own copy, the effect below; a changed key
 * that is not reloadable is logged as needing a restart. An invalid file leaves the
 * running configuration whole. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "core.h"
#include "log.h"
#include "smtp.h"

/* Reloadable keys read straight from the configuration when used (dispatcher.batch_size,
 * dispatcher.outcome_delay, status.*) need no effect; these are copied elsewhere. */
static void apply_log_level(struct dispatcher *d)
{
	enum log_level level;

	if (log_level_parse(d->cfg->log_level, &level) == 0)
		log_set_level(level);
}

static void apply_rate(struct dispatcher *d)
{
	smtp_set_rate(d->smtp, d->cfg->smtp_rate_limit);
}

static void apply_breaker(struct dispatcher *d)
{
	breaker_set_limits(&d->breaker, (unsigned)d->cfg->smtp_breaker_threshold,
			   (uint64_t)d->cfg->smtp_breaker_open_ms, (uint64_t)d->cfg->smtp_breaker_open_ms * 8);
}

static const struct reload_effect {
	const char *key; /* a YAML path, or a section ending in '.' */
	void (*apply)(struct dispatcher *d);
} effects[] = {
	{ "log.level", apply_log_level },
	{ "smtp.rate_limit", apply_rate },
	{ "smtp.breaker.", apply_breaker },
	{ "dispatcher.poll_interval", dispatcher_tick_reschedule },
};
#define NEFFECTS (sizeof(effects) / sizeof(effects[0]))

struct reload_run {
	int due[NEFFECTS];
	int applied, restart;
};

static void on_key_changed(void *arg, const char *path, int applied)
{
	struct reload_run *run = arg;

	if (!applied) {
		run->restart++;
		log_warn("configuration key changed; restart needed", LOG_S("key", path));
		return;
	}
	run->applied++;
	log_info("configuration key applied", LOG_S("key", path));
	for (size_t i = 0; i < NEFFECTS; i++) {
		size_t n = strlen(effects[i].key);
		if (effects[i].key[n - 1] == '.' ? strncmp(path, effects[i].key, n) == 0
						 : strcmp(path, effects[i].key) == 0)
			run->due[i] = 1;
	}
}

/* Writes each error of a refused file as one JSON log line: stderr carries nothing else. */
static int load_logged(struct config *nc, const char *path)
{
	char *errtext = NULL, *line, *save = NULL;
	size_t errsize = 0;
	FILE *errs = open_memstream(&errtext, &errsize);
	int errors = config_load(nc, path, errs ? errs : stderr);

	if (errs != NULL) {
		fclose(errs);
		for (line = strtok_r(errtext, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
			log_error("configuration error", LOG_S("error", line));
		free(errtext);
	}
	return errors;
}

void reload_config(struct dispatcher *d)
{
	struct config nc;
	struct reload_run run;
	int errors = load_logged(&nc, d->config_path);

	if (errors != 0) {
		log_error("configuration reload refused: keeping the running configuration",
			  LOG_I("errors", (long long)errors));
		config_free(&nc);
		return;
	}
	memset(&run, 0, sizeof(run));
	config_reload(d->cfg, &nc, on_key_changed, &run);
	for (size_t i = 0; i < NEFFECTS; i++)
		if (run.due[i])
			effects[i].apply(d);
	log_info("configuration reloaded", LOG_I("applied", (long long)run.applied),
		 LOG_I("restart_needed", (long long)run.restart), LOG_S("log_level", d->cfg->log_level),
		 LOG_I("batch", (long long)d->cfg->batch_size), LOG_D("smtp_rate_limit", d->cfg->smtp_rate_limit));
	config_free(&nc);
}
