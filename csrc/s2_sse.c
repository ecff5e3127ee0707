/* s2_sse.c — read sessions over HTTP/1.1: server-sent events, for paths without HTTP/2.
 *
 * A worker thread of the session's own streams `GET .../records` with
 * `accept: text/event-stream` and `s2-format: base64` through libcurl. Events:
 *   batch  a JSON ReadBatch (bodies and headers base64), id "seq_num,count,bytes"
 *   ping   {timestamp, tail}: a heartbeat
 *   error  a JSON error body
 *   data [DONE] ends the stream (a limit was reached)
 * Batches join the same queue as the HTTP/2 path (s2_reader.c). After a failure the worker
 * reconnects with `Last-Event-ID`, from which the server resumes and deducts count and
 * bytes already delivered. A full queue makes the write callback wait, which stops reading
 * from the socket: TCP backpressure bounds memory. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "s2_internal.h"

#define SSE_QUEUE_LIMIT (8u * 1024u * 1024u) /* decoded bytes waiting for the caller */
#define SSE_IDLE_TIMEOUT 25L                 /* seconds without a byte (pings come every 5-15 s) */

/* ---- base64 ---------------------------------------------------------------------------------- */

static int b64val(uint8_t c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Appends the decoded bytes of s[0..n) to out; -1 on bad input or no memory. */
static int b64_decode(const uint8_t *s, size_t n, s2_buf *out) {
    while (n > 0 && s[n - 1] == '=') n--;
    if (n % 4 == 1 || s2_buf_reserve(out, n / 4 * 3 + 3) != 0) return -1;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64val(s[i]);
        if (v < 0) return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out->data[out->len++] = (uint8_t)(acc >> bits);
        }
    }
    return 0;
}

/* ---- JSON ReadBatch ---------------------------------------------------------------------------- */

/* Offsets into the arena while parsing (it may move as it grows). */
typedef struct {
    size_t name, name_len, value, value_len;
} hdr_off;

typedef struct {
    uint64_t seq_num, timestamp;
    size_t first_hdr, num_hdrs;
    size_t body, body_len;
} rec_off;

typedef struct {
    s2_buf arena; /* decoded bodies and header bytes */
    rec_off *recs;
    size_t nrecs, cap_recs;
    hdr_off *hdrs;
    size_t nhdrs, cap_hdrs;
    bool has_tail;
    s2_position tail;
    rec_off *cur;
} batch_parse;

static int b64_field(s2_json *s, s2_buf *arena, size_t *off, size_t *len) {
    const uint8_t *p;
    size_t n;
    if (s2_json_span(s, &p, &n) != 0) return -1;
    *off = arena->len;
    if (b64_decode(p, n, arena) != 0) return -1;
    *len = arena->len - *off;
    return 0;
}

static int header_pair(s2_json *s, size_t index, void *ud) {
    batch_parse *bp = ud;
    hdr_off *h = &bp->hdrs[bp->nhdrs - 1];
    if (index == 0) return b64_field(s, &bp->arena, &h->name, &h->name_len);
    if (index == 1) return b64_field(s, &bp->arena, &h->value, &h->value_len);
    return -1;
}

static int header_elem(s2_json *s, size_t index, void *ud) {
    (void)index;
    batch_parse *bp = ud;
    if (bp->nhdrs == bp->cap_hdrs) {
        size_t cap = bp->cap_hdrs ? bp->cap_hdrs * 2 : 16;
        hdr_off *n = realloc(bp->hdrs, cap * sizeof *n);
        if (!n) return -1;
        bp->hdrs = n;
        bp->cap_hdrs = cap;
    }
    memset(&bp->hdrs[bp->nhdrs++], 0, sizeof(hdr_off));
    bp->cur->num_hdrs++;
    return s2_json_array(s, header_pair, bp);
}

static int record_member(s2_json *s, const char *key, void *ud) {
    batch_parse *bp = ud;
    rec_off *r = bp->cur;
    if (strcmp(key, "seq_num") == 0) return s2_json_u64(s, &r->seq_num) == 0 ? 1 : -1;
    if (strcmp(key, "timestamp") == 0) return s2_json_u64(s, &r->timestamp) == 0 ? 1 : -1;
    if (strcmp(key, "body") == 0) return b64_field(s, &bp->arena, &r->body, &r->body_len) == 0 ? 1 : -1;
    if (strcmp(key, "headers") == 0) {
        r->first_hdr = bp->nhdrs;
        return s2_json_array(s, header_elem, bp) == 0 ? 1 : -1;
    }
    return 0;
}

static int record_elem(s2_json *s, size_t index, void *ud) {
    (void)index;
    batch_parse *bp = ud;
    if (bp->nrecs == bp->cap_recs) {
        size_t cap = bp->cap_recs ? bp->cap_recs * 2 : 64;
        rec_off *n = realloc(bp->recs, cap * sizeof *n);
        if (!n) return -1;
        bp->recs = n;
        bp->cap_recs = cap;
    }
    bp->cur = &bp->recs[bp->nrecs++];
    memset(bp->cur, 0, sizeof *bp->cur);
    bp->cur->first_hdr = bp->nhdrs;
    return s2_json_object(s, record_member, bp);
}

static int batch_member(s2_json *s, const char *key, void *ud) {
    batch_parse *bp = ud;
    if (strcmp(key, "records") == 0) return s2_json_array(s, record_elem, bp) == 0 ? 1 : -1;
    if (strcmp(key, "tail") == 0 && s->p < s->end && *s->p == '{') {
        bp->has_tail = true;
        return s2_json_position(s, &bp->tail) == 0 ? 1 : -1;
    }
    return 0;
}

/* Parses a JSON ReadBatch into a queue entry whose records point into its own arena. */
static s2_rbatch *parse_batch(const uint8_t *json, size_t len, s2_error *err) {
    batch_parse bp;
    memset(&bp, 0, sizeof bp);
    s2_buf_init(&bp.arena);
    s2_json s = {json, json + len, 0};
    s2_rbatch *b = NULL;
    if (s2_json_object(&s, batch_member, &bp) != 0) {
        s2_fail(err, S2_E_PROTOCOL, "protocol_error", "malformed ReadBatch event");
        goto done;
    }
    b = calloc(1, sizeof *b);
    s2_sequenced_record *recs = bp.nrecs ? calloc(bp.nrecs, sizeof *recs) : NULL;
    s2_header *hdrs = bp.nhdrs ? calloc(bp.nhdrs, sizeof *hdrs) : NULL;
    if (!b || (bp.nrecs && !recs) || (bp.nhdrs && !hdrs)) {
        free(b);
        free(recs);
        free(hdrs);
        b = NULL;
        s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory reading");
        goto done;
    }
    const uint8_t *base = bp.arena.data;
    for (size_t i = 0; i < bp.nhdrs; i++) {
        hdrs[i].name = base + bp.hdrs[i].name;
        hdrs[i].name_len = bp.hdrs[i].name_len;
        hdrs[i].value = base + bp.hdrs[i].value;
        hdrs[i].value_len = bp.hdrs[i].value_len;
    }
    for (size_t i = 0; i < bp.nrecs; i++) {
        recs[i].seq_num = bp.recs[i].seq_num;
        recs[i].timestamp = bp.recs[i].timestamp;
        recs[i].headers = bp.recs[i].num_hdrs ? hdrs + bp.recs[i].first_hdr : NULL;
        recs[i].num_headers = bp.recs[i].num_hdrs;
        recs[i].body = base + bp.recs[i].body;
        recs[i].body_len = bp.recs[i].body_len;
    }
    b->payload = bp.arena; /* owned by the batch now */
    s2_buf_init(&bp.arena);
    b->batch.records = recs;
    b->batch.num_records = bp.nrecs;
    b->batch.owned_headers = hdrs;
    b->batch.has_tail = bp.has_tail;
    b->batch.tail = bp.tail;
done:
    s2_buf_free(&bp.arena);
    free(bp.recs);
    free(bp.hdrs);
    return b;
}

/* ---- the event stream ------------------------------------------------------------------------- */

typedef struct sse_state {
    s2_append_session *s;
    s2_buf line;          /* the current line */
    s2_buf data;          /* data of the current event */
    char event[32];
    char id[96];          /* id of the current event */
    char last_id[96];     /* of the last batch delivered: Last-Event-ID on reconnect */
    bool done;            /* [DONE] seen */
    bool failed;          /* err holds why */
    s2_error err;
    CURL *curl;
    s2_buf error_body;    /* body of a non-200 answer */
} sse_state;

/* Waits (holding nothing) until the queue has room; false when the session stopped. */
static bool wait_room(s2_append_session *s) {
    s2_runtime *rt = s->rt;
    s2_runtime_lock(rt);
    while (s->rq_bytes > SSE_QUEUE_LIMIT && s->state == S2_SESSION_OPEN && !s2_runtime_stopping(rt))
        s2_runtime_wait(rt, -1);
    bool ok = s->state == S2_SESSION_OPEN && !s2_runtime_stopping(rt);
    s2_runtime_unlock(rt);
    return ok;
}

static int ping_member(s2_json *s, const char *key, void *ud) {
    s2_read_batch *b = ud;
    if (strcmp(key, "tail") != 0 || s->p >= s->end || *s->p != '{') return 0;
    b->has_tail = true;
    return s2_json_position(s, &b->tail) == 0 ? 1 : -1;
}

static void dispatch(sse_state *st) {
    s2_append_session *s = st->s;
    const uint8_t *d = st->data.data ? st->data.data : (const uint8_t *)"";
    size_t n = st->data.len;
    if (n == 6 && memcmp(d, "[DONE]", 6) == 0) {
        st->done = true;
    } else if (strcmp(st->event, "batch") == 0) {
        s2_error err;
        s2_rbatch *b = parse_batch(d, n, &err);
        if (!b || s2_reader_enqueue(s, b, &err) < 0) {
            st->failed = true;
            st->err = err;
        } else if (st->id[0]) {
            snprintf(st->last_id, sizeof st->last_id, "%s", st->id);
        }
    } else if (strcmp(st->event, "ping") == 0) {
        /* {"timestamp": .., "tail": {..}}: a heartbeat; only the tail matters */
        s2_rbatch *hb = calloc(1, sizeof *hb);
        s2_json js = {d, d + n, 0};
        if (hb && s2_json_object(&js, ping_member, &hb->batch) == 0 && hb->batch.has_tail) {
            s2_buf_init(&hb->payload);
            s2_error err;
            s2_reader_enqueue(s, hb, &err); /* updates the tail and caught-up; frees hb */
        } else {
            free(hb);
        }
    } else if (strcmp(st->event, "error") == 0) {
        s2_error_from_response(&st->err, 503, d, n);
        st->failed = true;
    }
    st->data.len = 0;
    st->event[0] = 0;
    st->id[0] = 0;
}

static void field(sse_state *st, const uint8_t *line, size_t n) {
    if (n == 0) {
        if (st->data.len || st->event[0]) dispatch(st);
        return;
    }
    if (line[0] == ':') return; /* comment */
    const uint8_t *colon = memchr(line, ':', n);
    size_t klen = colon ? (size_t)(colon - line) : n;
    const uint8_t *v = colon ? colon + 1 : line + n;
    size_t vlen = (size_t)(line + n - v);
    if (vlen && *v == ' ') {
        v++;
        vlen--;
    }
    if (klen == 4 && memcmp(line, "data", 4) == 0) {
        if (st->data.len) s2_buf_append(&st->data, "\n", 1);
        s2_buf_append(&st->data, v, vlen);
    } else if (klen == 5 && memcmp(line, "event", 5) == 0) {
        snprintf(st->event, sizeof st->event, "%.*s", (int)vlen, (const char *)v);
    } else if (klen == 2 && memcmp(line, "id", 2) == 0) {
        snprintf(st->id, sizeof st->id, "%.*s", (int)vlen, (const char *)v);
    }
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
    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)p[i];
        if (c == '\n') {
            size_t n = st->line.len;
            if (n && st->line.data[n - 1] == '\r') n--;
            field(st, st->line.data ? st->line.data : (const uint8_t *)"", n);
            st->line.len = 0;
            if (st->failed || st->done) return i + 1 == len ? len : 0;
        } else if (s2_buf_append(&st->line, &c, 1) != 0) {
            return 0;
        }
    }
    return len;
}

/* Called about once a second even when idle: lets close() and shutdown end the transfer. */
static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
    (void)dt, (void)dn, (void)ut, (void)un;
    sse_state *st = ud;
    s2_runtime_lock(st->s->rt);
    bool stop = st->s->state != S2_SESSION_OPEN || s2_runtime_stopping(st->s->rt);
    s2_runtime_unlock(st->s->rt);
    return stop ? 1 : 0;
}

static void stop_with(s2_append_session *s, const s2_error *err, bool ended) {
    s2_runtime_lock(s->rt);
    if (ended) {
        s->rstatus.ended = true;
    } else if (s->state == S2_SESSION_OPEN) {
        s->state = S2_SESSION_FAILED;
        s->failure = *err;
    }
    s2_runtime_broadcast(s->rt);
    s2_runtime_unlock(s->rt);
}

static void *sse_worker(void *arg) {
    s2_append_session *s = arg;
    s2_runtime *rt = s->rt;
    const s2_config *cfg = s2_runtime_config(rt);
    sse_state st;
    memset(&st, 0, sizeof st);
    st.s = s;
    s2_buf_init(&st.line);
    s2_buf_init(&st.data);
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
        /* The original query: Last-Event-ID does the resuming (start and deductions). */
        bool saved_next = s->have_next_seq;
        uint64_t saved_count = s->got_count, saved_bytes = s->got_bytes;
        s->have_next_seq = false;
        s->got_count = s->got_bytes = 0;
        int rc = s2_endpoint_url(&cfg->basin, s->basin, NULL, &url) | s2_reader_path(s, &query) |
                 s2_buf_append(&url, query.data, query.len);
        s->have_next_seq = saved_next;
        s->got_count = saved_count;
        s->got_bytes = saved_bytes;
        s2_buf_free(&query);
        char line[600];
        struct curl_slist *hdrs = NULL;
        snprintf(line, sizeof line, "authorization: Bearer %s", cfg->access_token);
        hdrs = curl_slist_append(hdrs, line);
        hdrs = curl_slist_append(hdrs, "accept: text/event-stream");
        hdrs = curl_slist_append(hdrs, "s2-format: base64");
        if (!cfg->basin.basin_template) {
            snprintf(line, sizeof line, "s2-basin: %s", s->basin);
            hdrs = curl_slist_append(hdrs, line);
        }
        if (st.last_id[0]) {
            snprintf(line, sizeof line, "last-event-id: %s", st.last_id);
            hdrs = curl_slist_append(hdrs, line);
        }
        if (rc != 0 || !hdrs) {
            curl_slist_free_all(hdrs);
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
        st.line.len = st.data.len = st.error_body.len = 0;
        st.event[0] = st.id[0] = 0;
        uint64_t before = s->got_count;
        CURLcode cr = curl_easy_perform(c);
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
        curl_slist_free_all(hdrs);
        s2_buf_free(&url);

        s2_runtime_lock(rt);
        bool stopped = s->state != S2_SESSION_OPEN || s2_runtime_stopping(rt);
        s2_runtime_unlock(rt);
        if (stopped) break;
        if (st.done || (cr == CURLE_OK && status == 200 && !st.failed)) {
            stop_with(s, NULL, true); /* a limit was reached */
            break;
        }
        if (st.failed) {
            err = st.err;
        } else if (status && status != 200) {
            s2_error_from_response(&err, (int)status, st.error_body.data, st.error_body.len);
        } else {
            s2_fail(&err, cr == CURLE_OPERATION_TIMEDOUT ? S2_E_TIMEOUT : S2_E_CONNECTION,
                    cr == CURLE_OPERATION_TIMEDOUT ? "timeout" : "connection_failed",
                    "event stream: %s", curl_easy_strerror(cr));
            err.retryable = true;
        }
        if (s->got_count > before) attempt = 0; /* progress */
        unsigned max = cfg->max_attempts ? cfg->max_attempts : 1;
        if (!err.retryable || attempt + 1 >= max) {
            if (attempt > 0) {
                size_t l = strlen(err.message);
                snprintf(err.message + l, sizeof err.message - l, " (after %u attempts)", attempt + 1);
            }
            stop_with(s, &err, false);
            break;
        }
        double wake = s2_now() + s2_runtime_backoff(rt, attempt, err.retry_after_ms);
        attempt++;
        s2_runtime_lock(rt);
        s->rstatus.reconnects++;
        while (s->state == S2_SESSION_OPEN && !s2_runtime_stopping(rt) && s2_runtime_wait(rt, wake)) {
        }
        s2_runtime_unlock(rt);
    }
out:
    if (st.curl) curl_easy_cleanup(st.curl);
    s2_buf_free(&st.line);
    s2_buf_free(&st.data);
    s2_buf_free(&st.error_body);
    s2_runtime_lock(rt);
    s->worker_done = true;
    s2_runtime_broadcast(rt);
    s2_runtime_unlock(rt);
    return NULL;
}

/* under mu */
int s2_reader_start_sse(s2_append_session *s, s2_error *err) {
    s->http1 = true;
    if (s->worker_started) return 0;
    int rc = s2_thread_start(&s->worker, "s2-sse", sse_worker, s, false);
    if (rc != 0)
        return s2_fail(err, S2_E_NOMEM, "out_of_memory", "cannot start the HTTP/1.1 reader: %s",
                       strerror(rc));
    s->worker_started = true;
    return 0;
}
