/* s2_sse.c — read sessions over HTTP/1.1: server-sent events, for paths without HTTP/2.
 *
 * A worker thread of the session's own streams `GET .../records` with
 * `accept: text/event-stream` and `s2-format: base64` through libcurl. Events:
 *   batch  a JSON ReadBatch (bodies and headers base64), id "seq_num,count,bytes"
 *   ping   {timestamp, tail}: a heartbeat
 *   error  a JSON error body
 *   data [DONE] ends the stream (a limit was reached)
 * Parsing is in s2_sse_parse.c. Batches join the same queue as the HTTP/2 path (s2_reader.c).
 * Only [DONE] ends the read: a response that ends without it (a proxy or load balancer
 * closing a long response, cleanly or not) is a failed attempt like a cut, and the worker
 * resumes after the last record delivered: with the original query and `Last-Event-ID`
 * (the last batch's id, from which the server resumes and deducts the count and bytes
 * already delivered), or, when only heartbeats came, from the seq_num their tail gave. A
 * full queue makes the write callback wait, which stops reading from the socket: TCP
 * backpressure bounds memory.
 *
 * The read session (s2_reader.c) does not know this transport: s2_read_session_open, here,
 * gives it sse_ops and start_sse before starting it, and the session switches to them when
 * asked for HTTP/1.1 or when the server offers no HTTP/2. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "s2_internal.h"
#include "s2_sse_parse.h"
#include "s2_unary.h"

#define SSE_QUEUE_LIMIT (8u * 1024u * 1024u) /* decoded bytes waiting for the caller */
#define SSE_IDLE_TIMEOUT 25L                 /* seconds without a byte (pings come every 5-15 s) */

/* ---- the event stream ------------------------------------------------------------------------- */

typedef struct sse_state {
    s2_read_session *s;
    s2_sse_parser parser;
    char last_id[96];     /* of the last batch delivered (validated): Last-Event-ID on resume */
    bool done;            /* [DONE] seen */
    bool failed;          /* err holds why */
    s2_error err;
    CURL *curl;
    s2_buf error_body;    /* body of a non-200 answer */
} sse_state;

/* Waits (holding nothing) until the queue has room; false when the session stopped. */
static bool wait_room(s2_read_session *s) {
    s2_runtime *rt = s->op.rt;
    s2_runtime_lock(rt);
    while (s->rq_bytes > SSE_QUEUE_LIMIT && s->state == S2_SESSION_OPEN && !s2_runtime_stopping(rt))
        s2_runtime_wait(rt, -1);
    bool ok = s->state == S2_SESSION_OPEN && !s2_runtime_stopping(rt);
    s2_runtime_unlock(rt);
    return ok;
}

/* A batch event: its id must be "seq_num,count,bytes" ending at its last record, since it is
 * sent back verbatim as Last-Event-ID and tells the server where to resume. */
static void on_batch(sse_state *st, const s2_sse_parser *p, const uint8_t *d, size_t n) {
    s2_error err;
    s2_rbatch *b = s2_sse_parse_batch(d, n, &err);
    if (!b) {
        st->failed = true;
        st->err = err;
        return;
    }
    size_t nrec = b->batch.num_records;
    uint64_t seq, count, bytes;
    if (nrec && (p->id_long || s2_sse_parse_id(p->id, &seq, &count, &bytes) != 0 ||
                 seq != b->batch.records[nrec - 1].seq_num)) {
        s2_fail(&st->err, S2_E_PROTOCOL, "protocol_error",
                "batch event ending at record %llu has id \"%.40s\" (expected \"%llu,count,bytes\")",
                (unsigned long long)b->batch.records[nrec - 1].seq_num, p->id,
                (unsigned long long)b->batch.records[nrec - 1].seq_num);
        st->failed = true;
        s2_sse_rbatch_free(b);
        return;
    }
    if (s2_reader_enqueue(st->s, b, &err) < 0) { /* b is queued, or freed */
        st->failed = true;
        st->err = err;
        return;
    }
    if (nrec) snprintf(st->last_id, sizeof st->last_id, "%s", p->id);
}

static int on_event(void *ud, const s2_sse_parser *p, const uint8_t *d, size_t n) {
    sse_state *st = ud;
    const char *ev = p->event_long ? "" : p->event;
    if (n == 6 && memcmp(d, "[DONE]", 6) == 0) {
        st->done = true;
    } else if (strcmp(ev, "batch") == 0) {
        on_batch(st, p, d, n);
    } else if (strcmp(ev, "ping") == 0) {
        /* {"timestamp": .., "tail": {..}}: a heartbeat; only the tail matters, and a ping
         * that cannot be read is only a missed heartbeat */
        s2_position tail;
        if (s2_sse_parse_ping(d, n, &tail) == 1) {
            s2_rbatch *hb = calloc(1, sizeof *hb);
            if (hb) {
                s2_buf_init(&hb->payload);
                hb->batch.has_tail = true;
                hb->batch.tail = tail;
                s2_error err;
                s2_reader_enqueue(st->s, hb, &err); /* updates the tail and caught-up; frees hb */
            }
        }
    } else if (strcmp(ev, "error") == 0) {
        s2_error_from_response(&st->err, 503, d, n);
        st->failed = true;
    }
    return st->done || st->failed;
}

static size_t on_sse_data(char *p, size_t size, size_t nmemb, void *ud) {
    sse_state *st = ud;
    size_t len = size * nmemb;
    long status = 0;
    curl_easy_getinfo(st->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        if (st->error_body.len < 65536) s2_buf_append(&st->error_body, p, len);
        return len;
    }
    if (!wait_room(st->s)) return 0; /* closed or stopping: abort the transfer */
    size_t used;
    int rc = s2_sse_feed(&st->parser, (const uint8_t *)p, len, on_event, st, &used, &st->err);
    if (rc < 0) {
        st->failed = true;
        return 0;
    }
    /* Stopped ([DONE], an error): 0 ends the transfer now (taking the bytes would read on,
     * a follow would never end); the worker looks at done and failed first. */
    if (rc > 0) return 0;
    return len;
}

/* Called about once a second even when idle: lets close() and shutdown end the transfer. */
static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
    (void)dt, (void)dn, (void)ut, (void)un;
    sse_state *st = ud;
    s2_runtime_lock(st->s->op.rt);
    bool stop = st->s->state != S2_SESSION_OPEN || s2_runtime_stopping(st->s->op.rt);
    s2_runtime_unlock(st->s->op.rt);
    return stop ? 1 : 0;
}

/* The client's event queue, and who a read session's events are about (s2_events.h). */
#define SSE_EVENTS(s) s2_runtime_events((s)->op.rt)
#define SSE_SRC(s) (&(s2_event_src){"read_session", (s)->basin, NULL, NULL, (s)->path})

static void stop_with(s2_read_session *s, const s2_error *err, bool ended) {
    if (!ended) { /* before the caller is woken: it finds the event queued */
        s2_runtime_lock(s->op.rt);
        bool open = s->state == S2_SESSION_OPEN;
        s2_runtime_unlock(s->op.rt);
        if (open) s2_event_session_failed(SSE_EVENTS(s), SSE_SRC(s), err);
    }
    s2_runtime_lock(s->op.rt);
    if (ended) {
        s->rstatus.ended = true;
    } else if (s->state == S2_SESSION_OPEN) {
        s->state = S2_SESSION_FAILED;
        s->failure = *err;
    }
    s2_reader_signal_locked(s);
    s2_runtime_broadcast(s->op.rt);
    s2_runtime_unlock(s->op.rt);
}

/* True when the read's own count or bytes limit is met: nothing is left to resume (and a
 * resumed count of 0 would mean no limit at all). */
static bool limits_met(const s2_read_session *s) {
    const s2_read_options *o = &s->ropts;
    return (o->has_count && o->count > 0 && s->got_count >= o->count) ||
           (o->has_bytes && o->bytes > 0 && s->got_bytes >= o->bytes);
}

/* Appends a header line; on no memory the whole list is freed and *ok cleared. */
static struct curl_slist *add_header(struct curl_slist *list, const char *line, bool *ok) {
    if (!*ok) return NULL;
    struct curl_slist *n = curl_slist_append(list, line);
    if (!n) {
        s2_http_free_headers(list);
        *ok = false;
    }
    return n;
}

static void *sse_worker(void *arg) {
    s2_read_session *s = arg;
    s2_runtime *rt = s->op.rt;
    const s2_config *cfg = s2_runtime_config(rt);
    sse_state st;
    memset(&st, 0, sizeof st);
    st.s = s;
    s2_sse_parser_init(&st.parser);
    s2_buf_init(&st.error_body);
    s2_error err;
    unsigned attempt = 0;
    st.curl = curl_easy_init();
    if (!st.curl) {
        s2_fail(&err, S2_E_NOMEM, "out_of_memory", "cannot start an HTTP/1.1 read");
        stop_with(s, &err, false);
        goto out;
    }
    for (;;) {
        s2_buf url, query;
        s2_buf_init(&url);
        s2_buf_init(&query);
        /* After a batch: the original query, and Last-Event-ID does the resuming (start and
         * deductions). Before any (maybe after heartbeats, maybe after records that came
         * over HTTP/2): the resume-adjusted query, like the HTTP/2 path. */
        bool saved_next = s->have_next_seq;
        uint64_t saved_count = s->got_count, saved_bytes = s->got_bytes;
        if (st.last_id[0]) {
            s->have_next_seq = false;
            s->got_count = s->got_bytes = 0;
        }
        int rc = s2_endpoint_url(&cfg->basin, s->basin, NULL, &url) | s2_reader_path(s, &query) |
                 s2_buf_append(&url, query.data, query.len);
        s->have_next_seq = saved_next;
        s->got_count = saved_count;
        s->got_bytes = saved_bytes;
        s2_buf_free(&query);
        char line[600];
        bool ok = true;
        struct curl_slist *hdrs = NULL;
        snprintf(line, sizeof line, "authorization: Bearer %s", cfg->access_token);
        hdrs = add_header(hdrs, line, &ok);
        hdrs = add_header(hdrs, "accept: text/event-stream", &ok);
        hdrs = add_header(hdrs, "s2-format: base64", &ok);
        if (!cfg->basin.basin_template) {
            snprintf(line, sizeof line, "s2-basin: %s", s->basin);
            hdrs = add_header(hdrs, line, &ok);
        }
        if (s->encryption_key) { /* valid base64 (s2_read_session_new); the line is wiped */
            snprintf(line, sizeof line, "s2-encryption-key: %s", s->encryption_key);
            hdrs = add_header(hdrs, line, &ok);
            s2_wipe(line, sizeof line);
        }
        if (st.last_id[0]) { /* digits and commas only (s2_sse_parse_id) */
            snprintf(line, sizeof line, "last-event-id: %s", st.last_id);
            hdrs = add_header(hdrs, line, &ok);
        }
        if (rc != 0 || !ok) {
            s2_http_free_headers(hdrs);
            s2_buf_free(&url);
            s2_fail(&err, S2_E_NOMEM, "out_of_memory", "out of memory reading");
            stop_with(s, &err, false);
            break;
        }
        CURL *c = st.curl;
        curl_easy_reset(c);
        curl_easy_setopt(c, CURLOPT_URL, (const char *)url.data);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(c, CURLOPT_USERAGENT, "s2-lua/" S2_VERSION);
        curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)(cfg->connection_timeout * 1000));
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, SSE_IDLE_TIMEOUT);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_sse_data);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &st);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, &st);
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        if (cfg->ca_file) curl_easy_setopt(c, CURLOPT_CAINFO, cfg->ca_file);
        st.failed = st.done = false;
        st.error_body.len = 0;
        s2_sse_parser_reset(&st.parser); /* a partial event of the last response is dropped */
        uint64_t before = s->got_count;
        CURLcode cr = curl_easy_perform(c);
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
        s2_http_free_headers(hdrs);
        s2_buf_free(&url);

        s2_runtime_lock(rt);
        bool stopped = s->state != S2_SESSION_OPEN || s2_runtime_stopping(rt);
        s2_runtime_unlock(rt);
        if (stopped) break;
        if (st.done) {
            stop_with(s, NULL, true); /* a limit was reached */
            break;
        }
        if (st.failed) {
            err = st.err;
        } else if (status && status != 200) {
            s2_error_from_response(&err, (int)status, st.error_body.data, st.error_body.len);
        } else if (cr == CURLE_OK) {
            /* The body ended cleanly (last chunk, or the close of a close-delimited body)
             * without [DONE]: S2 did not end this read, something on the way did. */
            if (limits_met(s)) { /* only the [DONE] was lost */
                stop_with(s, NULL, true);
                break;
            }
            s2_fail(&err, S2_E_CONNECTION, "connection_failed",
                    "event stream: the response ended without [DONE]");
            err.retryable = true;
        } else {
            s2_fail(&err, cr == CURLE_OPERATION_TIMEDOUT ? S2_E_TIMEOUT : S2_E_CONNECTION,
                    cr == CURLE_OPERATION_TIMEDOUT ? "timeout" : "connection_failed",
                    "event stream: %s", curl_easy_strerror(cr));
            err.retryable = true;
        }
        if (s->got_count > before) attempt = 0; /* progress */
        if (!s2_retry_decide(&s->retry_cfg, attempt + 1, false, &err)) { /* the session's */
            stop_with(s, &err, false);
            break;
        }
        double delay = s2_backoff_with(&s->retry_cfg, attempt, err.retry_after_ms, &s->rng);
        double wake = s2_now() + delay;
        attempt++;
        s2_event_retry(SSE_EVENTS(s), SSE_SRC(s), attempt, s->retry_cfg.max_attempts, delay, &err);
        s2_event_reconnect(SSE_EVENTS(s), SSE_SRC(s), "retry", &err);
        s2_runtime_lock(rt);
        s2_reader_reconnecting_locked(s);
        while (s->state == S2_SESSION_OPEN && !s2_runtime_stopping(rt) && s2_runtime_wait(rt, wake)) {
        }
        s2_runtime_unlock(rt);
    }
out:
    if (st.curl) curl_easy_cleanup(st.curl);
    s2_sse_parser_free(&st.parser);
    s2_buf_free(&st.error_body);
    s2_runtime_lock(rt);
    s->worker_done = true;
    s2_runtime_broadcast(rt);
    s2_runtime_wake_op(rt, &s->op); /* done: the I/O thread drops it (under mu: s lives) */
    s2_runtime_unlock(rt);
    return NULL;
}

/* under mu */
static int start_sse(s2_read_session *s, s2_error *err) {
    if (s->worker_started) return 0;
    int rc = s2_thread_start(&s->worker, "s2-sse", sse_worker, s, false);
    if (rc != 0)
        return s2_fail(err, S2_E_NOMEM, "out_of_memory", "cannot start the HTTP/1.1 reader: %s",
                       strerror(rc));
    s->worker_started = true;
    return 0;
}

/* ---- the ops table: the worker does the reading, the I/O thread only reaps ---------------- */

/* No service, timers or stream: the worker reads (and backs off) on its own. */
static const s2_op_ops sse_ops = {
    .kind = "read-sse",
    .abort = s2_reader_op_abort,
    .done = s2_reader_op_done,
    .free = s2_reader_op_free,
    .worker_busy_locked = s2_reader_op_worker_busy_locked,
};

s2_read_session *s2_read_session_open(s2_runtime *rt, const char *basin, const char *stream,
                                      const s2_read_options *opts, s2_error *err) {
    s2_read_session *s = s2_read_session_new(rt, basin, stream, opts, err);
    if (!s) return NULL;
    s->http1_ops = &sse_ops;
    s->start_http1 = start_sse;
    if (s2_read_session_start(s, err) != 0) return NULL;
    return s;
}
