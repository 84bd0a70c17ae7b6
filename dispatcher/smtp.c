/* smtp: the engine-neutral SMTP sink: picks the engine named by smtp.engine and forwards
 * every call to it. */
#include "smtp.h"

#include <stdio.h>
#include <stdlib.h>

#include "config.h"

struct smtp_sink {
	const struct smtp_engine *eng;
	void *impl;
};

struct smtp_sink *smtp_new(struct event_base *base, const struct config *cfg, char *errbuf, size_t errlen)
{
	struct smtp_sink *s = calloc(1, sizeof(*s));

	if (s == NULL) {
		snprintf(errbuf, errlen, "out of memory");
		return NULL;
	}
	s->eng = cfg->smtp_engine == SMTP_ENGINE_LIBCURL ? &smtp_engine_curl : &smtp_engine_native;
	s->impl = s->eng->create(base, cfg, errbuf, errlen);
	if (s->impl == NULL) {
		free(s);
		return NULL;
	}
	return s;
}

int smtp_submit(struct smtp_sink *s, const char *mail_from, const char *const *rcpt, size_t nrcpt,
		const struct buf *msg, smtp_done_fn done, void *arg)
{
	if (nrcpt == 0)
		return -1;
	return s->eng->send(s->impl, mail_from, rcpt, nrcpt, msg, done, arg);
}

void smtp_cancel_queued(struct smtp_sink *s)
{
	s->eng->cancel_queued(s->impl);
}

void smtp_abort_all(struct smtp_sink *s)
{
	s->eng->abort_all(s->impl);
}

void smtp_set_rate(struct smtp_sink *s, double per_s)
{
	s->eng->set_rate(s->impl, per_s);
}

const char *smtp_engine_name(const struct smtp_sink *s)
{
	return s->eng->name;
}

void smtp_free(struct smtp_sink *s)
{
	if (s == NULL)
		return;
	s->eng->destroy(s->impl);
	free(s);
}
