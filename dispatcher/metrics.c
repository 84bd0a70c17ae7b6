/* metrics: the registry behind /metrics. Families keep their children in a list in
 * creation order; updates touch only the cached child, so the hot path never allocates
 * or searches. Rendering follows the Prometheus text format 0.0.4. */
#include "metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "procstat.h"

struct metrics_child {
	struct metrics_family *fam;
	struct metrics_child *next;
	char *values[METRICS_MAX_LABELS];
	double value;                /* counter or gauge; histogram sum */
	unsigned long long count;    /* histogram observations */
	unsigned long long *buckets; /* histogram: per-bucket (not cumulative), nbounds+1 */
};

struct metrics_family {
	struct metrics *reg;
	struct metrics_family *next;
	enum metrics_type type;
	char *name, *help;
	size_t nlabels;
	char *labels[METRICS_MAX_LABELS];
	double *bounds; /* histogram upper bounds, without +Inf */
	size_t nbounds;
	double (*fn)(void *arg); /* callback family: value computed at render */
	void *arg;
	struct metrics_child *children, **tail;
};

struct scrape_hook {
	void (*fn)(void *arg);
	void *arg;
};

struct metrics {
	struct metrics_family *families, **tail;
	struct scrape_hook *hooks;
	size_t nhooks;
	struct procstat proc; /* snapshot behind the process_* families */
	struct cgroup_limits limits;
};

const double metrics_seconds_buckets[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60 };
const size_t metrics_seconds_nbuckets = sizeof(metrics_seconds_buckets) / sizeof(metrics_seconds_buckets[0]);
/* Delivery latency includes retries with backoff, so it reaches hours. */
/* 0.2 and 0.5 are the go-live SLA's target and alert bounds for the p95, so the quantile
 * is exact where it matters. */
const double metrics_latency_buckets[] = { 0.01, 0.05, 0.1, 0.2, 0.25, 0.5,  1,     2.5,  5,
					   10,   30,   60,  300, 900,  3600, 21600, 86400 };
const size_t metrics_latency_nbuckets = sizeof(metrics_latency_buckets) / sizeof(metrics_latency_buckets[0]);
const double metrics_batch_buckets[] = { 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000 };
const size_t metrics_batch_nbuckets = sizeof(metrics_batch_buckets) / sizeof(metrics_batch_buckets[0]);

struct metrics *metrics_new(void)
{
	struct metrics *reg = calloc(1, sizeof(*reg));

	if (reg == NULL)
		return NULL;
	reg->tail = &reg->families;
	return reg;
}

static void child_free(struct metrics_child *c)
{
	size_t i;

	for (i = 0; i < METRICS_MAX_LABELS; i++)
		free(c->values[i]);
	free(c->buckets);
	free(c);
}

static void family_free(struct metrics_family *f)
{
	struct metrics_child *c, *next;
	size_t i;

	for (c = f->children; c != NULL; c = next) {
		next = c->next;
		child_free(c);
	}
	for (i = 0; i < f->nlabels; i++)
		free(f->labels[i]);
	free(f->name);
	free(f->help);
	free(f->bounds);
	free(f);
}

void metrics_free(struct metrics *reg)
{
	struct metrics_family *f, *next;

	if (reg == NULL)
		return;
	for (f = reg->families; f != NULL; f = next) {
		next = f->next;
		family_free(f);
	}
	free(reg->hooks);
	free(reg);
}

/* Metric names: [a-zA-Z_:][a-zA-Z0-9_:]*; label names: the same without ':'. */
static int valid_name(const char *s, int is_label)
{
	size_t i;

	if (s == NULL || s[0] == '\0')
		return 0;
	if (is_label && s[0] == '_' && s[1] == '_')
		return 0; /* reserved for Prometheus itself */
	for (i = 0; s[i] != '\0'; i++) {
		char c = s[i];
		int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (!is_label && c == ':') ||
			 (i > 0 && c >= '0' && c <= '9');
		if (!ok)
			return 0;
	}
	return 1;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Does the sample name `sample` belong to family f's exposition? */
static int family_exposes(const struct metrics_family *f, const char *sample)
{
	static const char *const hsuffix[] = { "_bucket", "_sum", "_count" };
	size_t n = strlen(f->name), i;

	if (strcmp(f->name, sample) == 0)
		return 1;
	if (f->type != METRICS_HISTOGRAM || strncmp(f->name, sample, n) != 0)
		return 0;
	for (i = 0; i < 3; i++)
		if (strcmp(sample + n, hsuffix[i]) == 0)
			return 1;
	return 0;
}

/* A new family must not produce any sample name an existing family produces: a
 * histogram "x" also owns x_bucket, x_sum and x_count. */
static int name_clashes(const struct metrics *reg, const char *name, enum metrics_type type)
{
	static const char *const hsuffix[] = { "_bucket", "_sum", "_count" };
	const struct metrics_family *f;
	char tmp[256];
	size_t i;

	for (f = reg->families; f != NULL; f = f->next) {
		if (family_exposes(f, name))
			return 1;
		if (type == METRICS_HISTOGRAM) {
			for (i = 0; i < 3; i++) {
				if (snprintf(tmp, sizeof(tmp), "%s%s", name, hsuffix[i]) >= (int)sizeof(tmp))
					return 1;
				if (family_exposes(f, tmp))
					return 1;
			}
		}
	}
	return 0;
}

static struct metrics_child *child_alloc(struct metrics_family *f)
{
	struct metrics_child *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->fam = f;
	if (f->type == METRICS_HISTOGRAM) {
		c->buckets = calloc(f->nbounds + 1, sizeof(*c->buckets));
		if (c->buckets == NULL) {
			free(c);
			return NULL;
		}
	}
	return c;
}

static void child_link(struct metrics_family *f, struct metrics_child *c)
{
	*f->tail = c;
	f->tail = &c->next;
}

struct metrics_family *metrics_family_new(struct metrics *reg, enum metrics_type type, const char *name,
					  const char *help, const char *const *label_names, const double *buckets,
					  size_t nbuckets)
{
	struct metrics_family *f;
	size_t i, j, n = 0;

	if (reg == NULL || !valid_name(name, 0) || help == NULL || strlen(name) > 200)
		return NULL;
	if (type == METRICS_COUNTER && !ends_with(name, "_total"))
		return NULL;
	while (label_names != NULL && label_names[n] != NULL) {
		if (n == METRICS_MAX_LABELS || !valid_name(label_names[n], 1))
			return NULL;
		if (type == METRICS_HISTOGRAM && strcmp(label_names[n], "le") == 0)
			return NULL;
		for (j = 0; j < n; j++)
			if (strcmp(label_names[j], label_names[n]) == 0)
				return NULL;
		n++;
	}
	if (type == METRICS_HISTOGRAM) {
		if (nbuckets > 0 && isinf(buckets[nbuckets - 1]) && buckets[nbuckets - 1] > 0)
			nbuckets--;
		for (i = 0; i < nbuckets; i++)
			if (!isfinite(buckets[i]) || (i > 0 && buckets[i] <= buckets[i - 1]))
				return NULL;
	} else {
		nbuckets = 0;
	}
	if (name_clashes(reg, name, type))
		return NULL;

	f = calloc(1, sizeof(*f));
	if (f == NULL)
		return NULL;
	f->reg = reg;
	f->type = type;
	f->tail = &f->children;
	f->name = strdup(name);
	f->help = strdup(help);
	if (f->name == NULL || f->help == NULL)
		goto oom;
	for (i = 0; i < n; i++) {
		f->labels[i] = strdup(label_names[i]);
		if (f->labels[i] == NULL)
			goto oom;
		f->nlabels++;
	}
	if (nbuckets > 0) {
		f->bounds = malloc(nbuckets * sizeof(*f->bounds));
		if (f->bounds == NULL)
			goto oom;
		memcpy(f->bounds, buckets, nbuckets * sizeof(*f->bounds));
	}
	f->nbounds = nbuckets;
	if (n == 0) {
		struct metrics_child *c = child_alloc(f);

		if (c == NULL)
			goto oom;
		child_link(f, c);
	}
	*reg->tail = f;
	reg->tail = &f->next;
	return f;
oom:
	family_free(f);
	return NULL;
}

/* Collects the NULL-terminated label names of a variadic constructor. */
static struct metrics_family *family_new_va(struct metrics *reg, enum metrics_type type, const char *name,
					    const char *help, const double *buckets, size_t nbuckets, va_list ap)
{
	const char *labels[METRICS_MAX_LABELS + 1];
	size_t n = 0;
	const char *s;

	while ((s = va_arg(ap, const char *)) != NULL) {
		if (n == METRICS_MAX_LABELS)
			return NULL;
		labels[n++] = s;
	}
	labels[n] = NULL;
	return metrics_family_new(reg, type, name, help, labels, buckets, nbuckets);
}

struct metrics_family *metrics_counter_new(struct metrics *reg, const char *name, const char *help, ...)
{
	struct metrics_family *f;
	va_list ap;

	va_start(ap, help);
	f = family_new_va(reg, METRICS_COUNTER, name, help, NULL, 0, ap);
	va_end(ap);
	return f;
}

struct metrics_family *metrics_gauge_new(struct metrics *reg, const char *name, const char *help, ...)
{
	struct metrics_family *f;
	va_list ap;

	va_start(ap, help);
	f = family_new_va(reg, METRICS_GAUGE, name, help, NULL, 0, ap);
	va_end(ap);
	return f;
}

struct metrics_family *metrics_histogram_new(struct metrics *reg, const char *name, const char *help,
					     const double *buckets, size_t nbuckets, ...)
{
	struct metrics_family *f;
	va_list ap;

	va_start(ap, nbuckets);
	f = family_new_va(reg, METRICS_HISTOGRAM, name, help, buckets, nbuckets, ap);
	va_end(ap);
	return f;
}

struct metrics_family *metrics_callback_new(struct metrics *reg, enum metrics_type type, const char *name,
					    const char *help, double (*fn)(void *arg), void *arg)
{
	struct metrics_family *f;

	if (fn == NULL || type == METRICS_HISTOGRAM)
		return NULL;
	f = metrics_family_new(reg, type, name, help, NULL, NULL, 0);
	if (f != NULL) {
		f->fn = fn;
		f->arg = arg;
	}
	return f;
}

int metrics_on_scrape(struct metrics *reg, void (*fn)(void *arg), void *arg)
{
	struct scrape_hook *h;

	h = realloc(reg->hooks, (reg->nhooks + 1) * sizeof(*h));
	if (h == NULL)
		return -1;
	reg->hooks = h;
	h[reg->nhooks].fn = fn;
	h[reg->nhooks].arg = arg;
	reg->nhooks++;
	return 0;
}

struct metrics_child *metrics_childv(struct metrics_family *fam, const char *const *values)
{
	struct metrics_child *c;
	size_t i;

	if (fam == NULL)
		return NULL;
	for (i = 0; i < fam->nlabels; i++)
		if (values == NULL || values[i] == NULL)
			return NULL;
	for (c = fam->children; c != NULL; c = c->next) {
		for (i = 0; i < fam->nlabels; i++)
			if (strcmp(c->values[i], values[i]) != 0)
				break;
		if (i == fam->nlabels)
			return c;
	}
	c = child_alloc(fam);
	if (c == NULL)
		return NULL;
	for (i = 0; i < fam->nlabels; i++) {
		c->values[i] = strdup(values[i]);
		if (c->values[i] == NULL) {
			child_free(c);
			return NULL;
		}
	}
	child_link(fam, c);
	return c;
}

struct metrics_child *metrics_child(struct metrics_family *fam, ...)
{
	const char *values[METRICS_MAX_LABELS];
	size_t i;
	va_list ap;

	if (fam == NULL)
		return NULL;
	va_start(ap, fam);
	/* Stop at the first NULL so a short list never reads past its sentinel. */
	for (i = 0; i < fam->nlabels; i++) {
		values[i] = va_arg(ap, const char *);
		if (values[i] == NULL)
			break;
	}
	if (i == fam->nlabels && va_arg(ap, const char *) != NULL)
		i = METRICS_MAX_LABELS + 1; /* too many values */
	va_end(ap);
	if (i != fam->nlabels)
		return NULL;
	return metrics_childv(fam, values);
}

void metrics_inc(struct metrics_child *c)
{
	metrics_add(c, 1);
}

void metrics_add(struct metrics_child *c, double v)
{
	if (c == NULL || c->fam->fn != NULL || isnan(v))
		return;
	if (c->fam->type == METRICS_GAUGE || (c->fam->type == METRICS_COUNTER && v >= 0))
		c->value += v;
}

void metrics_set(struct metrics_child *c, double v)
{
	if (c != NULL && c->fam->type == METRICS_GAUGE && c->fam->fn == NULL)
		c->value = v;
}

void metrics_observe(struct metrics_child *c, double v)
{
	const struct metrics_family *f;
	size_t i;

	if (c == NULL || c->fam->type != METRICS_HISTOGRAM || isnan(v))
		return;
	f = c->fam;
	/* Linear search: bucket lists are short and small values are the common case. */
	for (i = 0; i < f->nbounds && v > f->bounds[i]; i++)
		;
	c->buckets[i]++;
	c->count++;
	c->value += v;
}

double metrics_value(const struct metrics_child *c)
{
	if (c == NULL || c->fam->type == METRICS_HISTOGRAM)
		return 0;
	if (c->fam->fn != NULL)
		return c->fam->fn(c->fam->arg);
	return c->value;
}

unsigned long long metrics_count(const struct metrics_child *c)
{
	return c != NULL && c->fam->type == METRICS_HISTOGRAM ? c->count : 0;
}

char *metrics_format_double(char *dst, size_t dstlen, double v)
{
	int prec;

	if (isnan(v)) {
		snprintf(dst, dstlen, "NaN");
	} else if (isinf(v)) {
		snprintf(dst, dstlen, v > 0 ? "+Inf" : "-Inf");
	} else if (v == 0) {
		snprintf(dst, dstlen, "0"); /* also folds -0 */
	} else if (v == floor(v) && fabs(v) < 1e15) {
		snprintf(dst, dstlen, "%.0f", v);
	} else {
		/* The shortest precision that reads back to the same double. */
		for (prec = 1; prec <= 17; prec++) {
			snprintf(dst, dstlen, "%.*g", prec, v);
			if (strtod(dst, NULL) == v)
				break;
		}
	}
	return dst;
}

/* HELP text escapes backslash and newline; label values also escape the quote. */
static int put_escaped(struct buf *out, const char *s, int quote)
{
	for (; *s != '\0'; s++) {
		int rc;

		if (*s == '\\')
			rc = buf_puts(out, "\\\\");
		else if (*s == '\n')
			rc = buf_puts(out, "\\n");
		else if (quote && *s == '"')
			rc = buf_puts(out, "\\\"");
		else
			rc = buf_putc(out, *s);
		if (rc < 0)
			return -1;
	}
	return 0;
}

/* Writes {a="x",b="y"} (plus le="..." when le is set), or nothing without labels. */
static int put_labels(struct buf *out, const struct metrics_child *c, const char *le)
{
	const struct metrics_family *f = c->fam;
	size_t i;

	if (f->nlabels == 0 && le == NULL)
		return 0;
	if (buf_putc(out, '{') < 0)
		return -1;
	for (i = 0; i < f->nlabels; i++) {
		if (buf_printf(out, "%s%s=\"", i ? "," : "", f->labels[i]) < 0 ||
		    put_escaped(out, c->values[i], 1) < 0 || buf_putc(out, '"') < 0)
			return -1;
	}
	if (le != NULL && buf_printf(out, "%sle=\"%s\"", f->nlabels ? "," : "", le) < 0)
		return -1;
	return buf_putc(out, '}');
}

static int put_sample(struct buf *out, const struct metrics_child *c, const char *suffix, const char *le, double v)
{
	char num[40];

	if (buf_puts(out, c->fam->name) < 0 || buf_puts(out, suffix) < 0 || put_labels(out, c, le) < 0)
		return -1;
	return buf_printf(out, " %s\n", metrics_format_double(num, sizeof(num), v));
}

static int render_histogram(struct buf *out, const struct metrics_child *c)
{
	const struct metrics_family *f = c->fam;
	unsigned long long cum = 0;
	char le[40];
	size_t i;

	for (i = 0; i < f->nbounds; i++) {
		cum += c->buckets[i];
		metrics_format_double(le, sizeof(le), f->bounds[i]);
		if (put_sample(out, c, "_bucket", le, (double)cum) < 0)
			return -1;
	}
	if (put_sample(out, c, "_bucket", "+Inf", (double)c->count) < 0 ||
	    put_sample(out, c, "_sum", NULL, c->value) < 0 || put_sample(out, c, "_count", NULL, (double)c->count) < 0)
		return -1;
	return 0;
}

static const char *type_name(enum metrics_type t)
{
	switch (t) {
	case METRICS_COUNTER:
		return "counter";
	case METRICS_GAUGE:
		return "gauge";
	default:
		return "histogram";
	}
}

int metrics_render_buf(struct metrics *reg, struct buf *out)
{
	const struct metrics_family *f;
	const struct metrics_child *c;
	size_t i;

	for (i = 0; i < reg->nhooks; i++)
		reg->hooks[i].fn(reg->hooks[i].arg);
	for (f = reg->families; f != NULL; f = f->next) {
		/* A labelled family with no children yet has no samples; like the
		 * reference clients, it is left out rather than shown empty. */
		if (f->children == NULL)
			continue;
		if (buf_printf(out, "# HELP %s ", f->name) < 0 || put_escaped(out, f->help, 0) < 0 ||
		    buf_printf(out, "\n# TYPE %s %s\n", f->name, type_name(f->type)) < 0)
			return -1;
		for (c = f->children; c != NULL; c = c->next) {
			int rc = f->type == METRICS_HISTOGRAM ? render_histogram(out, c)
							      : put_sample(out, c, "", NULL, metrics_value(c));
			if (rc < 0)
				return -1;
		}
	}
	return 0;
}

char *metrics_render(struct metrics *reg)
{
	struct buf b;
	char *s;

	buf_init(&b);
	if (metrics_render_buf(reg, &b) < 0) {
		buf_free(&b);
		return NULL;
	}
	s = buf_steal(&b);
	buf_free(&b);
	return s;
}

/* ---- process_* families ---- */

static void process_refresh(void *arg)
{
	struct metrics *reg = arg;

	(void)procstat_read(&reg->proc);
	procstat_cgroup_limits(&reg->limits);
}

static double proc_cpu(void *arg)
{
	return ((struct metrics *)arg)->proc.cpu_seconds;
}
static double proc_rss(void *arg)
{
	return ((struct metrics *)arg)->proc.rss_bytes;
}
static double proc_vsize(void *arg)
{
	return ((struct metrics *)arg)->proc.vsize_bytes;
}
static double proc_fds(void *arg)
{
	return ((struct metrics *)arg)->proc.open_fds;
}
static double proc_max_fds(void *arg)
{
	return ((struct metrics *)arg)->proc.max_fds;
}
static double proc_start(void *arg)
{
	return ((struct metrics *)arg)->proc.start_time_seconds;
}
static double limit_mem(void *arg)
{
	return ((struct metrics *)arg)->limits.memory_bytes;
}
static double limit_cpu(void *arg)
{
	return ((struct metrics *)arg)->limits.cpu_cores;
}

int metrics_register_process(struct metrics *reg)
{
	static const struct {
		enum metrics_type type;
		const char *name, *help;
		double (*fn)(void *);
	} defs[] = {
		{ METRICS_COUNTER, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
		  proc_cpu },
		{ METRICS_GAUGE, "process_resident_memory_bytes", "Resident memory size in bytes.", proc_rss },
		{ METRICS_GAUGE, "process_virtual_memory_bytes", "Virtual memory size in bytes.", proc_vsize },
		{ METRICS_GAUGE, "process_open_fds", "Number of open file descriptors.", proc_fds },
		{ METRICS_GAUGE, "process_max_fds", "Maximum number of open file descriptors.", proc_max_fds },
		{ METRICS_GAUGE, "process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
		  proc_start },
		{ METRICS_GAUGE, "outboxd_memory_limit_bytes",
		  "Memory limit of the container (cgroup), bytes; 0 = no limit.", limit_mem },
		{ METRICS_GAUGE, "outboxd_cpu_limit_cores",
		  "CPU limit of the container (cgroup quota / period), cores; 0 = no limit.", limit_cpu },
	};
	size_t i;

	(void)procstat_read(&reg->proc);
	procstat_cgroup_limits(&reg->limits);
	for (i = 0; i < sizeof(defs) / sizeof(defs[0]); i++)
		if (metrics_callback_new(reg, defs[i].type, defs[i].name, defs[i].help, defs[i].fn, reg) == NULL)
			return -1;
	return metrics_on_scrape(reg, process_refresh, reg);
}

/* ---- outboxd's own families ---- */

/* Registration helpers that remember the first failure so the list below reads as
 * a plain table. */
struct reg_ctx {
	struct metrics *reg;
	int failed;
};

static struct metrics_family *note(struct reg_ctx *x, struct metrics_family *f)
{
	if (f == NULL)
		x->failed = 1;
	return f;
}

static struct metrics_child *note_child(struct reg_ctx *x, struct metrics_child *c)
{
	if (c == NULL)
		x->failed = 1;
	return c;
}

static struct metrics_child *solo(struct reg_ctx *x, struct metrics_family *f)
{
	return note_child(x, metrics_child(f, NULL));
}

static void register_messages(struct reg_ctx *x, struct outboxd_metrics *om)
{
	struct metrics_family *f;

	f = om->messages = note(
		x, metrics_counter_new(x->reg, "outboxd_messages_total",
				       "Messages finished by this dispatcher, by outcome (sent, retry scheduled, "
				       "failed permanently, dead after max attempts, unknown outcome, released on "
				       "shutdown).",
				       "outcome", NULL));
	om->msg_sent = note_child(x, metrics_child(f, "sent", NULL));
	om->msg_retry = note_child(x, metrics_child(f, "retry", NULL));
	om->msg_failed = note_child(x, metrics_child(f, "failed", NULL));
	om->msg_dead = note_child(x, metrics_child(f, "dead", NULL));
	om->msg_unknown = note_child(x, metrics_child(f, "unknown", NULL));
	om->msg_released = note_child(x, metrics_child(f, "released", NULL));

	f = om->smtp_replies = note(
		x, metrics_counter_new(x->reg, "outboxd_smtp_replies_total",
				       "SMTP transactions by final reply class; none means no reply was received.",
				       "class", NULL));
	om->smtp_2xx = note_child(x, metrics_child(f, "2xx", NULL));
	om->smtp_4xx = note_child(x, metrics_child(f, "4xx", NULL));
	om->smtp_5xx = note_child(x, metrics_child(f, "5xx", NULL));
	om->smtp_none = note_child(x, metrics_child(f, "none", NULL));

	om->smtp_send_duration = solo(
		x, note(x, metrics_histogram_new(x->reg, "outboxd_smtp_send_duration_seconds",
						 "Time from handing a message to the SMTP client to its final reply.",
						 metrics_seconds_buckets, metrics_seconds_nbuckets, NULL)));
	om->delivery_latency = solo(
		x, note(x, metrics_histogram_new(
				   x->reg, "outboxd_delivery_latency_seconds",
				   "Time from a message's creation to its successful delivery, retries included.",
				   metrics_latency_buckets, metrics_latency_nbuckets, NULL)));
	om->claim_batch_size = solo(
		x,
		note(x, metrics_histogram_new(x->reg, "outboxd_claim_batch_size", "Rows returned by each claim query.",
					      metrics_batch_buckets, metrics_batch_nbuckets, NULL)));
	om->in_flight = solo(x, note(x, metrics_gauge_new(x->reg, "outboxd_in_flight",
							  "Messages claimed by this dispatcher and not yet completed.",
							  NULL)));
}

static void register_queue(struct reg_ctx *x, struct outboxd_metrics *om)
{
	struct metrics_family *f;

	f = om->queue_depth = note(
		x, metrics_gauge_new(x->reg, "outboxd_queue_depth",
				     "Rows in outbox.messages by state, as last measured in the database.", "state",
				     NULL));
	om->depth_pending = note_child(x, metrics_child(f, "pending", NULL));
	om->depth_sending = note_child(x, metrics_child(f, "sending", NULL));
	om->depth_sent = note_child(x, metrics_child(f, "sent", NULL));
	om->depth_failed = note_child(x, metrics_child(f, "failed", NULL));
	om->depth_dead = note_child(x, metrics_child(f, "dead", NULL));
	om->depth_cancelled = note_child(x, metrics_child(f, "cancelled", NULL));
	om->oldest_pending_age = solo(
		x, note(x, metrics_gauge_new(x->reg, "outboxd_oldest_pending_age_seconds",
					     "Age of the oldest message that is due and not yet delivered.", NULL)));
	om->table_dead_tuples = note(x,
				     metrics_gauge_new(x->reg, "outboxd_table_dead_tuples",
						       "Dead tuples in an outbox table (n_dead_tup).", "table", NULL));
	om->table_last_autovacuum = note(
		x, metrics_gauge_new(x->reg, "outboxd_table_last_autovacuum_timestamp_seconds",
				     "Time of the last autovacuum of an outbox table, seconds since the epoch.",
				     "table", NULL));
	om->oldest_xact_age = solo(
		x, note(x, metrics_gauge_new(
				   x->reg, "outboxd_oldest_xact_age_seconds",
				   "Age of the oldest open transaction in the database; a large value holds back "
				   "vacuum.",
				   NULL)));
	om->database_up = solo(
		x,
		note(x, metrics_gauge_new(x->reg, "outboxd_database_up",
					  "1 when the work connection to PostgreSQL is established, else 0.", NULL)));
	om->listener_up = solo(x, note(x, metrics_gauge_new(x->reg, "outboxd_listener_up",
							    "1 when the LISTEN connection is established, else 0.",
							    NULL)));
}

static void register_kafka_breaker(struct reg_ctx *x, struct outboxd_metrics *om)
{
	static const char *const sinks[] = { "smtp", "kafka" };
	static const char *const states[] = { "closed", "half_open", "open" };
	struct metrics_family *f;
	size_t i, j;

	om->kafka_lag_rows = solo(x,
				  note(x, metrics_gauge_new(x->reg, "outboxd_kafka_mirror_lag_rows",
							    "Events committed but not yet published to Kafka.", NULL)));
	om->kafka_mirror_enabled = solo(
		x,
		note(x, metrics_gauge_new(x->reg, "outboxd_kafka_mirror_enabled",
					  "1 when kafka.brokers is set and this dispatcher mirrors events, else 0; lag "
					  "alerts stay silent while it is 0.",
					  NULL)));
	om->kafka_lag_seconds = solo(x, note(x, metrics_gauge_new(x->reg, "outboxd_kafka_mirror_lag_seconds",
								  "Age of the oldest event not yet published to Kafka.",
								  NULL)));
	f = om->kafka_publish = note(x, metrics_counter_new(x->reg, "outboxd_kafka_publish_total",
							    "Kafka delivery reports by outcome.", "outcome", NULL));
	om->kafka_published = note_child(x, metrics_child(f, "published", NULL));
	om->kafka_failed = note_child(x, metrics_child(f, "failed", NULL));
	om->kafka_retry = note_child(x, metrics_child(f, "retry", NULL));

	f = om->breaker_state = note(
		x, metrics_gauge_new(x->reg, "outboxd_breaker_state",
				     "Circuit breaker state per sink: 0 closed, 1 half-open, 2 open.", "sink", NULL));
	om->breaker_smtp = note_child(x, metrics_child(f, "smtp", NULL));
	om->breaker_kafka = note_child(x, metrics_child(f, "kafka", NULL));
	f = om->breaker_transitions = note(
		x, metrics_counter_new(x->reg, "outboxd_breaker_transitions_total",
				       "Circuit breaker state changes per sink, by the state entered.", "sink", "to",
				       NULL));
	for (i = 0; i < 2; i++)
		for (j = 0; j < 3; j++)
			(void)note_child(x, metrics_child(f, sinks[i], states[j], NULL));
}

static void register_retention(struct reg_ctx *x, struct outboxd_metrics *om)
{
	om->retention_removed = note(
		x, metrics_counter_new(x->reg, "outboxd_retention_removed_total",
				       "Finished rows removed by retention on this dispatcher, by table and state "
				       "(state partition: rows of a dropped partition).",
				       "table", "state", NULL));
	om->retention_dropped = solo(
		x, note(x, metrics_counter_new(
				   x->reg, "outboxd_retention_partitions_dropped_total",
				   "Partitions dropped by retention on this dispatcher (partitioned layout).", NULL)));
	om->retention_last_pass = solo(
		x, note(x, metrics_gauge_new(
				   x->reg, "outboxd_retention_last_pass_timestamp_seconds",
				   "End of this dispatcher's last complete retention pass, seconds since the epoch; "
				   "0 = none yet.",
				   NULL)));
	om->retention_leader = solo(
		x, note(x, metrics_gauge_new(
				   x->reg, "outboxd_retention_leader",
				   "1 while this dispatcher holds the retention lock (one dispatcher purges).", NULL)));
	om->lock_foreign = note(
		x, metrics_gauge_new(x->reg, "outboxd_lock_foreign_holder",
				     "1 while a session that is not outboxd holds this advisory lock (mirror, "
				     "retention), as last looked up by this dispatcher; the log names its pid.",
				     "lock", NULL));
	om->lock_foreign_mirror = note_child(x, metrics_child(om->lock_foreign, "mirror", NULL));
	om->lock_foreign_retention = note_child(x, metrics_child(om->lock_foreign, "retention", NULL));
}

struct outboxd_metrics *outboxd_metrics_new(struct metrics *reg, const char *version)
{
	struct outboxd_metrics *om = calloc(1, sizeof(*om));
	struct reg_ctx x = { reg, 0 };

	if (om == NULL)
		return NULL;
	om->up = solo(
		&x, note(&x, metrics_gauge_new(reg, "outboxd_up", "1 while the dispatcher process is running.", NULL)));
	metrics_set(om->up, 1);
	om->build_info = note(&x, metrics_gauge_new(reg, "outboxd_build_info",
						    "Always 1; the version label identifies the running build.",
						    "version", NULL));
	metrics_set(note_child(&x, metrics_child(om->build_info, version != NULL ? version : "unknown", NULL)), 1);
	register_messages(&x, om);
	register_queue(&x, om);
	register_kafka_breaker(&x, om);
	register_retention(&x, om);
	if (!x.failed && metrics_register_process(reg) < 0)
		x.failed = 1;
	if (x.failed) {
		free(om);
		return NULL;
	}
	return om;
}

void outboxd_metrics_free(struct outboxd_metrics *om)
{
	free(om);
}
