/* Unit tests for metrics: exact text-format output, histogram math, label escaping,
 * registration rules, scrape callbacks, and a strict checker run over outboxd's
 * whole exposition. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "testutil.h"

/* ---- a strict text-format 0.0.4 checker ---- */

struct seen_series {
	char *key;
};

struct checker {
	char fam[256]; /* family of the last # TYPE */
	char type[16];
	int have_help; /* HELP seen for the current family */
	char helped[64][256];
	size_t nhelped;
	char **series; /* name{labels} already emitted */
	size_t nseries;
	/* histogram state for the current label set */
	double last_le;
	double last_bucket;
	double inf_bucket;
	int saw_inf;
	char err[512];
};

static int fail(struct checker *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct checker *k, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(k->err, sizeof(k->err), fmt, ap);
	va_end(ap);
	return -1;
}

static int name_char(char c, int first)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
	       (!first && c >= '0' && c <= '9');
}

/* Parses a value as Prometheus does (Go ParseFloat plus +Inf/-Inf/NaN). */
static int parse_value(const char *s, double *v)
{
	char *end;

	if (strcmp(s, "+Inf") == 0) {
		*v = INFINITY;
		return 0;
	}
	if (strcmp(s, "-Inf") == 0) {
		*v = -INFINITY;
		return 0;
	}
	if (strcmp(s, "NaN") == 0) {
		*v = NAN;
		return 0;
	}
	if (*s == '\0' || strchr(s, ' ') != NULL || strncasecmp(s, "inf", 3) == 0 || strncasecmp(s, "nan", 3) == 0 ||
	    strstr(s, "0x") != NULL)
		return -1;
	*v = strtod(s, &end);
	return *end == '\0' ? 0 : -1;
}

/* Checks one sample line; fills name, the label text without le, and le. */
static int check_sample(struct checker *k, const char *line)
{
	char name[256], labels[1024] = "", le[512] = "", key[2000];
	const char *p = line;
	size_t n = 0, ln = 0;
	double v;
	size_t i;

	if (!name_char(*p, 1))
		return fail(k, "bad sample start: %s", line);
	while (name_char(*p, 0) && n + 1 < sizeof(name))
		name[n++] = *p++;
	name[n] = '\0';
	if (*p == '{') {
		p++;
		while (*p != '}') {
			char lname[128], lval[512];
			size_t a = 0, b = 0;

			if (!name_char(*p, 1) || *p == ':')
				return fail(k, "bad label name: %s", line);
			while (name_char(*p, 0) && *p != ':' && a + 1 < sizeof(lname))
				lname[a++] = *p++;
			lname[a] = '\0';
			if (p[0] != '=' || p[1] != '"')
				return fail(k, "expected =\" in: %s", line);
			p += 2;
			while (*p != '"') {
				if (*p == '\0' || *p == '\n')
					return fail(k, "unterminated label value: %s", line);
				if (*p == '\\') {
					if (p[1] != '\\' && p[1] != '"' && p[1] != 'n')
						return fail(k, "bad escape in: %s", line);
					lval[b++] = p[1] == 'n' ? '\n' : p[1];
					p += 2;
				} else {
					lval[b++] = *p++;
				}
				if (b + 1 >= sizeof(lval))
					return fail(k, "label value too long");
			}
			lval[b] = '\0';
			p++;
			if (strcmp(lname, "le") == 0) {
				snprintf(le, sizeof(le), "%s", lval);
			} else {
				int w = snprintf(labels + ln, sizeof(labels) - ln, "%s%s=%s", ln ? "," : "", lname,
						 lval);
				if (w < 0 || (size_t)w >= sizeof(labels) - ln)
					return fail(k, "labels too long");
				ln += (size_t)w;
			}
			if (*p == ',')
				p++;
			else if (*p != '}')
				return fail(k, "expected , or } in: %s", line);
		}
		p++;
	}
	if (*p != ' ')
		return fail(k, "expected one space before value: %s", line);
	p++;
	if (parse_value(p, &v) < 0)
		return fail(k, "bad value '%s' in: %s", p, line);

	/* The sample must belong to the family of the last # TYPE. */
	if (k->fam[0] == '\0')
		return fail(k, "sample before any # TYPE: %s", line);
	if (strcmp(k->type, "histogram") == 0) {
		size_t fl = strlen(k->fam);
		const char *suf = name + fl;

		if (strncmp(name, k->fam, fl) != 0 ||
		    (strcmp(suf, "_bucket") != 0 && strcmp(suf, "_sum") != 0 && strcmp(suf, "_count") != 0))
			return fail(k, "sample %s outside histogram %s", name, k->fam);
		if (strcmp(suf, "_bucket") == 0) {
			double lev;

			if (le[0] == '\0' || parse_value(le, &lev) < 0)
				return fail(k, "bucket without valid le: %s", line);
			if (k->saw_inf)
				k->saw_inf = 0, k->last_le = -INFINITY, k->last_bucket = 0;
			if (!(lev > k->last_le))
				return fail(k, "le not increasing: %s", line);
			if (v < k->last_bucket || v != floor(v))
				return fail(k, "bucket not cumulative: %s", line);
			k->last_le = lev;
			k->last_bucket = v;
			if (isinf(lev)) {
				k->saw_inf = 1;
				k->inf_bucket = v;
			}
		} else {
			if (le[0] != '\0')
				return fail(k, "le outside _bucket: %s", line);
			if (!k->saw_inf)
				return fail(k, "%s before +Inf bucket: %s", suf, line);
			if (strcmp(suf, "_count") == 0) {
				if (v != k->inf_bucket)
					return fail(k, "_count %g != +Inf bucket %g", v, k->inf_bucket);
				k->last_le = -INFINITY;
				k->last_bucket = 0;
				k->saw_inf = 0;
			}
		}
	} else {
		if (strcmp(name, k->fam) != 0)
			return fail(k, "sample %s outside family %s", name, k->fam);
		if (le[0] != '\0')
			return fail(k, "le label on a %s", k->type);
		if (strcmp(k->type, "counter") == 0 && (v < 0 || isnan(v)))
			return fail(k, "negative counter: %s", line);
	}
	snprintf(key, sizeof(key), "%s{%s,le=%s}", name, labels, le);
	for (i = 0; i < k->nseries; i++)
		if (strcmp(k->series[i], key) == 0)
			return fail(k, "duplicate series: %s", line);
	k->series = realloc(k->series, (k->nseries + 1) * sizeof(*k->series));
	k->series[k->nseries++] = strdup(key);
	return 0;
}

static int check_comment(struct checker *k, const char *line)
{
	char name[256];
	const char *p = line + 7;
	size_t n = 0, i;

	if (strncmp(line, "# HELP ", 7) != 0 && strncmp(line, "# TYPE ", 7) != 0)
		return fail(k, "unexpected comment: %s", line);
	while (name_char(*p, n == 0) && n + 1 < sizeof(name))
		name[n++] = *p++;
	name[n] = '\0';
	if (n == 0 || *p != ' ')
		return fail(k, "bad comment name: %s", line);
	p++;
	if (line[2] == 'H') {
		for (i = 0; i < k->nhelped; i++)
			if (strcmp(k->helped[i], name) == 0)
				return fail(k, "second HELP for %s", name);
		for (const char *q = p; *q; q++)
			if (*q == '\\' && q[1] != '\\' && q[1] != 'n')
				return fail(k, "bad escape in HELP: %s", line);
			else if (*q == '\\')
				q++;
		if (k->nhelped < 64)
			snprintf(k->helped[k->nhelped++], 256, "%s", name);
		k->have_help = 1;
		snprintf(k->fam, sizeof(k->fam), "%s", name);
		k->type[0] = '\0';
		return 0;
	}
	if (strcmp(p, "counter") != 0 && strcmp(p, "gauge") != 0 && strcmp(p, "histogram") != 0)
		return fail(k, "bad type: %s", line);
	if (!k->have_help || strcmp(k->fam, name) != 0)
		return fail(k, "TYPE without its HELP just before: %s", line);
	if (strcmp(p, "counter") == 0 && (n < 6 || strcmp(name + n - 6, "_total") != 0))
		return fail(k, "counter without _total: %s", name);
	snprintf(k->type, sizeof(k->type), "%s", p);
	k->have_help = 0;
	k->last_le = -INFINITY;
	k->last_bucket = 0;
	k->saw_inf = 0;
	return 0;
}

/* Returns 0 when text is a well-formed exposition, else -1 with the reason in err. */
static int prom_check(const char *text, char *err, size_t errlen)
{
	struct checker k;
	const char *p = text, *nl;
	char line[2048];
	int rc = 0;
	size_t i;

	memset(&k, 0, sizeof(k));
	if (*text == '\0' || text[strlen(text) - 1] != '\n')
		rc = fail(&k, "exposition must end with a newline");
	while (rc == 0 && *p != '\0') {
		size_t len;

		nl = strchr(p, '\n');
		len = nl ? (size_t)(nl - p) : strlen(p);
		if (len == 0 || len >= sizeof(line)) {
			rc = fail(&k, "empty or overlong line");
			break;
		}
		memcpy(line, p, len);
		line[len] = '\0';
		if (line[0] == '#')
			rc = check_comment(&k, line);
		else if (k.type[0] == '\0')
			rc = fail(&k, "sample without # TYPE: %s", line);
		else
			rc = check_sample(&k, line);
		p = nl ? nl + 1 : p + len;
	}
	if (rc == 0 && k.saw_inf)
		rc = fail(&k, "histogram %s ends without _count", k.fam);
	for (i = 0; i < k.nseries; i++)
		free(k.series[i]);
	free(k.series);
	snprintf(err, errlen, "%s", k.err);
	return rc;
}

/* ---- tests ---- */

static double answer(void *arg)
{
	return *(double *)arg;
}

static void test_golden(void)
{
	static const double b[] = { 0.1, 0.5, 1 };
	struct metrics *reg = metrics_new();
	struct metrics_family *req, *temp, *lat;
	struct metrics_child *c;
	double cb = 42.5;
	char *out, err[512];
	const char *want = "# HELP app_requests_total Requests served.\\nSecond line with \\\\ backslash.\n"
			   "# TYPE app_requests_total counter\n"
			   "app_requests_total{method=\"GET\",path=\"/a\\\"b\\\\c\\nd\"} 3\n"
			   "app_requests_total{method=\"POST\",path=\"/\"} 0.25\n"
			   "# HELP app_temperature Current temperature.\n"
			   "# TYPE app_temperature gauge\n"
			   "app_temperature -1.5\n"
			   "# HELP app_latency_seconds Latency.\n"
			   "# TYPE app_latency_seconds histogram\n"
			   "app_latency_seconds_bucket{op=\"read\",le=\"0.1\"} 1\n"
			   "app_latency_seconds_bucket{op=\"read\",le=\"0.5\"} 2\n"
			   "app_latency_seconds_bucket{op=\"read\",le=\"1\"} 3\n"
			   "app_latency_seconds_bucket{op=\"read\",le=\"+Inf\"} 4\n"
			   "app_latency_seconds_sum{op=\"read\"} 3.5625\n"
			   "app_latency_seconds_count{op=\"read\"} 4\n"
			   "# HELP app_answer Computed at scrape.\n"
			   "# TYPE app_answer gauge\n"
			   "app_answer 42.5\n"
			   "# HELP app_unlabelled_total Starts at zero.\n"
			   "# TYPE app_unlabelled_total counter\n"
			   "app_unlabelled_total 0\n";

	req = metrics_counter_new(reg, "app_requests_total", "Requests served.\nSecond line with \\ backslash.",
				  "method", "path", NULL);
	temp = metrics_gauge_new(reg, "app_temperature", "Current temperature.", NULL);
	lat = metrics_histogram_new(reg, "app_latency_seconds", "Latency.", b, 3, "op", NULL);
	CHECK(metrics_gauge_new(reg, "app_empty", "No children yet.", "x", NULL) != NULL, "labelled gauge");
	CHECK(metrics_callback_new(reg, METRICS_GAUGE, "app_answer", "Computed at scrape.", answer, &cb) != NULL,
	      "callback");
	CHECK(metrics_counter_new(reg, "app_unlabelled_total", "Starts at zero.", NULL) != NULL, "unlabelled counter");
	CHECK(req && temp && lat, "registration");

	c = metrics_child(req, "GET", "/a\"b\\c\nd", NULL);
	metrics_inc(c);
	metrics_add(c, 2);
	CHECK(metrics_child(req, "GET", "/a\"b\\c\nd", NULL) == c, "lookup returns same child");
	metrics_add(metrics_child(req, "POST", "/", NULL), 0.25);
	metrics_set(metrics_child(temp, NULL), -1.5);
	c = metrics_child(lat, "read", NULL);
	metrics_observe(c, 0.0625);
	metrics_observe(c, 0.5); /* exactly on a bound: counts in le="0.5" */
	metrics_observe(c, 1);
	metrics_observe(c, 2); /* above every bound: only +Inf */

	out = metrics_render(reg);
	CHECK_STR(out, want);
	CHECK(out && prom_check(out, err, sizeof(err)) == 0, "checker: %s", err);
	free(out);
	metrics_free(reg);
}

static void test_histogram_math(void)
{
	static const double b[] = { 1, 2, 5, INFINITY };
	struct metrics *reg = metrics_new();
	struct metrics_family *h = metrics_histogram_new(reg, "h", "h", b, 4, NULL);
	struct metrics_child *c = metrics_child(h, NULL);
	char *out, err[512];
	int i;

	CHECK(h != NULL, "trailing +Inf bound accepted and dropped");
	for (i = 0; i < 10; i++)
		metrics_observe(c, i); /* 0..9 */
	metrics_observe(c, NAN);
	metrics_observe(c, -3);
	CHECK_INT(metrics_count(c), 11);
	out = metrics_render(reg);
	CHECK(out && strstr(out, "h_bucket{le=\"1\"} 3\n"), "le=1 counts -3,0,1: %s", out ? out : "");
	CHECK(out && strstr(out, "h_bucket{le=\"2\"} 4\n"), "le=2 cumulative");
	CHECK(out && strstr(out, "h_bucket{le=\"5\"} 7\n"), "le=5 cumulative");
	CHECK(out && strstr(out, "h_bucket{le=\"+Inf\"} 11\n"), "+Inf is the total");
	CHECK(out && strstr(out, "h_sum 42\n"), "sum 45-3");
	CHECK(out && strstr(out, "h_count 11\n"), "count");
	CHECK(out && strstr(out, "le=\"+Inf\"} 11\nh_sum") != NULL, "single +Inf bucket");
	CHECK(out && prom_check(out, err, sizeof(err)) == 0, "checker: %s", err);
	free(out);
	metrics_free(reg);
}

static void test_format_double(void)
{
	static const struct {
		double v;
		const char *want;
	} cases[] = {
		{ 0, "0" },
		{ -0.0, "0" },
		{ 1, "1" },
		{ -2, "-2" },
		{ 0.1, "0.1" },
		{ 0.005, "0.005" },
		{ 2.5, "2.5" },
		{ 1e-7, "1e-07" },
		{ 1e20, "1e+20" },
		{ 123456789012345.0, "123456789012345" },
		{ 1.0 / 3, "0.3333333333333333" },
		{ INFINITY, "+Inf" },
		{ -INFINITY, "-Inf" },
		{ NAN, "NaN" },
	};
	char buf[40];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		CHECK_STR(metrics_format_double(buf, sizeof(buf), cases[i].v), cases[i].want);
	/* Any finite value must survive a round trip. */
	for (i = 0; i < 1000; i++) {
		double v = (double)rand() / RAND_MAX * pow(10, (int)(i % 20) - 10);

		metrics_format_double(buf, sizeof(buf), v);
		if (strtod(buf, NULL) != v) {
			CHECK(0, "round trip %.17g -> %s", v, buf);
			break;
		}
	}
}

static void test_registration_rules(void)
{
	static const double up[] = { 1, 2 }, down[] = { 2, 1 }, nan_b[] = { NAN };
	const char *too_many[] = { "a", "b", "c", "d", "e", NULL };
	const char *dup[] = { "a", "a", NULL };
	struct metrics *reg = metrics_new();

	CHECK(metrics_counter_new(reg, "no_suffix", "x", NULL) == NULL, "counter needs _total");
	CHECK(metrics_gauge_new(reg, "1abc", "x", NULL) == NULL, "digit first");
	CHECK(metrics_gauge_new(reg, "a-b", "x", NULL) == NULL, "dash");
	CHECK(metrics_gauge_new(reg, "", "x", NULL) == NULL, "empty");
	CHECK(metrics_gauge_new(reg, "ns:ok", "x", NULL) != NULL, "colon allowed in names");
	CHECK(metrics_gauge_new(reg, "g1", "x", "a:b", NULL) == NULL, "colon not in labels");
	CHECK(metrics_gauge_new(reg, "g2", "x", "__x", NULL) == NULL, "reserved label");
	CHECK(metrics_family_new(reg, METRICS_GAUGE, "g3", "x", too_many, NULL, 0) == NULL, "too many labels");
	CHECK(metrics_family_new(reg, METRICS_GAUGE, "g4", "x", dup, NULL, 0) == NULL, "repeated label");
	CHECK(metrics_histogram_new(reg, "h1", "x", up, 2, "le", NULL) == NULL, "le reserved");
	CHECK(metrics_histogram_new(reg, "h2", "x", down, 2, NULL) == NULL, "decreasing");
	CHECK(metrics_histogram_new(reg, "h3", "x", nan_b, 1, NULL) == NULL, "NaN bound");
	CHECK(metrics_histogram_new(reg, "h4", "x", up, 2, NULL) != NULL, "valid histogram");
	CHECK(metrics_gauge_new(reg, "h4", "x", NULL) == NULL, "duplicate name");
	CHECK(metrics_gauge_new(reg, "h4_sum", "x", NULL) == NULL, "clashes with histogram sum");
	CHECK(metrics_gauge_new(reg, "h5_count", "x", NULL) != NULL, "gauge h5_count");
	CHECK(metrics_histogram_new(reg, "h5", "x", up, 2, NULL) == NULL, "histogram clashes with earlier gauge");
	CHECK(metrics_histogram_new(reg, "h6", "x", NULL, 0, NULL) != NULL, "histogram with only +Inf");
	CHECK(metrics_callback_new(reg, METRICS_HISTOGRAM, "cb", "x", answer, NULL) == NULL, "no histogram callbacks");
	metrics_free(reg);
}

static void test_children_and_updates(void)
{
	struct metrics *reg = metrics_new();
	struct metrics_family *f = metrics_counter_new(reg, "c_total", "x", "a", "b", NULL);
	struct metrics_family *g = metrics_gauge_new(reg, "g", "x", NULL);
	struct metrics_child *c;
	const char *vals[] = { "1", "2" };

	CHECK(metrics_child(f, "only-one", NULL) == NULL, "too few values");
	CHECK(metrics_child(f, "1", "2", "3", NULL) == NULL, "too many values");
	CHECK(metrics_child(NULL, NULL) == NULL, "NULL family");
	CHECK(metrics_child(g, "extra", NULL) == NULL, "value for an unlabelled family");
	CHECK(metrics_child(g, NULL) != NULL, "unlabelled child");
	c = metrics_child(f, "1", "2", NULL);
	CHECK(c != NULL && metrics_childv(f, vals) == c, "array lookup finds same child");
	metrics_add(c, -5);
	metrics_add(c, NAN);
	metrics_set(c, 100);
	metrics_inc(c);
	CHECK(metrics_value(c) == 1, "counter ignores negative, NaN and set: %g", metrics_value(c));
	c = metrics_child(g, NULL);
	metrics_set(c, 10);
	metrics_add(c, -15);
	CHECK(metrics_value(c) == -5, "gauge add may go down");
	metrics_observe(c, 1);
	CHECK_INT(metrics_count(c), 0);
	/* Updates on a NULL child are harmless. */
	metrics_inc(NULL);
	metrics_add(NULL, 1);
	metrics_set(NULL, 1);
	metrics_observe(NULL, 1);
	CHECK(metrics_value(NULL) == 0, "NULL value");
	metrics_free(reg);
	metrics_free(NULL);
}

struct hook_state {
	int calls;
	double value;
};

static void hook(void *arg)
{
	struct hook_state *s = arg;

	s->calls++;
	s->value = s->calls * 10;
}

static double hook_value(void *arg)
{
	return ((struct hook_state *)arg)->value;
}

static void test_scrape_hooks(void)
{
	struct metrics *reg = metrics_new();
	struct hook_state s = { 0, 0 };
	char *out;

	CHECK(metrics_callback_new(reg, METRICS_COUNTER, "hooked_total", "x", hook_value, &s), "callback counter");
	CHECK(metrics_on_scrape(reg, hook, &s) == 0, "hook added");
	out = metrics_render(reg);
	CHECK(out && strstr(out, "hooked_total 10\n"), "hook runs before callbacks: %s", out ? out : "");
	free(out);
	out = metrics_render(reg);
	CHECK(out && strstr(out, "hooked_total 20\n"), "once per render");
	free(out);
	CHECK_INT(s.calls, 2);
	metrics_free(reg);
}

static void test_outboxd_families(void)
{
	static const char *const names[] = {
		"outboxd_messages_total{outcome=\"sent\"} 1\n",
		"outboxd_messages_total{outcome=\"released\"} 0\n",
		"outboxd_smtp_replies_total{class=\"none\"} 0\n",
		"outboxd_smtp_send_duration_seconds_bucket{le=\"0.005\"} 0\n",
		"outboxd_delivery_latency_seconds_count 2\n",
		"outboxd_queue_depth{state=\"pending\"} 7\n",
		"outboxd_oldest_pending_age_seconds 0\n",
		"outboxd_kafka_mirror_lag_rows 0\n",
		"outboxd_kafka_mirror_lag_seconds 0\n",
		"outboxd_kafka_mirror_enabled 1\n",
		"outboxd_delivery_latency_seconds_bucket{le=\"0.2\"} 1\n",
		"outboxd_delivery_latency_seconds_bucket{le=\"0.1\"} 0\n",
		"# TYPE outboxd_memory_limit_bytes gauge\n",
		"# TYPE outboxd_cpu_limit_cores gauge\n",
		"outboxd_kafka_publish_total{outcome=\"published\"} 0\n",
		"outboxd_breaker_state{sink=\"smtp\"} 2\n",
		"outboxd_breaker_transitions_total{sink=\"smtp\",to=\"open\"} 1\n",
		"outboxd_breaker_transitions_total{sink=\"kafka\",to=\"half_open\"} 0\n",
		"outboxd_database_up 1\n",
		"outboxd_listener_up 0\n",
		"outboxd_claim_batch_size_bucket{le=\"50\"} 1\n",
		"outboxd_in_flight 3\n",
		"outboxd_table_dead_tuples{table=\"messages\"} 12\n",
		"outboxd_oldest_xact_age_seconds 0\n",
		"outboxd_build_info{version=\"1.2.3\"} 1\n",
		"outboxd_up 1\n",
		"# TYPE process_cpu_seconds_total counter\n",
		"# TYPE process_resident_memory_bytes gauge\n",
		"process_open_fds ",
		"process_max_fds ",
		"process_start_time_seconds ",
		"process_virtual_memory_bytes ",
	};
	struct metrics *reg = metrics_new();
	struct outboxd_metrics *om = outboxd_metrics_new(reg, "1.2.3");
	char *out, err[512];
	size_t i;

	CHECK(om != NULL, "outboxd families registered");
	if (om == NULL) {
		metrics_free(reg);
		return;
	}
	metrics_inc(om->msg_sent);
	metrics_observe(om->delivery_latency, 3.2);
	metrics_observe(om->delivery_latency, 0.15);
	metrics_set(om->kafka_mirror_enabled, 1);
	metrics_set(om->depth_pending, 7);
	metrics_set(om->breaker_smtp, 2);
	metrics_inc(metrics_child(om->breaker_transitions, "smtp", "open", NULL));
	metrics_set(om->database_up, 1);
	metrics_observe(om->claim_batch_size, 32);
	metrics_set(om->in_flight, 3);
	metrics_set(metrics_child(om->table_dead_tuples, "messages", NULL), 12);
	out = metrics_render(reg);
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		CHECK(out && strstr(out, names[i]) != NULL, "missing %s", names[i]);
	CHECK(out && prom_check(out, err, sizeof(err)) == 0, "checker: %s", err);
	CHECK(out && strstr(out, "outboxd_table_last_autovacuum") == NULL, "unset labelled family is omitted");
	free(out);
	CHECK(outboxd_metrics_new(reg, "1.2.3") == NULL, "second registration refused");
	outboxd_metrics_free(om);
	metrics_free(reg);
}

/* The checker itself must reject the mistakes it exists to catch. */
static void test_checker_rejects(void)
{
	static const char *const bad[] = {
		"x 1\n",
		"# HELP x h\n# TYPE x gauge\nx 1",
		"# HELP x h\n# TYPE x gauge\nx  1\n",
		"# HELP x h\n# TYPE x gauge\nx{a=\"\\t\"} 1\n",
		"# HELP x h\n# TYPE x gauge\nx 1\nx 2\n",
		"# HELP x h\n# TYPE x gauge\ny 1\n",
		"# HELP x h\n# TYPE x counter\nx 1\n",
		"# HELP x h\n# TYPE x histogram\nx_bucket{le=\"1\"} 2\nx_bucket{le=\"+Inf\"} 1\n"
		"x_sum 1\nx_count 1\n",
		"# HELP x h\n# TYPE x histogram\nx_bucket{le=\"+Inf\"} 2\nx_sum 1\nx_count 1\n",
		"# HELP x h\n# TYPE x histogram\nx_sum 1\nx_count 1\n",
		"# HELP x h\n# TYPE x gauge\nx inf\n",
	};
	char err[512];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(prom_check(bad[i], err, sizeof(err)) < 0, "accepted bad #%zu", i);
}

int main(void)
{
	test_golden();
	test_histogram_math();
	test_format_double();
	test_registration_rules();
	test_children_and_updates();
	test_scrape_hooks();
	test_outboxd_families();
	test_checker_rejects();
	return test_summary("metrics");
}
