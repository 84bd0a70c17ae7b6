/* Structured logging: one JSON object per line on stderr (time, level, msg, fields).
 * Secrets and message bodies are never passed to the logger. */
#ifndef OUTBOXD_LOG_H
#define OUTBOXD_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the minimum level written. */
void log_set_level(enum log_level level);
/* Parses "debug", "info", "warn"/"warning", "error"; returns -1 when unknown. */
int log_level_parse(const char *s, enum log_level *out);
const char *log_level_name(enum log_level level);
int log_enabled(enum log_level level);

/* One field of a log line. Built with LOG_S/LOG_I/LOG_D/LOG_B, so that the compiler checks
 * each value against its type: a pointer where a number belongs does not build. */
enum log_type { LOG_T_END, LOG_T_STR, LOG_T_INT, LOG_T_DBL, LOG_T_BOOL };

struct log_field {
	const char *key;
	enum log_type type;
	union {
		const char *s;
		long long i;
		double d;
		int b;
	} v;
};

#define LOG_S(k, x) ((struct log_field){ .key = (k), .type = LOG_T_STR, .v = { .s = (x) } })
#define LOG_I(k, x) ((struct log_field){ .key = (k), .type = LOG_T_INT, .v = { .i = (x) } })
#define LOG_D(k, x) ((struct log_field){ .key = (k), .type = LOG_T_DBL, .v = { .d = (x) } })
#define LOG_B(k, x) ((struct log_field){ .key = (k), .type = LOG_T_BOOL, .v = { .b = !!(x) } })
/* Ends the list; written alone by a line without fields. */
#define LOG_END ((struct log_field){ .key = NULL, .type = LOG_T_END })

/* Writes one log line: msg is a fixed human message; fields ends at LOG_END. */
void log_emit(enum log_level level, const char *msg, const struct log_field *fields);

/* log_write(level, msg, LOG_I("msg", id), LOG_S("error", why)) - the list is closed here. */
#define log_write(level, msg, ...) log_emit((level), (msg), (const struct log_field[]){ __VA_ARGS__, LOG_END })

#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

#endif
