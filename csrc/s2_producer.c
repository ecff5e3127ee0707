/* s2_producer.c — the producer: single records batched in the core, on top of a session.
 *
 * Records are encoded straight into the open batch's wire buffer as they come (one copy
 * per record), behind 4 reserved bytes for the S2S frame header. Sealing appends the
 * append conditions and writes the header; the batch then joins the session's pending queue
 * like any submitted batch. The open batch is shared by callers (submit, flush, close) and
 * the I/O thread (linger timer), so it lives under runtime->mu; see s2.h.
 *
 * The producer owns an append session and gives it hooks (s2_append_hooks): seal the open
 * batch (close, release, drain, linger), hand it over when the session fails, compress a
 * sealed batch as the I/O thread takes it, recover after a reconnect. The session calls
 * them without knowing the producer; the producer's memory goes with the session's. */
#include <stdlib.h>
#include <string.h>

#include "s2_internal.h"

#define INITIAL_BATCH_BUFFER (64u * 1024u)

struct s2_producer {
    s2_append_session *s; /* owned; its hooks point back here (constant after open) */
    s2_runtime *rt;
    s2_producer_options popts; /* fencing_token points at fencing_token below */
    char *fencing_token;
    /* under mu */
    s2_batch *open; /* the batch being filled */
    size_t open_metered;
    double open_deadline; /* linger expiry, 0: none */
    bool chain;           /* batches carry a chained match_seq_num */
    uint64_t next_msn;
    s2_ticket *last_ticket; /* of the last sealed batch (a reference) */
};

static void seal_locked(s2_producer *p);

/* ---- hooks on the session ---------------------------------------------------------------- */

static void hook_seal_locked(void *ud) {
    seal_locked(ud);
}

static double hook_seal_deadline_locked(void *ud) {
    s2_producer *p = ud;
    return p->open ? p->open_deadline : 0;
}

static s2_batch *hook_take_open_locked(void *ud) {
    s2_producer *p = ud;
    s2_batch *b = p->open;
    p->open = NULL;
    p->open_deadline = 0;
    return b;
}

static int hook_compress(void *ud, s2_batch *b, s2_error *err) {
    s2_producer *p = ud;
    s2_buf out;
    s2_buf_init(&out);
    int rc = s2_frame_encode(b->frame.data + S2_FRAME_HEADER_LEN,
                             b->frame.len - S2_FRAME_HEADER_LEN, 0, p->s->opts.compression, &out,
                             err);
    if (rc != 0) {
        s2_buf_free(&out);
        return -1;
    }
    s2_buf_free(&b->frame);
    b->frame = out;
    b->compress_pending = false;
    return 0;
}

/* Idempotent producers: a seq_num_mismatch after a resend may mean batches already landed.
 * Resolves those; true when the session can go on by resending the rest. I/O thread. */
static bool hook_recover(void *ud, const s2_error *err) {
    s2_producer *p = ud;
    s2_append_session *s = p->s;
    if (!p->popts.idempotent || !err->has_expected_seq_num) return false;
    uint64_t tail = err->expected_seq_num;
    s2_batch *b = s->inflight_head;
    /* Only batches written on an earlier, failed stream can have landed unseen. A batch
     * on its first attempt that mismatches means someone else wrote: a real failure. */
    if (!b || !b->has_msn || !b->sent_before || b->msn + b->num_records > tail) return false;
    while (b && b->has_msn && b->sent_before && b->msn + b->num_records <= tail) {
        s2_append_ack ack = {
            .start = {b->msn, 0},
            .end = {b->msn + b->num_records, 0},
            .tail = {tail, 0},
        };
        s2_session_pop_acked(s, &ack);
        b = s->inflight_head;
    }
    s->cursor = s->inflight_head;
    s->cursor_off = 0;
    /* What is left must start exactly at the tail, or another writer got in between. */
    return !b || !b->has_msn || b->msn == tail;
}

static void hook_destroy(void *ud) {
    s2_producer *p = ud;
    s2_batch_free(p->open);
    s2_ticket_unref(p->last_ticket);
    free(p->fencing_token);
    free(p);
}

/* ---- open / submit / flush (caller side) ------------------------------------------------- */

s2_producer *s2_producer_open(s2_runtime *rt, const char *basin, const char *stream,
                                    const s2_producer_options *opts, s2_error *err) {
    if (opts->idempotent && !opts->has_match_seq_num) {
        s2_fail(err, S2_E_INVALID, "invalid", "idempotent: the start (match_seq_num) is required");
        return NULL;
    }
    if (opts->max_batch_records < 1 || opts->max_batch_records > S2_MAX_BATCH_RECORDS ||
        opts->max_batch_bytes < S2_RECORD_OVERHEAD || opts->max_batch_bytes > S2_MAX_BATCH_BYTES) {
        s2_fail(err, S2_E_INVALID, "invalid",
                "max_batch_records must be 1..%u and max_batch_bytes %u..%u",
                S2_MAX_BATCH_RECORDS, S2_RECORD_OVERHEAD, S2_MAX_BATCH_BYTES);
        return NULL;
    }
    if (opts->fencing_token && opts->fencing_token_len > S2_MAX_FENCING_TOKEN) {
        s2_fail(err, S2_E_INVALID, "invalid", "fencing_token: %zu bytes is over the limit of %u",
                opts->fencing_token_len, S2_MAX_FENCING_TOKEN);
        return NULL;
    }
    s2_producer *p = calloc(1, sizeof *p);
    if (!p) goto nomem;
    p->rt = rt;
    p->popts = *opts;
    p->popts.fencing_token = NULL;
    if (opts->fencing_token) {
        p->fencing_token = malloc(opts->fencing_token_len + 1);
        if (!p->fencing_token) goto nomem;
        memcpy(p->fencing_token, opts->fencing_token, opts->fencing_token_len);
        p->fencing_token[opts->fencing_token_len] = 0;
        p->popts.fencing_token = p->fencing_token;
    }
    p->chain = opts->has_match_seq_num;
    p->next_msn = opts->match_seq_num;
    /* new -> hooks -> start: the I/O thread never sees a session without its producer. */
    s2_append_session *s = s2_session_new(rt, basin, stream, &opts->session, err);
    if (!s) {
        hook_destroy(p);
        return NULL;
    }
    p->s = s;
    s->hooks = (s2_append_hooks){
        .ud = p,
        .seal_locked = hook_seal_locked,
        .seal_deadline_locked = hook_seal_deadline_locked,
        .take_open_locked = hook_take_open_locked,
        .compress = hook_compress,
        .recover = hook_recover,
        .destroy = hook_destroy,
    };
    if (s2_append_session_start(s, err) != 0) return NULL; /* freed p with s */
    return p;
nomem:
    if (p) hook_destroy(p);
    s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory opening a producer");
    return NULL;
}

/* Seals the open batch into the session's pending queue (no-op without one). under mu */
static void seal_locked(s2_producer *p) {
    s2_append_session *s = p->s;
    s2_batch *b = p->open;
    if (!b) return;
    p->open = NULL;
    p->open_deadline = 0;
    p->open_metered = 0;
    const s2_producer_options *o = &p->popts;
    if (p->chain) {
        b->has_msn = true;
        b->msn = p->next_msn;
        p->next_msn += b->num_records;
    }
    /* Room was reserved when the batch was opened (see open_batch). */
    uint8_t *end = s2_append_conditions_encode(b->has_msn, b->msn, o->fencing_token,
                                               o->fencing_token_len, b->frame.data + b->frame.len);
    b->frame.len = (size_t)(end - b->frame.data);
    size_t len = b->frame.len - S2_FRAME_HEADER_LEN + 1; /* flag + payload */
    b->frame.data[0] = (uint8_t)(len >> 16);
    b->frame.data[1] = (uint8_t)(len >> 8);
    b->frame.data[2] = (uint8_t)len;
    b->frame.data[3] = 0;
    b->compress_pending = s->opts.compression != S2_COMPRESSION_NONE &&
                          len - 1 >= S2_COMPRESSION_THRESHOLD;
    s2_session_enqueue_locked(s, b);
    if (p->last_ticket) s2_ticket_unref(p->last_ticket);
    s2_ticket_ref(b->ticket);
    p->last_ticket = b->ticket;
    s2_runtime_broadcast(p->rt); /* an HTTP/1.1 worker may be waiting for it */
}

/* Conditions are at most 11 (match_seq_num) + 2 + 36 (fencing token) bytes. */
#define CONDITIONS_ROOM 64u

/* under mu */
static int open_batch(s2_producer *p, s2_error *err) {
    s2_batch *b = calloc(1, sizeof *b);
    if (!b) goto nomem;
    b->frame = s2_session_take_spare_locked(p->s); /* an acked batch's buffer, if kept */
    b->ticket = s2_ticket_new(p->rt);
    if (!b->ticket || s2_buf_reserve(&b->frame, INITIAL_BATCH_BUFFER) != 0) goto nomem;
    b->frame.len = S2_FRAME_HEADER_LEN;
    p->open = b;
    p->open_metered = 0;
    p->open_deadline = s2_now() + p->popts.linger;
    return 0;
nomem:
    s2_batch_free(b);
    return s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory opening a batch");
}

int s2_producer_submit(s2_producer *p, const s2_record *r, double timeout, s2_ticket *known,
                       s2_ticket **ticket, uint32_t *index, s2_error *err) {
    s2_append_session *s = p->s;
    const s2_producer_options *o = &p->popts;
    size_t m = s2_record_metered_bytes(r);
    *ticket = NULL;
    if (m > o->max_batch_bytes)
        return s2_fail(err, S2_E_INVALID, "invalid",
                       "record: %zu metered bytes is over max_batch_bytes (%zu)", m,
                       o->max_batch_bytes);
    double deadline = -1; /* read the clock only when there is a wait */
    bool wake = false;
    s2_runtime_lock(p->rt);
    for (;;) {
        if (s->state != S2_SESSION_OPEN) {
            if (s->state == S2_SESSION_FAILED) *err = s->failure;
            else s2_fail(err, S2_E_CLOSED, "closed", "the producer is closed");
            s2_runtime_unlock(p->rt);
            return -1;
        }
        size_t inflight = s->stats.inflight_bytes;
        if (inflight == 0 || inflight + m <= s->opts.max_inflight_bytes) break;
        if (timeout >= 0 && deadline < 0) deadline = s2_now() + timeout;
        if (timeout == 0 || !s2_runtime_wait(p->rt, deadline)) {
            s2_runtime_unlock(p->rt);
            s2_fail(err, S2_E_TIMEOUT, "timeout",
                    "no room in the producer within %.3f s (max_inflight_bytes %zu)", timeout,
                    s->opts.max_inflight_bytes);
            err->retryable = true;
            return -1;
        }
    }
    if (p->open && (p->open->num_records + 1 > o->max_batch_records ||
                    p->open_metered + m > o->max_batch_bytes)) {
        seal_locked(p);
        wake = true;
    }
    if (!p->open) {
        if (open_batch(p, err) != 0) {
            s2_runtime_unlock(p->rt);
            return -1;
        }
        wake = true; /* the I/O thread arms the linger timer */
    }
    s2_batch *b = p->open;
    size_t need = s2_record_field_len(r);
    if (s2_buf_reserve(&b->frame, need + CONDITIONS_ROOM) != 0) {
        s2_runtime_unlock(p->rt);
        return s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory adding a record");
    }
    uint8_t *end = s2_record_field_encode(r, b->frame.data + b->frame.len);
    b->frame.len = (size_t)(end - b->frame.data);
    *index = (uint32_t)b->num_records++;
    b->metered += m;
    p->open_metered += m;
    s->stats.records_submitted++;
    s->stats.inflight_bytes += m;
    if (s->stats.inflight_bytes > s->stats.peak_inflight_bytes)
        s->stats.peak_inflight_bytes = s->stats.inflight_bytes;
    /* The caller's record tickets of this batch share one reference (known). */
    if (b->ticket != known) s2_ticket_ref(b->ticket);
    *ticket = b->ticket;
    if (b->num_records == o->max_batch_records || p->open_metered == o->max_batch_bytes) {
        seal_locked(p);
        wake = true;
    }
    s2_runtime_unlock(p->rt);
    if (wake) s2_runtime_wake_op(p->rt, &p->s->op);
    return 0;
}

/* Seals the open batch and takes a reference to the last sealed batch's ticket (NULL when
 * none was ever sealed); *failed with the producer's error once it failed. */
static s2_ticket *seal_for_flush(s2_producer *p, bool *failed, s2_error *err) {
    s2_runtime_lock(p->rt);
    seal_locked(p);
    s2_ticket *t = p->last_ticket;
    if (t) s2_ticket_ref(t);
    *failed = p->s->state == S2_SESSION_FAILED;
    if (*failed) *err = p->s->failure;
    s2_runtime_unlock(p->rt);
    s2_runtime_wake_op(p->rt, &p->s->op);
    return t;
}

int s2_producer_flush_start(s2_producer *p, s2_ticket **last, s2_error *err) {
    bool failed;
    s2_ticket *t = seal_for_flush(p, &failed, err);
    if (failed) {
        s2_ticket_unref(t);
        return -1;
    }
    *last = t;
    return 0;
}

int s2_producer_flush(s2_producer *p, double timeout, s2_error *err) {
    bool failed;
    s2_ticket *t = seal_for_flush(p, &failed, err);
    if (!t) return failed ? -1 : 0;
    /* Acks come in order and a failure fails everything after it: the last batch's ticket
     * settles when everything before it has. */
    s2_ticket_state st = s2_ticket_wait(t, timeout);
    int rc = 0;
    if (st == S2_TICKET_FAILED) {
        s2_ticket_result(t, NULL, err);
        rc = -1;
    } else if (st == S2_TICKET_PENDING) {
        s2_fail(err, S2_E_TIMEOUT, "timeout", "flush: not everything was acked within %.3f s",
                timeout);
        err->retryable = true;
        rc = -1;
    }
    s2_ticket_unref(t);
    return rc;
}

int s2_producer_close(s2_producer *p, double timeout, s2_error *err) {
    return s2_append_session_close(p->s, timeout, err); /* seals through the hook */
}

void s2_producer_stats(s2_producer *p, s2_session_stats *out) {
    s2_append_session_stats(p->s, out);
}

bool s2_producer_owned(const s2_producer *p) {
    return s2_append_session_owned(p->s);
}

bool s2_producer_finished(s2_producer *p) {
    return s2_append_session_finished(p->s);
}

s2_runtime *s2_producer_runtime(const s2_producer *p) {
    return p->rt;
}

void s2_producer_release(s2_producer *p) {
    s2_append_session_release(p->s); /* p goes with the session (hook_destroy) */
}
