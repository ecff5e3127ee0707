/* fuzz_sse.c — libFuzzer harness for the HTTP/1.1 read fallback's parsers (csrc/s2_sse_parse.c).
 *
 * The first byte picks the mode; the rest is the input:
 *   0  An event stream (the second byte seeds the chunking). It is fed three ways: in one
 *      piece; in small chunks of varying size (each its own allocation, so ASan sees a read
 *      past a chunk); and in one piece but stopping at every event and feeding the rest
 *      again, as the worker does after [DONE]. All three must see the same events (name, id,
 *      data) and the same outcome. Every batch event's data then goes through mode 1, every
 *      ping through the ping parser, every id through the id parser.
 *   1  A JSON ReadBatch. When it parses: each record's headers are the next ones of the
 *      batch's header array (no overlap, no gap), every byte range lies in the batch's
 *      payload and is read; the batch is written back as JSON (base64, like S2) and parsed
 *      again, and encoded as protobuf and decoded: the same records and tail each time.
 *   2  The input as a ping event's data and as an event id.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "s2_sse_parse.h"

#define CHECK(c)                                                                               \
    do {                                                                                       \
        if (!(c)) {                                                                            \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);             \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

static volatile uint8_t sink;

static void touch(const uint8_t *p, size_t n) {
    uint8_t x = 0;
    for (size_t i = 0; i < n; i++) x ^= p[i];
    sink ^= x;
}

static int same_bytes(const uint8_t *a, size_t an, const uint8_t *b, size_t bn) {
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

static void check_error(const s2_error *err) {
    CHECK(err->kind == S2_E_PROTOCOL || err->kind == S2_E_NOMEM);
    CHECK(memchr(err->code, 0, sizeof err->code) && memchr(err->message, 0, sizeof err->message));
}

static int in_range(const uint8_t *p, size_t n, const s2_buf *payload) {
    if (n == 0) return 1;
    return payload->data && p >= payload->data && n <= payload->len &&
           (size_t)(p - payload->data) <= payload->len - n;
}

static void b64_put(s2_buf *out, const uint8_t *p, size_t n) {
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    CHECK(s2_buf_append(out, "\"", 1) == 0);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        char q[4] = {a[v >> 18 & 63], a[v >> 12 & 63], i + 1 < n ? a[v >> 6 & 63] : '=',
                     i + 2 < n ? a[v & 63] : '='};
        CHECK(s2_buf_append(out, q, 4) == 0);
    }
    CHECK(s2_buf_append(out, "\"", 1) == 0);
}

/* The batch as S2 writes it in an SSE batch event (s2-format: base64). */
static void to_json(const s2_read_batch *b, s2_buf *out) {
    char num[128]; /* the longest piece: the tail, two 20-digit numbers and 33 bytes */
    CHECK(s2_buf_append_str(out, "{\"records\":[") == 0);
    for (size_t i = 0; i < b->num_records; i++) {
        const s2_sequenced_record *r = &b->records[i];
        snprintf(num, sizeof num, "%s{\"seq_num\":%llu,\"timestamp\":%llu", i ? "," : "",
                 (unsigned long long)r->seq_num, (unsigned long long)r->timestamp);
        CHECK(s2_buf_append_str(out, num) == 0);
        if (r->num_headers) {
            CHECK(s2_buf_append_str(out, ",\"headers\":[") == 0);
            for (size_t j = 0; j < r->num_headers; j++) {
                CHECK(s2_buf_append_str(out, j ? ",[" : "[") == 0);
                b64_put(out, r->headers[j].name, r->headers[j].name_len);
                CHECK(s2_buf_append_str(out, ",") == 0);
                b64_put(out, r->headers[j].value, r->headers[j].value_len);
                CHECK(s2_buf_append_str(out, "]") == 0);
            }
            CHECK(s2_buf_append_str(out, "]") == 0);
        }
        CHECK(s2_buf_append_str(out, ",\"body\":") == 0);
        b64_put(out, r->body, r->body_len);
        CHECK(s2_buf_append_str(out, "}") == 0);
    }
    CHECK(s2_buf_append_str(out, "]") == 0);
    if (b->has_tail) {
        snprintf(num, sizeof num, ",\"tail\":{\"seq_num\":%llu,\"timestamp\":%llu}",
                 (unsigned long long)b->tail.seq_num, (unsigned long long)b->tail.timestamp);
        CHECK(s2_buf_append_str(out, num) == 0);
    }
    CHECK(s2_buf_append_str(out, "}") == 0);
}

static void check_same(const s2_read_batch *a, const s2_read_batch *b) {
    CHECK(a->num_records == b->num_records);
    CHECK(a->has_tail == b->has_tail);
    if (a->has_tail) CHECK(a->tail.seq_num == b->tail.seq_num && a->tail.timestamp == b->tail.timestamp);
    for (size_t i = 0; i < a->num_records; i++) {
        const s2_sequenced_record *x = &a->records[i], *y = &b->records[i];
        CHECK(x->seq_num == y->seq_num && x->timestamp == y->timestamp);
        CHECK(same_bytes(x->body, x->body_len, y->body, y->body_len));
        CHECK(x->num_headers == y->num_headers);
        for (size_t j = 0; j < x->num_headers; j++) {
            CHECK(same_bytes(x->headers[j].name, x->headers[j].name_len, y->headers[j].name,
                             y->headers[j].name_len));
            CHECK(same_bytes(x->headers[j].value, x->headers[j].value_len, y->headers[j].value,
                             y->headers[j].value_len));
        }
    }
}

static void fuzz_batch(const uint8_t *p, size_t n, int again) {
    s2_error err;
    s2_rbatch *b = s2_sse_parse_batch(p, n, &err);
    if (!b) {
        check_error(&err);
        return;
    }
    const s2_read_batch *rb = &b->batch;
    size_t next = 0; /* index of the record's first header in owned_headers */
    for (size_t i = 0; i < rb->num_records; i++) {
        const s2_sequenced_record *r = &rb->records[i];
        CHECK(in_range(r->body, r->body_len, &b->payload));
        touch(r->body, r->body_len);
        if (!r->num_headers) {
            CHECK(r->headers == NULL);
            continue;
        }
        CHECK(r->headers == rb->owned_headers + next);
        next += r->num_headers;
        for (size_t j = 0; j < r->num_headers; j++) {
            const s2_header *h = &r->headers[j];
            CHECK(in_range(h->name, h->name_len, &b->payload));
            CHECK(in_range(h->value, h->value_len, &b->payload));
            touch(h->name, h->name_len);
            touch(h->value, h->value_len);
        }
    }
    CHECK((next == 0) == (rb->owned_headers == NULL));
    if (again) {
        /* Written back as JSON and parsed again: the same batch. */
        s2_buf js;
        s2_buf_init(&js);
        to_json(rb, &js);
        s2_rbatch *c = s2_sse_parse_batch(js.data, js.len, &err);
        CHECK(c); /* what we wrote ourselves must parse */
        check_same(rb, &c->batch);
        s2_sse_rbatch_free(c);
        s2_buf_free(&js);
        /* And through the protobuf codec (the HTTP/2 path's format). */
        size_t len = s2_read_batch_encoded_len(rb);
        uint8_t *out = calloc(1, len ? len : 1);
        CHECK(out);
        s2_read_batch_encode(rb, out);
        s2_read_batch pb;
        CHECK(s2_read_batch_decode(out, len, &pb, &err) == 0);
        check_same(rb, &pb);
        s2_read_batch_free(&pb);
        free(out);
    }
    s2_sse_rbatch_free(b);
}

static void fuzz_id(const char *id) {
    uint64_t a, b, c;
    if (s2_sse_parse_id(id, &a, &b, &c) != 0) return;
    /* It goes into a request header: digits and two commas, nothing else. */
    size_t commas = 0;
    for (const char *p = id; *p; p++) {
        CHECK((*p >= '0' && *p <= '9') || *p == ',');
        commas += *p == ',';
    }
    CHECK(commas == 2);
}

/* ---- event streams ------------------------------------------------------------------------- */

typedef struct {
    uint64_t hash;
    size_t events;
    int stop_each; /* ask the parser to stop after every event */
    int parse;     /* also run the event parsers */
} collect;

static void mix(uint64_t *h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) *h = (*h ^ b[i]) * 0x100000001b3ull;
}

static int on_event(void *ud, const s2_sse_parser *p, const uint8_t *data, size_t len) {
    collect *c = ud;
    CHECK(memchr(p->event, 0, sizeof p->event) && memchr(p->id, 0, sizeof p->id));
    CHECK(len <= S2_SSE_EVENT_MAX);
    CHECK(data[len] == 0); /* NUL-terminated, as the buffer promises */
    touch(data, len);
    c->events++;
    uint8_t flags = (uint8_t)(p->event_long | p->id_long << 1);
    mix(&c->hash, p->event, strlen(p->event) + 1);
    mix(&c->hash, p->id, strlen(p->id) + 1);
    mix(&c->hash, &flags, 1);
    mix(&c->hash, &len, sizeof len);
    mix(&c->hash, data, len);
    if (c->parse) {
        fuzz_id(p->id);
        if (!p->event_long && strcmp(p->event, "batch") == 0) fuzz_batch(data, len, 1);
        if (!p->event_long && strcmp(p->event, "ping") == 0) {
            s2_position t;
            (void)s2_sse_parse_ping(data, len, &t);
        }
    }
    return c->stop_each;
}

/* Feeds p[0..n) in pieces; returns the parser's outcome (0, or -1 on error). */
static int feed_all(const uint8_t *p, size_t n, uint8_t seed, collect *c) {
    s2_sse_parser ps;
    s2_sse_parser_init(&ps);
    s2_error err;
    int rc = 0;
    uint32_t rng = seed | 1u;
    size_t off = 0;
    while (off < n && rc == 0) {
        size_t chunk = n - off;
        if (seed) { /* chunks of 1..16 bytes, each its own allocation */
            rng = rng * 1103515245u + 12345u;
            size_t want = 1 + (rng >> 16) % 16;
            if (want < chunk) chunk = want;
        }
        uint8_t *piece = malloc(chunk);
        CHECK(piece);
        memcpy(piece, p + off, chunk);
        size_t done = 0;
        while (done < chunk) {
            size_t used;
            int r = s2_sse_feed(&ps, piece + done, chunk - done, on_event, c, &used, &err);
            if (r < 0) {
                check_error(&err);
                rc = -1;
                break;
            }
            CHECK(used <= chunk - done);
            if (r == 0) CHECK(used == chunk - done);
            if (r == 1) CHECK(c->stop_each);
            done += used;
            if (r == 0) break;
        }
        free(piece);
        off += chunk;
    }
    s2_sse_parser_free(&ps);
    return rc;
}

static void fuzz_stream(const uint8_t *p, size_t n) {
    if (n == 0) return;
    uint8_t seed = p[0];
    p++, n--;
    collect whole = {0xcbf29ce484222325ull, 0, 0, 1};
    collect chunked = {0xcbf29ce484222325ull, 0, 0, 0};
    collect stopping = {0xcbf29ce484222325ull, 0, 1, 0};
    int a = feed_all(p, n, 0, &whole);
    int b = feed_all(p, n, seed ? seed : 1, &chunked);
    int c = feed_all(p, n, 0, &stopping);
    CHECK(a == b && a == c);
    CHECK(whole.events == chunked.events && whole.events == stopping.events);
    CHECK(whole.hash == chunked.hash && whole.hash == stopping.hash);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    /* An exact copy of the input after the selector, so ASan sees reads past its end. */
    size_t n = size - 1;
    uint8_t *p = malloc(n ? n : 1);
    if (!p) return 0;
    if (n) memcpy(p, data + 1, n);
    switch (data[0] % 3) {
    case 0: fuzz_stream(p, n); break;
    case 1: fuzz_batch(p, n, 1); break;
    case 2: {
        s2_position t;
        (void)s2_sse_parse_ping(p, n, &t);
        char *id = malloc(n + 1);
        if (id) {
            memcpy(id, p, n);
            id[n] = 0;
            fuzz_id(id);
            free(id);
        }
        break;
    }
    }
    free(p);
    return 0;
}
