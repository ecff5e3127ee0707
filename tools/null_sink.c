/*
 * null_sink — an S2 server that does (almost) nothing, so a benchmark measures the client.
 *
 *   null-sink --port PORT [--read-record-size N] [--exit-on-stdin-eof] [-v]
 *
 * It speaks the parts of S2 v1 that the append and read benchmarks use, on 127.0.0.1:PORT
 * (0 = any free port), over HTTP/2 cleartext with prior knowledge and over HTTP/1.1 on the
 * same port (the first bytes decide, like s2-lite). When ready it prints, on stdout, flushed,
 * `listening <port>`. Every batch is acknowledged at once and nothing is stored: a stream is
 * a name and a counter (its next seq_num). Reads are served from a generated stream.
 *
 *   POST /v1/streams/{s}/records  content-type s2s/proto (HTTP/2): an append session. Each
 *                                 S2S frame (zstd / gzip frames are inflated) is decoded only
 *                                 as far as counting its AppendInput's records (field 1); the
 *                                 AppendAck goes out at once: start = the stream's next
 *                                 seq_num, end = start + count, tail = end. 0 or > 1000
 *                                 records: terminal 422 invalid; an undecodable frame:
 *                                 terminal 400 bad_frame / bad_proto. Ends when the client
 *                                 ends its body.
 *   POST /v1/streams/{s}/records  application/protobuf or application/x-protobuf: a unary
 *                                 append (AppendInput in, AppendAck out, counted the same way);
 *                                 application/json: the same with {"records":[...]} (only the
 *                                 array's length is read); answered in JSON.
 *   GET  /v1/streams/{s}/records  content-type s2s/proto (HTTP/2): a read session, ReadBatch
 *                                 frames of <= 1000 records and <= 1 MiB metered (one record
 *                                 at least), each with the tail. It stops once `count`
 *                                 records or `bytes` metered bytes went out, or, when one of
 *                                 them was given without `wait`, at the tail. Otherwise it
 *                                 follows: a heartbeat (a ReadBatch with the tail only) when
 *                                 it catches up and every 5 s while idle, and records that
 *                                 are appended meanwhile (by any client) as they land.
 *   GET  /v1/streams/{s}/records  otherwise: a unary read, <= 1000 records (count) and
 *                                 <= 1 MiB metered (bytes), one record at least; a ReadBatch
 *                                 in protobuf when accept names protobuf, else in JSON (bodies
 *                                 base64 with s2-format: base64, else as they are).
 *                                 Start (both kinds of read): seq_num, else timestamp (the
 *                                 same numbers, see below), else tail_offset, else the tail;
 *                                 past the tail: 416 {"tail":...} unless clamp=true. `wait` is
 *                                 not timed: a read at the tail answers at once.
 *   GET  /v1/streams/{s}/records/tail   {"tail":{"seq_num":N,"timestamp":T}}
 *   POST/GET/PUT/PATCH/DELETE /v1/basins[/{b}], /v1/streams[/{s}]   success, so benchmark
 *                                 setups work: create 201 with a BasinInfo / StreamInfo of
 *                                 the requested name, ensure (PUT) 201 the same, get / patch
 *                                 200 with a default config, list 200 empty, delete 202 (a
 *                                 deleted stream is forgotten: its counter starts again).
 *   GET  /health, /ping, /v1/health     200 OK
 *   GET  /sink/stats                    {"connections":N,"requests":N,"sessions":N,
 *                                       "read_sessions":N,"unary_appends":N,"unary_reads":N,
 *                                       "frames_in":N,"records_in":N,"batches_out":N,
 *                                       "records_out":N,"heartbeats":N}
 * Anything else gets 501 not_implemented, SSE reads (accept: text/event-stream) included.
 * The s2-basin header, the token, match_seq_num, fencing tokens, record timestamps and
 * headers are ignored; streams are one namespace across basins.
 *
 * The generated stream. A stream named `gen-SIZE-COUNT` (decimal, e.g. gen-128-1000000)
 * starts with COUNT records of SIZE bytes (SIZE <= 1048568); any other stream starts empty,
 * and its records read back with --read-record-size bytes (default 128). Appends to either
 * kind move the counter on. Record i (its seq_num) reads back with timestamp i (so the
 * timestamp of a read start is a seq_num), no headers, and the body
 *     ("%016x"):format(i) .. ("x"):rep(SIZE - 16)      when SIZE >= 16,
 *     the last SIZE characters of ("%016x"):format(i)  when SIZE < 16.
 * The tail is {next seq_num, next seq_num - 1 (0 when empty)}; acks carry the same
 * timestamps (start.timestamp = start seq_num, end.timestamp = end seq_num - 1).
 *
 * Cost per record (this shares the CPU with the client being measured): an append costs a
 * varint walk over the AppendInput's top-level fields (bodies are skipped, never copied
 * again after the frame decoder's buffer); a read writes the record's ~6 bytes of protobuf
 * framing, copies the stream's body template and patches its 16 hex digits, into the
 * response buffer that nghttp2 copies from (ReadBatch frames are made on demand in its data
 * callback, one at a time, so a slow reader holds at most one frame).
 *
 * Design: one thread, one epoll loop, non-blocking sockets, as tools/fault_server.c. HTTP/2
 * through nghttp2's server session (100 concurrent streams is raised to 1000, 16 MiB
 * windows); HTTP/1.1 by a small parser (Content-Length bodies, keep-alive, Expect:
 * 100-continue answered). Streams are a hash table by name.
 *
 * --exit-on-stdin-eof makes it exit when stdin reaches EOF (a harness holding the pipe's
 * write end cannot leak it). SIGTERM / SIGINT exit with status 0.
 *
 * Build (make build/null-sink):
 *   cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -O2 -Icsrc \
 *      $(pkg-config --cflags libnghttp2 libzstd zlib) -o build/null-sink tools/null_sink.c \
 *      csrc/s2_buf.c csrc/s2_json.c csrc/s2_error.c csrc/s2_proto.c csrc/s2_frame.c \
 *      $(pkg-config --libs libnghttp2 libzstd zlib)
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "s2.h"
#include "s2_internal.h"

#define READ_CHUNK (256 * 1024)
#define MAX_EVENTS 256
#define MAX_UNARY_BODY (8u * 1024u * 1024u)
#define H1_HEAD_MAX (64 * 1024)
#define CLOSE_DRAIN_MS 2000
#define WINDOW (16 * 1024 * 1024)
#define MAX_STREAMS_PER_CONN 1000
#define READ_MAX_RECORDS 1000
#define READ_MAX_BYTES (1024u * 1024u) /* metered: body + 8 */
#define MAX_GEN_SIZE (1024u * 1024u - 8u)
#define HEARTBEAT_MS 5000
#define STREAM_BUCKETS 4096

static const char PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define PREFACE_LEN 24

enum hkind { K_LISTEN, K_CONN, K_SIGNAL, K_STDIN };

struct handle {
    enum hkind kind;
    int fd; /* -1 once closed */
    uint32_t events;
    void *owner;
};

/* ---------------------------------------------------------------- streams */

struct sstream {
    struct sstream *next; /* hash chain */
    char *name;
    uint64_t next_seq;
    size_t size;    /* body size of generated records */
    uint8_t *tmpl;  /* size bytes: 16 hex digits (patched per record), then 'x' */
};

/* ---------------------------------------------------------------- requests, connections */

enum rkind { R_OTHER, R_SESSION, R_RSESSION, R_UNARY_APPEND, R_UNARY_READ, R_TAIL, R_HEALTH,
             R_STATS, R_BASINS, R_BASIN, R_STREAMS, R_STREAM };

struct conn;

struct req {
    struct req *prev, *next;  /* the connection's requests */
    struct req *fprev, *fnext; /* g.followers, while in_followers */
    int in_followers;
    struct conn *c;
    int32_t id; /* HTTP/2 stream id; 0 on HTTP/1.1 */
    enum rkind kind;
    char method[8];
    char *path;
    char ctype[64];
    char accept[64];
    int b64;       /* s2-format: base64 */
    int expect100; /* HTTP/1.1 Expect: 100-continue */
    char *name;    /* decoded basin / stream name of the route, or NULL */
    s2_buf body;
    int too_big;
    int started, ended, responded, stopped;
    /* HTTP/2 response body, pulled by read_cb */
    s2_buf out;
    size_t out_off;
    int out_eof;
    /* append session */
    s2_frame_decoder dec;
    /* read session */
    uint64_t rnext;
    int has_count, has_bytes, has_wait;
    uint64_t left_count, left_bytes;
    int caught_up;  /* a heartbeat went out since the last records */
    int64_t last_hb;
};

enum cmode { CM_SNIFF, CM_H1, CM_H2 };

struct conn {
    struct conn *prev, *next;
    struct handle h;
    enum cmode mode;
    s2_buf in; /* sniffing and HTTP/1.1 */
    nghttp2_session *h2;
    s2_buf out;
    size_t out_off;
    int blocked;
    struct req *reqs;
    struct req *h1; /* HTTP/1.1 request whose body is coming */
    size_t h1_need;
    int h1_close;
    int closing, shut;
    int64_t close_deadline;
    int dead;
};

static struct {
    int ep;
    struct handle listen, sig, in;
    int verbose, quit;
    int64_t now;
    size_t default_size;
    struct sstream *buckets[STREAM_BUCKETS];
    struct conn *conns, *dead_conns;
    struct req *followers; /* read sessions waiting at the tail (deferred) */
    uint64_t n_conns, n_requests, n_sessions, n_rsessions, n_uappends, n_ureads, n_frames,
        n_records_in, n_batches_out, n_records_out, n_heartbeats;
} g;

/* ---------------------------------------------------------------- utilities */

static void vlog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void vlog(const char *fmt, ...) {
    if (!g.verbose) return;
    va_list ap;
    va_start(ap, fmt);
    fputs("null_sink: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void logw(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logw(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("null_sink: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Out of memory is fatal: this is a benchmark instrument, not a server to keep alive. */
static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        logw("out of memory");
        abort();
    }
    return p;
}

static char *xstrndup(const char *s, size_t n) {
    char *d = xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

static void buf_reserve(s2_buf *b, size_t n) {
    if (s2_buf_reserve(b, n) != 0) {
        logw("out of memory");
        abort();
    }
}

static void buf_put(s2_buf *b, const void *p, size_t n) {
    if (s2_buf_append(b, p, n) != 0) {
        logw("out of memory");
        abort();
    }
}

static void buf_printf(s2_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(s2_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    buf_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static int parse_u64(const char *s, uint64_t *out) {
    if (!s || !*s || *s == '-' || *s == '+') return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

static void json_escape(s2_buf *b, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            buf_put(b, "\\", 1);
            buf_put(b, &ch, 1);
        } else if (ch < 0x20) {
            buf_printf(b, "\\u%04x", ch);
        } else {
            buf_put(b, &ch, 1);
        }
    }
}

static int hexval(int ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into a new string; NULL when malformed or holding a NUL. */
static char *url_decode(const char *s, size_t n) {
    char *d = xmalloc(n + 1);
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int hi = i + 2 < n ? hexval(s[i + 1]) : -1, lo = i + 2 < n ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                free(d);
                return NULL;
            }
            d[j++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            d[j++] = s[i];
        }
    }
    d[j] = 0;
    return d;
}

/* The value of query parameter `name` in path (up to '&' or the end), or NULL. */
static const char *query_value(const char *path, const char *name, size_t *len) {
    const char *q = path ? strchr(path, '?') : NULL;
    size_t nl = strlen(name);
    while (q) {
        q++;
        if (!strncmp(q, name, nl) && q[nl] == '=') {
            const char *v = q + nl + 1;
            *len = strcspn(v, "&");
            return v;
        }
        q = strchr(q, '&');
    }
    return NULL;
}

static int query_u64(const char *path, const char *name, uint64_t *out) {
    size_t len;
    const char *v = query_value(path, name, &len);
    if (!v || len == 0 || len > 20) return 0;
    char tmp[24];
    memcpy(tmp, v, len);
    tmp[len] = 0;
    return parse_u64(tmp, out) == 0;
}

static const char *reason(int status) {
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 416: return "Range Not Satisfiable";
    case 422: return "Unprocessable Entity";
    case 501: return "Not Implemented";
    default: return "Status";
    }
}

/* ---------------------------------------------------------------- varints, protobuf */

static size_t vlen(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *vput(uint8_t *p, uint64_t v) {
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

static int vget(const uint8_t **p, const uint8_t *end, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end) return -1;
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* Counts an AppendInput's records (field 1) without decoding them. -1: not protobuf. */
static int64_t count_records(const uint8_t *p, size_t len) {
    const uint8_t *end = p + len;
    int64_t n = 0;
    while (p < end) {
        uint64_t tag, v;
        if (vget(&p, end, &tag) != 0) return -1;
        switch (tag & 7) {
        case 0:
            if (vget(&p, end, &v) != 0) return -1;
            break;
        case 1:
            if (end - p < 8) return -1;
            p += 8;
            break;
        case 2:
            if (vget(&p, end, &v) != 0 || v > (uint64_t)(end - p)) return -1;
            p += v;
            if (tag >> 3 == 1) n++;
            break;
        case 5:
            if (end - p < 4) return -1;
            p += 4;
            break;
        default: return -1;
        }
    }
    return n;
}

/* ---------------------------------------------------------------- streams */

static uint64_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ull;
    while (*s) h = (h ^ (uint8_t)*s++) * 1099511628211ull;
    return h;
}

static struct sstream *stream_get(const char *name) {
    struct sstream **b = &g.buckets[hash_name(name) % STREAM_BUCKETS];
    for (struct sstream *s = *b; s; s = s->next)
        if (!strcmp(s->name, name)) return s;
    struct sstream *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->name = xstrndup(name, strlen(name));
    s->size = g.default_size;
    unsigned long long size, count;
    char tail;
    if (sscanf(name, "gen-%llu-%llu%c", &size, &count, &tail) == 2 && size <= MAX_GEN_SIZE) {
        s->size = (size_t)size;
        s->next_seq = count;
    }
    s->tmpl = xmalloc(s->size);
    memset(s->tmpl, 'x', s->size);
    s->next = *b;
    *b = s;
    return s;
}

static void stream_forget(const char *name) {
    struct sstream **b = &g.buckets[hash_name(name) % STREAM_BUCKETS];
    for (; *b; b = &(*b)->next) {
        if (!strcmp((*b)->name, name)) {
            struct sstream *s = *b;
            *b = s->next;
            free(s->tmpl); /* requests look streams up by name: nothing points here */
            free(s->name);
            free(s);
            return;
        }
    }
}

static void streams_free(void) {
    for (size_t i = 0; i < STREAM_BUCKETS; i++) {
        while (g.buckets[i]) {
            struct sstream *s = g.buckets[i];
            g.buckets[i] = s->next;
            free(s->tmpl);
            free(s->name);
            free(s);
        }
    }
}

static uint64_t tail_ts(uint64_t seq) { return seq ? seq - 1 : 0; }

/* Writes record i's body (st->size bytes) at p. */
static void gen_body(const struct sstream *st, uint64_t i, uint8_t *p) {
    static const char hx[] = "0123456789abcdef";
    size_t s = st->size;
    if (s) memcpy(p, st->tmpl, s);
    size_t k = s < 16 ? s : 16; /* hex digits written: the last k of 16 */
    for (size_t j = 0; j < k; j++) p[k - 1 - j] = (uint8_t)hx[(i >> (4 * j)) & 15];
}

static size_t rec_inner_len(const struct sstream *st, uint64_t i) {
    return 1 + vlen(i) + 1 + vlen(i) + 1 + vlen(st->size) + st->size;
}

/* Records of st from `from` that fit one read: <= max_count, <= max_bytes metered (one
 * record at least), up to the tail. */
static uint64_t batch_take(const struct sstream *st, uint64_t from, uint64_t max_count,
                           uint64_t max_bytes) {
    uint64_t avail = st->next_seq > from ? st->next_seq - from : 0;
    uint64_t per = st->size + 8;
    uint64_t by_bytes = max_bytes / per;
    if (by_bytes < 1) by_bytes = 1;
    uint64_t k = avail < max_count ? avail : max_count;
    return k < by_bytes ? k : by_bytes;
}

/* Appends a ReadBatch (records [from, from + k) of st, and the tail) to b, in protobuf;
 * with framed, as one S2S frame. */
static void gen_batch_proto(s2_buf *b, const struct sstream *st, uint64_t from, uint64_t k,
                            int framed) {
    uint64_t tail = st->next_seq;
    size_t tail_inner = 1 + vlen(tail) + 1 + vlen(tail_ts(tail));
    size_t total = 1 + vlen(tail_inner) + tail_inner;
    for (uint64_t i = from; i < from + k; i++) {
        size_t inner = rec_inner_len(st, i);
        total += 1 + vlen(inner) + inner;
    }
    buf_reserve(b, total + 4);
    uint8_t *p = b->data + b->len;
    if (framed) {
        size_t l = total + 1;
        *p++ = (uint8_t)(l >> 16);
        *p++ = (uint8_t)(l >> 8);
        *p++ = (uint8_t)l;
        *p++ = 0;
    }
    for (uint64_t i = from; i < from + k; i++) {
        *p++ = 0x0a;
        p = vput(p, rec_inner_len(st, i));
        *p++ = 0x08;
        p = vput(p, i);
        *p++ = 0x10;
        p = vput(p, i);
        *p++ = 0x22;
        p = vput(p, st->size);
        gen_body(st, i, p);
        p += st->size;
    }
    *p++ = 0x12;
    p = vput(p, tail_inner);
    *p++ = 0x08;
    p = vput(p, tail);
    *p++ = 0x10;
    p = vput(p, tail_ts(tail));
    b->len = (size_t)(p - b->data);
    b->data[b->len] = 0;
}

static void b64_put(s2_buf *b, const uint8_t *p, size_t n) {
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    buf_reserve(b, (n + 2) / 3 * 4);
    uint8_t *o = b->data + b->len;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        *o++ = (uint8_t)a[v >> 18 & 63];
        *o++ = (uint8_t)a[v >> 12 & 63];
        *o++ = (uint8_t)(i + 1 < n ? a[v >> 6 & 63] : '=');
        *o++ = (uint8_t)(i + 2 < n ? a[v & 63] : '=');
    }
    b->len = (size_t)(o - b->data);
    b->data[b->len] = 0;
}

static void gen_batch_json(s2_buf *b, const struct sstream *st, uint64_t from, uint64_t k,
                           int b64) {
    uint8_t *body = xmalloc(st->size);
    buf_printf(b, "{\"records\":[");
    for (uint64_t i = from; i < from + k; i++) {
        buf_printf(b, "%s{\"seq_num\":%" PRIu64 ",\"timestamp\":%" PRIu64 ",\"headers\":[],\"body\":\"",
                   i == from ? "" : ",", i, i);
        gen_body(st, i, body);
        if (b64) b64_put(b, body, st->size);
        else buf_put(b, body, st->size); /* hex digits and 'x': nothing to escape */
        buf_put(b, "\"}", 2);
    }
    buf_printf(b, "],\"tail\":{\"seq_num\":%" PRIu64 ",\"timestamp\":%" PRIu64 "}}", st->next_seq,
               tail_ts(st->next_seq));
    free(body);
}

/* Assigns n records to st; fills ack. */
static void stream_append(struct sstream *st, uint64_t n, s2_append_ack *ack) {
    uint64_t start = st->next_seq;
    st->next_seq += n;
    ack->start = (s2_position){start, start};
    ack->end = (s2_position){st->next_seq, tail_ts(st->next_seq)};
    ack->tail = ack->end;
    g.n_records_in += n;
}

/* ---------------------------------------------------------------- connections: I/O */

static int ep_set(struct handle *h, uint32_t want) {
    if (h->fd < 0) return 0;
    if (want == h->events) return 0;
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = want;
    ev.data.ptr = h;
    int op = h->events == 0 ? EPOLL_CTL_ADD : want == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    if (epoll_ctl(g.ep, op, h->fd, &ev) < 0) {
        logw("epoll_ctl(fd %d): %s", h->fd, strerror(errno));
        return -1;
    }
    h->events = want;
    return 0;
}

static void close_handle(struct handle *h) {
    if (h->fd < 0) return;
    close(h->fd);
    h->fd = -1;
    h->events = 0;
}

static int listen_on(int port, int *bound) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 4096) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    *bound = ntohs(a.sin_port);
    return fd;
}

static void follower_remove(struct req *r) {
    if (!r->in_followers) return;
    if (r->fprev) r->fprev->fnext = r->fnext;
    else g.followers = r->fnext;
    if (r->fnext) r->fnext->fprev = r->fprev;
    r->fprev = r->fnext = NULL;
    r->in_followers = 0;
}

static void follower_add(struct req *r) {
    if (r->in_followers) return;
    r->fprev = NULL;
    r->fnext = g.followers;
    if (g.followers) g.followers->fprev = r;
    g.followers = r;
    r->in_followers = 1;
}

static struct req *req_new(struct conn *c, int32_t id) {
    struct req *r = calloc(1, sizeof *r);
    if (!r) abort();
    r->c = c;
    r->id = id;
    s2_buf_init(&r->body);
    s2_buf_init(&r->out);
    s2_frame_decoder_init(&r->dec);
    r->next = c->reqs;
    if (c->reqs) c->reqs->prev = r;
    c->reqs = r;
    return r;
}

static void req_free(struct req *r) {
    struct conn *c = r->c;
    follower_remove(r);
    if (r->prev) r->prev->next = r->next;
    else c->reqs = r->next;
    if (r->next) r->next->prev = r->prev;
    if (c->h1 == r) c->h1 = NULL;
    s2_buf_free(&r->body);
    s2_buf_free(&r->out);
    s2_frame_decoder_free(&r->dec);
    free(r->path);
    free(r->name);
    free(r);
}

static void conn_finish(struct conn *c, const char *why) {
    if (c->dead) return;
    vlog("conn closed (%s)", why);
    close_handle(&c->h);
    if (c->h2) {
        nghttp2_session_del(c->h2); /* no callbacks from here on */
        c->h2 = NULL;
    }
    while (c->reqs) req_free(c->reqs);
    s2_buf_free(&c->in);
    s2_buf_free(&c->out);
    c->out_off = 0;
    c->dead = 1;
    if (c->prev) c->prev->next = c->next;
    else g.conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = NULL;
    c->next = g.dead_conns;
    g.dead_conns = c;
}

/* Writes buffered output, asking nghttp2 for more while the socket takes it. -1: closed. */
static int conn_flush(struct conn *c) {
    if (c->dead) return -1;
    c->blocked = 0;
    for (;;) {
        while (c->out_off < c->out.len) {
            ssize_t n = send(c->h.fd, c->out.data + c->out_off, c->out.len - c->out_off,
                             MSG_NOSIGNAL);
            if (n > 0) {
                c->out_off += (size_t)n;
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                c->blocked = 1;
                return 0;
            }
            conn_finish(c, n < 0 ? strerror(errno) : "short send");
            return -1;
        }
        c->out.len = c->out_off = 0;
        if (c->mode != CM_H2 || !c->h2) break;
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->h2, &data);
        if (n < 0) {
            conn_finish(c, nghttp2_strerror((int)n));
            return -1;
        }
        if (n == 0) break;
        buf_put(&c->out, data, (size_t)n);
    }
    return 0;
}

static void conn_settle(struct conn *c, int64_t now) {
    if (c->dead) return;
    int drained = c->out_off >= c->out.len;
    if (!c->closing && c->mode == CM_H2 && c->h2 && drained &&
        !nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2))
        c->closing = 1;
    if (c->mode == CM_H1 && c->h1_close && drained && !c->h1) c->closing = 1;
    if (c->closing && drained && !c->shut) {
        (void)shutdown(c->h.fd, SHUT_WR);
        c->shut = 1;
        c->close_deadline = now + CLOSE_DRAIN_MS;
    }
    if (c->shut && now >= c->close_deadline) {
        conn_finish(c, "closed after FIN");
        return;
    }
    ep_set(&c->h, EPOLLIN | (c->blocked ? EPOLLOUT : 0u));
}

static void conn_service(struct conn *c, int64_t now) {
    if (conn_flush(c) == 0) conn_settle(c, now);
}

/* ---------------------------------------------------------------- responses */

static void rs_fill(struct req *r);

static ssize_t read_cb(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t len,
                       uint32_t *flags, nghttp2_data_source *src, void *ud) {
    (void)h2;
    (void)id;
    (void)ud;
    struct req *r = src->ptr;
    if (r->out_off == r->out.len) {
        r->out.len = r->out_off = 0;
        if (r->kind == R_RSESSION && !r->out_eof) rs_fill(r); /* the next frame, on demand */
    }
    size_t avail = r->out.len - r->out_off;
    if (avail) {
        size_t n = avail < len ? avail : len;
        memcpy(buf, r->out.data + r->out_off, n);
        r->out_off += n;
        if (r->out_off == r->out.len && r->out_eof) *flags |= NGHTTP2_DATA_FLAG_EOF;
        return (ssize_t)n;
    }
    if (r->out_eof) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
    }
    if (r->kind == R_RSESSION) follower_add(r);
    return NGHTTP2_ERR_DEFERRED;
}

/* Starts r's response. HTTP/1.1: the whole response into the connection's buffer (body
 * may be NULL with len > 0: the caller writes len bytes next). HTTP/2: headers, and the body
 * into r->out (eof: complete; else more comes, e.g. a session). */
static void respond(struct req *r, int status, const char *ctype, const void *body, size_t len,
                    int eof) {
    struct conn *c = r->c;
    if (r->responded) return;
    r->responded = 1;
    vlog("%d %s %s", status, r->method, r->path ? r->path : "?");
    if (c->mode == CM_H1) {
        buf_printf(&c->out, "HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\n%s\r\n",
                   status, reason(status), ctype, len, c->h1_close ? "connection: close\r\n" : "");
        if (body && len) buf_put(&c->out, body, len);
        return;
    }
    char st[8];
    snprintf(st, sizeof st, "%d", status);
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv nva[2] = {NV(":status", st), NV("content-type", ctype)};
#undef NV
    if (body && len) buf_put(&r->out, body, len);
    r->out_eof = eof;
    nghttp2_data_provider prd = {.source.ptr = r, .read_callback = read_cb};
    int rc = nghttp2_submit_response(c->h2, r->id, nva, 2, &prd);
    if (rc != 0) logw("submit_response: %s", nghttp2_strerror(rc));
}

static void respond_json(struct req *r, int status, const char *json) {
    respond(r, status, "application/json", json, strlen(json), 1);
}

static void respond_error(struct req *r, int status, const char *code, const char *msg) {
    s2_buf b;
    s2_buf_init(&b);
    buf_printf(&b, "{\"code\":\"%s\",\"message\":\"", code);
    json_escape(&b, msg, strlen(msg));
    buf_printf(&b, "\"}");
    respond(r, status, "application/json", b.data, b.len, 1);
    s2_buf_free(&b);
}

/* A response built in a buffer: HTTP/1.1 copies it after the head, HTTP/2 takes it over. */
static void respond_buf(struct req *r, int status, const char *ctype, s2_buf *b) {
    if (r->c->mode == CM_H2 && !r->responded) {
        s2_buf_free(&r->out);
        r->out = *b;
        r->out_off = 0;
        s2_buf_init(b);
        respond(r, status, ctype, NULL, 0, 1);
        return;
    }
    respond(r, status, ctype, b->data, b->len, 1);
    s2_buf_free(b);
}

/* ---------------------------------------------------------------- append sessions */

static void session_push(struct req *r, const uint8_t *payload, size_t len, uint8_t flags) {
    uint8_t h[4] = {(uint8_t)((len + 1) >> 16), (uint8_t)((len + 1) >> 8), (uint8_t)(len + 1),
                    flags};
    buf_put(&r->out, h, 4);
    if (len) buf_put(&r->out, payload, len);
}

static void session_terminal(struct req *r, int status, const char *code, const char *msg) {
    s2_buf b;
    s2_buf_init(&b);
    uint8_t st[2] = {(uint8_t)(status >> 8), (uint8_t)status};
    buf_put(&b, st, 2);
    buf_printf(&b, "{\"code\":\"%s\",\"message\":\"", code);
    json_escape(&b, msg, strlen(msg));
    buf_printf(&b, "\"}");
    session_push(r, b.data, b.len, S2_FRAME_TERMINAL);
    s2_buf_free(&b);
    r->out_eof = 1;
    r->stopped = 1;
    vlog("session terminal %d %s", status, msg);
}

static void session_input(struct req *r, const uint8_t *p, size_t n) {
    if (r->stopped) return;
    s2_error err;
    if (s2_frame_feed(&r->dec, p, n, &err) != 0) {
        session_terminal(r, 500, "other", "null_sink: out of memory");
        goto resume;
    }
    struct sstream *st = stream_get(r->name);
    s2_frame f;
    int rc;
    while (!r->stopped && (rc = s2_frame_next(&r->dec, &f, &err)) != 0) {
        if (rc < 0) {
            session_terminal(r, 400, "bad_frame", err.message);
            break;
        }
        g.n_frames++;
        if (f.terminal) {
            session_terminal(r, 400, "bad_frame", "a client must not send terminal frames");
            break;
        }
        int64_t k = count_records(f.payload, f.len);
        if (k < 0) {
            session_terminal(r, 400, "bad_proto", "AppendInput does not decode");
            break;
        }
        if (k < 1 || k > 1000) {
            session_terminal(r, 422, "invalid", "a batch holds 1 to 1000 records");
            break;
        }
        s2_append_ack ack;
        stream_append(st, (uint64_t)k, &ack);
        uint8_t payload[S2_APPEND_ACK_MAX_LEN];
        session_push(r, payload, s2_append_ack_encode(&ack, payload), 0);
    }
resume:
    (void)nghttp2_session_resume_data(r->c->h2, r->id);
}

/* ---------------------------------------------------------------- reads */

/* Resolves a read's start (seq_num, timestamp, tail_offset, else the tail) against st.
 * Returns 0, or answers 416 and returns -1. */
static int read_start(struct req *r, const struct sstream *st, uint64_t *start) {
    uint64_t tail = st->next_seq, v;
    uint64_t s = tail;
    if (query_u64(r->path, "seq_num", &v) || query_u64(r->path, "timestamp", &v)) s = v;
    else if (query_u64(r->path, "tail_offset", &v)) s = v > tail ? 0 : tail - v;
    size_t cl;
    const char *clamp = query_value(r->path, "clamp", &cl);
    if (s > tail) {
        if (clamp && cl == 4 && !strncmp(clamp, "true", 4)) {
            s = tail;
        } else {
            char m[128];
            snprintf(m, sizeof m, "{\"tail\":{\"seq_num\":%" PRIu64 ",\"timestamp\":%" PRIu64 "}}",
                     tail, tail_ts(tail));
            respond_json(r, 416, m);
            return -1;
        }
    }
    *start = s;
    return 0;
}

static void serve_unary_read(struct req *r) {
    g.n_ureads++;
    struct sstream *st = stream_get(r->name);
    uint64_t start, count = READ_MAX_RECORDS, bytes = READ_MAX_BYTES, v;
    if (read_start(r, st, &start) != 0) return;
    if (query_u64(r->path, "count", &v) && v > 0 && v < count) count = v;
    if (query_u64(r->path, "bytes", &v) && v > 0 && v < bytes) bytes = v;
    uint64_t k = batch_take(st, start, count, bytes);
    s2_buf b;
    s2_buf_init(&b);
    g.n_records_out += k;
    if (strstr(r->accept, "protobuf")) {
        gen_batch_proto(&b, st, start, k, 0);
        respond_buf(r, 200, "application/protobuf", &b);
    } else {
        gen_batch_json(&b, st, start, k, r->b64);
        respond_buf(r, 200, "application/json", &b);
    }
}

/* The next frame of a read session into r->out (called by read_cb when r->out is empty):
 * records, a heartbeat, or the end. Nothing when it waits at the tail (read_cb defers). */
static void rs_fill(struct req *r) {
    struct sstream *st = stream_get(r->name);
    if ((r->has_count && r->left_count == 0) || (r->has_bytes && r->left_bytes == 0)) {
        r->out_eof = 1;
        return;
    }
    if (r->rnext < st->next_seq) {
        uint64_t k = batch_take(st, r->rnext, r->has_count && r->left_count < READ_MAX_RECORDS
                                                  ? r->left_count : READ_MAX_RECORDS,
                                r->has_bytes && r->left_bytes < READ_MAX_BYTES
                                    ? r->left_bytes : READ_MAX_BYTES);
        gen_batch_proto(&r->out, st, r->rnext, k, 1);
        r->rnext += k;
        if (r->has_count) r->left_count -= k;
        if (r->has_bytes) {
            uint64_t m = k * (st->size + 8);
            r->left_bytes = m >= r->left_bytes ? 0 : r->left_bytes - m;
        }
        r->caught_up = 0;
        g.n_batches_out++;
        g.n_records_out += k;
        return;
    }
    if ((r->has_count || r->has_bytes) && !r->has_wait) { /* stops at the tail */
        r->out_eof = 1;
        return;
    }
    if (!r->caught_up || g.now - r->last_hb >= HEARTBEAT_MS) {
        gen_batch_proto(&r->out, st, r->rnext, 0, 1);
        r->caught_up = 1;
        r->last_hb = g.now;
        g.n_heartbeats++;
    }
}

static void rs_start(struct req *r) {
    g.n_rsessions++;
    struct sstream *st = stream_get(r->name);
    uint64_t v;
    if (read_start(r, st, &r->rnext) != 0) {
        r->stopped = 1;
        return;
    }
    r->has_count = query_u64(r->path, "count", &v) && v > 0;
    if (r->has_count) r->left_count = v;
    r->has_bytes = query_u64(r->path, "bytes", &v) && v > 0;
    if (r->has_bytes) r->left_bytes = v;
    r->has_wait = query_u64(r->path, "wait", &v) && v > 0;
    r->last_hb = g.now;
    respond(r, 200, "s2s/proto", NULL, 0, 0);
}

/* Wakes read sessions waiting at the tail when records landed or a heartbeat is due. */
static void followers_pump(int64_t now) {
    for (struct req *r = g.followers, *next; r; r = next) {
        next = r->fnext;
        struct sstream *st = stream_get(r->name);
        if (r->rnext < st->next_seq || now - r->last_hb >= HEARTBEAT_MS) {
            follower_remove(r);
            (void)nghttp2_session_resume_data(r->c->h2, r->id);
        }
    }
}

static int64_t followers_due(void) {
    int64_t due = INT64_MAX;
    for (struct req *r = g.followers; r; r = r->fnext)
        if (r->last_hb + HEARTBEAT_MS < due) due = r->last_hb + HEARTBEAT_MS;
    return due;
}

/* ---------------------------------------------------------------- unary routes */

struct name_ud {
    const char *key;
    char value[128];
};

static int name_member(s2_json *s, const char *key, void *ud) {
    struct name_ud *u = ud;
    if (strcmp(key, u->key)) return 0;
    return s2_json_string(s, u->value, sizeof u->value) == 0 ? 1 : -1;
}

/* The string member `key` of the JSON request body, or fallback. */
static void body_name(struct req *r, const char *key, const char *fallback, char *out, size_t cap) {
    struct name_ud u = {.key = key};
    s2_json s = {.p = r->body.data, .end = r->body.data + r->body.len};
    if (r->body.len && s2_json_object(&s, name_member, &u) == 0 && u.value[0])
        snprintf(out, cap, "%s", u.value);
    else snprintf(out, cap, "%s", fallback);
}

static int count_element(s2_json *s, size_t index, void *ud) {
    (void)index;
    ++*(int64_t *)ud;
    return s2_json_skip(s);
}

static int records_member(s2_json *s, const char *key, void *ud) {
    if (strcmp(key, "records")) return 0;
    return s2_json_array(s, count_element, ud) == 0 ? 1 : -1;
}

static void serve_unary_append(struct req *r) {
    g.n_uappends++;
    int json = !strncasecmp(r->ctype, "application/json", 16);
    if (!json && strncasecmp(r->ctype, "application/protobuf", 20) &&
        strncasecmp(r->ctype, "application/x-protobuf", 22)) {
        respond_error(r, 400, "bad_header", "null_sink: unary appends are protobuf or JSON");
        return;
    }
    if (r->too_big) {
        respond_error(r, 400, "bad_proto", "request body too large");
        return;
    }
    int64_t k = 0;
    if (json) {
        s2_json s = {.p = r->body.data, .end = r->body.data + r->body.len};
        if (s2_json_object(&s, records_member, &k) != 0) k = -1;
    } else {
        k = count_records(r->body.data, r->body.len);
    }
    if (k < 0) {
        respond_error(r, 400, json ? "bad_json" : "bad_proto", "AppendInput does not decode");
        return;
    }
    if (k < 1 || k > 1000) {
        respond_error(r, 422, "invalid", "a batch holds 1 to 1000 records");
        return;
    }
    s2_append_ack ack;
    stream_append(stream_get(r->name), (uint64_t)k, &ack);
    if (json) {
        char b[256];
        snprintf(b, sizeof b,
                 "{\"start\":{\"seq_num\":%" PRIu64 ",\"timestamp\":%" PRIu64 "},"
                 "\"end\":{\"seq_num\":%" PRIu64 ",\"timestamp\":%" PRIu64 "},"
                 "\"tail\":{\"seq_num\":%" PRIu64 ",\"timestamp\":%" PRIu64 "}}",
                 ack.start.seq_num, ack.start.timestamp, ack.end.seq_num, ack.end.timestamp,
                 ack.tail.seq_num, ack.tail.timestamp);
        respond_json(r, 200, b);
        return;
    }
    uint8_t payload[S2_APPEND_ACK_MAX_LEN];
    size_t n = s2_append_ack_encode(&ack, payload);
    respond(r, 200, "application/protobuf", payload, n, 1);
}

#define CREATED_AT "\"created_at\":\"2026-01-01T00:00:00Z\",\"deleted_at\":null"

static void serve_management(struct req *r) {
    const char *m = r->method;
    char name[128], b[512];
    int basin = r->kind == R_BASINS || r->kind == R_BASIN;
    int coll = r->kind == R_BASINS || r->kind == R_STREAMS;
    if (coll && !strcmp(m, "GET")) {
        respond_json(r, 200, basin ? "{\"basins\":[],\"has_more\":false}"
                                   : "{\"streams\":[],\"has_more\":false}");
        return;
    }
    if ((coll && !strcmp(m, "POST")) || (!coll && !strcmp(m, "PUT"))) {
        if (coll) body_name(r, basin ? "basin" : "stream", "sink", name, sizeof name);
        else snprintf(name, sizeof name, "%s", r->name);
        if (!basin) (void)stream_get(name);
        s2_buf j;
        s2_buf_init(&j);
        buf_printf(&j, "{\"name\":\"");
        json_escape(&j, name, strlen(name));
        buf_printf(&j, "\",%s%s}", CREATED_AT,
                   basin ? ",\"scope\":\"aws:us-east-1\",\"state\":\"active\"" : "");
        respond_buf(r, 201, "application/json", &j);
        return;
    }
    if (!coll && (!strcmp(m, "GET") || !strcmp(m, "PATCH"))) {
        if (basin)
            snprintf(b, sizeof b, "{\"create_stream_on_append\":true,\"create_stream_on_read\":true,"
                                  "\"default_stream_config\":null}");
        else snprintf(b, sizeof b, "{}");
        respond_json(r, 200, b);
        return;
    }
    if (!coll && !strcmp(m, "DELETE")) {
        if (!basin) stream_forget(r->name);
        respond(r, 202, "application/json", NULL, 0, 1);
        return;
    }
    respond_error(r, 501, "not_implemented", "null_sink: no such route");
}

static void serve_stats(struct req *r) {
    char b[512];
    snprintf(b, sizeof b,
             "{\"connections\":%" PRIu64 ",\"requests\":%" PRIu64 ",\"sessions\":%" PRIu64
             ",\"read_sessions\":%" PRIu64 ",\"unary_appends\":%" PRIu64 ",\"unary_reads\":%" PRIu64
             ",\"frames_in\":%" PRIu64 ",\"records_in\":%" PRIu64 ",\"batches_out\":%" PRIu64
             ",\"records_out\":%" PRIu64 ",\"heartbeats\":%" PRIu64 "}",
             g.n_conns, g.n_requests, g.n_sessions, g.n_rsessions, g.n_uappends, g.n_ureads,
             g.n_frames, g.n_records_in, g.n_batches_out, g.n_records_out, g.n_heartbeats);
    respond_json(r, 200, b);
}

/* ---------------------------------------------------------------- requests */

static void classify(struct req *r) {
    const char *p = r->path ? r->path : "";
    size_t n = strcspn(p, "?");
    r->kind = R_OTHER;
    if ((n == 7 && !strncmp(p, "/health", 7)) || (n == 5 && !strncmp(p, "/ping", 5)) ||
        (n == 10 && !strncmp(p, "/v1/health", 10))) {
        r->kind = R_HEALTH;
        return;
    }
    if (n == 11 && !strncmp(p, "/sink/stats", 11)) {
        r->kind = R_STATS;
        return;
    }
    int basins = n >= 10 && !strncmp(p, "/v1/basins", 10);
    int streams = n >= 11 && !strncmp(p, "/v1/streams", 11);
    if (!basins && !streams) return;
    const char *rest = p + (basins ? 10 : 11);
    size_t rl = n - (size_t)(rest - p);
    if (rl == 0 || (rl == 1 && *rest == '/')) {
        r->kind = basins ? R_BASINS : R_STREAMS;
        return;
    }
    if (*rest != '/') return;
    const char *name = rest + 1;
    size_t nl = strcspn(name, "/?");
    if (nl == 0) return;
    const char *tail = name + nl;
    size_t tl = n - (size_t)(tail - p);
    r->name = url_decode(name, nl);
    if (!r->name) return;
    if (tl == 0) {
        r->kind = basins ? R_BASIN : R_STREAM;
        return;
    }
    if (basins) return;
    int records = tl == 8 && !strncmp(tail, "/records", 8);
    if (tl == 13 && !strncmp(tail, "/records/tail", 13) && !strcmp(r->method, "GET")) {
        r->kind = R_TAIL;
        return;
    }
    if (!records) return;
    int s2s = !strncasecmp(r->ctype, "s2s/proto", 9);
    if (strstr(r->accept, "text/event-stream")) return; /* SSE reads: not served (501) */
    if (!strcmp(r->method, "GET")) r->kind = s2s ? R_RSESSION : R_UNARY_READ;
    else if (!strcmp(r->method, "POST")) r->kind = s2s ? R_SESSION : R_UNARY_APPEND;
}

static void req_start(struct req *r) {
    if (r->started) return;
    r->started = 1;
    classify(r);
    g.n_requests++;
    vlog("%s %s (%s)", r->method, r->path ? r->path : "?", r->ctype);
    if (r->c->mode != CM_H2) return;
    if (r->kind == R_SESSION) {
        g.n_sessions++;
        (void)stream_get(r->name);
        respond(r, 200, "s2s/proto", NULL, 0, 0);
    } else if (r->kind == R_RSESSION) {
        rs_start(r);
    }
}

static void req_end(struct req *r) {
    if (r->ended) return;
    r->ended = 1;
    if (r->c->mode == CM_H2 && r->kind == R_SESSION) {
        if (!r->stopped) {
            r->out_eof = 1;
            r->stopped = 1;
            (void)nghttp2_session_resume_data(r->c->h2, r->id);
        }
        return;
    }
    if (r->c->mode == CM_H2 && r->kind == R_RSESSION) return; /* started in req_start */
    switch (r->kind) {
    case R_SESSION:
    case R_RSESSION:
        respond_error(r, 400, "bad_header", "null_sink serves s2s/proto sessions over HTTP/2 only");
        break;
    case R_UNARY_APPEND: serve_unary_append(r); break;
    case R_UNARY_READ: serve_unary_read(r); break;
    case R_TAIL: {
        struct sstream *st = stream_get(r->name);
        char b[128];
        snprintf(b, sizeof b, "{\"tail\":{\"seq_num\":%" PRIu64 ",\"timestamp\":%" PRIu64 "}}",
                 st->next_seq, tail_ts(st->next_seq));
        respond_json(r, 200, b);
        break;
    }
    case R_HEALTH: respond(r, 200, "text/plain", "OK", 2, 1); break;
    case R_STATS: serve_stats(r); break;
    case R_BASINS:
    case R_BASIN:
    case R_STREAMS:
    case R_STREAM: serve_management(r); break;
    case R_OTHER: {
        char m[300];
        snprintf(m, sizeof m, "null_sink does not implement %s %.200s", r->method,
                 r->path ? r->path : "?");
        respond_error(r, 501, "not_implemented", m);
        break;
    }
    }
}

static void req_body(struct req *r, const uint8_t *p, size_t n) {
    if (r->c->mode == CM_H2 && r->kind == R_SESSION) {
        session_input(r, p, n);
        return;
    }
    if (r->body.len + n > MAX_UNARY_BODY) {
        r->too_big = 1;
        return;
    }
    buf_put(&r->body, p, n);
}

/* ---------------------------------------------------------------- HTTP/2 callbacks */

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *frame, void *ud) {
    struct conn *c = ud;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    struct req *r = req_new(c, frame->hd.stream_id);
    nghttp2_session_set_stream_user_data(h2, frame->hd.stream_id, r);
    return 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud) {
    (void)flags;
    (void)ud;
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    struct req *r = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (!r || r->started) return 0;
    const char *v = (const char *)value;
    int vl = (int)valuelen;
    if (namelen == 7 && !memcmp(name, ":method", 7)) {
        snprintf(r->method, sizeof r->method, "%.*s", vl, v);
    } else if (namelen == 5 && !memcmp(name, ":path", 5)) {
        free(r->path);
        r->path = xstrndup(v, valuelen);
    } else if (namelen == 12 && !memcmp(name, "content-type", 12)) {
        snprintf(r->ctype, sizeof r->ctype, "%.*s", vl, v);
    } else if (namelen == 6 && !memcmp(name, "accept", 6)) {
        snprintf(r->accept, sizeof r->accept, "%.*s", vl, v);
    } else if (namelen == 9 && !memcmp(name, "s2-format", 9)) {
        r->b64 = valuelen == 6 && !memcmp(value, "base64", 6);
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *ud) {
    (void)ud;
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
    struct req *r = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (!r) return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
        req_start(r);
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) req_end(r);
    return 0;
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud) {
    (void)flags;
    (void)ud;
    struct req *r = nghttp2_session_get_stream_user_data(h2, id);
    if (r) req_body(r, data, len);
    return 0;
}

static int on_frame_send(nghttp2_session *h2, const nghttp2_frame *frame, void *ud) {
    (void)ud;
    if ((frame->hd.type != NGHTTP2_DATA && frame->hd.type != NGHTTP2_HEADERS) ||
        !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    struct req *r = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    /* The response is complete but the request is not: tell the client to stop sending. */
    if (r && !r->ended)
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t id, uint32_t error_code, void *ud) {
    (void)ud;
    (void)error_code;
    struct req *r = nghttp2_session_get_stream_user_data(h2, id);
    if (!r) return 0;
    nghttp2_session_set_stream_user_data(h2, id, NULL);
    req_free(r);
    return 0;
}

static int conn_start_h2(struct conn *c) {
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0) return -1;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    int rc = nghttp2_session_server_new(&c->h2, cb, c);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0) return -1;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS_PER_CONN},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, WINDOW},
    };
    if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 2) != 0 ||
        nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, WINDOW) != 0)
        return -1;
    c->mode = CM_H2;
    return 0;
}

/* ---------------------------------------------------------------- HTTP/1.1 */

static void h1_fatal(struct conn *c, int status, const char *code, const char *msg) {
    struct req *r = req_new(c, 0);
    snprintf(r->method, sizeof r->method, "?");
    c->h1_close = 1;
    respond_error(r, status, code, msg);
    req_free(r);
    c->in.len = 0;
}

static void h1_process(struct conn *c) {
    size_t off = 0; /* consumed from c->in */
    while (!c->dead && !c->closing) {
        if (!c->h1) {
            if (c->h1_close) break;
            uint8_t *base = c->in.data + off;
            size_t avail = c->in.len - off;
            uint8_t *end = avail ? memmem(base, avail, "\r\n\r\n", 4) : NULL;
            if (!end) {
                if (avail > H1_HEAD_MAX) {
                    h1_fatal(c, 400, "bad_header", "request head too large");
                    return;
                }
                break;
            }
            size_t head = (size_t)(end - base) + 4;
            char *text = xstrndup((const char *)base, head - 4);
            off += head;
            char *save = NULL;
            char *line = strtok_r(text, "\r\n", &save);
            char *sp1 = line ? strchr(line, ' ') : NULL;
            char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
            if (!sp1 || !sp2 || strncmp(sp2 + 1, "HTTP/1.", 7)) {
                free(text);
                h1_fatal(c, 400, "bad_header", "malformed request line");
                return;
            }
            struct req *r = req_new(c, 0);
            snprintf(r->method, sizeof r->method, "%.*s", (int)(sp1 - line), line);
            r->path = xstrndup(sp1 + 1, (size_t)(sp2 - sp1 - 1));
            if (!strcmp(sp2 + 1, "HTTP/1.0")) c->h1_close = 1;
            uint64_t clen = 0;
            int chunked = 0, bad_len = 0;
            for (char *h = strtok_r(NULL, "\r\n", &save); h; h = strtok_r(NULL, "\r\n", &save)) {
                char *colon = strchr(h, ':');
                if (!colon) continue;
                *colon = 0;
                char *v = colon + 1;
                while (*v == ' ' || *v == '\t') v++;
                if (!strcasecmp(h, "content-length")) bad_len |= parse_u64(v, &clen);
                else if (!strcasecmp(h, "content-type")) snprintf(r->ctype, sizeof r->ctype, "%s", v);
                else if (!strcasecmp(h, "accept")) snprintf(r->accept, sizeof r->accept, "%s", v);
                else if (!strcasecmp(h, "s2-format")) r->b64 = !strcasecmp(v, "base64");
                else if (!strcasecmp(h, "transfer-encoding")) chunked = 1;
                else if (!strcasecmp(h, "connection") && !strcasecmp(v, "close")) c->h1_close = 1;
                else if (!strcasecmp(h, "expect") && !strcasecmp(v, "100-continue")) r->expect100 = 1;
            }
            free(text);
            if (chunked || bad_len || clen > MAX_UNARY_BODY) {
                req_free(r);
                h1_fatal(c, chunked ? 501 : 400, chunked ? "not_implemented" : "bad_header",
                         chunked ? "null_sink takes Content-Length bodies only"
                                 : "bad or too large content-length");
                return;
            }
            c->h1 = r;
            c->h1_need = (size_t)clen;
            req_start(r);
            if (r->expect100 && clen && c->in.len - off < clen)
                buf_printf(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
        }
        if (c->in.len - off < c->h1_need) break;
        struct req *r = c->h1;
        if (c->h1_need) buf_put(&r->body, c->in.data + off, c->h1_need);
        off += c->h1_need;
        c->h1 = NULL;
        c->h1_need = 0;
        req_end(r);
        req_free(r);
    }
    if (off && !c->dead) {
        memmove(c->in.data, c->in.data + off, c->in.len - off);
        c->in.len -= off;
    }
}

/* ---------------------------------------------------------------- connection input */

static void conn_input(struct conn *c, const uint8_t *p, size_t n) {
    if (c->mode == CM_SNIFF) {
        buf_put(&c->in, p, n);
        size_t m = c->in.len < PREFACE_LEN ? c->in.len : PREFACE_LEN;
        if (memcmp(c->in.data, PREFACE, m) != 0) {
            c->mode = CM_H1;
            h1_process(c);
            return;
        }
        if (c->in.len < PREFACE_LEN) return;
        if (conn_start_h2(c) != 0) {
            conn_finish(c, "cannot start HTTP/2");
            return;
        }
        s2_buf pending = c->in;
        s2_buf_init(&c->in);
        conn_input(c, pending.data, pending.len);
        s2_buf_free(&pending);
        return;
    }
    if (c->mode == CM_H1) {
        buf_put(&c->in, p, n);
        h1_process(c);
        return;
    }
    ssize_t used = nghttp2_session_mem_recv(c->h2, p, n);
    if (used < 0) {
        vlog("%s", nghttp2_strerror((int)used));
        c->closing = 1;
    }
}

static void conn_read(struct conn *c) {
    static uint8_t buf[READ_CHUNK];
    for (int rounds = 0; rounds < 16 && !c->dead; rounds++) {
        ssize_t n = recv(c->h.fd, buf, sizeof buf, 0);
        if (n > 0) {
            if (!c->closing) conn_input(c, buf, (size_t)n);
            if ((size_t)n < sizeof buf) return;
            continue;
        }
        if (n == 0) {
            conn_finish(c, "client closed");
            return;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        conn_finish(c, strerror(errno));
        return;
    }
}

static void on_accept(void) {
    for (;;) {
        int fd = accept4(g.listen.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) logw("accept: %s", strerror(errno));
            return;
        }
        struct conn *c = calloc(1, sizeof *c);
        if (!c) abort();
        c->h = (struct handle){.kind = K_CONN, .fd = fd, .owner = c};
        s2_buf_init(&c->in);
        s2_buf_init(&c->out);
        c->next = g.conns;
        if (g.conns) g.conns->prev = c;
        g.conns = c;
        g.n_conns++;
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (ep_set(&c->h, EPOLLIN) < 0) conn_finish(c, "epoll");
    }
}

/* ---------------------------------------------------------------- main loop */

static void free_dead(void) {
    while (g.dead_conns) {
        struct conn *c = g.dead_conns;
        g.dead_conns = c->next;
        free(c);
    }
}

static int run_loop(void) {
    static struct epoll_event evs[MAX_EVENTS];
    while (!g.quit) {
        int64_t now = now_ms();
        int timeout = -1;
        int64_t due = followers_due();
        for (struct conn *c = g.conns; c; c = c->next)
            if (c->shut && c->close_deadline < due) due = c->close_deadline;
        if (due != INT64_MAX) {
            int64_t d = due - now;
            timeout = d <= 0 ? 0 : d > 60000 ? 60000 : (int)d;
        }
        int n = epoll_wait(g.ep, evs, MAX_EVENTS, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            logw("epoll_wait: %s", strerror(errno));
            return 1;
        }
        g.now = now = now_ms();
        for (int i = 0; i < n && !g.quit; i++) {
            struct handle *h = evs[i].data.ptr;
            switch (h->kind) {
            case K_LISTEN: on_accept(); break;
            case K_CONN: {
                struct conn *c = h->owner;
                if (c->dead) break;
                if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) conn_read(c);
                if (!c->dead) conn_service(c, now);
                break;
            }
            case K_SIGNAL: g.quit = 1; break;
            case K_STDIN: {
                char b[512];
                ssize_t r = read(h->fd, b, sizeof b);
                if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) g.quit = 1;
                break;
            }
            }
        }
        if (g.followers) {
            followers_pump(now);
            for (struct conn *c = g.conns, *next; c; c = next) {
                next = c->next;
                conn_service(c, now);
            }
        } else {
            for (struct conn *c = g.conns, *next; c; c = next) {
                next = c->next;
                if (c->shut) conn_settle(c, now);
            }
        }
        free_dead();
    }
    return 0;
}

static void usage(FILE *f) {
    fputs("usage: null-sink --port PORT [--read-record-size N] [--exit-on-stdin-eof] [-v]\n"
          "PORT 0 picks a free port on 127.0.0.1. See the comment at the top of\n"
          "tools/null_sink.c for what it serves.\n",
          f);
}

int main(int argc, char **argv) {
    int port = -1, exit_on_eof = 0;
    g.default_size = 128;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t x;
        if (!strcmp(o, "--port") && v && parse_u64(v, &x) == 0 && x <= 65535) port = (int)x, i++;
        else if (!strcmp(o, "--read-record-size") && v && parse_u64(v, &x) == 0 && x <= MAX_GEN_SIZE)
            g.default_size = (size_t)x, i++;
        else if (!strcmp(o, "--exit-on-stdin-eof")) exit_on_eof = 1;
        else if (!strcmp(o, "-v") || !strcmp(o, "--verbose")) g.verbose = 1;
        else if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "null_sink: bad argument '%s'\n", o);
            usage(stderr);
            return 64;
        }
    }
    if (port < 0) {
        usage(stderr);
        return 64;
    }
    signal(SIGPIPE, SIG_IGN);
    g.listen.fd = g.sig.fd = g.in.fd = -1;
    g.ep = epoll_create1(EPOLL_CLOEXEC);
    if (g.ep < 0) {
        logw("epoll_create1: %s", strerror(errno));
        return 1;
    }
    sigset_t ss;
    sigemptyset(&ss);
    sigaddset(&ss, SIGTERM);
    sigaddset(&ss, SIGINT);
    if (sigprocmask(SIG_BLOCK, &ss, NULL) < 0 ||
        (g.sig.fd = signalfd(-1, &ss, SFD_NONBLOCK | SFD_CLOEXEC)) < 0) {
        logw("signalfd: %s", strerror(errno));
        return 1;
    }
    g.sig.kind = K_SIGNAL;
    if (ep_set(&g.sig, EPOLLIN) < 0) return 1;
    if (exit_on_eof) {
        g.in = (struct handle){.kind = K_STDIN, .fd = 0};
        if (ep_set(&g.in, EPOLLIN) < 0) logw("--exit-on-stdin-eof: stdin cannot be watched");
    }
    int bound;
    int lfd = listen_on(port, &bound);
    if (lfd < 0) {
        logw("listen on 127.0.0.1:%d: %s", port, strerror(errno));
        return 1;
    }
    g.listen = (struct handle){.kind = K_LISTEN, .fd = lfd};
    if (ep_set(&g.listen, EPOLLIN) < 0) return 1;
    printf("listening %d\n", bound);
    fflush(stdout);
    g.now = now_ms();
    int rc = run_loop();
    while (g.conns) conn_finish(g.conns, "exiting");
    free_dead();
    streams_free();
    close_handle(&g.listen);
    close(g.sig.fd);
    close(g.ep);
    return rc;
}
