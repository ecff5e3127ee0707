/* s2_reader.c — read sessions: follow a stream over S2S, resume after failures.
 *
 * The I/O thread decodes ReadBatch frames into a queue (rq_*, under runtime->mu); the
 * caller takes records one at a time. DATA bytes are given back to HTTP/2 flow control only
 * as the caller drains batches, so the window bounds what a slow consumer buffers.
 * Heartbeats update the tail and the caught-up flag and are not queued: caught-up as the
 * caller sees it is "the last news was a tail report that was reached, and every record
 * queued before it has been handed out" (see consumer_caught_up). The runtime drives
 * it through read_ops; over HTTP/1.1 the opener's transport (s2_sse.c) takes over through
 * the http1_ops / start_http1 it set, so this file does not know SSE. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "s2_internal.h"

#define INACTIVITY_TIMEOUT 20.0 /* seconds without any frame, heartbeats included */
#define SPARE_PAYLOAD_MAX (2u * 1024u * 1024u) /* the largest payload buffer kept (spare) */

static void rbatch_free(s2_rbatch *b) {
    if (!b) return;
    s2_read_batch_free(&b->batch);
    s2_buf_free(&b->payload);
    free(b);
}

static const s2_op_ops read_ops;

s2_read_session *s2_read_session_new(s2_runtime *rt, const char *basin, const char *stream,
                                     const s2_read_options *opts, s2_error *err) {
    if (opts->encryption_key && !s2_encryption_key_valid(opts->encryption_key)) {
        s2_fail(err, S2_E_INVALID, "invalid", "encryption_key must be 1 to %u base64 characters",
                S2_MAX_ENCRYPTION_KEY);
        return NULL;
    }
    s2_read_session *s = calloc(1, sizeof *s);
    s2_buf path;
    s2_buf_init(&path);
    if (!s) goto nomem;
    s->op.rt = rt;
    s->op.ops = &read_ops;
    s2_completion_init(&s->readable);
    s2_completion_init(&s->cu_other);
    s2_completion_init(&s->cu_self);
    s->ropts = *opts;
    s->encryption_key = opts->encryption_key ? strdup(opts->encryption_key) : NULL;
    s->ropts.encryption_key = s->encryption_key;
    s2_retry_config_for(s2_runtime_config(rt), &opts->retry, &s->retry_cfg);
    s->rng = s2_retry_seed(s);
    s->basin = strdup(basin);
    if (!s->basin || (opts->encryption_key && !s->encryption_key) ||
        s2_stream_records_path(stream, &path) != 0)
        goto nomem;
    s->path = (char *)path.data;
    s->op.basin = s->basin;
    s->op.refs = 2; /* the caller's handle and the runtime's list */
    s->last_frame_at = s->last_record_at = s2_now();
    s2_buf_init(&s->error_body);
    s2_frame_decoder_init(&s->dec);
    s2_runtime_ref(rt); /* dropped by s2_reader_op_free */
    return s;
nomem:
    if (s) {
        free(s->basin);
        s2_free_secret(s->encryption_key);
    }
    free(s);
    s2_buf_free(&path);
    s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory opening a read session");
    return NULL;
}

int s2_read_session_start(s2_read_session *s, s2_error *err) {
    s2_runtime *rt = s->op.rt;
    s2_runtime_lock(rt);
    bool http1 = (s->ropts.http1 || s2_runtime_http1(rt)) && s->http1_ops;
    s2_runtime_unlock(rt);
    if (http1) s->op.ops = s->http1_ops; /* before the I/O thread can see the session */
    if (s2_runtime_start_op(rt, &s->op, err) != 0) {
        s2_reader_op_free(&s->op);
        return -1;
    }
    s2_runtime_lock(rt);
    int rc = http1 ? s->start_http1(s, err) : 0;
    s2_runtime_unlock(rt);
    if (rc != 0) {
        s2_read_session_release(s);
        return -1;
    }
    return 0;
}

void s2_reader_op_free(s2_op *op) {
    s2_read_session *s = (s2_read_session *)op;
    if (s->worker_started) pthread_join(s->worker, NULL);
    for (s2_rbatch *b = s->rq_head, *next; b; b = next) {
        next = b->next;
        rbatch_free(b);
    }
    s2_completion_free(&s->readable);
    s2_completion_free(&s->cu_other);
    s2_completion_free(&s->cu_self);
    s2_buf_free(&s->error_body);
    s2_buf_free(&s->spare);
    s2_frame_decoder_free(&s->dec);
    free(s->basin);
    free(s->path);
    s2_free_secret(s->encryption_key);
    s2_runtime *rt = s->op.rt;
    free(s);
    s2_runtime_unref(rt);
}

bool s2_reader_op_done(s2_op *op) {
    s2_read_session *s = (s2_read_session *)op;
    s2_runtime_lock(s->op.rt);
    bool done = (s->state == S2_SESSION_CLOSED || s->state == S2_SESSION_FAILED) &&
                !s->op.stream_id && (!s->worker_started || s->worker_done);
    s2_runtime_unlock(s->op.rt);
    return done;
}

bool s2_reader_op_worker_busy_locked(s2_op *op) {
    s2_read_session *s = (s2_read_session *)op;
    return s->worker_started && !s->worker_done;
}

void s2_reader_op_abort(s2_op *op, const s2_error *err) {
    s2_read_session *s = (s2_read_session *)op;
    s2_runtime_cancel_stream(s->op.rt, &s->op);
    s2_runtime_lock(s->op.rt);
    if (s->state != S2_SESSION_CLOSED && s->state != S2_SESSION_FAILED) {
        s->state = S2_SESSION_FAILED;
        s->failure = *err;
    }
    s2_reader_signal_locked(s);
    s2_runtime_broadcast(s->op.rt);
    s2_runtime_unlock(s->op.rt);
}

int s2_reader_path(s2_read_session *s, s2_buf *b) {
    const s2_read_options *o = &s->ropts;
    char part[96];
    int rc = s2_buf_append_str(b, s->path);
    static const char *const start_names[] = {"seq_num", "timestamp", "tail_offset"};
    /* On resume, only seq_num: the next record after the last one received. */
    if (s->have_next_seq)
        snprintf(part, sizeof part, "?seq_num=%llu", (unsigned long long)s->next_seq);
    else
        snprintf(part, sizeof part, "?%s=%llu", start_names[o->start_kind],
                 (unsigned long long)o->start);
    rc |= s2_buf_append_str(b, part);
    if (o->has_count) {
        snprintf(part, sizeof part, "&count=%llu", (unsigned long long)(o->count - s->got_count));
        rc |= s2_buf_append_str(b, part);
    }
    if (o->has_bytes) {
        uint64_t left = s->got_bytes < o->bytes ? o->bytes - s->got_bytes : 0;
        snprintf(part, sizeof part, "&bytes=%llu", (unsigned long long)left);
        rc |= s2_buf_append_str(b, part);
    }
    if (o->has_until) {
        snprintf(part, sizeof part, "&until=%llu", (unsigned long long)o->until);
        rc |= s2_buf_append_str(b, part);
    }
    if (o->has_wait) {
        /* The wait bounds the time between records: deduct what already passed. */
        double left = o->wait - (s2_now() - s->last_record_at);
        snprintf(part, sizeof part, "&wait=%llu", (unsigned long long)(left > 0 ? ceil(left) : 0));
        rc |= s2_buf_append_str(b, part);
    }
    if (o->clamp && !s->have_next_seq) rc |= s2_buf_append_str(b, "&clamp=true");
    return rc ? -1 : 0;
}

/* Forgets the current stream: batches already queued from it will not credit the next
 * stream (its connection-window bytes went back as they arrived). */
static void drop_stream(s2_read_session *s) {
    s->op.unconsumed = s->held = 0;
    s2_runtime_cancel_stream(s->op.rt, &s->op);
    s->op.http_status = 0;
    s->op.retry_after_ms = 0;
    s->error_body.len = 0;
    s2_frame_decoder_reset(&s->dec);
    s2_runtime_lock(s->op.rt);
    s->gen++;
    s->credit = 0;
    s2_runtime_unlock(s->op.rt);
}

/* Whether next() has something to return without waiting. under mu */
static bool reader_has_news(const s2_read_session *s) {
    for (const s2_rbatch *b = s->rq_head; b; b = b->next)
        if (b->pos < b->batch.num_records) return true;
    return s->state != S2_SESSION_OPEN || s->rstatus.ended;
}

/* Caught up as the caller sees it (s2_read_status.caught_up): the last news from the server
 * was a tail that was reached (no record, no reconnect since), and next() has handed out
 * every record queued before it. Records received but not taken keep it false, so true
 * means the caller has seen everything up to the tail the server reported. under mu */
static bool consumer_caught_up(const s2_read_session *s) {
    return s->io_caught_up && s->rq_pending == 0 && s->state != S2_SESSION_FAILED;
}

/* What wait_caught_up gets now: 1 caught up; 0 wait; -1 with *err when it never can be
 * without the caller: the session failed (its error), was closed, or ended (a limit) short
 * of the tail; or (self_consumes: no one else takes records) records are buffered that only
 * the caller's own next() would hand out, which would make the wait a deadlock. under mu */
static int caught_up_outcome(const s2_read_session *s, bool self_consumes, s2_error *err) {
    if (consumer_caught_up(s)) return 1;
    if (s->state == S2_SESSION_FAILED) {
        if (err) *err = s->failure;
        return -1;
    }
    if (s->state != S2_SESSION_OPEN) {
        if (err) s2_fail(err, S2_E_CLOSED, "closed", "the read session is closed");
        return -1;
    }
    if (s->rstatus.ended && !s->io_caught_up) {
        if (err)
            s2_fail(err, S2_E_CLOSED, "closed",
                    "the read ended (a count, bytes, until or wait limit) before catching up");
        return -1;
    }
    if (self_consumes && s->rq_pending) {
        if (err)
            s2_fail(err, S2_E_INVALID, "records_pending",
                    "%zu records are buffered and must be taken with next() first "
                    "(wait_caught_up does not read)",
                    s->rq_pending);
        return -1;
    }
    return 0;
}

static void set_completion(s2_read_session *s, s2_completion *c, bool on) {
    if (on) s2_completion_set_locked(s2_runtime_notices(s->op.rt), c);
    else s2_completion_clear_locked(c);
}

/* The caught-up completions as the state is now. under mu */
static void sync_caught_up(s2_read_session *s) {
    set_completion(s, &s->cu_other, caught_up_outcome(s, false, NULL) != 0);
    set_completion(s, &s->cu_self, caught_up_outcome(s, true, NULL) != 0);
}

void s2_reader_signal_locked(s2_read_session *s) {
    if (reader_has_news(s)) s2_completion_set_locked(s2_runtime_notices(s->op.rt), &s->readable);
    sync_caught_up(s);
}

void s2_reader_reconnecting_locked(s2_read_session *s) {
    s->rstatus.reconnects++;
    s->io_caught_up = false; /* the new connection must report a tail first */
    sync_caught_up(s);
}

/* The completion as the state is now (a drained queue leaves it set). under mu */
static void sync_readable(s2_read_session *s) {
    if (reader_has_news(s)) s2_completion_set_locked(s2_runtime_notices(s->op.rt), &s->readable);
    else s2_completion_clear_locked(&s->readable);
}

int s2_read_session_fd(s2_read_session *s) {
    s2_runtime_lock(s->op.rt);
    sync_readable(s);
    int fd = s2_completion_fd_locked(&s->readable);
    s2_runtime_unlock(s->op.rt);
    return fd;
}

uint64_t s2_read_session_notice(s2_read_session *s) {
    s2_runtime_lock(s->op.rt);
    sync_readable(s);
    uint64_t id = s2_completion_arm_locked(s2_runtime_notices(s->op.rt), &s->readable);
    s2_runtime_unlock(s->op.rt);
    return id;
}

bool s2_read_session_ready(s2_read_session *s) {
    s2_runtime_lock(s->op.rt);
    bool ready = reader_has_news(s);
    s2_runtime_unlock(s->op.rt);
    return ready;
}

/* The client's event queue, and who a read session's events are about (s2_events.h). */
#define READER_EVENTS(s) s2_runtime_events((s)->op.rt)
#define READER_SRC(s) (&(s2_event_src){"read_session", (s)->basin, NULL, NULL, (s)->path})

static void reader_fail(s2_read_session *s, const s2_error *err) {
    drop_stream(s);
    s2_runtime_lock(s->op.rt);
    bool live = s->state != S2_SESSION_CLOSED && s->state != S2_SESSION_FAILED;
    s2_runtime_unlock(s->op.rt);
    /* Before the caller is woken: it finds the event queued. */
    if (live) s2_event_session_failed(READER_EVENTS(s), READER_SRC(s), err);
    s2_runtime_lock(s->op.rt);
    if (s->state != S2_SESSION_CLOSED && s->state != S2_SESSION_FAILED) {
        s->state = S2_SESSION_FAILED;
        s->failure = *err;
    }
    s2_buf spare = s2_buf_take(&s->spare); /* no frame comes any more */
    s2_reader_signal_locked(s);
    s2_runtime_broadcast(s->op.rt);
    s2_runtime_unlock(s->op.rt);
    s2_buf_free(&spare);
    s->retry_at = 0;
}

static void attempt_failed(s2_read_session *s, const s2_error *err) {
    const s2_config *cfg = &s->retry_cfg; /* the client's, or this session's override */
    double now = s2_now();
    if (strcmp(err->code, "server_draining") == 0 &&
        s2_retry_take_handover(&s->last_advised, now)) {
        /* A planned handover: resume at once on a fresh connection, no attempt used (once
         * per 60 s; more often it counts like any failure). */
        s2_runtime_retire_conn(s->op.rt, &s->op);
        drop_stream(s);
        s->retry_at = now;
        s2_runtime_lock(s->op.rt);
        s2_reader_reconnecting_locked(s);
        s2_runtime_unlock(s->op.rt);
        s2_event_reconnect(READER_EVENTS(s), READER_SRC(s), "server_draining", err);
        return;
    }
    drop_stream(s);
    s2_error final = *err;
    if (!s2_retry_decide(cfg, s->attempt + 1, false, &final)) {
        reader_fail(s, &final);
        return;
    }
    double delay = s2_backoff_with(cfg, s->attempt, err->retry_after_ms, &s->rng);
    s->retry_at = s2_now() + delay;
    s->attempt++;
    s2_runtime_lock(s->op.rt);
    s2_reader_reconnecting_locked(s);
    s2_runtime_unlock(s->op.rt);
    s2_event_retry(READER_EVENTS(s), READER_SRC(s), s->attempt, cfg->max_attempts, delay, err);
    s2_event_reconnect(READER_EVENTS(s), READER_SRC(s), "retry", err);
}

/* The server offered no HTTP/2: the opener's HTTP/1.1 transport continues (from where
 * this one got to). */
static void read_switch_http1(s2_op *op) {
    s2_read_session *s = (s2_read_session *)op;
    drop_stream(s);
    s->retry_at = 0;
    s2_error err;
    int rc = 0;
    s2_runtime_lock(s->op.rt);
    if (s->http1_ops) {
        s->op.ops = s->http1_ops;
        rc = s->start_http1(s, &err);
    } else {
        rc = s2_fail(&err, S2_E_CONNECTION, "connection_failed",
                     "the server offers no HTTP/2 and this read has no HTTP/1.1 transport");
    }
    s2_runtime_unlock(s->op.rt);
    if (rc != 0) reader_fail(s, &err);
}

/* Gives drained bytes back to the stream window, but none while the caller still has a
 * window's worth of decoded bytes queued: compressed batches count at their decompressed
 * size, so a slow consumer of compressed data holds at most one window decoded in its
 * queue plus what the open grant (one window of wire bytes) decodes to. */
static void give_back(s2_read_session *s, size_t credit) {
    s->held += credit;
    if (!s->held) return;
    s2_runtime_lock(s->op.rt);
    size_t queued = s->rq_bytes;
    s2_runtime_unlock(s->op.rt);
    if (queued >= S2_H2_WINDOW) return;
    size_t n = s->held;
    s->held = 0;
    s2_runtime_consume(s->op.rt, &s->op, n);
}

static void read_service(s2_op *op) {
    s2_read_session *s = (s2_read_session *)op;
    s2_runtime_lock(s->op.rt);
    s2_session_state state = s->state;
    bool ended = s->rstatus.ended;
    size_t credit = s->credit;
    s->credit = 0;
    s2_runtime_unlock(s->op.rt);
    if (state != S2_SESSION_OPEN) { /* closed by the caller, or failed */
        if (s->op.stream_id || s->op.conn) drop_stream(s);
        return;
    }
    if (s->op.stream_id) give_back(s, credit);
    if (ended || s->retry_at || s->op.stream_id) return;
    s2_error err;
    int rc = s2_runtime_open_stream(s->op.rt, &s->op, &err);
    if (rc < 0) attempt_failed(s, &err);
    if (rc == 0) s->last_frame_at = s2_now();
}

static double read_next_deadline(s2_op *op) {
    s2_read_session *s = (s2_read_session *)op;
    if (s->retry_at) return s->retry_at;
    if (s->op.stream_id) return s->last_frame_at + INACTIVITY_TIMEOUT;
    return 0;
}

static void read_check_timers(s2_op *op, double now) {
    s2_read_session *s = (s2_read_session *)op;
    if (s->retry_at && now >= s->retry_at) {
        s->retry_at = 0;
        read_service(op);
        return;
    }
    if (s->op.stream_id && now - s->last_frame_at >= INACTIVITY_TIMEOUT) {
        s2_error err;
        s2_fail(&err, S2_E_TIMEOUT, "timeout", "no data or heartbeat for %.0f s",
                INACTIVITY_TIMEOUT);
        err.retryable = true;
        attempt_failed(s, &err);
    }
}

static bool is_command(const s2_sequenced_record *r) {
    return r->num_headers == 1 && r->headers[0].name_len == 0;
}

/* Accounts a decoded batch (or heartbeat) and queues it for the caller. Returns 1 when
 * queued, 0 for a heartbeat (b is freed), -1 on an ordering violation (b is freed). */
int s2_reader_enqueue(s2_read_session *s, s2_rbatch *b, s2_error *err) {
    size_t n = b->batch.num_records;
    for (size_t i = 0; i < n; i++) {
        const s2_sequenced_record *r = &b->batch.records[i];
        if (s->have_next_seq && r->seq_num < s->next_seq) {
            rbatch_free(b);
            return s2_fail(err, S2_E_PROTOCOL, "protocol_error",
                           "record %llu arrived after %llu: out of order",
                           (unsigned long long)r->seq_num, (unsigned long long)s->next_seq - 1);
        }
        s->have_next_seq = true;
        s->next_seq = r->seq_num + 1;
        s->got_count++;
        s->got_bytes += s2_sequenced_record_metered_bytes(r);
    }
    if (n) {
        s->attempt = 0; /* progress */
        s->last_record_at = s2_now();
    } else if (b->batch.has_tail && !s->have_next_seq) {
        /* A heartbeat before any record: the start (maybe a tail_offset or timestamp) has
         * been reached and nothing lies between it and the tail, so a resume starts there. */
        s->have_next_seq = true;
        s->next_seq = b->batch.tail.seq_num;
    }
    size_t deliverable = n;
    if (s->ropts.ignore_command_records)
        for (size_t i = 0; i < n; i++) deliverable -= is_command(&b->batch.records[i]);
    s2_runtime_lock(s->op.rt);
    s2_read_status *st = &s->rstatus;
    if (b->batch.has_tail) {
        st->has_tail = true;
        st->tail = b->batch.tail;
        s->io_caught_up = n == 0 || b->batch.records[n - 1].seq_num + 1 >= b->batch.tail.seq_num;
    } else if (n) {
        s->io_caught_up = false;
    }
    if (n) {
        s->rq_pending += deliverable;
        b->gen = s->gen;
        s->rq_bytes += b->payload.len;
        if (s->rq_tail) s->rq_tail->next = b;
        else s->rq_head = b;
        s->rq_tail = b;
        s2_reader_signal_locked(s);
    } else {
        sync_caught_up(s); /* a heartbeat: caught up once nothing is pending */
    }
    s2_runtime_broadcast(s->op.rt);
    s2_runtime_unlock(s->op.rt);
    if (!n) {
        rbatch_free(b);
        return 0;
    }
    return 1;
}

/* One regular frame: a batch for the caller, or a heartbeat. */
static int take_batch(s2_read_session *s, const s2_frame *f, s2_error *err) {
    s2_rbatch *b = calloc(1, sizeof *b);
    if (!b) return s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory reading");
    s2_runtime_lock(s->op.rt);
    b->payload = s2_buf_take(&s->spare); /* empty, or a drained batch's (a heartbeat frees it) */
    s2_runtime_unlock(s->op.rt);
    if (s2_buf_append(&b->payload, f->payload, f->len) != 0) {
        rbatch_free(b);
        return s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory reading");
    }
    if (s2_read_batch_decode(b->payload.data, b->payload.len, &b->batch, err) != 0) {
        rbatch_free(b);
        return -1;
    }
    b->wire_bytes = f->wire_len;
    int rc = s2_reader_enqueue(s, b, err);
    if (rc == 0) /* a heartbeat: its bytes go straight back to the window */
        s2_runtime_consume(s->op.rt, &s->op, f->wire_len < s->op.unconsumed ? f->wire_len : s->op.unconsumed);
    return rc < 0 ? -1 : 0;
}

static void read_on_data(s2_op *op, const uint8_t *p, size_t n) {
    s2_read_session *s = (s2_read_session *)op;
    s->last_frame_at = s2_now();
    s->op.unconsumed += n;
    if (s->op.http_status != 200) {
        size_t room = s->error_body.len < 65536 ? 65536 - s->error_body.len : 0;
        if (room) s2_buf_append(&s->error_body, p, n < room ? n : room);
        s2_runtime_consume(s->op.rt, &s->op, n);
        return;
    }
    s2_error err;
    if (s2_frame_feed(&s->dec, p, n, &err) != 0) {
        reader_fail(s, &err);
        return;
    }
    s2_frame f;
    int rc;
    int32_t stream = s->op.stream_id;
    while (s->op.stream_id == stream && stream && (rc = s2_frame_next(&s->dec, &f, &err)) != 0) {
        if (rc < 0) {
            reader_fail(s, &err);
            return;
        }
        if (f.terminal) {
            s2_error_from_response(&err, f.status, f.payload, f.len);
            attempt_failed(s, &err);
            return;
        }
        bool advised = f.reconnect;
        if (take_batch(s, &f, &err) != 0) {
            reader_fail(s, &err);
            return;
        }
        if (advised) {
            /* The server is going away: this batch is delivered, continue elsewhere: on a
             * fresh connection, as the append path does (the advised one takes no new
             * streams). */
            s2_runtime_retire_conn(s->op.rt, &s->op);
            drop_stream(s);
            s2_runtime_lock(s->op.rt);
            s2_reader_reconnecting_locked(s);
            s2_runtime_unlock(s->op.rt);
            s2_event_reconnect(READER_EVENTS(s), READER_SRC(s), "reconnect_advised", NULL);
            return;
        }
    }
}

static void read_on_stream_close(s2_op *op, uint32_t h2_error) {
    s2_read_session *s = (s2_read_session *)op;
    s2_error err;
    if (h2_error != 0) {
        s2_fail(&err, S2_E_CONNECTION, "connection_failed", "the server reset the stream (%s)",
                nghttp2_http2_strerror(h2_error));
        err.retryable = true;
        attempt_failed(s, &err);
        return;
    }
    if (s->op.http_status != 200) {
        s2_error_from_response(&err, s->op.http_status ? s->op.http_status : 502, s->error_body.data,
                               s->error_body.len);
        err.retry_after_ms = s->op.retry_after_ms;
        attempt_failed(s, &err);
        return;
    }
    /* A clean end: a limit (count, bytes, until, wait) was reached. No frame comes any
     * more: neither the decoder's buffer nor a spare has a use. */
    drop_stream(s);
    s2_frame_decoder_free(&s->dec);
    s2_runtime_lock(s->op.rt);
    s->rstatus.ended = true;
    s2_buf spare = s2_buf_take(&s->spare);
    s2_reader_signal_locked(s);
    s2_runtime_broadcast(s->op.rt);
    s2_runtime_unlock(s->op.rt);
    s2_buf_free(&spare);
}

/* ---- caller side ----------------------------------------------------------------------------- */

/* Hands out up to max records of one queued batch under one lock. A batch handed out in
 * full stays queued (the records point into it) and is freed, and its window bytes given
 * back, at the next call. timeout 0 never waits and reads no clock. */
int s2_read_session_next_batch(s2_read_session *s, double timeout, s2_sequenced_record *out,
                               size_t max, size_t *taken, s2_error *err) {
    double deadline = timeout <= 0 ? timeout : s2_now() + timeout; /* 0: do not wait */
    bool wake = false;
    int rc;
    size_t n = 0;
    s2_rbatch *drained = NULL;
    bool skip_commands = s->ropts.ignore_command_records;
    s2_runtime_lock(s->op.rt);
    for (;;) {
        s2_rbatch *b = s->rq_head;
        while (b && b->pos >= b->batch.num_records) { /* fully handed out: give it back */
            s->rq_head = b->next;
            if (!s->rq_head) s->rq_tail = NULL;
            if (b->gen == s->gen) s->credit += b->wire_bytes;
            s->rq_bytes -= b->payload.len;
            b->next = drained;
            drained = b;
            wake = true;
            /* The next frame's buffer (see spare), only while frames may come: an ended or
             * stopped session would keep it. */
            if (!s->worker_started && s->state == S2_SESSION_OPEN && !s->rstatus.ended)
                s2_buf_keep(&s->spare, &b->payload, SPARE_PAYLOAD_MAX);
            /* An SSE worker waits on cond for room in the queue (s2_sse.c wait_room). */
            if (s->worker_started) s2_runtime_broadcast(s->op.rt);
            b = s->rq_head;
        }
        /* Take from b (and, if it held only ignored command records, the batches after it),
         * never past the end of a batch that gave records: each call then frees at most the
         * one batch the call before drained, rather than several MiB at once. */
        for (; b && n == 0; b = b->next) {
            const s2_sequenced_record *recs = b->batch.records;
            size_t pos = b->pos, end = b->batch.num_records;
            while (pos < end && n < max) {
                const s2_sequenced_record *r = &recs[pos++];
                if (skip_commands && is_command(r)) continue;
                out[n++] = *r;
            }
            b->pos = pos;
        }
        if (n) {
            s->rstatus.delivered += n;
            s->rq_pending -= n;
            if (!s->rq_pending) sync_caught_up(s); /* maybe caught up now */
            rc = 1;
            break;
        }
        if (s->state == S2_SESSION_FAILED) {
            *err = s->failure;
            rc = -1;
            break;
        }
        if (s->rstatus.ended || s->state != S2_SESSION_OPEN) {
            rc = 0;
            break;
        }
        if (wake) { /* let the I/O thread open the window before we sleep */
            s2_runtime_unlock(s->op.rt);
            s2_runtime_wake_op(s->op.rt, &s->op);
            wake = false;
            s2_runtime_lock(s->op.rt);
            continue;
        }
        if (deadline == 0 || (deadline > 0 && s2_now() >= deadline)) {
            s2_completion_clear_locked(&s->readable);
            rc = -2;
            break;
        }
        if (!s2_runtime_wait(s->op.rt, deadline)) {
            rc = -2;
            break;
        }
    }
    s2_runtime_unlock(s->op.rt);
    if (wake) s2_runtime_wake_op(s->op.rt, &s->op);
    while (drained) {
        s2_rbatch *next = drained->next;
        rbatch_free(drained);
        drained = next;
    }
    *taken = n;
    if (rc == -2) {
        s2_fail(err, S2_E_TIMEOUT, "timeout", "no record within %.3f s", timeout);
        err->retryable = true;
    }
    return rc;
}

int s2_read_session_next(s2_read_session *s, double timeout, s2_sequenced_record *rec,
                         s2_error *err) {
    size_t n;
    int rc = s2_read_session_next_batch(s, timeout, rec, 1, &n, err);
    return rc == -2 ? -1 : rc;
}

void s2_read_session_status(s2_read_session *s, s2_read_status *out) {
    s2_runtime_lock(s->op.rt);
    *out = s->rstatus;
    out->caught_up = consumer_caught_up(s);
    out->buffered_bytes = s->rq_bytes;
    s2_runtime_unlock(s->op.rt);
}

int s2_read_session_caught_up_poll(s2_read_session *s, bool self_consumes, s2_error *err) {
    s2_runtime_lock(s->op.rt);
    int rc = caught_up_outcome(s, self_consumes, err);
    s2_runtime_unlock(s->op.rt);
    return rc;
}

int s2_read_session_wait_caught_up(s2_read_session *s, double timeout, s2_error *err) {
    double deadline = timeout < 0 ? -1 : s2_now() + timeout;
    int rc;
    s2_runtime_lock(s->op.rt);
    /* The caller's thread is blocked here, so nothing else can take records: self. */
    while ((rc = caught_up_outcome(s, true, err)) == 0) {
        if (!s2_runtime_wait(s->op.rt, deadline)) {
            s2_fail(err, S2_E_TIMEOUT, "timeout", "not caught up within %.3f s", timeout);
            err->retryable = true;
            rc = -1;
            break;
        }
    }
    s2_runtime_unlock(s->op.rt);
    return rc < 0 ? -1 : 1;
}

int s2_read_session_caught_up_fd(s2_read_session *s, bool self_consumes) {
    s2_runtime_lock(s->op.rt);
    sync_caught_up(s);
    int fd = s2_completion_fd_locked(self_consumes ? &s->cu_self : &s->cu_other);
    s2_runtime_unlock(s->op.rt);
    return fd;
}

uint64_t s2_read_session_caught_up_notice(s2_read_session *s, bool self_consumes) {
    s2_runtime_lock(s->op.rt);
    sync_caught_up(s);
    uint64_t id = s2_completion_arm_locked(s2_runtime_notices(s->op.rt),
                                           self_consumes ? &s->cu_self : &s->cu_other);
    s2_runtime_unlock(s->op.rt);
    return id;
}

void s2_read_session_close(s2_read_session *s) {
    s2_runtime_lock(s->op.rt);
    if (s->state == S2_SESSION_OPEN) s->state = S2_SESSION_CLOSED;
    s2_reader_signal_locked(s);
    s2_runtime_broadcast(s->op.rt);
    s2_runtime_unlock(s->op.rt);
    s2_runtime_wake_op(s->op.rt, &s->op);
}

bool s2_read_session_owned(const s2_read_session *s) {
    return s2_runtime_owned(s->op.rt);
}

s2_runtime *s2_read_session_runtime(const s2_read_session *s) {
    return s->op.rt;
}

void s2_read_session_release(s2_read_session *s) {
    s2_read_session_close(s); /* buffered records are dropped */
    s2_runtime *rt = s->op.rt;
    s2_runtime_ref(rt); /* past the unlock the I/O thread may free s, and its runtime ref */
    s2_runtime_lock(rt);
    bool last = --s->op.refs == 0;
    s2_runtime_unlock(rt);
    if (last) s2_reader_op_free(&s->op);
    else s2_runtime_wake(rt);
    s2_runtime_unref(rt);
}

/* ---- the ops table ------------------------------------------------------------------------- */

static int read_request(s2_op *op, s2_stream_request *req, s2_error *err) {
    s2_read_session *s = (s2_read_session *)op;
    req->method = "GET";
    req->accept_encoding = s->ropts.compression;
    req->encryption_key = s->encryption_key;
    if (s2_reader_path(s, &req->path) != 0)
        return s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory opening a read stream");
    return 0;
}

static void read_on_conn_lost(s2_op *op, const s2_error *err) {
    attempt_failed((s2_read_session *)op, err);
}

static const s2_op_ops read_ops = {
    .kind = "read",
    .service = read_service,
    .next_deadline = read_next_deadline,
    .check_timers = read_check_timers,
    .request = read_request,
    .on_data = read_on_data,
    .on_stream_close = read_on_stream_close,
    .read_body = NULL, /* GET */
    .window_on_drain = true,
    .on_conn_lost = read_on_conn_lost,
    .switch_http1 = read_switch_http1,
    .abort = s2_reader_op_abort,
    .done = s2_reader_op_done,
    .free = s2_reader_op_free,
    .drain_locked = NULL, /* read sessions are not waited for */
    .drained_locked = NULL,
    .worker_busy_locked = s2_reader_op_worker_busy_locked,
};
