/* s2_producer.c — the producer: single records batched in the core, on top of a session.
 *
 * Records are encoded straight into the open batch's wire buffer as they come (one copy
 * per record), behind 4 reserved bytes for the S2S frame header. Sealing appends the
 * append conditions and writes the header; the batch then joins the session's pending queue
 * like any submitted batch. The open batch is shared by callers (submit, flush, close) and
 * the I/O thread (linger timer), so it lives under runtime->mu; see s2.h. */
#include <stdlib.h>
#include <string.h>

#include "s2_internal.h"

#define INITIAL_BATCH_BUFFER (64u * 1024u)

s2_append_session *s2_producer_open(s2_runtime *rt, const char *basin, const char *stream,
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
    char *token = NULL;
    if (opts->fencing_token) {
        token = malloc(opts->fencing_token_len + 1);
        if (!token) {
            s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory opening a producer");
            return NULL;
        }
        memcpy(token, opts->fencing_token, opts->fencing_token_len);
        token[opts->fencing_token_len] = 0;
    }
    s2_append_session *s = s2_append_session_open(rt, basin, stream, &opts->session, err);
    if (!s) {
        free(token);
        return NULL;
    }
    s2_runtime_lock(rt);
    s->producer = true;
    s->popts = *opts;
    s->fencing_token = token;
    s->popts.fencing_token = token;
    s->chain = opts->has_match_seq_num;
    s->next_msn = opts->match_seq_num;
    s2_runtime_unlock(rt);
    return s;
}

/* under mu */
void s2_producer_seal_locked(s2_append_session *s) {
    s2_batch *b = s->open;
    if (!b) return;
    s->open = NULL;
    s->open_deadline = 0;
    s->open_metered = 0;
    const s2_producer_options *o = &s->popts;
    if (s->chain) {
        b->has_msn = true;
        b->msn = s->next_msn;
        s->next_msn += b->num_records;
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
    if (s->last_ticket) s2_ticket_unref(s->last_ticket);
    s2_ticket_ref(b->ticket);
    s->last_ticket = b->ticket;
    s2_runtime_broadcast(s->rt); /* an HTTP/1.1 worker may be waiting for it */
}

/* Conditions are at most 11 (match_seq_num) + 2 + 36 (fencing token) bytes. */
#define CONDITIONS_ROOM 64u

/* under mu */
static int open_batch(s2_append_session *s, s2_error *err) {
    s2_batch *b = calloc(1, sizeof *b);
    if (!b) goto nomem;
    s2_buf_init(&b->frame);
    b->ticket = s2_ticket_new(s->rt);
    if (!b->ticket || s2_buf_reserve(&b->frame, INITIAL_BATCH_BUFFER) != 0) goto nomem;
    b->frame.len = S2_FRAME_HEADER_LEN;
    s->open = b;
    s->open_metered = 0;
    s->open_deadline = s2_now() + s->popts.linger;
    return 0;
nomem:
    s2_batch_free(b);
    return s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory opening a batch");
}

int s2_producer_submit(s2_append_session *s, const s2_record *r, double timeout,
                       s2_ticket **ticket, uint32_t *index, s2_error *err) {
    const s2_producer_options *o = &s->popts;
    size_t m = s2_record_metered_bytes(r);
    *ticket = NULL;
    if (m > o->max_batch_bytes)
        return s2_fail(err, S2_E_INVALID, "invalid",
                       "record: %zu metered bytes is over max_batch_bytes (%zu)", m,
                       o->max_batch_bytes);
    double deadline = timeout < 0 ? -1 : s2_now() + timeout;
    bool wake = false;
    s2_runtime_lock(s->rt);
    for (;;) {
        if (s->state != S2_SESSION_OPEN) {
            if (s->state == S2_SESSION_FAILED) *err = s->failure;
            else s2_fail(err, S2_E_CLOSED, "closed", "the producer is closed");
            s2_runtime_unlock(s->rt);
            return -1;
        }
        size_t inflight = s->stats.inflight_bytes;
        if (inflight == 0 || inflight + m <= s->opts.max_inflight_bytes) break;
        if (!s2_runtime_wait(s->rt, deadline)) {
            s2_runtime_unlock(s->rt);
            s2_fail(err, S2_E_TIMEOUT, "timeout",
                    "no room in the producer within %.3f s (max_inflight_bytes %zu)", timeout,
                    s->opts.max_inflight_bytes);
            err->retryable = true;
            return -1;
        }
    }
    if (s->open && (s->open->num_records + 1 > o->max_batch_records ||
                    s->open_metered + m > o->max_batch_bytes)) {
        s2_producer_seal_locked(s);
        wake = true;
    }
    if (!s->open) {
        if (open_batch(s, err) != 0) {
            s2_runtime_unlock(s->rt);
            return -1;
        }
        wake = true; /* the I/O thread arms the linger timer */
    }
    s2_batch *b = s->open;
    size_t need = s2_record_field_len(r);
    if (s2_buf_reserve(&b->frame, need + CONDITIONS_ROOM) != 0) {
        s2_runtime_unlock(s->rt);
        return s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory adding a record");
    }
    uint8_t *end = s2_record_field_encode(r, b->frame.data + b->frame.len);
    b->frame.len = (size_t)(end - b->frame.data);
    *index = (uint32_t)b->num_records++;
    b->metered += m;
    s->open_metered += m;
    s->stats.records_submitted++;
    s->stats.inflight_bytes += m;
    if (s->stats.inflight_bytes > s->stats.peak_inflight_bytes)
        s->stats.peak_inflight_bytes = s->stats.inflight_bytes;
    s2_ticket_ref(b->ticket);
    *ticket = b->ticket;
    if (b->num_records == o->max_batch_records || s->open_metered == o->max_batch_bytes) {
        s2_producer_seal_locked(s);
        wake = true;
    }
    s2_runtime_unlock(s->rt);
    if (wake) s2_runtime_wake(s->rt);
    return 0;
}

int s2_producer_flush_start(s2_append_session *s, s2_ticket **last, s2_error *err) {
    s2_runtime_lock(s->rt);
    s2_producer_seal_locked(s);
    s2_ticket *t = s->last_ticket;
    if (t) s2_ticket_ref(t);
    bool failed = s->state == S2_SESSION_FAILED;
    if (failed) *err = s->failure;
    s2_runtime_unlock(s->rt);
    s2_runtime_wake(s->rt);
    if (failed) {
        s2_ticket_unref(t);
        return -1;
    }
    *last = t;
    return 0;
}

int s2_producer_flush(s2_append_session *s, double timeout, s2_error *err) {
    s2_runtime_lock(s->rt);
    s2_producer_seal_locked(s);
    s2_ticket *t = s->last_ticket;
    if (t) s2_ticket_ref(t);
    bool failed = s->state == S2_SESSION_FAILED;
    if (failed) *err = s->failure;
    s2_runtime_unlock(s->rt);
    s2_runtime_wake(s->rt);
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

int s2_producer_compress(s2_append_session *s, s2_batch *b, s2_error *err) {
    s2_buf out;
    s2_buf_init(&out);
    int rc = s2_frame_encode(b->frame.data + S2_FRAME_HEADER_LEN,
                             b->frame.len - S2_FRAME_HEADER_LEN, 0, s->opts.compression, &out, err);
    if (rc != 0) {
        s2_buf_free(&out);
        return -1;
    }
    s2_buf_free(&b->frame);
    b->frame = out;
    b->compress_pending = false;
    return 0;
}

bool s2_producer_recover(s2_append_session *s, const s2_error *err) {
    if (!s->popts.idempotent || !err->has_expected_seq_num) return false;
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
