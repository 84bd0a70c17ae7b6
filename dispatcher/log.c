/* JSON-lines logger on stderr, built with jansson so every line is valid JSON
 * whatever bytes a field holds (server error texts, addresses). */
#include "log.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

static enum log_level min_level = LOG_INFO;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void log_set_level(enum log_level level)
{
	min_level = level;
}

int log_enabled(enum log_level level)
{
	return level >= min_level;
}

const char *log_level_name(enum log_level level)
{
	if ((unsigned)level > LOG_ERROR)
		return "unknown";
	return level_names[level];
}

int log_level_parse(const char *s, enum log_level *out)
{
	for (int i = LOG_DEBUG; i <= LOG_ERROR; i++) {
		if (strcasecmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	if (strcasecmp(s, "warning") == 0) {
		*out = LOG_WARN;
		return 0;
	}
	return -1;
}

static void format_time(char *out, size_t len)
{
	struct timeval tv;
	struct tm tm;
	char base[64];

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, len, "%s.%03dZ", base, (int)(tv.tv_usec / 1000) % 1000);
}

void log_emit(enum log_level level, const char *msg, const struct log_field *f)
{
	char ts[96];
	json_t *o;
	char *line;

	if (!log_enabled(level))
		return;
	o = json_object();
	if (o == NULL)
		return;
	format_time(ts, sizeof(ts));
	json_object_set_new(o, "ts", json_string(ts));
	json_object_set_new(o, "level", json_string(log_level_name(level)));
	json_object_set_new(o, "msg", json_string(msg ? msg : ""));

	for (; f->type != LOG_T_END && f->key != NULL; f++) {
		json_t *v = NULL;

		switch (f->type) {
		case LOG_T_STR:
			if (f->v.s == NULL)
				v = json_null();
			else if ((v = json_stringn(f->v.s, strlen(f->v.s))) == NULL)
				/* invalid UTF-8 from a remote server must not break the line */
				v = json_string("(invalid utf-8)");
			break;
		case LOG_T_INT:
			v = json_integer(f->v.i);
			break;
		case LOG_T_DBL:
			v = json_real(f->v.d);
			break;
		case LOG_T_BOOL:
			v = json_boolean(f->v.b);
			break;
		case LOG_T_END:
			break;
		}
		if (v)
			json_object_set_new(o, f->key, v);
	}
	line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (line) {
		fprintf(stderr, "%s\n", line);
		free(line);
	}
	json_decref(o);
}
