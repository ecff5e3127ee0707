/* s2_session.c — append sessions and their tickets.
 *
 * Caller side (any thread holding the session handle): submit encodes the batch into an
 * S2S frame outside the lock, then under runtime->mu waits for capacity and queues it on
 * `pending`. I/O side (the runtime's thread): moves pending batches to `inflight`, feeds
 * them to the request stream, matches acks FIFO, resolves tickets under mu, and runs the
 * retry policy (s2_retry.c) when the stream fails. The runtime drives it through its ops
 * table (append_ops, or append_http1_ops once the HTTP/1.1 worker posts its batches); an
 * owner such as the producer adds hooks (s2_append_hooks). See s2.h for the thread model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "s2_internal.h"

/* ---- tickets ---------------------------------------------------------------------------- */

s2_ticket *s2_ticket_new(s2_runtime *rt) {
    s2_ticket *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    atomic_init(&t->refs, 1);
    t->rt = rt;
    s2_runtime_ref(rt);
    s2_completion_init(&t->done);
    t->state = S2_TICKET_PENDING;
    return t;
}

void s2_ticket_ref(s2_ticket *t) {
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
}

void s2_ticket_unref(s2_ticket *t) {
    if (t && atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1) {
        s2_runtime *rt = t->rt;
        s2_completion_free(&t->done);
        free(t);
        s2_runtime_unref(rt);
    }
}

s2_ticket_state s2_ticket_result(s2_ticket *t, s2_append_ack *ack, s2_error *err) {
    s2_runtime_lock(t->rt);
    s2_ticket_state st = t->state;
    if (st == S2_TICKET_OK && ack) *ack = t->ack;
    if (st == S2_TICKET_FAILED && err) *err = t->err;
    s2_runtime_unlock(t->rt);
    return st;
}

s2_ticket_state s2_ticket_wait(s2_ticket *t, double timeout) {
    double deadline = timeout < 0 ? -1 : s2_now() + timeout;
    s2_runtime_lock(t->rt);
    while (t->state == S2_TICKET_PENDING && s2_runtime_wait(t->rt, deadline)) {
    }
    s2_ticket_state st = t->state;
    s2_runtime_unlock(t->rt);
    return st;
}

/* Rings the ticket's fd and posts its notice, if anyone asked. under mu */
static void ticket_signal(s2_ticket *t) {
    s2_completion_set_locked(s2_runtime_notices(t->rt), &t->done);
}

/* under mu */
void s2_ticket_resolve_locked(s2_ticket *t, const s2_append_ack *ack) {
    if (t->state != S2_TICKET_PENDING) return;
    t->ack = *ack;
    t->state = S2_TICKET_OK;
    ticket_signal(t);
}

/* under mu */
static void ticket_fail(s2_ticket *t, const s2_error *err) {
    if (t->state != S2_TICKET_PENDING) return;
    t->err = *err;
    t->state = S2_TICKET_FAILED;
    ticket_signal(t);
}

s2_runtime *s2_ticket_runtime(const s2_ticket *t) {
    return t->rt;
}

bool s2_ticket_owned(const s2_ticket *t) {
    return s2_runtime_owned(t->rt);
}

int s2_ticket_fd(s2_ticket *t) {
    s2_runtime_lock(t->rt);
    int fd = s2_completion_fd_locked(&t->done);
    s2_runtime_unlock(t->rt);
    return fd;
}

uint64_t s2_ticket_notice(s2_ticket *t) {
    s2_runtime_lock(t->rt);
    uint64_t id = s2_completion_arm_locked(s2_runtime_notices(t->rt), &t->done);
    s2_runtime_unlock(t->rt);
    return id;
}

/* What a failure dropped, for the stderr report of a session nobody watches any more. */
typedef struct s2_loss {
    size_t batches, records;
} s2_loss;

static void session_fail(s2_append_session *s, const s2_error *err);
static s2_batch *fail_locked(s2_append_session *s, const s2_error *err, s2_loss *loss);
static void report_loss(const s2_append_session *s, const s2_loss *loss, const s2_error *err);
static void reset_stream_state(s2_append_session *s);
static const s2_op_ops append_ops, append_http1_ops;

/* The client's event queue, and who this session's events are about (s2_events.h). */
#define SESSION_EVENTS(s) s2_runtime_events((s)->op.rt)
#define EVENT_SRC(s)                                                                          \
    (&(s2_event_src){(s)->hooks.seal_locked ? "producer" : "append_session", (s)->basin,      \
                     (s)->stream, NULL, NULL})

/* The owner's hooks (the producer's), when set. */
static void seal_locked(s2_append_session *s) { /* under mu */
    if (s->hooks.seal_locked) s->hooks.seal_locked(s->hooks.ud);
}

static double seal_deadline_locked(s2_append_session *s) { /* under mu */
    return s->hooks.seal_deadline_locked ? s->hooks.seal_deadline_locked(s->hooks.ud) : 0;
}

/* A linger that ran out seals the batch being filled. under mu */
static void seal_if_due_locked(s2_append_session *s) {
    double d = seal_deadline_locked(s);
    if (d && s2_now() >= d) seal_locked(s);
}

/* The largest frame buffer kept as a spare (a full batch, compressed or not, is less). */
#define SPARE_MAX (2u * 1024u * 1024u)

/* ---- batches ---------------------------------------------------------------------------- */

void s2_batch_free(s2_batch *b) {
    if (!b) return;
    s2_buf_free(&b->frame);
    s2_ticket_unref(b->ticket);
    free(b);
}

static void free_list(s2_batch *b) {
    while (b) {
        s2_batch *next = b->next;
        s2_batch_free(b);
        b = next;
    }
}

/* ---- HTTP/1.1 fallback --------------------------------------------------------------------- */

/* Posts pending batches one at a time as unary appends (the client's retry policy applies
 * per batch). Runs on the session's own thread; touches only pending (under mu) and the
 * batch it took. Exits when the session is finished or the runtime stops. A batch is taken
 * only while the session is open or closing and the runtime runs (so nothing is posted once
 * the session failed: fail_locked has failed the pending ones), and the batch it took is
 * resolved by its own outcome whatever befell the session meanwhile. */
static void *http1_worker(void *arg) {
    s2_append_session *s = arg;
    s2_runtime *rt = s->op.rt;
    s2_error err;
    s2_frame_decoder dec;
    s2_frame_decoder_init(&dec);
    s2_http *http = s2_http_new(&s->retry_cfg, &err); /* the session's retry settings */
    if (!http) session_fail(s, &err);
    s2_runtime_lock(rt);
    for (;;) {
        while (!s->pending_head && s->state == S2_SESSION_OPEN && !s2_runtime_stopping(rt))
            s2_runtime_wait(rt, -1);
        if (s2_runtime_stopping(rt) || s->state == S2_SESSION_FAILED) break;
        s2_batch *b = s->pending_head;
        if (!b) { /* closing and drained */
            s->state = S2_SESSION_CLOSED;
            s2_runtime_broadcast(rt);
            break;
        }
        s->pending_head = b->next;
        if (!s->pending_head) s->pending_tail = NULL;
        b->next = NULL;
        s2_runtime_unlock(rt);

        /* The batch is an S2S frame (maybe compressed): its payload is the protobuf body.
         * A compressed payload is a whole zstd frame or gzip member, so it goes out as it
         * is, with Content-Encoding; a plain one as the decoder hands it out. */
        s2_frame f;
        s2_append_ack ack;
        int rc = -1;
        s2_frame_decoder_reset(&dec);
        unsigned cc = b->frame.len > S2_FRAME_HEADER_LEN
                          ? (b->frame.data[3] & S2_FRAME_COMPRESSION_MASK) >> 5
                          : 0;
        if (s2_frame_feed(&dec, b->frame.data, b->frame.len, &err) == 0 &&
            s2_frame_next(&dec, &f, &err) == 1) {
            s2_request req = {
                .method = "POST", .basin = s->basin, .path = s->path,
                .content_type = "application/protobuf", .accept = "application/protobuf",
                .body = f.payload, .body_len = f.len, .kind = S2_CALL_APPEND,
                .encryption_key = s->encryption_key,
            };
            if (cc) {
                req.body = b->frame.data + S2_FRAME_HEADER_LEN;
                req.body_len = b->frame.len - S2_FRAME_HEADER_LEN;
                req.content_encoding = s2_compression_name((s2_compression)cc);
            }
            s2_response resp;
            rc = s2_http_call(http, &req, &resp, &err);
            if (rc == 0) {
                rc = s2_append_ack_decode(resp.body.data, resp.body.len, &ack, &err);
                if (rc == 0 && ack.end.seq_num - ack.start.seq_num != b->num_records)
                    rc = s2_fail(&err, S2_E_PROTOCOL, "protocol_error",
                                 "ack covers %llu records, the batch had %zu",
                                 (unsigned long long)(ack.end.seq_num - ack.start.seq_num),
                                 b->num_records);
            }
            s2_buf_free(&resp.body);
        }
        s2_batch *dropped = NULL;
        s2_loss loss = {0, 0};
        const s2_error *why = &err;
        s2_runtime_lock(rt);
        /* The session may have failed while the POST was out (the runtime shutting down):
         * fail_locked then failed what was pending and zeroed the in-flight counters, but
         * not this batch, which only this thread holds. Its ticket tells what happened to
         * it: an acked batch landed, and a ticket failed anyway would make the caller write
         * it again. */
        bool failed = s->state == S2_SESSION_FAILED;
        if (rc == 0) {
            s2_ticket_resolve_locked(b->ticket, &ack);
            if (!failed) {
                s->stats.inflight_bytes -= b->metered;
                s->stats.inflight_batches--;
            }
            s->stats.batches_acked++;
        } else if (failed) {
            ticket_fail(b->ticket, &err); /* its own error: whether it may have landed */
            if (s->report_loss) loss = (s2_loss){1, b->num_records};
        } else {
            /* Later batches must not land after a gap: the session fails with this batch. */
            s2_event_session_failed(SESSION_EVENTS(s), EVENT_SRC(s), &err); /* before waking */
            ticket_fail(b->ticket, &err);
            dropped = fail_locked(s, &err, &loss);
            if (s->report_loss) {
                loss.batches++;
                loss.records += b->num_records;
            }
        }
        s2_error why_copy = *why; /* s->failure is read under mu */
        s2_runtime_broadcast(rt);
        s2_runtime_unlock(rt);
        report_loss(s, &loss, &why_copy);
        s2_batch_free(b);
        free_list(dropped);
        s2_runtime_lock(rt);
    }
    s->worker_done = true;
    s2_runtime_broadcast(rt);
    s2_runtime_wake_op(rt, &s->op); /* done: the I/O thread drops it (under mu: s lives) */
    s2_runtime_unlock(rt);
    s2_http_free(http);
    s2_frame_decoder_free(&dec);
    return NULL;
}

/* under mu */
static int start_worker(s2_append_session *s, s2_error *err) {
    s->http1 = true;
    /* The I/O thread leaves it to the worker now. (Set before the start when chosen at
     * open: written here only on the I/O thread, under mu.) */
    if (s->op.ops != &append_http1_ops) s->op.ops = &append_http1_ops;
    if (s->worker_started) return 0;
    int rc = s2_thread_start(&s->worker, "s2-http1", http1_worker, s, false);
    if (rc != 0)
        return s2_fail(err, S2_E_NOMEM, "out_of_memory", "cannot start the HTTP/1.1 worker: %s",
                       strerror(rc));
    s->worker_started = true;
    return 0;
}

static void append_switch_http1(s2_op *op) {
    s2_append_session *s = (s2_append_session *)op;
    s2_error err;
    s->op.conn = NULL; /* the connection is going; nothing was sent on it */
    s->op.stream_id = 0;
    s2_runtime_lock(s->op.rt);
    if (s->inflight_head) { /* back in front of what callers queued since */
        s->inflight_tail->next = s->pending_head;
        if (!s->pending_head) s->pending_tail = s->inflight_tail;
        s->pending_head = s->inflight_head;
    }
    s->inflight_head = s->inflight_tail = NULL;
    int rc = start_worker(s, &err);
    s2_runtime_broadcast(s->op.rt);
    s2_runtime_unlock(s->op.rt);
    reset_stream_state(s);
    if (rc != 0) session_fail(s, &err);
}

/* ---- open / submit / close (caller side) -------------------------------------------------- */

/* Allocates a session, not yet known to the runtime. */
s2_append_session *s2_session_new(s2_runtime *rt, const char *basin, const char *stream,
                                  const s2_session_options *opts, s2_error *err) {
    if (opts->encryption_key && !s2_encryption_key_valid(opts->encryption_key)) {
        s2_fail(err, S2_E_INVALID, "invalid", "encryption_key must be 1 to %u base64 characters",
                S2_MAX_ENCRYPTION_KEY);
        return NULL;
    }
    s2_append_session *s = calloc(1, sizeof *s);
    s2_buf path;
    s2_buf_init(&path);
    if (!s) goto nomem;
    s->op.rt = rt;
    s->op.ops = &append_ops;
    s->opts = *opts;
    s->encryption_key = opts->encryption_key ? strdup(opts->encryption_key) : NULL;
    s->opts.encryption_key = s->encryption_key;
    s2_retry_config_for(s2_runtime_config(rt), &opts->retry, &s->retry_cfg);
    s->rng = s2_retry_seed(s);
    s->basin = strdup(basin);
    s->stream = strdup(stream);
    if (!s->basin || !s->stream || (opts->encryption_key && !s->encryption_key) ||
        s2_stream_records_path(stream, &path) != 0)
        goto nomem;
    s->path = (char *)path.data;
    s->op.basin = s->basin;
    s->op.refs = 2; /* the caller's handle and the runtime's list */
    s2_buf_init(&s->error_body);
    s2_frame_decoder_init(&s->dec);
    s2_runtime_ref(rt); /* dropped by session_free */
    return s;
nomem:
    if (s) {
        free(s->basin);
        free(s->stream);
        s2_free_secret(s->encryption_key);
        free(s);
    }
    s2_buf_free(&path);
    s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory opening a session");
    return NULL;
}

static void session_free(s2_append_session *s);

int s2_append_session_start(s2_append_session *s, s2_error *err) {
    s2_runtime *rt = s->op.rt;
    s2_runtime_lock(rt);
    bool http1 = s->opts.http1 || s2_runtime_http1(rt);
    s2_runtime_unlock(rt);
    if (http1) { /* before the I/O thread can see the session */
        s->http1 = true;
        s->op.ops = &append_http1_ops;
    }
    if (s2_runtime_start_op(rt, &s->op, err) != 0) {
        session_free(s);
        return -1;
    }
    s2_runtime_lock(rt);
    int rc = http1 ? start_worker(s, err) : 0;
    s2_runtime_unlock(rt);
    if (rc != 0) {
        session_fail(s, err);
        s2_append_session_release(s);
        return -1;
    }
    return 0;
}

s2_append_session *s2_append_session_open(s2_runtime *rt, const char *basin, const char *stream,
                                          const s2_session_options *opts, s2_error *err) {
    s2_append_session *s = s2_session_new(rt, basin, stream, opts, err);
    if (!s || s2_append_session_start(s, err) != 0) return NULL;
    return s;
}

/* The error a submit gets once the session no longer takes batches. under mu */
static int refuse(s2_append_session *s, s2_error *err) {
    if (s->state == S2_SESSION_FAILED) {
        *err = s->failure;
        return -1;
    }
    s2_fail(err, S2_E_CLOSED, "closed", "the append session is closed");
    return -1;
}

int s2_append_session_submit(s2_append_session *s, const s2_append_input *in, double timeout,
                             s2_ticket **ticket, s2_error *err) {
    size_t metered;
    *ticket = NULL;
    if (s2_append_input_validate(in, &metered, err) != 0) return -1;
    s2_batch *b = calloc(1, sizeof *b);
    if (!b) return s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory queuing a batch");
    s2_runtime_lock(s->op.rt);
    b->frame = s2_session_take_spare_locked(s);
    s2_runtime_unlock(s->op.rt);
    if (s2_frame_append_input(in, s->opts.compression, &b->frame, err) != 0) {
        s2_batch_free(b);
        return -1;
    }
    b->metered = metered;
    b->num_records = in->num_records;
    b->ticket = s2_ticket_new(s->op.rt);
    if (!b->ticket) {
        s2_batch_free(b);
        return s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory queuing a batch");
    }

    double deadline = timeout < 0 ? -1 : s2_now() + timeout;
    s2_runtime_lock(s->op.rt);
    for (;;) {
        if (s->state != S2_SESSION_OPEN) {
            refuse(s, err);
            goto refused;
        }
        s2_session_stats *st = &s->stats;
        /* An empty session always takes one batch, whatever its size. */
        bool fits = st->inflight_batches == 0 ||
                    (st->inflight_bytes + metered <= s->opts.max_inflight_bytes &&
                     (!s->opts.max_inflight_batches ||
                      st->inflight_batches < s->opts.max_inflight_batches));
        if (fits) break;
        if (!s2_runtime_wait(s->op.rt, deadline)) {
            s2_fail(err, S2_E_TIMEOUT, "timeout",
                    "no room in the session within %.3f s (max_inflight_bytes %zu, "
                    "max_inflight_batches %zu)",
                    timeout, s->opts.max_inflight_bytes, s->opts.max_inflight_batches);
            err->retryable = true;
            goto refused;
        }
    }
    s->stats.inflight_bytes += metered;
    if (s->stats.inflight_bytes > s->stats.peak_inflight_bytes)
        s->stats.peak_inflight_bytes = s->stats.inflight_bytes;
    s2_session_enqueue_locked(s, b);
    s2_ticket_ref(b->ticket);
    *ticket = b->ticket;
    if (s->http1) s2_runtime_broadcast(s->op.rt); /* the worker waits on cond */
    s2_runtime_unlock(s->op.rt);
    s2_runtime_wake_op(s->op.rt, &s->op);
    return 0;
refused:
    s2_runtime_unlock(s->op.rt);
    s2_batch_free(b);
    return -1;
}

void s2_session_enqueue_locked(s2_append_session *s, s2_batch *b) {
    s2_session_stats *st = &s->stats;
    st->inflight_batches++;
    st->batches_submitted++;
    if (st->inflight_batches > st->peak_inflight_batches)
        st->peak_inflight_batches = st->inflight_batches;
    if (s->pending_tail) s->pending_tail->next = b;
    else s->pending_head = b;
    s->pending_tail = b;
}

int s2_append_session_close(s2_append_session *s, double timeout, s2_error *err) {
    double deadline = timeout < 0 ? -1 : s2_now() + timeout;
    s2_runtime_lock(s->op.rt);
    seal_locked(s); /* no extra linger on close */
    if (s->state == S2_SESSION_OPEN) s->state = S2_SESSION_CLOSING;
    s2_runtime_broadcast(s->op.rt);
    s2_runtime_unlock(s->op.rt);
    s2_runtime_wake_op(s->op.rt, &s->op);
    s2_runtime_lock(s->op.rt);
    while (s->state == S2_SESSION_CLOSING) {
        if (!s2_runtime_wait(s->op.rt, deadline)) {
            s2_runtime_unlock(s->op.rt);
            s2_fail(err, S2_E_TIMEOUT, "timeout",
                    "close: not every batch was acked within %.3f s (still draining)", timeout);
            err->retryable = true;
            return -1;
        }
    }
    int rc = 0;
    if (s->state == S2_SESSION_FAILED) {
        *err = s->failure;
        rc = -1;
    }
    s2_runtime_unlock(s->op.rt);
    return rc;
}

bool s2_append_session_finished(s2_append_session *s) {
    s2_runtime_lock(s->op.rt);
    bool done = s->state == S2_SESSION_CLOSED || s->state == S2_SESSION_FAILED;
    s2_runtime_unlock(s->op.rt);
    return done;
}

static void append_drain_locked(s2_op *op) {
    s2_append_session *s = (s2_append_session *)op;
    s->report_loss = true;
    seal_locked(s); /* no linger: the batch goes now */
    if (s->state == S2_SESSION_OPEN) s->state = S2_SESSION_CLOSING;
}

static bool append_drained_locked(s2_op *op) {
    s2_append_session *s = (s2_append_session *)op;
    if (s->state == S2_SESSION_FAILED || s->state == S2_SESSION_CLOSED) return true;
    /* inflight_batches counts every sealed batch not acked yet (pending, on the wire, or
     * being posted by the HTTP/1.1 worker); a producer's open batch was sealed by the drain,
     * and a closing session opens no new one. */
    return s->stats.inflight_batches == 0;
}

s2_runtime *s2_append_session_runtime(const s2_append_session *s) {
    return s->op.rt;
}

bool s2_append_session_owned(const s2_append_session *s) {
    return s2_runtime_owned(s->op.rt);
}

void s2_append_session_stats(s2_append_session *s, s2_session_stats *out) {
    s2_runtime_lock(s->op.rt);
    *out = s->stats;
    s2_runtime_unlock(s->op.rt);
}

void s2_append_session_release(s2_append_session *s) {
    s2_runtime *rt = s->op.rt;
    s2_runtime_ref(rt); /* past the unlock the I/O thread may free s, and its runtime ref */
    s2_runtime_lock(s->op.rt);
    s->released = true;
    s->report_loss = true; /* its tickets are gone with the handle */
    seal_locked(s);
    if (s->state == S2_SESSION_OPEN) s->state = S2_SESSION_CLOSING;
    s2_runtime_broadcast(s->op.rt);
    s->op.refs--;
    bool last = s->op.refs == 0;
    s2_runtime_unlock(rt);
    if (last) session_free(s);
    else s2_runtime_wake(rt);
    s2_runtime_unref(rt);
}

static void session_free(s2_append_session *s) {
    if (s->worker_started) pthread_join(s->worker, NULL);
    free_list(s->pending_head);
    free_list(s->inflight_head);
    if (s->hooks.destroy) s->hooks.destroy(s->hooks.ud);
    s2_buf_free(&s->error_body);
    s2_buf_free(&s->spare);
    s2_frame_decoder_free(&s->dec);
    free(s->basin);
    free(s->stream);
    free(s->path);
    s2_free_secret(s->encryption_key);
    s2_runtime *rt = s->op.rt;
    free(s);
    s2_runtime_unref(rt);
}

/* ---- I/O side ------------------------------------------------------------------------------ */

static void reset_stream_state(s2_append_session *s) {
    s->op.stream_id = 0;
    s->op.conn = NULL;
    s->op.http_status = 0;
    s->op.retry_after_ms = 0;
    s->error_body.len = 0;
    s->eof_sent = false;
    s->eof_deadline = 0;
    s->probing = false;
    s->draining = false;
    s2_frame_decoder_reset(&s->dec);
    for (s2_batch *b = s->inflight_head; b; b = b->next) {
        b->sent_before |= b->written;
        b->written = false;
        b->deadline = 0;
    }
    s->cursor = s->inflight_head;
    s->cursor_off = 0;
}

/* Tells stderr what a session that nobody watches any more could not deliver: its tickets
 * are unreachable, so this is the only trace of the loss. Outside mu (a full stderr pipe
 * must not stall the client). */
static void report_loss(const s2_append_session *s, const s2_loss *loss, const s2_error *err) {
    /* A records_discarded event for the client's handler, or else the stderr line. */
    s2_event_records_discarded(SESSION_EVENTS(s), EVENT_SRC(s), loss->records, loss->batches,
                               err);
}

static void count_loss(const s2_batch *b, s2_loss *loss) {
    for (; b; b = b->next) {
        loss->batches++;
        loss->records += b->num_records;
    }
}

/* under mu: marks the session failed, fails every outstanding ticket it still holds in
 * pending and inflight, and returns the pending list for the caller to free outside mu.
 * One locked step, so nobody sees a failed ticket while the session still takes batches.
 * When the session's losses are to be reported, *loss counts what it failed. */
static s2_batch *fail_locked(s2_append_session *s, const s2_error *err, s2_loss *loss) {
    if (s->state != S2_SESSION_FAILED && s->state != S2_SESSION_CLOSED) {
        s->state = S2_SESSION_FAILED;
        s->failure = *err;
    }
    *loss = (s2_loss){0, 0};
    if (s->report_loss) {
        count_loss(s->inflight_head, loss);
        count_loss(s->pending_head, loss);
    }
    for (s2_batch *b = s->inflight_head; b; b = b->next) ticket_fail(b->ticket, err);
    for (s2_batch *b = s->pending_head; b; b = b->next) ticket_fail(b->ticket, err);
    s2_batch *open = s->hooks.take_open_locked ? s->hooks.take_open_locked(s->hooks.ud) : NULL;
    if (open) { /* a producer's records not sealed yet fail too */
        if (s->report_loss) count_loss(open, loss);
        ticket_fail(open->ticket, err);
        s2_session_enqueue_locked(s, open); /* freed with pending below */
    }
    s->stats.inflight_bytes = 0;
    s->stats.inflight_batches = 0;
    s2_batch *pending = s->pending_head;
    s->pending_head = s->pending_tail = NULL;
    s2_runtime_broadcast(s->op.rt);
    return pending;
}

/* Fails the session for good: every outstanding ticket gets err; later submits too. */
static void session_fail(s2_append_session *s, const s2_error *err) {
    s2_runtime_cancel_stream(s->op.rt, &s->op);
    s2_loss loss;
    s2_runtime_lock(s->op.rt);
    bool live = s->state != S2_SESSION_FAILED && s->state != S2_SESSION_CLOSED;
    s2_runtime_unlock(s->op.rt);
    /* Before the tickets fail: whoever they wake finds the event queued. Not for the
     * client's own close or drain. */
    if (live && err->kind != S2_E_CLOSED)
        s2_event_session_failed(SESSION_EVENTS(s), EVENT_SRC(s), err);
    s2_runtime_lock(s->op.rt);
    s2_batch *pending = fail_locked(s, err, &loss);
    s2_runtime_unlock(s->op.rt);
    report_loss(s, &loss, err);
    free_list(pending);
    free_list(s->inflight_head);
    s->inflight_head = s->inflight_tail = NULL;
    s->retry_at = 0;
    reset_stream_state(s);
}

static void append_abort(s2_op *op, const s2_error *err) {
    session_fail((s2_append_session *)op, err);
}

/* One attempt failed (stream error, terminal frame, ack timeout, lost connection). Either
 * schedule a reconnect that resends every unacked batch, or fail the session. */
static void attempt_failed(s2_append_session *s, const s2_error *err) {
    const s2_config *cfg = &s->retry_cfg;
    bool any_written = false;
    for (s2_batch *b = s->inflight_head; b; b = b->next) any_written |= b->written;
    /* Before the reset below folds this stream's writes into sent_before: only batches
     * written on an earlier, failed stream may have landed unseen. */
    bool recovered = s->hooks.recover && s->hooks.recover(s->hooks.ud, err);
    s2_runtime_cancel_stream(s->op.rt, &s->op);
    reset_stream_state(s);

    s2_runtime_lock(s->op.rt);
    bool closing = s->state == S2_SESSION_CLOSING;
    bool idle = !s->inflight_head && !s->pending_head;
    s2_runtime_unlock(s->op.rt);
    if (idle) {
        /* Nothing was at stake: a closing session is done, an open one reconnects when the
         * next batch comes. */
        if (closing) {
            s2_runtime_lock(s->op.rt);
            s->state = S2_SESSION_CLOSED;
            s2_runtime_broadcast(s->op.rt);
            s2_runtime_unlock(s->op.rt);
        }
        return;
    }
    if (recovered) {
        /* Resent batches had landed already: their tickets are resolved; go on at once. */
        s->attempt = 0;
        s->retry_at = s2_now();
        s->resend = s->inflight_head != NULL;
        return;
    }
    double now = s2_now();
    if (strcmp(err->code, "server_draining") == 0 &&
        s2_retry_take_handover(&s->last_advised, now)) {
        /* A planned handover, like an advised reconnect: reconnect at once, no attempt used
         * (the server acked or refused everything it took, so a resend is safe). Once per
         * 60 s; more often, it counts as a failure like any other. */
        s->retry_at = now;
        s->resend = true;
        s2_runtime_lock(s->op.rt);
        s->stats.reconnects++;
        s2_runtime_unlock(s->op.rt);
        s2_event_reconnect(SESSION_EVENTS(s), EVENT_SRC(s), "server_draining", err);
        return;
    }
    s2_error final = *err;
    if (!s2_retry_decide(cfg, s->attempt + 1, any_written, &final)) {
        session_fail(s, &final);
        return;
    }
    double delay = s2_backoff_with(cfg, s->attempt, err->retry_after_ms, &s->rng);
    s->retry_at = s2_now() + delay;
    s->attempt++;
    s->resend = true;
    s2_runtime_lock(s->op.rt);
    s->stats.reconnects++;
    s2_runtime_unlock(s->op.rt);
    s2_event_retry(SESSION_EVENTS(s), EVENT_SRC(s), s->attempt, cfg->max_attempts, delay, err);
    s2_event_reconnect(SESSION_EVENTS(s), EVENT_SRC(s), "retry", err);
}

static void append_service(s2_op *op) {
    s2_append_session *s = (s2_append_session *)op;
    /* Take what callers queued. */
    s2_runtime_lock(s->op.rt);
    seal_if_due_locked(s);
    s2_batch *taken = s->pending_head;
    s->pending_head = s->pending_tail = NULL;
    s2_session_state state = s->state;
    s2_runtime_unlock(s->op.rt);
    if (state == S2_SESSION_FAILED || state == S2_SESSION_CLOSED) {
        free_list(taken); /* cannot happen: failing empties pending; kept for safety */
        return;
    }
    for (s2_batch *b = taken; b; b = b->next) {
        s2_error err;
        if (b->compress_pending && s->hooks.compress &&
            s->hooks.compress(s->hooks.ud, b, &err) != 0) {
            s2_batch *rest = b; /* put them back so session_fail fails their tickets */
            s2_runtime_lock(s->op.rt);
            while (rest->next) rest = rest->next;
            rest->next = s->pending_head;
            s->pending_head = taken;
            if (!s->pending_tail) s->pending_tail = rest;
            s2_runtime_unlock(s->op.rt);
            session_fail(s, &err);
            return;
        }
    }
    if (taken) {
        if (s->inflight_tail) s->inflight_tail->next = taken;
        else s->inflight_head = taken;
        if (!s->cursor) {
            s->cursor = taken;
            s->cursor_off = 0;
        }
        while (taken->next) taken = taken->next;
        s->inflight_tail = taken;
    }
    if (s->retry_at) return; /* waiting out a backoff */
    if (!s->inflight_head && !s->op.stream_id) {
        if (state == S2_SESSION_CLOSING) {
            s2_runtime_lock(s->op.rt);
            s->state = S2_SESSION_CLOSED;
            s2_runtime_broadcast(s->op.rt);
            s2_runtime_unlock(s->op.rt);
        }
        return;
    }
    if (!s->op.stream_id) {
        s2_error err;
        int rc = s2_runtime_open_stream(s->op.rt, &s->op, &err);
        if (rc < 0) attempt_failed(s, &err);
        if (rc == 0 && s->resend) {
            /* Resend the oldest batch alone first: if the new connection fails too, only it
             * went out again, not the whole window (resend amplification under cuts). */
            s->resend = false;
            s->probing = s->inflight_head && s->inflight_head->next;
        }
        return; /* rc 1: the connection is still coming up */
    }
    if (s->cursor || ((state == S2_SESSION_CLOSING || s->draining) && !s->eof_sent))
        s2_runtime_resume_stream(s->op.rt, &s->op);
}

/* True when the stream's end of the body went out and nothing written on it waits for an
 * ack (the inflight batches, if any, were held back by draining): only the server's end of
 * the response is awaited, which eof_deadline bounds. The timer and its deadline must agree,
 * or the I/O thread would wake for a deadline nobody acts on, again and again. */
static bool eof_wait_only(const s2_append_session *s) {
    return s->op.stream_id && s->eof_sent && s->eof_deadline &&
           (!s->inflight_head || !s->inflight_head->written);
}

static double append_next_deadline(s2_op *op) {
    s2_append_session *s = (s2_append_session *)op;
    s2_runtime_lock(s->op.rt);
    double d = seal_deadline_locked(s); /* a producer's linger */
    s2_runtime_unlock(s->op.rt);
    double more[3] = {s->retry_at, s->inflight_head ? s->inflight_head->deadline : 0,
                      eof_wait_only(s) ? s->eof_deadline : 0};
    for (int i = 0; i < 3; i++)
        if (more[i] && (!d || more[i] < d)) d = more[i];
    return d;
}

static void append_check_timers(s2_op *op, double now) {
    s2_append_session *s = (s2_append_session *)op;
    if (s->retry_at && now >= s->retry_at) {
        s->retry_at = 0;
        append_service(op);
        return;
    }
    s2_batch *head = s->inflight_head;
    if (head && head->deadline && now >= head->deadline) {
        s2_error err;
        s2_fail(&err, S2_E_TIMEOUT, "timeout", "no ack within the request timeout of %.3f s",
                s2_runtime_config(s->op.rt)->request_timeout);
        err.retryable = true;
        /* The connection may be what stalled: the retry must not queue behind it. */
        s2_runtime_retire_conn(s->op.rt, &s->op);
        attempt_failed(s, &err);
        return;
    }
    if (eof_wait_only(s) && now >= s->eof_deadline) {
        /* Our end of the body went out and everything written is acked, but the server never
         * ended the response: nothing is at stake, so stop waiting. Batches held back by a
         * drain go out on a fresh stream now. */
        s2_runtime_cancel_stream(s->op.rt, &s->op);
        reset_stream_state(s);
        if (head) {
            s->resend = true;
            s2_runtime_lock(s->op.rt);
            s->stats.reconnects++;
            s2_runtime_unlock(s->op.rt);
            s2_event_reconnect(SESSION_EVENTS(s), EVENT_SRC(s), "stream_ended", NULL);
            return;
        }
        s2_runtime_lock(s->op.rt);
        if (s->state == S2_SESSION_CLOSING) s->state = S2_SESSION_CLOSED;
        s2_runtime_broadcast(s->op.rt);
        s2_runtime_unlock(s->op.rt);
    }
}

static void protocol_failure(s2_append_session *s, const char *fmt, unsigned long long a,
                             unsigned long long b) {
    s2_error err;
    s2_fail(&err, S2_E_PROTOCOL, "protocol_error", fmt, a, b);
    session_fail(s, &err);
}

/* One AppendAck: resolve the oldest batch. */
static void handle_ack(s2_append_session *s, const s2_append_ack *ack) {
    s2_batch *b = s->inflight_head;
    if (!b || b == s->cursor) {
        protocol_failure(s, "ack for a batch that was not sent (start %llu, end %llu)",
                         (unsigned long long)ack->start.seq_num,
                         (unsigned long long)ack->end.seq_num);
        return;
    }
    if (ack->end.seq_num < ack->start.seq_num ||
        ack->end.seq_num - ack->start.seq_num != b->num_records) {
        protocol_failure(s, "ack covers %llu records, the batch had %llu",
                         (unsigned long long)(ack->end.seq_num - ack->start.seq_num),
                         (unsigned long long)b->num_records);
        return;
    }
    if (s->have_last_end && ack->end.seq_num <= s->last_end) {
        protocol_failure(s, "ack end %llu does not advance past %llu",
                         (unsigned long long)ack->end.seq_num, (unsigned long long)s->last_end);
        return;
    }
    s->attempt = 0; /* progress: the retry budget starts over */
    s2_session_pop_acked(s, ack);
    if (s->probing) { /* the new stream works: pipeline the rest */
        s->probing = false;
        s2_runtime_resume_stream(s->op.rt, &s->op);
    }
}

void s2_session_pop_acked(s2_append_session *s, const s2_append_ack *ack) {
    s2_batch *b = s->inflight_head;
    s->inflight_head = b->next;
    if (!s->inflight_head) s->inflight_tail = NULL;
    s->have_last_end = true;
    s->last_end = ack->end.seq_num;
    s2_buf drop = {0};
    s2_runtime_lock(s->op.rt);
    s2_ticket_resolve_locked(b->ticket, ack);
    s->stats.inflight_bytes -= b->metered;
    s->stats.inflight_batches--;
    s->stats.batches_acked++;
    if (s->inflight_head || s->pending_head || seal_deadline_locked(s)) {
        s2_buf_keep(&s->spare, &b->frame, SPARE_MAX);
    } else { /* idle: keep nothing */
        drop = s2_buf_take(&s->spare);
    }
    s2_runtime_broadcast(s->op.rt);
    s2_runtime_unlock(s->op.rt);
    s2_buf_free(&drop);
    s2_batch_free(b);
}

s2_buf s2_session_take_spare_locked(s2_append_session *s) {
    return s2_buf_take(&s->spare);
}

/* The server is going away (flag 0x10 on a frame): stop writing after the batch in progress,
 * end the request body, let the server ack what it took, then resend the rest on a new
 * connection. A planned handover: it uses no retry attempt. At most once per 60 s, so a
 * server that keeps advising cannot make the session spin. */
static void advise_reconnect(s2_append_session *s) {
    double now = s2_now();
    if (s->draining || !s2_retry_take_handover(&s->last_advised, now)) return;
    s->draining = true;
    s2_runtime_retire_conn(s->op.rt, &s->op);
    s2_runtime_resume_stream(s->op.rt, &s->op);
}

static void append_on_data(s2_op *op, const uint8_t *p, size_t n) {
    s2_append_session *s = (s2_append_session *)op;
    if (s->op.http_status != 200) {
        /* An error answer: keep (a bounded part of) its JSON body for on_stream_close. */
        size_t room = s->error_body.len < 65536 ? 65536 - s->error_body.len : 0;
        if (room) s2_buf_append(&s->error_body, p, n < room ? n : room);
        return;
    }
    s2_error err;
    if (s2_frame_feed(&s->dec, p, n, &err) != 0) {
        session_fail(s, &err);
        return;
    }
    s2_frame f;
    int rc;
    int32_t stream = s->op.stream_id;
    while (s->op.stream_id == stream && stream && (rc = s2_frame_next(&s->dec, &f, &err)) != 0) {
        if (rc < 0) {
            session_fail(s, &err);
            return;
        }
        if (f.terminal) {
            s2_error_from_response(&err, f.status, f.payload, f.len);
            attempt_failed(s, &err);
            return;
        }
        s2_append_ack ack;
        if (s2_append_ack_decode(f.payload, f.len, &ack, &err) != 0) {
            session_fail(s, &err);
            return;
        }
        if (f.reconnect) advise_reconnect(s);
        handle_ack(s, &ack);
    }
}

static void append_on_stream_close(s2_op *op, uint32_t h2_error) {
    s2_append_session *s = (s2_append_session *)op;
    s2_error err;
    if (h2_error != 0) {
        s2_fail(&err, S2_E_CONNECTION, "connection_failed", "the server reset the stream (%s)",
                nghttp2_http2_strerror(h2_error));
        err.retryable = true;
        /* REFUSED_STREAM guarantees the server did not process anything. */
        err.no_side_effects = h2_error == NGHTTP2_REFUSED_STREAM;
    } else if (s->op.http_status != 200) {
        s2_error_from_response(&err, s->op.http_status ? s->op.http_status : 502, s->error_body.data,
                               s->error_body.len);
        err.retry_after_ms = s->op.retry_after_ms;
    } else if (s->inflight_head && s->draining) {
        /* The advised handover: resend what was not acked, on a fresh stream, now. */
        s2_runtime_cancel_stream(s->op.rt, &s->op);
        reset_stream_state(s);
        s->resend = true;
        s2_runtime_lock(s->op.rt);
        s->stats.reconnects++;
        s2_runtime_unlock(s->op.rt);
        s2_event_reconnect(SESSION_EVENTS(s), EVENT_SRC(s), "reconnect_advised", NULL);
        return;
    } else if (s->inflight_head) {
        s2_fail(&err, S2_E_CONNECTION, "connection_failed",
                "the server ended the session with batches not yet acked");
        err.retryable = true;
    } else {
        /* Clean end: everything acked and our EOF answered. */
        s2_runtime_cancel_stream(s->op.rt, &s->op);
        reset_stream_state(s);
        s2_runtime_lock(s->op.rt);
        if (s->state == S2_SESSION_CLOSING) {
            s->state = S2_SESSION_CLOSED;
            s2_runtime_broadcast(s->op.rt);
        }
        s2_runtime_unlock(s->op.rt);
        return;
    }
    attempt_failed(s, &err);
}

static void append_on_conn_lost(s2_op *op, const s2_error *err) {
    attempt_failed((s2_append_session *)op, err);
}

static ssize_t append_read_body(s2_op *op, uint8_t *buf, size_t len, uint32_t *flags) {
    s2_append_session *s = (s2_append_session *)op;
    size_t copied = 0;
    double deadline = 0;
    /* Draining: only the rest of a batch already begun may go out. Probing after a
     * reconnect: only the oldest batch, until it is acked. */
    while (copied < len && s->cursor && !(s->draining && s->cursor_off == 0) &&
           !(s->probing && s->cursor != s->inflight_head)) {
        s2_batch *b = s->cursor;
        size_t n = b->frame.len - s->cursor_off;
        if (n > len - copied) n = len - copied;
        if (s->cursor_off == 0) {
            /* The ack clock starts with the batch's first byte: a peer that stops taking
             * bytes mid-batch cannot hold the session beyond the request timeout. */
            if (!deadline) deadline = s2_now() + s2_runtime_config(s->op.rt)->request_timeout;
            b->deadline = deadline;
            if (b->sent_before) {
                s2_runtime_lock(s->op.rt);
                s->stats.batches_resent++;
                s2_runtime_unlock(s->op.rt);
            }
        }
        memcpy(buf + copied, b->frame.data + s->cursor_off, n);
        copied += n;
        s->cursor_off += n;
        b->written = true;
        if (s->cursor_off == b->frame.len) {
            s->cursor = b->next;
            s->cursor_off = 0;
        }
    }
    if (copied) return (ssize_t)copied;
    s2_runtime_lock(s->op.rt);
    bool closing = (s->state == S2_SESSION_CLOSING && !s->pending_head) || s->draining;
    s2_runtime_unlock(s->op.rt);
    if (closing && !s->probing) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        s->eof_sent = true;
        s->eof_deadline = s2_now() + s2_runtime_config(s->op.rt)->request_timeout;
        return 0;
    }
    return NGHTTP2_ERR_DEFERRED;
}

static bool append_done(s2_op *op) {
    s2_append_session *s = (s2_append_session *)op;
    s2_runtime_lock(s->op.rt);
    bool done = (s->state == S2_SESSION_CLOSED || s->state == S2_SESSION_FAILED) && !s->op.stream_id &&
                (!s->worker_started || s->worker_done);
    s2_runtime_unlock(s->op.rt);
    return done;
}

static int append_request(s2_op *op, s2_stream_request *req, s2_error *err) {
    s2_append_session *s = (s2_append_session *)op;
    req->method = "POST";
    req->accept_encoding = s->opts.compression;
    req->encryption_key = s->encryption_key;
    if (s2_buf_append_str(&req->path, s->path) != 0)
        return s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory opening a stream");
    return 0;
}

static void append_free(s2_op *op) {
    session_free((s2_append_session *)op);
}

static bool append_worker_busy_locked(s2_op *op) {
    s2_append_session *s = (s2_append_session *)op;
    return s->worker_started && !s->worker_done;
}

/* Over HTTP/1.1 the worker does the work: the I/O thread only runs a producer's linger. */
static void http1_service(s2_op *op) {
    s2_append_session *s = (s2_append_session *)op;
    s2_runtime_lock(s->op.rt);
    seal_if_due_locked(s);
    s2_runtime_unlock(s->op.rt);
}

static double http1_next_deadline(s2_op *op) {
    s2_append_session *s = (s2_append_session *)op;
    s2_runtime_lock(s->op.rt);
    double d = seal_deadline_locked(s);
    s2_runtime_unlock(s->op.rt);
    return d;
}

static const s2_op_ops append_ops = {
    .kind = "append",
    .service = append_service,
    .next_deadline = append_next_deadline,
    .check_timers = append_check_timers,
    .request = append_request,
    .on_data = append_on_data,
    .on_stream_close = append_on_stream_close,
    .read_body = append_read_body,
    .on_conn_lost = append_on_conn_lost,
    .switch_http1 = append_switch_http1,
    .abort = append_abort,
    .done = append_done,
    .free = append_free,
    .drain_locked = append_drain_locked,
    .drained_locked = append_drained_locked,
    .worker_busy_locked = append_worker_busy_locked,
};

/* The same session once the HTTP/1.1 worker posts its batches: it has no stream. */
static const s2_op_ops append_http1_ops = {
    .kind = "append-http1",
    .service = http1_service,
    .next_deadline = http1_next_deadline,
    .abort = append_abort,
    .done = append_done,
    .free = append_free,
    .drain_locked = append_drain_locked,
    .drained_locked = append_drained_locked,
    .worker_busy_locked = append_worker_busy_locked,
};
