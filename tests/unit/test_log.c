/* Unit tests for log: each typed field comes out as its JSON type, a NULL string as null,
 * bytes that are not UTF-8 as a placeholder rather than a broken line. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "testutil.h"

/* Runs one log call with stderr sent to a file; returns the line parsed. */
#define CAPTURE(out, call)                                                                                             \
	do {                                                                                                           \
		char path_[] = "/tmp/outboxd-test-log-XXXXXX";                                                         \
		int fd_ = mkstemp(path_), saved_ = dup(2);                                                             \
		char line_[4096] = "";                                                                                 \
		FILE *f_;                                                                                              \
		fflush(stderr);                                                                                        \
		dup2(fd_, 2);                                                                                          \
		call;                                                                                                  \
		fflush(stderr);                                                                                        \
		dup2(saved_, 2);                                                                                       \
		close(saved_);                                                                                         \
		f_ = fdopen(fd_, "r");                                                                                 \
		rewind(f_);                                                                                            \
		if (fgets(line_, sizeof(line_), f_) == NULL)                                                           \
			line_[0] = '\0';                                                                               \
		fclose(f_);                                                                                            \
		unlink(path_);                                                                                         \
		(out) = json_loads(line_, 0, NULL);                                                                    \
	} while (0)

static void test_types(void)
{
	json_t *o;

	log_set_level(LOG_DEBUG);
	CAPTURE(o, log_info("typed", LOG_S("name", "relay"), LOG_I("rows", 42), LOG_D("ratio", 0.5), LOG_B("ok", 7),
			    LOG_S("none", NULL)));
	CHECK(o != NULL, "the line is JSON");
	if (o == NULL)
		return;
	CHECK_STR(json_string_value(json_object_get(o, "msg")), "typed");
	CHECK_STR(json_string_value(json_object_get(o, "level")), "info");
	CHECK_STR(json_string_value(json_object_get(o, "name")), "relay");
	CHECK(json_is_integer(json_object_get(o, "rows")) && json_integer_value(json_object_get(o, "rows")) == 42,
	      "rows is the integer 42");
	CHECK(json_is_real(json_object_get(o, "ratio")) && json_real_value(json_object_get(o, "ratio")) == 0.5,
	      "ratio is the number 0.5");
	CHECK(json_is_true(json_object_get(o, "ok")), "ok is true");
	CHECK(json_is_null(json_object_get(o, "none")), "a NULL string is null");
	json_decref(o);
}

static void test_no_fields_and_bad_utf8(void)
{
	json_t *o;

	CAPTURE(o, log_warn("bare", LOG_END));
	CHECK(o != NULL && json_object_size(o) == 3, "ts, level, msg only");
	json_decref(o);
	CAPTURE(o, log_warn("peer text", LOG_S("reply", "550 \xff\xfe bad")));
	CHECK(o != NULL, "invalid UTF-8 keeps the line JSON");
	if (o != NULL)
		CHECK_STR(json_string_value(json_object_get(o, "reply")), "(invalid utf-8)");
	json_decref(o);
}

static void test_level_filter(void)
{
	json_t *o;

	log_set_level(LOG_WARN);
	CAPTURE(o, log_info("hidden", LOG_I("n", 1)));
	CHECK(o == NULL, "below the level nothing is written");
	json_decref(o);
	log_set_level(LOG_INFO);
}

int main(void)
{
	test_types();
	test_no_fields_and_bad_utf8();
	test_level_filter();
	return test_summary("log");
}
