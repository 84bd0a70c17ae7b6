/* Structured logging: one JSON object per line on stderr (time, level, msg, fields).
 * Secrets and message bodies are never passed to the logger. */
#ifndef OUTBOXD_LOG_H
#define OUTBOXD_LOG_H

#include <stdarg.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the minimum level written. */
void log_set_level(enum log_level level);
/* Parses "debug", "info", "warn"/"warning", "error"; returns -1 when unknown. */
int log_level_parse(const char *s, enum log_level *out);
const char *log_level_name(enum log_level level);
int log_enabled(enum log_level level);

/*
 * Writes one log line. `msg` is a fixed human message; `fields` is a list of
 * key/value pairs terminated by NULL, each key a string whose first character
 * gives the value's type: 's' const char *, 'i' long long, 'd' double, 'b' int (bool),
 * and the rest is the JSON key. Example:
 *   log_write(LOG_INFO, "message sent", "imsg", (long long)id, "iattempt", 2LL,
 *             "ismtp", 250LL, NULL);
 */
void log_write(enum log_level level, const char *msg, ...);

#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

#endif
