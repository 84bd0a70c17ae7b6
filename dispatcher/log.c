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

void log_write(enum log_level level, const char *msg, ...)
{
	char ts[96];
	json_t *o;
	va_list ap;
	const char *key;
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

	va_start(ap, msg);
	while ((key = va_arg(ap, const char *)) != NULL) {
		json_t *v = NULL;
		switch (key[0]) {
		case 's': {
			const char *s = va_arg(ap, const char *);
			if (s == NULL)
				v = json_null();
			else if ((v = json_stringn(s, strlen(s))) == NULL)
				/* invalid UTF-8 from a remote server must not break the line */
				v = json_string("(invalid utf-8)");
			break;
		}
		case 'i':
			v = json_integer(va_arg(ap, long long));
			break;
		case 'd':
			v = json_real(va_arg(ap, double));
			break;
		case 'b':
			v = json_boolean(va_arg(ap, int));
			break;
		default:
			/* unknown type tag: stop reading, the rest of the list is untrustworthy */
			goto done;
		}
		if (v)
			json_object_set_new(o, key + 1, v);
	}
done:
	va_end(ap);
	line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (line) {
		fprintf(stderr, "%s\n", line);
		free(line);
	}
	json_decref(o);
}
