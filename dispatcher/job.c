/* job: the pure decisions of a row's life (recipients, verdict, claim size, flush timing)
 * and of the mirror's reads. No I/O: callers bring what they observed. */
#include "job.h"
#include "relaytext.h"

#include <stdio.h>
#include <string.h>

const char *outcome_name(enum outcome o)
{
	static const char *const names[OUTCOME_COUNT] = {
		[OUTCOME_SENT] = "sent",         [OUTCOME_RETRY] = "retry",     [OUTCOME_FAILED] = "failed",
		[OUTCOME_RELEASED] = "released", [OUTCOME_UNKNOWN] = "unknown", [OUTCOME_DEAD] = "dead",
	};
	return (unsigned)o < OUTCOME_COUNT ? names[o] : "invalid";
}

const char *rcpt_kind_name(enum rcpt_kind k)
{
	static const char *const names[] = { [RCPT_TO] = "to", [RCPT_CC] = "cc", [RCPT_BCC] = "bcc" };
	return (unsigned)k <= RCPT_BCC ? names[k] : "invalid";
}

const char *rcpt_state_name(enum rcpt_state s)
{
	static const char *const names[] = {
		[RCPT_PENDING] = "pending", [RCPT_SENT] = "sent", [RCPT_FAILED] = "failed"
	};
	return (unsigned)s <= RCPT_FAILED ? names[s] : "invalid";
}

/* ---- recipients ---------------------------------------------------------------------- */

static int listed(const struct pgarray *a, const char *addr)
{
	for (size_t k = 0; k < a->n; k++)
		if (a->items[k] && strcmp(a->items[k], addr) == 0)
			return 1;
	return 0;
}

static size_t pick_from(const struct pgarray *arr, enum rcpt_kind kind, const struct pgarray *done,
			struct rcpt_pick *out, size_t n)
{
	for (size_t i = 0; i < arr->n; i++) {
		const char *a = arr->items[i];
		int seen = 0;

		if (a == NULL || listed(done, a))
			continue;
		for (size_t k = 0; k < n && !seen; k++)
			seen = strcmp(out[k].addr, a) == 0;
		if (seen)
			continue;
		out[n].addr = a;
		out[n].kind = kind;
		n++;
	}
	return n;
}

size_t job_pick_recipients(const struct pgarray *to, const struct pgarray *cc, const struct pgarray *bcc,
			   const struct pgarray *done, struct rcpt_pick *out)
{
	size_t n = pick_from(to, RCPT_TO, done, out, 0);

	n = pick_from(cc, RCPT_CC, done, out, n);
	return pick_from(bcc, RCPT_BCC, done, out, n);
}

/* ---- verdict ------------------------------------------------------------------------- */

const struct rcpt_reply *job_rcpt_effective(const struct rcpt_reply *r, const struct rcpt_reply *data)
{
	return data != NULL && r->state == RCPT_SENT ? data : r;
}

void job_verdict(const struct rcpt_reply *r, size_t n, const struct rcpt_reply *data, struct job_verdict *v)
{
	const struct rcpt_reply *first_pending = NULL, *first_failed = NULL;
	size_t charged = 0, unknown = 0;

	memset(v, 0, sizeof(*v));
	for (size_t i = 0; i < n; i++) {
		const struct rcpt_reply *e = job_rcpt_effective(&r[i], data);
		charged += e->charged != 0;
		unknown += e->unknown != 0;
		switch (e->state) {
		case RCPT_SENT:
			v->sent++;
			break;
		case RCPT_FAILED:
			v->failed++;
			if (!first_failed)
				first_failed = e;
			break;
		case RCPT_PENDING:
			v->pending++;
			if (!first_pending && e->charged)
				first_pending = e;
			break;
		}
	}
	if (v->pending > 0 && charged == 0) {
		/* nothing reached the relay (paused, shutting down, our configuration): the row
		 * goes back without burning an attempt */
		v->outcome = v->counted = OUTCOME_RELEASED;
	} else if (v->pending > 0) {
		const struct rcpt_reply *p = first_pending ? first_pending : first_failed;
		v->outcome = OUTCOME_RETRY;
		v->counted = unknown ? OUTCOME_UNKNOWN : OUTCOME_RETRY;
		v->unknown = unknown > 0;
		v->code = p ? p->code : 0;
		snprintf(v->error, sizeof(v->error), "%s%s", p && p->text ? p->text : "temporary failure",
			 unknown ? " (outcome unknown: the relay may have accepted it)" : "");
	} else if (v->failed > 0) {
		v->outcome = v->counted = OUTCOME_FAILED;
		v->code = first_failed->code;
		if (v->sent > 0)
			snprintf(v->error, sizeof(v->error), "%zu of %zu recipients refused: %s", v->failed,
				 v->failed + v->sent, first_failed->text ? first_failed->text : "");
		else
			snprintf(v->error, sizeof(v->error), "%s", first_failed->text ? first_failed->text : "refused");
	} else {
		v->outcome = v->counted = OUTCOME_SENT;
		v->code = 250;
	}
	relay_text_trim_tail(v->error); /* snprintf may have cut a character in two */
}

/* ---- claiming ------------------------------------------------------------------------ */

int job_claim_span(int batch_size, int max_in_flight)
{
	return batch_size < max_in_flight ? batch_size : max_in_flight;
}

int job_claim_limit(int batch_size, int max_in_flight, int in_flight, struct breaker *b, uint64_t now_ms)
{
	int room = max_in_flight - in_flight;

	if (room <= 0)
		return 0;
	switch (breaker_state(b)) {
	case BREAKER_CLOSED:
		/* one claim per half batch, not one per finished message */
		if (in_flight > 0 && room < (job_claim_span(batch_size, max_in_flight) + 1) / 2)
			return 0;
		return room < batch_size ? room : batch_size;
	case BREAKER_HALF_OPEN:
		if (in_flight > 0)
			return 0;
		/* nothing in flight, so no probe is outstanding (the last claim was empty or its
		 * row never reached the relay): allow another one */
		breaker_cancel(b);
		__attribute__((fallthrough));
	case BREAKER_OPEN:
		/* one message probes the relay once the open period is over; its outcome closes
		 * the breaker or opens it again for longer */
		if (in_flight > 0 || !breaker_allow(b, now_ms))
			return 0;
		return 1;
	}
	return 0;
}

void job_after_claim(int n, int limit, int idle_marked, int woken, struct claim_next *next)
{
	next->set_idle = -1;
	next->again = woken;
	next->empty = 0;
	if (n >= limit && n > 0) {
		if (idle_marked)
			next->set_idle = 0;
		next->again = 1;
	} else if (idle_marked) {
		next->empty = !woken;
	} else if (n == 0) {
		/* mark idle first, then look once more: a row committed between our claim and
		 * the mark would otherwise wait for the poll */
		next->set_idle = 1;
		next->again = 1;
	}
}

/* ---- writing outcomes ---------------------------------------------------------------- */

/* Under a backlog, outcomes are written in groups, like a group commit: a write waits at
 * most outcome_delay for half a batch of outcomes, so that one statement carries many (it
 * costs the database about as much for one outcome as for fifty). With fewer sends in
 * flight than that, more outcomes are not coming soon: write at once, and while stopping. */
int job_flush_now(int running, int64_t outcome_delay_ms, size_t waiting, size_t in_flight, int claim_span)
{
	size_t group = (size_t)claim_span / 2;

	return !running || outcome_delay_ms <= 0 || waiting >= group || in_flight < group;
}

/* ---- the mirror's reads -------------------------------------------------------------- */

void job_mirror_advance(const struct mirror_read *r, struct mirror_advance *a)
{
	/* rows up to the cursor were handled; a row left over lowers it so it is read again */
	a->cursor = r->max_id;
	if (r->first_unhandled && r->first_unhandled - 1 < a->cursor)
		a->cursor = r->first_unhandled - 1;
	/* The guard moves on only when this read saw every row behind the cursor: rows behind
	 * it come first in the result, and when they fill the whole read (a large transaction
	 * that committed behind the cursor) the ones past the limit are still to be found with
	 * the old guard. Moving it would leave them pending for good. */
	a->guard_moves = r->rows > 0 && r->has_xmin && r->behind < r->limit;
	if (r->stopped)
		a->next = MIRROR_NEXT_NOTHING;
	else if (r->rows >= r->limit && r->first_has_id)
		a->next = a->cursor > r->cursor || r->produced ? MIRROR_NEXT_READ : MIRROR_NEXT_WAIT;
	else if (r->skipped)
		a->next = MIRROR_NEXT_WAIT;
	else if (r->produced == 0 && r->fresh == 0)
		a->next = MIRROR_NEXT_IDLE;
	else
		a->next = MIRROR_NEXT_NOTHING;
}
