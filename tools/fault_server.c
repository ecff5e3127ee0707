/*
 * fault_server — a scriptable S2 test server that injects faults, for specs.
 *
 *   fault-server --port PORT [--control PORT] [--exit-on-stdin-eof] [-v]
 *
 * It serves just enough of S2 v1 for the append and read paths of a client, on 127.0.0.1:PORT
 * (0 = any free port), over HTTP/2 cleartext with prior knowledge and over HTTP/1.1 on the
 * same port (the first bytes decide, like s2-lite). When ready it prints, on stdout,
 * flushed, `control <port>` (only with --control) and then `listening <port>`; `listening`
 * is always the last line and means "ready".
 *
 *   POST /v1/streams/{stream}/records  content-type s2s/proto       an append session
 *                                      (HTTP/2 only): S2S frames carrying AppendInput in,
 *                                      AppendAck frames out, in order
 *   POST /v1/streams/{stream}/records  content-type application/protobuf (or
 *                                      application/x-protobuf): a unary append,
 *                                      AppendInput in, AppendAck out
 *   GET  /v1/streams/{stream}/records/tail   {"tail":{"seq_num":N,"timestamp":T}}
 *   GET  /v1/streams/{stream}/records  accept text/event-stream (HTTP/1.1 only): a read
 *                                      session over server-sent events, like S2's: `batch`
 *                                      events (bodies base64, id "seq_num,count,bytes", count
 *                                      and bytes cumulative), a `ping` with the tail whenever
 *                                      it catches up, `data: [DONE]` once `count` records
 *                                      went out. Query: seq_num (default: the tail) and count;
 *                                      Last-Event-ID resumes after its seq_num and carries
 *                                      its count and bytes on. It follows: records appended
 *                                      later (by any client) are sent as they land. Chunked.
 *   GET  /v1/streams/{stream}/records  content-type s2s/proto (HTTP/2 only): a read session
 *                                      over S2S: ReadBatch frames (records with seq_num,
 *                                      timestamp and body, <= 64 a frame, and the tail) from
 *                                      seq_num (default: the tail; past the tail: 416), then
 *                                      it follows: records appended later are sent as they
 *                                      land, and a heartbeat (a ReadBatch with the tail only)
 *                                      goes out when it catches up and every second while
 *                                      idle. The response ends once `count` records went out.
 *                                      Uncompressed; headers are not stored, so not sent.
 *   GET  /health, /ping                 200 OK
 * Anything else gets 501 not_implemented. The s2-basin header and the token are ignored.
 *
 * Streams live in memory and are created on first append (check-tail of an unknown stream
 * answers seq_num 0). Seq nums are assigned per stream; timestamps are the client's (kept
 * monotonic) or the wall clock in ms. match_seq_num and fencing_token are honoured like S2:
 * a failed condition is 412 with {"seq_num_mismatch":N} / {"fencing_token_mismatch":"t"}
 * (a unary answer, or a terminal frame in a session, after the acks owed). A fence command
 * record (one header, empty name, value "fence") sets the stream's token; it starts as "".
 * Every accepted record's body is kept, in order, for the control port to report.
 * In a session, bad input ends the session with a terminal frame: 400 bad_frame (framing,
 * or a terminal frame from the client), 400 bad_proto, 422 invalid (batch limits).
 * When a response ends before the request body did, the stream is reset with NO_ERROR (as
 * hyper/h2 servers do), so the client stops sending.
 *
 * Faults are scripted through the control port as a FIFO queue. When a request starts, it
 * takes the first queued fault that matches it (`status` faults match requests per `on=`;
 * sse_* faults match SSE reads, read_* faults S2S read sessions; every other fault matches
 * append sessions only); later faults wait for later requests. "N acks" counts the ack
 * frames of that session, from 1; "N batches" of a read session its ReadBatch frames that
 * carry records (heartbeats do not count).
 *
 * Control protocol (with --control): plain text over TCP on 127.0.0.1, one command per line
 * (\n or \r\n, <= 4 KiB), tokens separated by blanks; a token starting with `{` runs to its
 * matching `}` (a JSON object, blanks allowed), one starting with `[` to its matching `]` (an
 * array). One answer line per command, `ok ...` or `err <reason>`, except `dump` (below). Any
 * number of commands per connection.
 *   status CODE [JSON] [retry_after_ms=N] [times=N] [on=any|append|unary|session|tail|read]
 *                        answer the next matching request (default on=any: every request
 *                        but /health; append = unary or session; read = SSE or S2S
 *                        reads) with HTTP status CODE and the JSON body, an object or an
 *                        array (default: the usual S2 body for that status; for 204 an
 *                        empty body), plus a
 *                        retry-after-ms header when given; times=N answers N requests.
 *                        Unary requests are answered once their body is in; sessions at once.
 *   terminal_after N STATUS [JSON]
 *                        next session: ack N batches, then answer batch N+1 (not applied)
 *                        with a terminal frame (flag 0x80, 2-byte STATUS, JSON) and end the
 *                        response. Later input is ignored.
 *   stall_acks MS [after=N]
 *                        next session: every ack after the first N (default 0) is held MS ms
 *                        from its batch's arrival (records are applied on arrival).
 *   goaway_after N [graceful] [error=CODE] [at_next_batch]
 *                        next session: after N acks (0: when it starts) send GOAWAY with the
 *                        HTTP/2 error CODE (default 0, NO_ERROR). Then, unless graceful, stop
 *                        reading, flush, and close the connection (FIN); graceful keeps
 *                        serving the streams already open.
 *   rst_after N [error=CODE] [at_next_batch]
 *                        next session: after N acks, RST_STREAM with CODE (default 2,
 *                        INTERNAL_ERROR; 7 is REFUSED_STREAM).
 *   reconnect_flag_after N [end_delay=MS]
 *                        next session: set flag 0x10 (reconnect advised) on its Nth ack
 *                        frame (N >= 1), then go on as usual until the client ends the body;
 *                        end the response MS ms (default 0) after the client's END_STREAM
 *                        (a draining server that is slow to finish).
 *   malformed KIND [after=N]
 *                        next session: its ack number N+1 (default N = 0, or 1 for
 *                        decreasing) is replaced by a broken frame (the batch is applied):
 *                          zero_length      length field 0
 *                          over_2mib        length field 2 MiB + 1
 *                          bad_compression  a valid ack with compression bits 0x60
 *                          truncated_proto  the AppendAck cut to 3 bytes
 *                          garbage_proto    11 bytes of 0xff as the payload
 *                          wrong_count      end - start = the batch's records + 1
 *                          decreasing       end lower than the previous ack's end
 *   drop_after N [at_next_batch]
 *                        next session: after N acks (0: when it starts), wait until the
 *                        kernel has delivered what was sent (at most 1 s), then close the
 *                        TCP connection with a reset (SO_LINGER 0).
 *   end_after N [at_next_batch]
 *                        next session: after N acks, end the response cleanly (END_STREAM,
 *                        no terminal frame), then reset the stream with NO_ERROR.
 *   sse_end_after N [close]
 *                        next SSE read: after N records, end the response cleanly without
 *                        [DONE]: the last chunk (the connection stays open for the next
 *                        request), or with `close` a response without framing (connection:
 *                        close) that ends with the connection (FIN), as proxies do.
 *   sse_event JSON [event=NAME] [id=ID]
 *                        next SSE read: send this event first (event NAME, default batch;
 *                        data JSON verbatim; id only when given), then serve as usual.
 *                        With at_next_batch, goaway/rst/drop/end fire when batch N+1 arrives
 *                        (not applied) instead of right after ack N: the client has then
 *                        surely written a batch that is not acked (no race with its writes).
 *                        Input after the action is ignored (except after a graceful GOAWAY).
 *   blackhole_acks [drop_after_batches=N] [times=K]
 *                        each of the next K (default 1) sessions: apply every batch, send
 *                        no ack; once N batches arrived on it (default 0: never) drop the
 *                        connection as drop_after does. The client sees a cut, or its
 *                        request timeout; what it re-sends afterwards is in the records.
 *                        When the client ends its body (close, the exit drain) the response
 *                        ends as usual, acks still missing: the client takes that as a failed
 *                        attempt and resends on a new session, which times=1 leaves clean.
 *   read_reconnect_flag_after N
 *                        next S2S read session: set flag 0x10 (reconnect advised) on its
 *                        Nth batch (N >= 1), then go on serving until the client resets the
 *                        stream.
 *   read_terminal_after N STATUS [JSON]
 *                        next S2S read session: after N batches (0: at once) send a
 *                        terminal frame with STATUS and JSON (default: the usual body), e.g.
 *                        503 {"code":"server_draining",...}, and end the response.
 *   faults               the queue: `ok N queued: #id kind ...; ...`
 *   records STREAM       `ok records STREAM count=N next_seq=N hash=H` (hash: FNV-1a 64 over
 *                        each body as a 4-byte little-endian length and its bytes, in order;
 *                        count 0 for an unknown stream)
 *   dump STREAM          one line per record, `SEQ HEX` (body as lowercase hex, maybe
 *                        empty), then `ok dump STREAM N`
 *   last_request         what the last request that ended sent: `ok n=N method=M path=P
 *                        body=HEX` (n: requests ended so far, /health not counted; P: the
 *                        :path / request-target as received, query string included; HEX: the
 *                        request body as lowercase hex, empty for none; a session's body is
 *                        not kept, so empty). Before any: `ok n=0 method=- path=- body=`.
 *                        Faulted requests count too (a `status` answer is sent once the
 *                        body is in).
 *   stats                `ok connections=N requests=N sessions=N unary=N tail=N health=N
 *                        other=N frames=N acks=N records=N terminal=N faults_taken=N
 *                        queued=N gap_ms=N reads=N last_event_id=ID read_sessions=N
 *                        read_conns=N read_batches=N heartbeats=N`; requests counts every
 *                        request (faulted ones too); frames = S2S frames received; gap_ms =
 *                        time between the starts of the last two record requests (unary
 *                        appends, sessions); reads = SSE reads; last_event_id = the
 *                        Last-Event-ID of the last SSE read (- when it had none);
 *                        read_sessions = S2S read requests; read_conns = connections that
 *                        carried at least one; read_batches / heartbeats = ReadBatch frames
 *                        sent with records / without
 *   reset                clear the fault queue (sessions running keep theirs); data and
 *                        stats are kept
 *   wipe                 reset, and forget every stream and zero the stats
 *   ping -> `ok pong`; help
 *
 * Design. One thread, one epoll loop, non-blocking sockets. A connection is sniffed (the
 * HTTP/2 preface, or HTTP/1.1), then served by nghttp2's server session or by a small
 * HTTP/1.1 parser (Content-Length bodies, keep-alive). Output goes through a per-connection
 * buffer; EPOLLOUT only after EAGAIN. A session's outgoing acks and actions (end, reset,
 * GOAWAY, drop) are a per-request queue of timed events, run in order: an action waits until
 * nghttp2 has taken every byte queued before it, so acks always precede the fault. epoll_wait
 * sleeps until the next fd event or the earliest due event. Closed objects are freed after
 * each batch of events.
 *
 * --exit-on-stdin-eof makes it exit when stdin reaches EOF, so a test harness that holds the
 * write end of a pipe cannot leak the process. SIGTERM / SIGINT exit with status 0.
 *
 * Build: cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -O2 -Icsrc \
 *           $(pkg-config --cflags libnghttp2 libzstd zlib) -o build/fault-server \
 *           tools/fault_server.c csrc/s2_buf.c csrc/s2_error.c csrc/s2_proto.c csrc/s2_frame.c \
 *           $(pkg-config --libs libnghttp2 libzstd zlib)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "s2.h"

#define READ_CHUNK (64 * 1024)
#define CTL_LINE_MAX 4096
#define CTL_OUT_MAX (256u * 1024u * 1024u) /* a control client that does not read is dropped */
#define MAX_EVENTS 256
#define MAX_UNARY_BODY (8u * 1024u * 1024u)
#define H1_HEAD_MAX (64 * 1024)
#define CLOSE_DRAIN_MS 2000 /* after our FIN, how long to wait for the client's */
#define DROP_DRAIN_MS 1000  /* longest wait for the kernel to hand bytes over before a drop */
#define POLL_MS 2
#define WINDOW (16 * 1024 * 1024)
#define RS_BATCH_MAX 64                /* records per ReadBatch */
#define RS_BATCH_BYTES (512 * 1024)    /* body bytes per ReadBatch (one record at least) */
#define RS_OUT_MAX (1024 * 1024)       /* unsent output above which no more batches are made */
#define RS_HEARTBEAT_MS 1000           /* an idle follower gets a heartbeat this often */

static const char PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define PREFACE_LEN 24

enum hkind { K_LISTEN, K_CTL_LISTEN, K_CTL, K_CONN, K_SIGNAL, K_STDIN };

struct handle {
    enum hkind kind;
    int fd; /* -1 once closed */
    uint32_t events;
    void *owner;
};

/* ---------------------------------------------------------------- faults */

enum fkind { F_STATUS, F_TERMINAL, F_STALL, F_GOAWAY, F_RST, F_RECONNECT, F_MALFORMED, F_DROP,
             F_END, F_SSE_END, F_SSE_EVENT, F_BLACKHOLE, F_READ_RECONNECT, F_READ_TERMINAL };
static const char *const FKIND_NAMES[] = {"status", "terminal_after", "stall_acks", "goaway_after",
                                          "rst_after", "reconnect_flag_after", "malformed",
                                          "drop_after", "end_after", "sse_end_after",
                                          "sse_event", "blackhole_acks",
                                          "read_reconnect_flag_after", "read_terminal_after"};

enum mkind { MK_ZERO_LENGTH, MK_OVER_2MIB, MK_BAD_COMPRESSION, MK_TRUNCATED_PROTO,
             MK_GARBAGE_PROTO, MK_WRONG_COUNT, MK_DECREASING };
static const char *const MKIND_NAMES[] = {"zero_length", "over_2mib", "bad_compression",
                                          "truncated_proto", "garbage_proto", "wrong_count",
                                          "decreasing"};

enum target { ON_ANY, ON_APPEND, ON_UNARY, ON_SESSION, ON_TAIL, ON_READ };
static const char *const TARGET_NAMES[] = {"any", "append", "unary", "session", "tail", "read"};

struct fault {
    struct fault *next;
    uint64_t id;
    enum fkind kind;
    uint64_t n;     /* acks before it fires; stall: ms; blackhole: batches before the drop
                     * (0: never); read faults: batches before it fires */
    uint64_t after; /* stall, malformed: acks left alone first */
    uint64_t end_delay; /* reconnect: ms between the client's END_STREAM and ours */
    int status;     /* status, terminal */
    char *json;     /* status, terminal */
    int has_retry_after;
    uint64_t retry_after_ms;
    uint64_t times; /* status, blackhole: how many requests it still takes */
    enum target on;
    uint32_t h2_error; /* goaway, rst */
    int graceful;      /* goaway */
    int at_next;       /* goaway, rst, drop: fire when batch N+1 arrives, not after ack N */
    enum mkind mk;
    int close;         /* sse_end_after: close-delimited, not chunked */
    char *event, *eid; /* sse_event: its name and id (NULL: none) */
};

/* ---------------------------------------------------------------- streams (the data) */

struct rec {
    uint64_t seq, ts;
    size_t len;
    uint8_t *body;
};

struct sstream {
    struct sstream *next;
    char *name;
    uint64_t next_seq, last_ts;
    char *token; /* current fencing token, NUL-terminated; "" at first */
    struct rec *recs;
    size_t n, cap;
};

/* ---------------------------------------------------------------- requests, connections */

enum rkind { R_SESSION, R_UNARY, R_TAIL, R_HEALTH, R_OTHER, R_READ, R_RSESSION };
enum evkind { EV_DATA, EV_END, EV_RST, EV_GOAWAY, EV_DROP };

struct ev {
    struct ev *next;
    int64_t due;
    enum evkind kind;
    uint8_t *data;
    size_t len;
    uint32_t code;
    int graceful;
};

struct conn;

struct req {
    struct req *prev, *next;
    struct conn *c;
    int32_t id; /* HTTP/2 stream id; 0 on HTTP/1.1 */
    enum rkind kind;
    char method[16];
    char *path;
    char ctype[128];
    char *sname; /* decoded stream name, for stream routes */
    s2_buf body;
    int too_big;
    int started, ended;
    struct fault *fault; /* taken at start: a status answer, or the session's fault */
    /* response (HTTP/2) */
    int responded;
    s2_buf out;
    size_t out_off;
    int out_eof;
    /* session */
    s2_frame_decoder dec;
    int stopped; /* input is no longer processed */
    uint64_t acks;
    int have_last;
    uint64_t last_end; /* as sent */
    int64_t last_due;
    struct ev *evh, *evt;
    /* SSE read (HTTP/1.1) */
    char accept[64];
    char last_event_id[100];
    int has_last_event_id;
    uint64_t sse_next;             /* seq_num of the next record to send */
    uint64_t sse_count, sse_bytes; /* delivered, carried on from Last-Event-ID */
    int has_limit;
    uint64_t sse_limit;  /* the query's count */
    uint64_t sse_sent;   /* records sent on this response (sse_end_after) */
    int sse_caught_up;   /* a ping went out since the last batch */
    /* S2S read session (HTTP/2); sse_next, sse_count, has_limit and sse_limit serve it too */
    uint64_t batches_in;   /* blackhole: batches taken by this append session */
    uint64_t rs_batches;   /* ReadBatch frames with records sent */
    int64_t rs_last;       /* when the last frame (batch or heartbeat) was queued */
    int rs_caught_up;      /* a heartbeat went out since the last batch */
};

enum cmode { CM_SNIFF, CM_H1, CM_H2 };

struct conn {
    struct conn *prev, *next;
    struct handle h;
    uint64_t id;
    enum cmode mode;
    s2_buf in; /* sniffing and HTTP/1.1 */
    nghttp2_session *h2;
    s2_buf out;
    size_t out_off;
    int blocked;
    struct req *reqs;
    struct req *h1;   /* HTTP/1.1 request whose body is coming */
    struct req *sse;  /* HTTP/1.1 SSE read being streamed: input waits until it ends */
    size_t h1_need;   /* its Content-Length */
    int h1_close;     /* Connection: close, or a fatal parse error */
    int closing;      /* flush, FIN, wait for the client's FIN */
    int shut;
    int64_t close_deadline;
    int dropping; /* flush, wait for delivery, RST */
    int64_t drop_deadline;
    int had_read; /* carried an S2S read session (read_conns) */
    int dead;
};

struct ctl {
    struct ctl *prev, *next;
    struct handle h;
    size_t len;
    int dead;
    s2_buf out;
    size_t out_off;
    char in[CTL_LINE_MAX + 1];
};

static struct {
    int ep;
    struct handle listen, ctl_listen, sig, in;
    int verbose;
    int quit;
    int64_t now;

    struct fault *faults, *faults_tail;
    uint64_t next_fault_id;
    struct sstream *streams;

    uint64_t n_conns, n_requests, n_sessions, n_unary, n_tail, n_health, n_other, n_frames,
        n_acks, n_records, n_terminal, n_taken, n_reads, n_rsessions, n_read_conns, n_rbatches,
        n_heartbeats;
    char last_event_id[100]; /* of the last SSE read, "-" for none */
    /* the last request that ended (last_request): not /health; a session's body is not kept */
    uint64_t n_ended;
    char last_method[16];
    char *last_path;
    s2_buf last_body;
    int64_t last_records_ms, gap_ms;

    struct conn *conns, *dead_conns;
    struct ctl *ctls, *dead_ctls;
    uint64_t next_conn_id;
} g;

/* ---------------------------------------------------------------- utilities */

static void vlog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void vlog(const char *fmt, ...) {
    if (!g.verbose) return;
    va_list ap;
    va_start(ap, fmt);
    fputs("fault_server: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void logw(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logw(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("fault_server: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

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
    if (s2_buf_reserve(b, (size_t)n + 1) != 0) {
        logw("out of memory");
        abort();
    }
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Strict decimal parse of a whole token. */
static int parse_u64(const char *s, uint64_t *out) {
    if (!s || !*s || *s == '-' || *s == '+') return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

static int parse_port(const char *s, int *out) {
    uint64_t v;
    if (parse_u64(s, &v) < 0 || v > 65535) return -1;
    *out = (int)v;
    return 0;
}

/* JSON string contents (without the quotes). */
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

/* The usual S2 error body for a status. */
static const char *default_json(int status) {
    switch (status) {
    case 204: return ""; /* No Content: an empty body */
    case 400: return "{\"code\":\"bad_json\",\"message\":\"fault_server: bad request\"}";
    case 401: return "{\"code\":\"authn\",\"message\":\"fault_server: unauthenticated\"}";
    case 403: return "{\"code\":\"permission_denied\",\"message\":\"fault_server: denied\"}";
    case 404: return "{\"code\":\"stream_not_found\",\"message\":\"fault_server: no such stream\"}";
    case 408: return "{\"code\":\"request_timeout\",\"message\":\"fault_server: request timeout\"}";
    case 409: return "{\"code\":\"transaction_conflict\",\"message\":\"fault_server: conflict\"}";
    case 412: return "{\"seq_num_mismatch\":0}";
    case 422: return "{\"code\":\"invalid\",\"message\":\"fault_server: invalid\"}";
    case 429: return "{\"code\":\"rate_limited\",\"message\":\"fault_server: slow down\"}";
    case 500: return "{\"code\":\"other\",\"message\":\"fault_server: internal error\"}";
    case 501: return "{\"code\":\"not_implemented\",\"message\":\"fault_server: not implemented\"}";
    case 502: return "{\"code\":\"hot_server\",\"message\":\"fault_server: hot server\"}";
    case 503: return "{\"code\":\"unavailable\",\"message\":\"fault_server: unavailable\"}";
    case 504: return "{\"code\":\"upstream_timeout\",\"message\":\"fault_server: upstream timeout\"}";
    default: return "{\"code\":\"other\",\"message\":\"fault_server: scripted error\"}";
    }
}

static const char *reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 412: return "Precondition Failed";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Status";
    }
}

/* ---------------------------------------------------------------- streams */

static struct sstream *stream_find(const char *name, int create) {
    for (struct sstream *s = g.streams; s; s = s->next)
        if (!strcmp(s->name, name)) return s;
    if (!create) return NULL;
    struct sstream *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->name = xstrndup(name, strlen(name));
    s->token = xstrndup("", 0);
    s->next = g.streams;
    g.streams = s;
    return s;
}

static void streams_free(void) {
    while (g.streams) {
        struct sstream *s = g.streams;
        g.streams = s->next;
        for (size_t i = 0; i < s->n; i++) free(s->recs[i].body);
        free(s->recs);
        free(s->token);
        free(s->name);
        free(s);
    }
}

static int is_command(const s2_record *r, const char *op) {
    return r->num_headers == 1 && r->headers[0].name_len == 0 &&
           r->headers[0].value_len == strlen(op) &&
           !memcmp(r->headers[0].value, op, r->headers[0].value_len);
}

/* Applies one batch like S2: conditions first, then every record. Returns 0 with *ack, or
 * 412 with the body in err. */
static int apply_batch(struct sstream *st, const s2_append_input *in, s2_append_ack *ack,
                       s2_buf *err) {
    if (in->fencing_token && (in->fencing_token_len != strlen(st->token) ||
                              memcmp(in->fencing_token, st->token, in->fencing_token_len))) {
        buf_printf(err, "{\"fencing_token_mismatch\":\"");
        json_escape(err, st->token, strlen(st->token));
        buf_printf(err, "\"}");
        return 412;
    }
    if (in->has_match_seq_num && in->match_seq_num != st->next_seq) {
        buf_printf(err, "{\"seq_num_mismatch\":%" PRIu64 "}", st->next_seq);
        return 412;
    }
    uint64_t now = wall_ms();
    if (st->n + in->num_records > st->cap) {
        size_t cap = st->cap ? st->cap : 64;
        while (cap < st->n + in->num_records) cap *= 2;
        struct rec *r = realloc(st->recs, cap * sizeof *r);
        if (!r) abort();
        st->recs = r;
        st->cap = cap;
    }
    for (size_t i = 0; i < in->num_records; i++) {
        const s2_record *r = &in->records[i];
        uint64_t ts = r->has_timestamp ? r->timestamp : now;
        if (ts < st->last_ts) ts = st->last_ts;
        st->last_ts = ts;
        if (i == 0) ack->start = (s2_position){st->next_seq, ts};
        struct rec *rec = &st->recs[st->n++];
        rec->seq = st->next_seq++;
        rec->ts = ts;
        rec->len = r->body_len;
        rec->body = xmalloc(r->body_len);
        if (r->body_len) memcpy(rec->body, r->body, r->body_len);
        if (is_command(r, "fence")) {
            free(st->token);
            st->token = xstrndup((const char *)r->body, r->body_len);
        }
    }
    ack->end = (s2_position){st->next_seq, st->last_ts};
    ack->tail = ack->end;
    g.n_records += in->num_records;
    return 0;
}

/* ---------------------------------------------------------------- fault queue */

static void fault_free(struct fault *f) {
    if (!f) return;
    free(f->json);
    free(f->event);
    free(f->eid);
    free(f);
}

static void faults_clear(void) {
    while (g.faults) {
        struct fault *f = g.faults;
        g.faults = f->next;
        fault_free(f);
    }
    g.faults_tail = NULL;
}

static size_t faults_count(void) {
    size_t n = 0;
    for (struct fault *f = g.faults; f; f = f->next) n++;
    return n;
}

static int target_matches(enum target on, enum rkind k) {
    switch (on) {
    case ON_ANY: return k != R_HEALTH;
    case ON_APPEND: return k == R_UNARY || k == R_SESSION;
    case ON_UNARY: return k == R_UNARY;
    case ON_SESSION: return k == R_SESSION;
    case ON_TAIL: return k == R_TAIL;
    case ON_READ: return k == R_READ || k == R_RSESSION;
    }
    return 0;
}

static struct fault *fault_copy(const struct fault *f) {
    struct fault *c = xmalloc(sizeof *c);
    *c = *f;
    c->next = NULL;
    c->json = f->json ? xstrndup(f->json, strlen(f->json)) : NULL;
    c->event = f->event ? xstrndup(f->event, strlen(f->event)) : NULL;
    c->eid = f->eid ? xstrndup(f->eid, strlen(f->eid)) : NULL;
    return c;
}

/* The first queued fault that matches a request of kind k (a copy, owned by the request),
 * or NULL. A status fault with times left stays queued. */
static struct fault *fault_take(enum rkind k) {
    struct fault *prev = NULL;
    for (struct fault *f = g.faults; f; prev = f, f = f->next) {
        int sse = f->kind == F_SSE_END || f->kind == F_SSE_EVENT;
        int rs = f->kind == F_READ_RECONNECT || f->kind == F_READ_TERMINAL;
        int match = f->kind == F_STATUS ? target_matches(f->on, k)
                    : sse               ? k == R_READ
                    : rs                ? k == R_RSESSION
                                        : k == R_SESSION;
        if (!match) continue;
        g.n_taken++;
        struct fault *c = fault_copy(f);
        if ((f->kind == F_STATUS || f->kind == F_BLACKHOLE) && --f->times > 0) return c;
        if (prev) prev->next = f->next;
        else g.faults = f->next;
        if (g.faults_tail == f) g.faults_tail = prev;
        fault_free(f);
        return c;
    }
    return NULL;
}

static void fault_describe(const struct fault *f, s2_buf *b) {
    buf_printf(b, "#%" PRIu64 " %s", f->id, FKIND_NAMES[f->kind]);
    switch (f->kind) {
    case F_STATUS:
        buf_printf(b, " %d %s", f->status, f->json);
        if (f->has_retry_after) buf_printf(b, " retry_after_ms=%" PRIu64, f->retry_after_ms);
        buf_printf(b, " times=%" PRIu64 " on=%s", f->times, TARGET_NAMES[f->on]);
        break;
    case F_TERMINAL:
    case F_READ_TERMINAL: buf_printf(b, " %" PRIu64 " %d %s", f->n, f->status, f->json); break;
    case F_BLACKHOLE:
        buf_printf(b, " drop_after_batches=%" PRIu64 " times=%" PRIu64, f->n, f->times);
        break;
    case F_READ_RECONNECT: buf_printf(b, " %" PRIu64, f->n); break;
    case F_STALL: buf_printf(b, " %" PRIu64 " after=%" PRIu64, f->n, f->after); break;
    case F_GOAWAY:
        buf_printf(b, " %" PRIu64 "%s error=%" PRIu32, f->n, f->graceful ? " graceful" : "",
                   f->h2_error);
        break;
    case F_RST: buf_printf(b, " %" PRIu64 " error=%" PRIu32, f->n, f->h2_error); break;
    case F_RECONNECT:
        buf_printf(b, " %" PRIu64 " end_delay=%" PRIu64, f->n, f->end_delay);
        break;
    case F_DROP:
    case F_END: buf_printf(b, " %" PRIu64, f->n); break;
    case F_MALFORMED: buf_printf(b, " %s after=%" PRIu64, MKIND_NAMES[f->mk], f->after); break;
    case F_SSE_END: buf_printf(b, " %" PRIu64 "%s", f->n, f->close ? " close" : ""); break;
    case F_SSE_EVENT:
        buf_printf(b, " %s event=%s", f->json, f->event ? f->event : "batch");
        if (f->eid) buf_printf(b, " id=%s", f->eid);
        break;
    }
    if (f->at_next) buf_printf(b, " at_next_batch");
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

static void close_handle(struct handle *h, int abortive) {
    if (h->fd < 0) return;
    if (abortive) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        (void)setsockopt(h->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(h->fd);
    h->fd = -1;
    h->events = 0;
}

static void set_nodelay(int fd) {
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
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
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 1024) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    *bound = ntohs(a.sin_port);
    return fd;
}

static void ev_free_all(struct req *r) {
    while (r->evh) {
        struct ev *e = r->evh;
        r->evh = e->next;
        free(e->data);
        free(e);
    }
    r->evt = NULL;
}

static struct req *req_new(struct conn *c, int32_t id) {
    struct req *r = calloc(1, sizeof *r);
    if (!r) abort();
    r->c = c;
    r->id = id;
    r->kind = R_OTHER;
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
    if (r->prev) r->prev->next = r->next;
    else c->reqs = r->next;
    if (r->next) r->next->prev = r->prev;
    ev_free_all(r);
    s2_buf_free(&r->body);
    s2_buf_free(&r->out);
    s2_frame_decoder_free(&r->dec);
    fault_free(r->fault);
    free(r->path);
    free(r->sname);
    free(r);
}

static void conn_finish(struct conn *c, int abortive, const char *why) {
    if (c->dead) return;
    vlog("conn %" PRIu64 " closed (%s)", c->id, why);
    close_handle(&c->h, abortive);
    if (c->h2) {
        nghttp2_session_del(c->h2); /* no callbacks from here on */
        c->h2 = NULL;
    }
    while (c->reqs) req_free(c->reqs);
    c->h1 = NULL;
    c->sse = NULL;
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

static void conn_start_close(struct conn *c) {
    if (c->closing) return;
    c->closing = 1;
    c->close_deadline = 0;
}

/* Writes the connection's buffered output, asking nghttp2 for more while the socket takes
 * it. Returns -1 if the connection was closed. */
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
            conn_finish(c, 1, n < 0 ? strerror(errno) : "short send");
            return -1;
        }
        c->out.len = c->out_off = 0;
        if (c->mode != CM_H2 || !c->h2) break;
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->h2, &data);
        if (n < 0) {
            conn_finish(c, 1, nghttp2_strerror((int)n));
            return -1;
        }
        if (n == 0) break;
        buf_put(&c->out, data, (size_t)n);
    }
    return 0;
}

/* After a flush: closes, drops, and sets epoll interest. */
static void conn_settle(struct conn *c, int64_t now) {
    if (c->dead) return;
    int drained = c->out_off >= c->out.len;
    if (c->dropping && drained) {
        int outq = 0;
        if (!c->drop_deadline) c->drop_deadline = now + DROP_DRAIN_MS;
        if (ioctl(c->h.fd, TIOCOUTQ, &outq) < 0 || outq <= 0 || now >= c->drop_deadline) {
            conn_finish(c, 1, "drop");
            return;
        }
    }
    if (!c->closing && c->mode == CM_H2 && c->h2 && drained &&
        !nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2))
        conn_start_close(c);
    if (c->mode == CM_H1 && c->h1_close && drained && !c->h1 && !c->sse) conn_start_close(c);
    if (c->closing && drained && !c->shut) {
        (void)shutdown(c->h.fd, SHUT_WR);
        c->shut = 1;
        c->close_deadline = now + CLOSE_DRAIN_MS;
    }
    if (c->shut && now >= c->close_deadline) {
        conn_finish(c, 0, "closed after FIN");
        return;
    }
    ep_set(&c->h, EPOLLIN | (c->blocked ? EPOLLOUT : 0u));
}

/* ---------------------------------------------------------------- responses */

static ssize_t read_cb(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t len,
                       uint32_t *flags, nghttp2_data_source *src, void *ud) {
    (void)h2;
    (void)id;
    (void)ud;
    struct req *r = src->ptr;
    size_t avail = r->out.len - r->out_off;
    if (avail) {
        size_t n = avail < len ? avail : len;
        memcpy(buf, r->out.data + r->out_off, n);
        r->out_off += n;
        if (r->out_off == r->out.len) {
            r->out.len = r->out_off = 0;
            if (r->out_eof) *flags |= NGHTTP2_DATA_FLAG_EOF;
        }
        return (ssize_t)n;
    }
    if (r->out_eof) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
    }
    return NGHTTP2_ERR_DEFERRED;
}

/* Answers r: a complete response (eof) or the head of a session (more data to come). */
static void respond(struct req *r, int status, const char *ctype, const void *body, size_t len,
                    const struct fault *f, int eof) {
    struct conn *c = r->c;
    if (r->responded) return;
    r->responded = 1;
    char ra[32] = "";
    if (f && f->has_retry_after) snprintf(ra, sizeof ra, "%" PRIu64, f->retry_after_ms);
    vlog("conn %" PRIu64 " stream %d: %d %s %s", c->id, r->id, status, r->method,
         r->path ? r->path : "?");
    if (c->mode == CM_H1) {
        buf_printf(&c->out, "HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\n",
                   status, reason(status), ctype, len);
        if (ra[0]) buf_printf(&c->out, "retry-after-ms: %s\r\n", ra);
        if (c->h1_close) buf_printf(&c->out, "connection: close\r\n");
        buf_printf(&c->out, "\r\n");
        if (len) buf_put(&c->out, body, len);
        return;
    }
    char st[8];
    snprintf(st, sizeof st, "%d", status);
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv nva[3] = {NV(":status", st), NV("content-type", ctype)};
    size_t n = 2;
    if (ra[0]) nva[n++] = (nghttp2_nv)NV("retry-after-ms", ra);
#undef NV
    if (len) buf_put(&r->out, body, len);
    r->out_eof = eof;
    nghttp2_data_provider prd = {.source.ptr = r, .read_callback = read_cb};
    int rc = nghttp2_submit_response(c->h2, r->id, nva, n, &prd);
    if (rc != 0) logw("submit_response: %s", nghttp2_strerror(rc));
}

static void respond_json(struct req *r, int status, const char *json, const struct fault *f) {
    respond(r, status, "application/json", json, strlen(json), f, 1);
}

static void respond_error(struct req *r, int status, const char *code, const char *msg) {
    s2_buf b;
    s2_buf_init(&b);
    buf_printf(&b, "{\"code\":\"%s\",\"message\":\"", code);
    json_escape(&b, msg, strlen(msg));
    buf_printf(&b, "\"}");
    respond(r, status, "application/json", b.data, b.len, NULL, 1);
    s2_buf_free(&b);
}

/* ---------------------------------------------------------------- session events */

static void ev_push(struct req *r, int64_t due, enum evkind kind, const void *data, size_t len,
                    uint32_t code, int graceful) {
    struct ev *e = calloc(1, sizeof *e);
    if (!e) abort();
    if (due < r->last_due) due = r->last_due; /* in order */
    r->last_due = due;
    e->due = due;
    e->kind = kind;
    if (len) {
        e->data = xmalloc(len);
        memcpy(e->data, data, len);
    }
    e->len = len;
    e->code = code;
    e->graceful = graceful;
    if (r->evt) r->evt->next = e;
    else r->evh = e;
    r->evt = e;
}

static void push_frame(struct req *r, int64_t due, const uint8_t *payload, size_t len,
                       uint8_t flags) {
    s2_buf f;
    s2_buf_init(&f);
    uint8_t h[4] = {(uint8_t)((len + 1) >> 16), (uint8_t)((len + 1) >> 8), (uint8_t)(len + 1),
                    flags};
    buf_put(&f, h, 4);
    if (len) buf_put(&f, payload, len);
    ev_push(r, due, EV_DATA, f.data, f.len, 0, 0);
    s2_buf_free(&f);
}

/* Ends the session with a terminal frame (after whatever is queued). */
static void session_terminal(struct req *r, int status, const char *json, int64_t now) {
    size_t jl = strlen(json);
    uint8_t *p = xmalloc(jl + 2);
    p[0] = (uint8_t)(status >> 8);
    p[1] = (uint8_t)status;
    memcpy(p + 2, json, jl);
    push_frame(r, now, p, jl + 2, S2_FRAME_TERMINAL);
    free(p);
    ev_push(r, now, EV_END, NULL, 0, 0, 0);
    r->stopped = 1;
    g.n_terminal++;
    vlog("stream %d: terminal %d %s", r->id, status, json);
}

static void session_terminal_error(struct req *r, int status, const char *code, const char *msg,
                                   int64_t now) {
    s2_buf b;
    s2_buf_init(&b);
    buf_printf(&b, "{\"code\":\"%s\",\"message\":\"", code);
    json_escape(&b, msg, strlen(msg));
    buf_printf(&b, "\"}");
    buf_put(&b, "", 1);
    session_terminal(r, status, (const char *)b.data, now);
    s2_buf_free(&b);
}

/* Queues the fault's action (goaway, rst, drop) now, behind what is queued. */
static void session_action(struct req *r, const struct fault *f, int64_t due) {
    switch (f->kind) {
    case F_GOAWAY:
        ev_push(r, due, EV_GOAWAY, NULL, 0, f->h2_error, f->graceful);
        if (!f->graceful) r->stopped = 1;
        break;
    case F_RST:
        ev_push(r, due, EV_RST, NULL, 0, f->h2_error, 0);
        r->stopped = 1;
        break;
    case F_DROP:
        ev_push(r, due, EV_DROP, NULL, 0, 0, 0);
        r->stopped = 1;
        break;
    case F_END:
        ev_push(r, due, EV_END, NULL, 0, 0, 0);
        r->stopped = 1;
        break;
    default: break;
    }
}

static int is_action(const struct fault *f) {
    return f && (f->kind == F_GOAWAY || f->kind == F_RST || f->kind == F_DROP || f->kind == F_END);
}

/* One AppendInput of a session: fault, apply, ack. */
static void session_batch(struct req *r, const s2_append_input *in, int64_t now) {
    struct fault *f = r->fault;
    if (f && f->kind == F_TERMINAL && r->acks == f->n) {
        session_terminal(r, f->status, f->json, now);
        return;
    }
    if (is_action(f) && f->at_next && r->acks == f->n) {
        session_action(r, f, now);
        if (r->stopped) return; /* a graceful GOAWAY goes on serving */
    }
    s2_append_ack ack;
    s2_buf e;
    s2_buf_init(&e);
    int status = apply_batch(stream_find(r->sname, 1), in, &ack, &e);
    if (status) {
        buf_put(&e, "", 1);
        session_terminal(r, status, (const char *)e.data, now);
        s2_buf_free(&e);
        return;
    }
    s2_buf_free(&e);
    if (f && f->kind == F_BLACKHOLE) {
        /* Applied, never acked: the client times out, or loses the connection once enough
         * batches came (what a resend after it re-writes shows in the records). */
        r->batches_in++;
        if (f->n && r->batches_in == f->n) {
            vlog("stream %d: %" PRIu64 " batches blackholed: dropping", r->id, r->batches_in);
            ev_push(r, now, EV_DROP, NULL, 0, 0, 0);
            r->stopped = 1;
        }
        return;
    }
    uint64_t k = ++r->acks;
    g.n_acks++;
    int64_t due = now;
    if (f && f->kind == F_STALL && k > f->after) due = now + (int64_t)f->n;

    uint8_t payload[S2_APPEND_ACK_MAX_LEN];
    if (f && f->kind == F_MALFORMED && k == f->after + 1) {
        s2_append_ack bad = ack;
        uint64_t cnt = ack.end.seq_num - ack.start.seq_num;
        switch (f->mk) {
        case MK_ZERO_LENGTH: {
            static const uint8_t z[3] = {0, 0, 0};
            ev_push(r, due, EV_DATA, z, 3, 0, 0);
            break;
        }
        case MK_OVER_2MIB: {
            size_t l = S2_FRAME_MAX_LEN + 1;
            uint8_t h[4] = {(uint8_t)(l >> 16), (uint8_t)(l >> 8), (uint8_t)l, 0};
            ev_push(r, due, EV_DATA, h, 4, 0, 0);
            break;
        }
        case MK_BAD_COMPRESSION:
            push_frame(r, due, payload, s2_append_ack_encode(&ack, payload), 0x60);
            break;
        case MK_TRUNCATED_PROTO: {
            size_t l = s2_append_ack_encode(&ack, payload);
            push_frame(r, due, payload, l < 3 ? l : 3, 0);
            break;
        }
        case MK_GARBAGE_PROTO: {
            uint8_t junk[11];
            memset(junk, 0xff, sizeof junk);
            push_frame(r, due, junk, sizeof junk, 0);
            break;
        }
        case MK_WRONG_COUNT:
            bad.end.seq_num++;
            bad.tail.seq_num = bad.end.seq_num;
            push_frame(r, due, payload, s2_append_ack_encode(&bad, payload), 0);
            r->have_last = 1;
            r->last_end = bad.end.seq_num;
            break;
        case MK_DECREASING: {
            uint64_t end = r->have_last ? r->last_end : cnt;
            if (end > cnt) end--;
            bad.end.seq_num = end;
            bad.start.seq_num = end >= cnt ? end - cnt : 0;
            push_frame(r, due, payload, s2_append_ack_encode(&bad, payload), 0);
            r->have_last = 1;
            r->last_end = end;
            break;
        }
        }
        vlog("stream %d: malformed ack (%s)", r->id, MKIND_NAMES[f->mk]);
    } else {
        uint8_t flags = 0;
        if (f && f->kind == F_RECONNECT && k == f->n) flags |= S2_FRAME_RECONNECT;
        push_frame(r, due, payload, s2_append_ack_encode(&ack, payload), flags);
        r->have_last = 1;
        r->last_end = ack.end.seq_num;
    }
    if (is_action(f) && !f->at_next && k == f->n) session_action(r, f, due);
}

static void session_input(struct req *r, const uint8_t *p, size_t n, int64_t now) {
    if (r->stopped || r->responded != 2) return; /* 2: a session answered 200 */
    s2_error err;
    if (s2_frame_feed(&r->dec, p, n, &err) != 0) {
        session_terminal_error(r, 500, "other", "fault_server: out of memory", now);
        return;
    }
    s2_frame f;
    int rc;
    while (!r->stopped && (rc = s2_frame_next(&r->dec, &f, &err)) != 0) {
        if (rc < 0) {
            session_terminal_error(r, 400, "bad_frame", err.message, now);
            return;
        }
        g.n_frames++;
        if (f.terminal) {
            session_terminal_error(r, 400, "bad_frame", "a client must not send terminal frames",
                                   now);
            return;
        }
        s2_append_input in;
        if (s2_append_input_decode(f.payload, f.len, &in, &err) != 0) {
            session_terminal_error(r, 400, "bad_proto", err.message, now);
            return;
        }
        size_t metered;
        if (s2_append_input_validate(&in, &metered, &err) != 0) {
            s2_append_input_free(&in);
            session_terminal_error(r, 422, "invalid", err.message, now);
            return;
        }
        session_batch(r, &in, now);
        s2_append_input_free(&in);
    }
}

/* Runs r's due events in order. An action waits until nghttp2 took every byte before it. */
static void req_pump(struct req *r, int64_t now) {
    struct conn *c = r->c;
    while (r->evh && r->evh->due <= now && !c->dead && c->h2) {
        struct ev *e = r->evh;
        if (e->kind != EV_DATA && r->out_off < r->out.len) return;
        r->evh = e->next;
        if (!r->evh) r->evt = NULL;
        switch (e->kind) {
        case EV_DATA:
            buf_put(&r->out, e->data, e->len);
            (void)nghttp2_session_resume_data(c->h2, r->id);
            break;
        case EV_END:
            r->out_eof = 1;
            (void)nghttp2_session_resume_data(c->h2, r->id);
            break;
        case EV_RST:
            vlog("conn %" PRIu64 " stream %d: RST_STREAM %" PRIu32, c->id, r->id, e->code);
            nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, r->id, e->code);
            ev_free_all(r);
            break;
        case EV_GOAWAY:
            vlog("conn %" PRIu64 ": GOAWAY %" PRIu32 "%s", c->id, e->code,
                 e->graceful ? " (graceful)" : "");
            nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE,
                                  nghttp2_session_get_last_proc_stream_id(c->h2), e->code, NULL, 0);
            if (!e->graceful) conn_start_close(c);
            break;
        case EV_DROP:
            vlog("conn %" PRIu64 ": dropping", c->id);
            c->dropping = 1;
            break;
        }
        free(e->data);
        free(e);
    }
}

/* When r next needs attention without an fd event (INT64_MAX: never). */
static int64_t req_due(const struct req *r, int64_t now) {
    if (!r->evh && r->kind == R_RSESSION && r->responded == 2 && !r->stopped)
        return r->rs_last + RS_HEARTBEAT_MS; /* the next heartbeat */
    if (!r->evh) return INT64_MAX;
    if (r->evh->kind != EV_DATA && r->out_off < r->out.len) return now + POLL_MS;
    return r->evh->due;
}

/* ---------------------------------------------------------------- S2S read sessions */

static const char *query_value(const char *path, const char *name);

/* Queues one ReadBatch frame (records [from, from + n) of st, and the tail). */
static void rs_frame(struct req *r, const struct sstream *st, uint64_t from, size_t n,
                     uint8_t flags, int64_t now) {
    s2_sequenced_record recs[RS_BATCH_MAX];
    for (size_t i = 0; i < n; i++) {
        const struct rec *rec = &st->recs[from + i]; /* seq_num == index */
        recs[i] = (s2_sequenced_record){.seq_num = rec->seq, .timestamp = rec->ts,
                                        .body = rec->body, .body_len = rec->len};
    }
    s2_read_batch b = {.records = recs, .num_records = n, .has_tail = 1,
                       .tail = {st ? st->next_seq : 0, st ? st->last_ts : 0}};
    size_t len = s2_read_batch_encoded_len(&b);
    uint8_t *p = xmalloc(len);
    s2_read_batch_encode(&b, p);
    push_frame(r, now, p, len, flags);
    free(p);
    r->rs_last = now;
}

/* Sends a read session what it has not had yet, from the stored records, as ReadBatch
 * frames; a heartbeat (no records, the tail) when it catches up and every RS_HEARTBEAT_MS
 * while idle; ends the response once `count` records went out; runs its fault (the
 * reconnect flag on batch N, or a terminal frame after batch N). */
static void rs_pump(struct req *r, int64_t now) {
    if (r->responded != 2 || r->stopped || r->c->dead) return;
    const struct fault *f = r->fault;
    static const struct sstream empty = {0};
    const struct sstream *st = stream_find(r->sname, 0);
    if (!st) st = &empty;
    for (;;) {
        if (f && f->kind == F_READ_TERMINAL && r->rs_batches >= f->n) {
            session_terminal(r, f->status, f->json, now);
            return;
        }
        if (r->has_limit && r->sse_count >= r->sse_limit) {
            vlog("stream %d: read count reached, ending", r->id);
            ev_push(r, now, EV_END, NULL, 0, 0, 0);
            r->stopped = 1;
            return;
        }
        if (r->sse_next >= st->next_seq || r->evh || r->out.len - r->out_off >= RS_OUT_MAX) break;
        uint64_t n = st->next_seq - r->sse_next;
        if (n > RS_BATCH_MAX) n = RS_BATCH_MAX;
        if (r->has_limit && n > r->sse_limit - r->sse_count) n = r->sse_limit - r->sse_count;
        size_t bytes = 0, k = 0;
        while (k < n && (k == 0 || bytes + st->recs[r->sse_next + k].len <= RS_BATCH_BYTES))
            bytes += st->recs[r->sse_next + k++].len;
        uint64_t b = ++r->rs_batches;
        uint8_t flags = f && f->kind == F_READ_RECONNECT && b == f->n ? S2_FRAME_RECONNECT : 0;
        if (flags) vlog("stream %d: reconnect flag on read batch %" PRIu64, r->id, b);
        rs_frame(r, st, r->sse_next, k, flags, now);
        r->sse_next += k;
        r->sse_count += k;
        r->rs_caught_up = 0;
        g.n_rbatches++;
    }
    if (r->sse_next >= st->next_seq && !r->evh &&
        (!r->rs_caught_up || now - r->rs_last >= RS_HEARTBEAT_MS)) {
        rs_frame(r, st, 0, 0, 0, now);
        r->rs_caught_up = 1;
        g.n_heartbeats++;
    }
}

static void rs_start(struct req *r, int64_t now) {
    struct conn *c = r->c;
    if (!c->had_read) {
        c->had_read = 1;
        g.n_read_conns++;
    }
    if (r->fault && r->fault->kind == F_STATUS) {
        respond_json(r, r->fault->status, r->fault->json, r->fault);
        r->stopped = 1;
        return;
    }
    const char *v = query_value(r->path, "seq_num");
    uint64_t seq = 0;
    int has_seq = v && sscanf(v, "%" SCNu64, &seq) == 1;
    v = query_value(r->path, "count");
    r->has_limit = v && sscanf(v, "%" SCNu64, &r->sse_limit) == 1 && r->sse_limit > 0;
    struct sstream *st = stream_find(r->sname, 0);
    uint64_t tail = st ? st->next_seq : 0;
    r->sse_next = has_seq ? seq : tail;
    if (r->sse_next > tail) {
        char m[160];
        snprintf(m, sizeof m, "{\"code\":\"range_not_satisfiable\",\"message\":\"seq_num %" PRIu64
                 " is past the tail %" PRIu64 "\"}", r->sse_next, tail);
        respond(r, 416, "application/json", m, strlen(m), NULL, 1);
        r->stopped = 1;
        return;
    }
    respond(r, 200, "s2s/proto", NULL, 0, NULL, 0);
    r->responded = 2;
    rs_pump(r, now);
}

/* ---------------------------------------------------------------- requests */

/* Sorts a request by route; sets kind and sname. */
static void classify(struct req *r) {
    const char *p = r->path ? r->path : "";
    size_t n = strcspn(p, "?");
    if ((n == 7 && !strncmp(p, "/health", 7)) || (n == 5 && !strncmp(p, "/ping", 5)) ||
        (n == 10 && !strncmp(p, "/v1/health", 10))) {
        r->kind = R_HEALTH;
        return;
    }
    static const char pre[] = "/v1/streams/";
    r->kind = R_OTHER;
    if (n <= sizeof pre - 1 || strncmp(p, pre, sizeof pre - 1)) return;
    const char *name = p + sizeof pre - 1;
    size_t nl = strcspn(name, "/?");
    const char *rest = name + nl;
    size_t rl = n - (size_t)(rest - p);
    if (nl == 0) return;
    int records = rl == 8 && !strncmp(rest, "/records", 8);
    int tail = rl == 13 && !strncmp(rest, "/records/tail", 13);
    if (!records && !tail) return;
    r->sname = url_decode(name, nl);
    if (!r->sname) return;
    const char *ct = r->ctype;
    if (tail && !strcmp(r->method, "GET")) r->kind = R_TAIL;
    else if (records && !strcmp(r->method, "GET") && strstr(r->accept, "text/event-stream"))
        r->kind = R_READ;
    else if (records && !strcmp(r->method, "GET") && !strncasecmp(ct, "s2s/proto", 9))
        r->kind = R_RSESSION;
    else if (records && !strcmp(r->method, "POST") && !strncasecmp(ct, "s2s/proto", 9))
        r->kind = R_SESSION;
    else if (records && !strcmp(r->method, "POST")) r->kind = R_UNARY;
}

static void req_start(struct req *r, int64_t now) {
    if (r->started) return;
    r->started = 1;
    classify(r);
    g.n_requests++;
    switch (r->kind) {
    case R_SESSION: g.n_sessions++; break;
    case R_UNARY: g.n_unary++; break;
    case R_TAIL: g.n_tail++; break;
    case R_HEALTH: g.n_health++; break;
    case R_OTHER: g.n_other++; break;
    case R_READ: g.n_reads++; break;
    case R_RSESSION: g.n_rsessions++; break;
    }
    if (r->kind == R_SESSION || r->kind == R_UNARY) {
        if (g.last_records_ms) g.gap_ms = now - g.last_records_ms;
        g.last_records_ms = now;
    }
    r->fault = fault_take(r->kind);
    vlog("conn %" PRIu64 " stream %d: %s %s (%s)%s", r->c->id, r->id, r->method,
         r->path ? r->path : "?", r->ctype, r->fault ? " [fault]" : "");
    if (r->kind == R_RSESSION && r->c->mode == CM_H2) {
        rs_start(r, now);
        return;
    }
    if (r->kind != R_SESSION) return;
    if (r->c->mode != CM_H2) return; /* answered at the end: not over HTTP/1.1 */
    if (r->fault && r->fault->kind == F_STATUS) {
        respond_json(r, r->fault->status, r->fault->json, r->fault);
        r->stopped = 1;
        return;
    }
    (void)stream_find(r->sname, 1);
    respond(r, 200, "s2s/proto", NULL, 0, NULL, 0);
    r->responded = 2;
    if (is_action(r->fault) && !r->fault->at_next && r->fault->n == 0)
        session_action(r, r->fault, now);
}

static void serve_unary(struct req *r) {
    if (strncasecmp(r->ctype, "application/protobuf", 20) &&
        strncasecmp(r->ctype, "application/x-protobuf", 22)) {
        respond_error(r, 400, "bad_header",
                      "fault_server takes unary appends as application/protobuf only");
        return;
    }
    if (r->too_big) {
        respond_error(r, 400, "bad_proto", "request body too large");
        return;
    }
    s2_append_input in;
    s2_error err;
    if (s2_append_input_decode(r->body.data, r->body.len, &in, &err) != 0) {
        respond_error(r, 400, "bad_proto", err.message);
        return;
    }
    size_t metered;
    if (s2_append_input_validate(&in, &metered, &err) != 0) {
        s2_append_input_free(&in);
        respond_error(r, 422, "invalid", err.message);
        return;
    }
    s2_append_ack ack;
    s2_buf e;
    s2_buf_init(&e);
    int status = apply_batch(stream_find(r->sname, 1), &in, &ack, &e);
    s2_append_input_free(&in);
    if (status) {
        respond(r, status, "application/json", e.data, e.len, NULL, 1);
    } else {
        uint8_t payload[S2_APPEND_ACK_MAX_LEN];
        size_t n = s2_append_ack_encode(&ack, payload);
        respond(r, 200, "application/protobuf", payload, n, NULL, 1);
    }
    s2_buf_free(&e);
}

/* ---------------------------------------------------------------- SSE reads (HTTP/1.1) */

#define SSE_BATCH_MAX 64           /* records per batch event */
#define SSE_OUT_MAX (1024 * 1024) /* unsent output above which a reader gets no more events */

static void h1_process(struct conn *c, int64_t now);

static void b64_put(s2_buf *b, const uint8_t *p, size_t n) {
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        char q[4] = {a[v >> 18 & 63], a[v >> 12 & 63], i + 1 < n ? a[v >> 6 & 63] : '=',
                     i + 2 < n ? a[v & 63] : '='};
        buf_put(b, q, 4);
    }
}

static int sse_chunked(const struct req *r) {
    return !(r->fault && r->fault->kind == F_SSE_END && r->fault->close);
}

/* One piece of the event stream, framed as the response is. */
static void sse_write(struct req *r, const void *p, size_t n) {
    struct conn *c = r->c;
    if (sse_chunked(r)) buf_printf(&c->out, "%zx\r\n", n);
    buf_put(&c->out, p, n);
    if (sse_chunked(r)) buf_put(&c->out, "\r\n", 2);
}

/* Ends the response cleanly: the last chunk (then the next request on the connection is
 * served), or the close of a close-delimited body. */
static void sse_finish(struct req *r, int64_t now) {
    struct conn *c = r->c;
    int chunked = sse_chunked(r);
    vlog("conn %" PRIu64 ": SSE read ends (%s)", c->id, chunked ? "last chunk" : "close");
    if (chunked) buf_put(&c->out, "0\r\n\r\n", 5);
    c->sse = NULL;
    req_free(r);
    if (chunked) h1_process(c, now);
    else conn_start_close(c);
}

/* Sends what the reader has not had yet, then a ping once caught up; ends the response at
 * the read's count ([DONE]) or at an sse_end_after fault (no [DONE]; after the ping when
 * the reader is caught up then, so `sse_end_after 0` is a heartbeat and an end). */
static void sse_pump(struct req *r, int64_t now) {
    struct conn *c = r->c;
    const struct fault *end = r->fault && r->fault->kind == F_SSE_END ? r->fault : NULL;
    struct sstream *st = stream_find(r->sname, 0);
    uint64_t avail = st ? st->next_seq : 0;
    s2_buf ev;
    s2_buf_init(&ev);
    for (;;) {
        if (r->has_limit && r->sse_count >= r->sse_limit) {
            sse_write(r, "data: [DONE]\n\n", 14);
            s2_buf_free(&ev);
            sse_finish(r, now);
            return;
        }
        if ((end && r->sse_sent >= end->n) || r->sse_next >= avail ||
            c->out.len - c->out_off >= SSE_OUT_MAX)
            break;
        uint64_t n = avail - r->sse_next;
        if (n > SSE_BATCH_MAX) n = SSE_BATCH_MAX;
        if (r->has_limit && n > r->sse_limit - r->sse_count) n = r->sse_limit - r->sse_count;
        if (end && n > end->n - r->sse_sent) n = end->n - r->sse_sent;
        ev.len = 0;
        buf_printf(&ev, "{\"records\":[");
        for (uint64_t i = 0; i < n; i++) {
            const struct rec *rec = &st->recs[r->sse_next + i]; /* seq_num == index */
            buf_printf(&ev, "%s{\"seq_num\":%" PRIu64 ",\"timestamp\":%" PRIu64 ",\"body\":\"",
                       i ? "," : "", rec->seq, rec->ts);
            b64_put(&ev, rec->body, rec->len);
            buf_printf(&ev, "\"}");
            r->sse_bytes += S2_RECORD_OVERHEAD + rec->len;
        }
        r->sse_count += n;
        r->sse_sent += n;
        r->sse_next += n;
        buf_printf(&ev, "],\"tail\":{\"seq_num\":%" PRIu64 ",\"timestamp\":%" PRIu64 "}}", avail,
                   st->last_ts);
        s2_buf head;
        s2_buf_init(&head);
        buf_printf(&head, "event: batch\nid: %" PRIu64 ",%" PRIu64 ",%" PRIu64 "\ndata: ",
                   r->sse_next - 1, r->sse_count, r->sse_bytes);
        buf_put(&head, ev.data, ev.len);
        buf_put(&head, "\n\n", 2);
        sse_write(r, head.data, head.len);
        s2_buf_free(&head);
        r->sse_caught_up = 0;
    }
    if (r->sse_next >= avail && !r->sse_caught_up) {
        ev.len = 0;
        buf_printf(&ev,
                   "event: ping\ndata: {\"timestamp\":%" PRIu64 ",\"tail\":{\"seq_num\":%" PRIu64
                   ",\"timestamp\":%" PRIu64 "}}\n\n",
                   wall_ms(), avail, st ? st->last_ts : 0);
        sse_write(r, ev.data, ev.len);
        r->sse_caught_up = 1;
    }
    s2_buf_free(&ev);
    if (end && r->sse_sent >= end->n) sse_finish(r, now); /* after the ping, if caught up */
}

static const char *query_value(const char *path, const char *name) {
    const char *q = path ? strchr(path, '?') : NULL;
    size_t nl = strlen(name);
    while (q) {
        q++;
        if (!strncmp(q, name, nl) && q[nl] == '=') return q + nl + 1;
        q = strchr(q, '&');
    }
    return NULL;
}

/* Parses "a,b,c" (decimal u64s). */
static int parse_event_id(const char *s, uint64_t *a, uint64_t *b, uint64_t *c) {
    char tail;
    unsigned long long x, y, z;
    if (!s || !*s || strchr(s, '-') || strchr(s, '+') || strchr(s, ' ') ||
        sscanf(s, "%llu,%llu,%llu%c", &x, &y, &z, &tail) != 3)
        return -1;
    *a = x, *b = y, *c = z;
    return 0;
}

static void sse_start(struct req *r) {
    struct conn *c = r->c;
    snprintf(g.last_event_id, sizeof g.last_event_id, "%s",
             r->has_last_event_id ? r->last_event_id : "-");
    if (c->mode != CM_H1) {
        respond_error(r, 501, "not_implemented", "fault_server serves SSE reads over HTTP/1.1 only");
        return;
    }
    const char *v = query_value(r->path, "seq_num");
    uint64_t seq = 0;
    int has_seq = v && sscanf(v, "%" SCNu64, &seq) == 1;
    v = query_value(r->path, "count");
    r->has_limit = v && sscanf(v, "%" SCNu64, &r->sse_limit) == 1 && r->sse_limit > 0;
    struct sstream *st = stream_find(r->sname, 0);
    r->sse_next = has_seq ? seq : st ? st->next_seq : 0;
    if (r->has_last_event_id) {
        uint64_t last;
        if (parse_event_id(r->last_event_id, &last, &r->sse_count, &r->sse_bytes) != 0) {
            respond_error(r, 400, "invalid", "malformed Last-Event-ID");
            return;
        }
        r->sse_next = last + 1;
    }
    int chunked = sse_chunked(r);
    buf_printf(&c->out,
               "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n%s\r\n",
               chunked ? "transfer-encoding: chunked\r\n" : "connection: close\r\n");
    if (!chunked) c->h1_close = 1;
    r->responded = 1;
    c->sse = r;
    if (r->fault && r->fault->kind == F_SSE_EVENT) {
        s2_buf ev;
        s2_buf_init(&ev);
        buf_printf(&ev, "event: %s\n", r->fault->event ? r->fault->event : "batch");
        if (r->fault->eid) buf_printf(&ev, "id: %s\n", r->fault->eid);
        buf_printf(&ev, "data: %s\n\n", r->fault->json);
        sse_write(r, ev.data, ev.len);
        s2_buf_free(&ev);
    }
    /* Events go out from service_conns (sse_pump), once h1_process let go of r. */
}

/* Keeps what the request sent, for `last_request`. */
static void last_request_keep(const struct req *r) {
    if (r->kind == R_HEALTH) return;
    g.n_ended++;
    snprintf(g.last_method, sizeof g.last_method, "%s", r->method);
    free(g.last_path);
    g.last_path = r->path ? xstrndup(r->path, strlen(r->path)) : NULL;
    g.last_body.len = 0;
    if (r->body.len) buf_put(&g.last_body, r->body.data, r->body.len);
}

static void req_end(struct req *r, int64_t now) {
    if (r->ended) return;
    r->ended = 1;
    last_request_keep(r);
    if (r->kind == R_SESSION && r->c->mode == CM_H2) {
        if (r->responded == 2 && !r->stopped) {
            int64_t delay = r->fault && r->fault->kind == F_RECONNECT ? (int64_t)r->fault->end_delay : 0;
            ev_push(r, now + delay, EV_END, NULL, 0, 0, 0);
            r->stopped = 1;
        }
        return;
    }
    if (r->kind == R_RSESSION && r->c->mode == CM_H2) return; /* started in req_start */
    if (r->fault && r->fault->kind == F_STATUS) {
        respond_json(r, r->fault->status, r->fault->json, r->fault);
        return;
    }
    switch (r->kind) {
    case R_SESSION:
        respond_error(r, 400, "bad_header", "fault_server serves s2s/proto sessions over HTTP/2 only");
        break;
    case R_UNARY: serve_unary(r); break;
    case R_TAIL: {
        struct sstream *st = stream_find(r->sname, 0);
        char b[128];
        snprintf(b, sizeof b, "{\"tail\":{\"seq_num\":%" PRIu64 ",\"timestamp\":%" PRIu64 "}}",
                 st ? st->next_seq : 0, st ? st->last_ts : 0);
        respond_json(r, 200, b, NULL);
        break;
    }
    case R_HEALTH: respond(r, 200, "text/plain", "OK", 2, NULL, 1); break;
    case R_READ: sse_start(r); break;
    case R_RSESSION:
        respond_error(r, 501, "not_implemented",
                      "fault_server serves s2s/proto read sessions over HTTP/2 only");
        break;
    case R_OTHER: {
        char m[300];
        snprintf(m, sizeof m, "fault_server does not implement %s %.200s", r->method,
                 r->path ? r->path : "?");
        respond_error(r, 501, "not_implemented", m);
        break;
    }
    }
}

static void req_body(struct req *r, const uint8_t *p, size_t n, int64_t now) {
    if (r->kind == R_SESSION && r->c->mode == CM_H2) {
        session_input(r, p, n, now);
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
    if (namelen == 7 && !memcmp(name, ":method", 7)) {
        snprintf(r->method, sizeof r->method, "%.*s", (int)valuelen, (const char *)value);
    } else if (namelen == 5 && !memcmp(name, ":path", 5)) {
        free(r->path);
        r->path = xstrndup((const char *)value, valuelen);
    } else if (namelen == 12 && !memcmp(name, "content-type", 12)) {
        snprintf(r->ctype, sizeof r->ctype, "%.*s", (int)valuelen, (const char *)value);
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *ud) {
    (void)ud;
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
    struct req *r = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (!r) return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
        req_start(r, g.now);
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) req_end(r, g.now);
    return 0;
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud) {
    (void)flags;
    (void)ud;
    struct req *r = nghttp2_session_get_stream_user_data(h2, id);
    if (r) req_body(r, data, len, g.now);
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
    struct conn *c = ud;
    struct req *r = nghttp2_session_get_stream_user_data(h2, id);
    if (!r) return 0;
    vlog("conn %" PRIu64 " stream %d closed (error %" PRIu32 ")", c->id, id, error_code);
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
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100},
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

static void h1_consume(struct conn *c, size_t n) {
    memmove(c->in.data, c->in.data + n, c->in.len - n);
    c->in.len -= n;
}

static void h1_process(struct conn *c, int64_t now) {
    while (!c->dead && !c->closing && !c->sse) {
        if (!c->h1) {
            if (c->h1_close) return; /* no request after Connection: close */
            uint8_t *end = c->in.len ? memmem(c->in.data, c->in.len, "\r\n\r\n", 4) : NULL;
            if (!end) {
                if (c->in.len > H1_HEAD_MAX) h1_fatal(c, 400, "bad_header", "request head too large");
                return;
            }
            size_t head = (size_t)(end - c->in.data) + 4;
            char *text = xstrndup((const char *)c->in.data, head - 4);
            h1_consume(c, head);
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
            int http10 = !strcmp(sp2 + 1, "HTTP/1.0");
            uint64_t clen = 0;
            int chunked = 0, bad_len = 0;
            if (http10) c->h1_close = 1;
            for (char *h = strtok_r(NULL, "\r\n", &save); h; h = strtok_r(NULL, "\r\n", &save)) {
                char *colon = strchr(h, ':');
                if (!colon) continue;
                *colon = 0;
                char *v = colon + 1;
                while (*v == ' ' || *v == '\t') v++;
                if (!strcasecmp(h, "content-length")) bad_len |= parse_u64(v, &clen);
                else if (!strcasecmp(h, "content-type")) snprintf(r->ctype, sizeof r->ctype, "%s", v);
                else if (!strcasecmp(h, "transfer-encoding")) chunked = 1;
                else if (!strcasecmp(h, "connection") && !strcasecmp(v, "close")) c->h1_close = 1;
                else if (!strcasecmp(h, "accept")) snprintf(r->accept, sizeof r->accept, "%s", v);
                else if (!strcasecmp(h, "last-event-id")) {
                    snprintf(r->last_event_id, sizeof r->last_event_id, "%s", v);
                    r->has_last_event_id = 1;
                }
            }
            free(text);
            if (chunked || bad_len || clen > MAX_UNARY_BODY) {
                req_free(r);
                h1_fatal(c, chunked ? 501 : 400, chunked ? "not_implemented" : "bad_header",
                         chunked ? "fault_server takes Content-Length bodies only"
                                 : "bad or too large content-length");
                return;
            }
            c->h1 = r;
            c->h1_need = (size_t)clen;
            req_start(r, now);
        }
        if (c->in.len < c->h1_need) return;
        struct req *r = c->h1;
        if (c->h1_need) buf_put(&r->body, c->in.data, c->h1_need);
        h1_consume(c, c->h1_need);
        c->h1 = NULL;
        c->h1_need = 0;
        req_end(r, now);
        if (c->sse == r) continue; /* streaming: kept until it ends (sse_finish) */
        req_free(r);
    }
}

/* ---------------------------------------------------------------- connection input */

static void conn_input(struct conn *c, const uint8_t *p, size_t n, int64_t now) {
    if (c->mode == CM_SNIFF) {
        buf_put(&c->in, p, n);
        size_t m = c->in.len < PREFACE_LEN ? c->in.len : PREFACE_LEN;
        if (memcmp(c->in.data, PREFACE, m) != 0) {
            c->mode = CM_H1;
            vlog("conn %" PRIu64 ": HTTP/1.1", c->id);
            h1_process(c, now);
            return;
        }
        if (c->in.len < PREFACE_LEN) return;
        if (conn_start_h2(c) != 0) {
            conn_finish(c, 1, "cannot start HTTP/2");
            return;
        }
        vlog("conn %" PRIu64 ": HTTP/2", c->id);
        s2_buf pending = c->in;
        s2_buf_init(&c->in);
        conn_input(c, pending.data, pending.len, now);
        s2_buf_free(&pending);
        return;
    }
    if (c->mode == CM_H1) {
        buf_put(&c->in, p, n);
        h1_process(c, now);
        return;
    }
    ssize_t used = nghttp2_session_mem_recv(c->h2, p, n);
    if (used < 0) {
        vlog("conn %" PRIu64 ": %s", c->id, nghttp2_strerror((int)used));
        conn_start_close(c);
    }
}

static void conn_read(struct conn *c, int64_t now) {
    uint8_t buf[READ_CHUNK];
    for (int rounds = 0; rounds < 64 && !c->dead; rounds++) {
        ssize_t n = recv(c->h.fd, buf, sizeof buf, 0);
        if (n > 0) {
            if (c->closing || c->dropping) continue; /* not listening any more */
            conn_input(c, buf, (size_t)n, now);
            continue;
        }
        if (n == 0) {
            conn_finish(c, 0, "client closed");
            return;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        conn_finish(c, 1, strerror(errno));
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
        c->id = ++g.next_conn_id;
        c->h = (struct handle){.kind = K_CONN, .fd = fd, .owner = c};
        s2_buf_init(&c->in);
        s2_buf_init(&c->out);
        c->next = g.conns;
        if (g.conns) g.conns->prev = c;
        g.conns = c;
        g.n_conns++;
        set_nodelay(fd);
        vlog("conn %" PRIu64 " accepted", c->id);
        if (ep_set(&c->h, EPOLLIN) < 0) conn_finish(c, 1, "epoll");
    }
}

/* ---------------------------------------------------------------- control */

static void ctl_close(struct ctl *k) {
    if (k->dead) return;
    close_handle(&k->h, 0);
    s2_buf_free(&k->out);
    k->dead = 1;
    if (k->prev) k->prev->next = k->next;
    else g.ctls = k->next;
    if (k->next) k->next->prev = k->prev;
    k->prev = NULL;
    k->next = g.dead_ctls;
    g.dead_ctls = k;
}

static void ctl_flush(struct ctl *k) {
    while (k->out_off < k->out.len) {
        ssize_t n = send(k->h.fd, k->out.data + k->out_off, k->out.len - k->out_off,
                         MSG_NOSIGNAL);
        if (n > 0) {
            k->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ep_set(&k->h, EPOLLIN | EPOLLOUT);
            return;
        }
        ctl_close(k);
        return;
    }
    k->out.len = k->out_off = 0;
    ep_set(&k->h, EPOLLIN);
}

/* Splits a command line into tokens; a token starting with '{' or '[' runs to its matching
 * '}' or ']' (a JSON object or array). Returns the count, or -1 (too many) / -2 (unbalanced
 * JSON). */
static int tokenize(char *p, char **argv, int max) {
    int argc = 0;
    for (;;) {
        while (*p == ' ' || *p == '\t') p++;
        if (!*p) break;
        if (argc == max) return -1;
        argv[argc++] = p;
        if (*p == '{' || *p == '[') {
            int depth = 0, instr = 0;
            for (;; p++) {
                if (!*p) return -2;
                if (instr) {
                    if (*p == '\\' && p[1]) p++;
                    else if (*p == '"') instr = 0;
                } else if (*p == '"') {
                    instr = 1;
                } else if (*p == '{' || *p == '[') {
                    depth++;
                } else if ((*p == '}' || *p == ']') && --depth == 0) {
                    p++;
                    break;
                }
            }
            if (*p && *p != ' ' && *p != '\t') return -2;
        } else {
            while (*p && *p != ' ' && *p != '\t') p++;
        }
        if (*p) *p++ = 0;
    }
    return argc;
}

static void stats_line(s2_buf *b) {
    buf_printf(b,
               "ok connections=%" PRIu64 " requests=%" PRIu64 " sessions=%" PRIu64
               " unary=%" PRIu64 " tail=%" PRIu64 " health=%" PRIu64 " other=%" PRIu64
               " frames=%" PRIu64 " acks=%" PRIu64 " records=%" PRIu64 " terminal=%" PRIu64
               " faults_taken=%" PRIu64 " queued=%zu gap_ms=%" PRId64 " reads=%" PRIu64
               " last_event_id=%s read_sessions=%" PRIu64 " read_conns=%" PRIu64
               " read_batches=%" PRIu64 " heartbeats=%" PRIu64,
               g.n_conns, g.n_requests, g.n_sessions, g.n_unary, g.n_tail, g.n_health, g.n_other,
               g.n_frames, g.n_acks, g.n_records, g.n_terminal, g.n_taken, faults_count(),
               g.gap_ms, g.n_reads, g.last_event_id, g.n_rsessions, g.n_read_conns, g.n_rbatches,
               g.n_heartbeats);
}

static void stats_zero(void) {
    g.n_conns = g.n_requests = g.n_sessions = g.n_unary = g.n_tail = g.n_health = g.n_other = 0;
    g.n_frames = g.n_acks = g.n_records = g.n_terminal = g.n_taken = g.n_reads = 0;
    g.n_rsessions = g.n_read_conns = g.n_rbatches = g.n_heartbeats = 0;
    for (struct conn *c = g.conns; c; c = c->next) c->had_read = 0;
    snprintf(g.last_event_id, sizeof g.last_event_id, "-");
    g.last_records_ms = g.gap_ms = 0;
    g.n_ended = 0;
    free(g.last_path);
    g.last_path = NULL;
    g.last_body.len = 0;
}

/* Runs one command line; appends the answer (lines, each ending in \n) to out. */
static void ctl_exec(char *line, s2_buf *out) {
    char *argv[12];
    int argc = tokenize(line, argv, 11);
    if (argc == -1) {
        buf_printf(out, "err too many arguments\n");
        return;
    }
    if (argc == -2) {
        buf_printf(out, "err unbalanced JSON object\n");
        return;
    }
    if (argc == 0) {
        buf_printf(out, "err empty command\n");
        return;
    }
    const char *cmd = argv[0];
    struct fault f;
    memset(&f, 0, sizeof f);
    int pos = 1; /* next positional argument */
    const char *json = NULL;

#define FAIL(...)                                                                              \
    do {                                                                                       \
        buf_printf(out, "err %s: ", cmd);                                                      \
        buf_printf(out, __VA_ARGS__);                                                          \
        buf_printf(out, "\n");                                                                 \
        return;                                                                                \
    } while (0)
#define NUM(tok, var)                                                                          \
    do {                                                                                       \
        if (!(tok) || parse_u64((tok), &(var)) < 0) FAIL("bad or missing number '%s'", (tok) ? (tok) : ""); \
    } while (0)

    if (!strcmp(cmd, "status") || !strcmp(cmd, "terminal_after") ||
        !strcmp(cmd, "read_terminal_after")) {
        uint64_t v;
        if (strcmp(cmd, "status")) {
            f.kind = !strcmp(cmd, "terminal_after") ? F_TERMINAL : F_READ_TERMINAL;
            NUM(pos < argc ? argv[pos] : NULL, f.n);
            pos++;
        } else {
            f.kind = F_STATUS;
            f.times = 1;
        }
        NUM(pos < argc ? argv[pos] : NULL, v);
        pos++;
        if (v < 100 || v > 599) FAIL("status must be 100..599");
        f.status = (int)v;
        if (pos < argc && (argv[pos][0] == '{' || argv[pos][0] == '[')) json = argv[pos++];
        for (; pos < argc; pos++) {
            const char *a = argv[pos];
            if (f.kind == F_STATUS && !strncmp(a, "retry_after_ms=", 15)) {
                NUM(a + 15, f.retry_after_ms);
                f.has_retry_after = 1;
            } else if (f.kind == F_STATUS && !strncmp(a, "times=", 6)) {
                NUM(a + 6, f.times);
                if (f.times == 0) FAIL("times must be at least 1");
            } else if (f.kind == F_STATUS && !strncmp(a, "on=", 3)) {
                int found = 0;
                for (int i = 0; i < 6; i++)
                    if (!strcmp(a + 3, TARGET_NAMES[i])) f.on = (enum target)i, found = 1;
                if (!found) FAIL("on= takes any, append, unary, session, tail or read");
            } else {
                FAIL("unexpected argument '%s'", a);
            }
        }
    } else if (!strcmp(cmd, "blackhole_acks")) {
        f.kind = F_BLACKHOLE;
        f.times = 1;
        for (; pos < argc; pos++) {
            const char *a = argv[pos];
            if (!strncmp(a, "drop_after_batches=", 19)) {
                NUM(a + 19, f.n);
            } else if (!strncmp(a, "times=", 6)) {
                NUM(a + 6, f.times);
                if (f.times == 0) FAIL("times must be at least 1");
            } else {
                FAIL("unexpected argument '%s'", a);
            }
        }
    } else if (!strcmp(cmd, "read_reconnect_flag_after")) {
        f.kind = F_READ_RECONNECT;
        if (argc != 2) FAIL("takes a count");
        NUM(argv[1], f.n);
        if (f.n == 0) FAIL("N counts read batches from 1");
    } else if (!strcmp(cmd, "stall_acks")) {
        f.kind = F_STALL;
        NUM(pos < argc ? argv[pos] : NULL, f.n);
        pos++;
        if (f.n > 600000) FAIL("at most 600000 ms");
        for (; pos < argc; pos++) {
            if (!strncmp(argv[pos], "after=", 6)) NUM(argv[pos] + 6, f.after);
            else FAIL("unexpected argument '%s'", argv[pos]);
        }
    } else if (!strcmp(cmd, "goaway_after") || !strcmp(cmd, "rst_after")) {
        f.kind = !strcmp(cmd, "rst_after") ? F_RST : F_GOAWAY;
        f.h2_error = f.kind == F_RST ? NGHTTP2_INTERNAL_ERROR : NGHTTP2_NO_ERROR;
        NUM(pos < argc ? argv[pos] : NULL, f.n);
        pos++;
        for (; pos < argc; pos++) {
            uint64_t v;
            if (!strncmp(argv[pos], "error=", 6)) {
                NUM(argv[pos] + 6, v);
                if (v > 0xffffffffu) FAIL("error code too large");
                f.h2_error = (uint32_t)v;
            } else if (f.kind == F_GOAWAY && !strcmp(argv[pos], "graceful")) {
                f.graceful = 1;
            } else if (!strcmp(argv[pos], "at_next_batch")) {
                f.at_next = 1;
            } else {
                FAIL("unexpected argument '%s'", argv[pos]);
            }
        }
    } else if (!strcmp(cmd, "reconnect_flag_after") || !strcmp(cmd, "drop_after") ||
               !strcmp(cmd, "end_after")) {
        f.kind = !strcmp(cmd, "drop_after")  ? F_DROP
                 : !strcmp(cmd, "end_after") ? F_END
                                             : F_RECONNECT;
        if (argc < 2) FAIL("takes a count");
        NUM(argv[1], f.n);
        if (f.kind == F_RECONNECT && f.n == 0) FAIL("N counts ack frames from 1");
        for (pos = 2; pos < argc; pos++) {
            if (f.kind != F_RECONNECT && !strcmp(argv[pos], "at_next_batch")) {
                f.at_next = 1;
            } else if (f.kind == F_RECONNECT && !strncmp(argv[pos], "end_delay=", 10)) {
                NUM(argv[pos] + 10, f.end_delay);
                if (f.end_delay > 600000) FAIL("end_delay: at most 600000 ms");
            } else {
                FAIL("unexpected argument '%s'", argv[pos]);
            }
        }
    } else if (!strcmp(cmd, "malformed")) {
        f.kind = F_MALFORMED;
        if (argc < 2) FAIL("takes a kind");
        int found = 0;
        for (int i = 0; i < 7; i++)
            if (!strcmp(argv[1], MKIND_NAMES[i])) f.mk = (enum mkind)i, found = 1;
        if (!found)
            FAIL("kind is one of zero_length over_2mib bad_compression truncated_proto "
                 "garbage_proto wrong_count decreasing");
        f.after = f.mk == MK_DECREASING ? 1 : 0;
        for (pos = 2; pos < argc; pos++) {
            if (!strncmp(argv[pos], "after=", 6)) NUM(argv[pos] + 6, f.after);
            else FAIL("unexpected argument '%s'", argv[pos]);
        }
    } else if (!strcmp(cmd, "sse_end_after")) {
        f.kind = F_SSE_END;
        if (argc < 2) FAIL("takes a count");
        NUM(argv[1], f.n);
        for (pos = 2; pos < argc; pos++) {
            if (!strcmp(argv[pos], "close")) f.close = 1;
            else FAIL("unexpected argument '%s'", argv[pos]);
        }
    } else if (!strcmp(cmd, "sse_event")) {
        f.kind = F_SSE_EVENT;
        if (argc < 2 || argv[1][0] != '{') FAIL("takes a JSON object");
        json = argv[1];
        for (pos = 2; pos < argc; pos++) {
            const char *a = argv[pos];
            size_t l = strlen(a);
            if (!strncmp(a, "event=", 6) && l > 6 && l < 6 + 32 && !strpbrk(a, "\r\n")) {
                free(f.event);
                f.event = xstrndup(a + 6, l - 6);
            } else if (!strncmp(a, "id=", 3) && l < 3 + 96) {
                free(f.eid);
                f.eid = xstrndup(a + 3, l - 3);
            } else {
                free(f.event);
                free(f.eid);
                FAIL("unexpected argument '%s'", a);
            }
        }
    } else if (!strcmp(cmd, "records") || !strcmp(cmd, "dump")) {
        if (argc != 2) FAIL("takes a stream name");
        struct sstream *st = stream_find(argv[1], 0);
        size_t n = st ? st->n : 0;
        if (!strcmp(cmd, "records")) {
            uint64_t h = 0xcbf29ce484222325ull;
            for (size_t i = 0; i < n; i++) {
                uint8_t l[4] = {(uint8_t)st->recs[i].len, (uint8_t)(st->recs[i].len >> 8),
                                (uint8_t)(st->recs[i].len >> 16), (uint8_t)(st->recs[i].len >> 24)};
                for (int j = 0; j < 4; j++) h = (h ^ l[j]) * 0x100000001b3ull;
                for (size_t j = 0; j < st->recs[i].len; j++)
                    h = (h ^ st->recs[i].body[j]) * 0x100000001b3ull;
            }
            buf_printf(out, "ok records %s count=%zu next_seq=%" PRIu64 " hash=%016" PRIx64 "\n",
                       argv[1], n, st ? st->next_seq : 0, h);
        } else {
            static const char hex[] = "0123456789abcdef";
            for (size_t i = 0; i < n; i++) {
                buf_printf(out, "%" PRIu64 " ", st->recs[i].seq);
                if (s2_buf_reserve(out, 2 * st->recs[i].len + 1) != 0) abort();
                for (size_t j = 0; j < st->recs[i].len; j++) {
                    out->data[out->len++] = (uint8_t)hex[st->recs[i].body[j] >> 4];
                    out->data[out->len++] = (uint8_t)hex[st->recs[i].body[j] & 15];
                }
                buf_put(out, "\n", 1);
            }
            buf_printf(out, "ok dump %s %zu\n", argv[1], n);
        }
        return;
    } else if (!strcmp(cmd, "faults")) {
        buf_printf(out, "ok %zu queued", faults_count());
        const char *sep = ": ";
        for (struct fault *q = g.faults; q; q = q->next) {
            buf_printf(out, "%s", sep);
            fault_describe(q, out);
            sep = "; ";
        }
        buf_printf(out, "\n");
        return;
    } else if (!strcmp(cmd, "last_request")) {
        if (argc != 1) FAIL("takes no arguments");
        static const char hex[] = "0123456789abcdef";
        buf_printf(out, "ok n=%" PRIu64 " method=%s path=%s body=", g.n_ended,
                   g.n_ended ? g.last_method : "-", g.last_path ? g.last_path : "-");
        if (s2_buf_reserve(out, 2 * g.last_body.len + 2) != 0) abort();
        for (size_t j = 0; j < g.last_body.len; j++) {
            out->data[out->len++] = (uint8_t)hex[g.last_body.data[j] >> 4];
            out->data[out->len++] = (uint8_t)hex[g.last_body.data[j] & 15];
        }
        buf_put(out, "\n", 1);
        return;
    } else if (!strcmp(cmd, "stats")) {
        stats_line(out);
        buf_printf(out, "\n");
        return;
    } else if (!strcmp(cmd, "reset")) {
        faults_clear();
        buf_printf(out, "ok reset\n");
        return;
    } else if (!strcmp(cmd, "wipe")) {
        faults_clear();
        streams_free();
        stats_zero();
        buf_printf(out, "ok wipe\n");
        return;
    } else if (!strcmp(cmd, "ping")) {
        buf_printf(out, "ok pong\n");
        return;
    } else if (!strcmp(cmd, "help")) {
        buf_printf(out, "ok commands: status CODE [JSON] [retry_after_ms=N] [times=N] [on=...]"
                        " | terminal_after N STATUS [JSON] | stall_acks MS [after=N]"
                        " | goaway_after N [graceful] [error=C] [at_next_batch]"
                        " | rst_after N [error=C] [at_next_batch] | reconnect_flag_after N [end_delay=MS]"
                        " | malformed KIND [after=N] | drop_after N [at_next_batch]"
                        " | end_after N [at_next_batch] | sse_end_after N [close]"
                        " | sse_event JSON [event=NAME] [id=ID]"
                        " | blackhole_acks [drop_after_batches=N] [times=K]"
                        " | read_reconnect_flag_after N | read_terminal_after N STATUS [JSON]"
                        " | faults | records STREAM | dump STREAM | last_request | stats | reset"
                        " | wipe | ping\n");
        return;
    } else {
        buf_printf(out, "err unknown command '%.64s'\n", cmd);
        return;
    }
#undef NUM
#undef FAIL

    /* A fault: queue it. */
    if (f.kind == F_STATUS || f.kind == F_TERMINAL || f.kind == F_READ_TERMINAL)
        f.json = xstrndup(json ? json : default_json(f.status),
                          strlen(json ? json : default_json(f.status)));
    if (f.kind == F_SSE_EVENT) f.json = xstrndup(json, strlen(json));
    struct fault *q = xmalloc(sizeof *q);
    *q = f;
    q->id = ++g.next_fault_id;
    q->next = NULL;
    if (g.faults_tail) g.faults_tail->next = q;
    else g.faults = q;
    g.faults_tail = q;
    buf_printf(out, "ok queued ");
    fault_describe(q, out);
    buf_printf(out, " (%zu queued)\n", faults_count());
}

static void on_ctl_event(struct ctl *k, uint32_t ev) {
    if (k->dead) return;
    if (ev & EPOLLOUT) ctl_flush(k);
    if (k->dead || !(ev & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
    ssize_t n = recv(k->h.fd, k->in + k->len, CTL_LINE_MAX - k->len, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) {
        ctl_close(k);
        return;
    }
    k->len += (size_t)n;
    for (;;) {
        char *nl = memchr(k->in, '\n', k->len);
        if (!nl) break;
        *nl = '\0';
        size_t used = (size_t)(nl - k->in) + 1;
        if (nl > k->in && nl[-1] == '\r') nl[-1] = '\0';
        size_t before = k->out.len;
        vlog("control: %s", k->in);
        ctl_exec(k->in, &k->out);
        if (g.verbose && k->out.len > before && k->out.len - before < 512)
            vlog("control: -> %.*s", (int)(k->out.len - before - 1),
                 (const char *)k->out.data + before);
        memmove(k->in, k->in + used, k->len - used);
        k->len -= used;
    }
    if (k->len >= CTL_LINE_MAX) {
        buf_printf(&k->out, "err line too long\n");
        k->len = 0;
    }
    if (k->out.len > CTL_OUT_MAX) {
        ctl_close(k);
        return;
    }
    ctl_flush(k);
}

static void on_ctl_accept(void) {
    for (;;) {
        int fd = accept4(g.ctl_listen.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) logw("accept: %s", strerror(errno));
            return;
        }
        struct ctl *k = calloc(1, sizeof *k);
        if (!k) abort();
        k->h = (struct handle){.kind = K_CTL, .fd = fd, .owner = k};
        s2_buf_init(&k->out);
        k->next = g.ctls;
        if (g.ctls) g.ctls->prev = k;
        g.ctls = k;
        if (ep_set(&k->h, EPOLLIN) < 0) ctl_close(k);
    }
}

/* ---------------------------------------------------------------- main loop */

static void free_dead(void) {
    while (g.dead_conns) {
        struct conn *c = g.dead_conns;
        g.dead_conns = c->next;
        free(c);
    }
    while (g.dead_ctls) {
        struct ctl *k = g.dead_ctls;
        g.dead_ctls = k->next;
        free(k);
    }
}

/* Runs due events, flushes, settles: twice, so an action that waited for a flush runs in
 * the same turn. */
static void service_conns(int64_t now) {
    for (int round = 0; round < 2; round++) {
        for (struct conn *c = g.conns, *next; c; c = next) {
            next = c->next;
            if (c->sse && !c->dead) sse_pump(c->sse, now);
            for (struct req *r = c->reqs, *rn; r && !c->dead; r = rn) {
                rn = r->next;
                if (r->kind == R_RSESSION) rs_pump(r, now);
                req_pump(r, now);
            }
            if (conn_flush(c) == 0) conn_settle(c, now);
        }
    }
}

static int64_t next_due(int64_t now) {
    int64_t due = INT64_MAX;
    for (struct conn *c = g.conns; c; c = c->next) {
        for (struct req *r = c->reqs; r; r = r->next) {
            int64_t t = req_due(r, now);
            if (t < due) due = t;
        }
        if (c->dropping && now + POLL_MS < due) due = now + POLL_MS;
        if (c->shut && c->close_deadline < due) due = c->close_deadline;
    }
    return due;
}

static int run_loop(void) {
    struct epoll_event evs[MAX_EVENTS];
    while (!g.quit) {
        int64_t now = now_ms();
        int64_t due = next_due(now);
        int timeout = -1;
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
            uint32_t ev = evs[i].events;
            switch (h->kind) {
            case K_LISTEN: on_accept(); break;
            case K_CTL_LISTEN: on_ctl_accept(); break;
            case K_CTL: on_ctl_event(h->owner, ev); break;
            case K_CONN: {
                struct conn *c = h->owner;
                if (c->dead) break;
                if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) conn_read(c, now);
                break;
            }
            case K_SIGNAL: {
                struct signalfd_siginfo si;
                if (read(h->fd, &si, sizeof si) == (ssize_t)sizeof si)
                    vlog("signal %u: exiting", si.ssi_signo);
                g.quit = 1;
                break;
            }
            case K_STDIN: {
                char buf[512];
                ssize_t r = read(h->fd, buf, sizeof buf);
                if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) {
                    vlog("stdin closed: exiting");
                    g.quit = 1;
                }
                break;
            }
            }
        }
        service_conns(now);
        free_dead();
    }
    return 0;
}

static void shutdown_all(void) {
    while (g.conns) conn_finish(g.conns, 1, "exiting");
    while (g.ctls) ctl_close(g.ctls);
    free_dead();
    faults_clear();
    streams_free();
    free(g.last_path);
    s2_buf_free(&g.last_body);
    close_handle(&g.listen, 0);
    close_handle(&g.ctl_listen, 0);
    if (g.sig.fd >= 0) close(g.sig.fd);
    if (g.ep >= 0) close(g.ep);
}

static void usage(FILE *f) {
    fputs("usage: fault-server --port PORT [--control PORT] [--exit-on-stdin-eof] [-v]\n"
          "PORT 0 picks a free port; both listen on 127.0.0.1.\n"
          "See the comment at the top of tools/fault_server.c for the control protocol.\n",
          f);
}

int main(int argc, char **argv) {
    int port = -1, ctl_port = -1, exit_on_eof = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(o, "--port") || !strcmp(o, "--listen")) bad = parse_port(v, &port), i++;
        else if (!strcmp(o, "--control")) bad = parse_port(v, &ctl_port), i++;
        else if (!strcmp(o, "--exit-on-stdin-eof")) exit_on_eof = 1;
        else if (!strcmp(o, "-v") || !strcmp(o, "--verbose")) g.verbose = 1;
        else if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "fault_server: unknown option '%s'\n", o);
            usage(stderr);
            return 64;
        }
        if (bad) {
            fprintf(stderr, "fault_server: bad or missing value for %s\n", o);
            return 64;
        }
    }
    if (port < 0) {
        usage(stderr);
        return 64;
    }
    signal(SIGPIPE, SIG_IGN);

    g.listen.fd = g.ctl_listen.fd = g.sig.fd = g.in.fd = g.ep = -1;
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
        shutdown_all();
        return 1;
    }
    g.sig.kind = K_SIGNAL;
    if (ep_set(&g.sig, EPOLLIN) < 0) {
        shutdown_all();
        return 1;
    }
    if (exit_on_eof) {
        g.in = (struct handle){.kind = K_STDIN, .fd = 0};
        if (ep_set(&g.in, EPOLLIN) < 0) logw("--exit-on-stdin-eof: stdin cannot be watched");
    }
    int bound;
    int lfd = listen_on(port, &bound);
    if (lfd < 0) {
        logw("listen on 127.0.0.1:%d: %s", port, strerror(errno));
        shutdown_all();
        return 1;
    }
    g.listen = (struct handle){.kind = K_LISTEN, .fd = lfd};
    if (ep_set(&g.listen, EPOLLIN) < 0) {
        shutdown_all();
        return 1;
    }
    if (ctl_port >= 0) {
        int cbound;
        int cfd = listen_on(ctl_port, &cbound);
        if (cfd < 0) {
            logw("listen on 127.0.0.1:%d: %s", ctl_port, strerror(errno));
            shutdown_all();
            return 1;
        }
        g.ctl_listen = (struct handle){.kind = K_CTL_LISTEN, .fd = cfd};
        if (ep_set(&g.ctl_listen, EPOLLIN) < 0) {
            shutdown_all();
            return 1;
        }
        printf("control %d\n", cbound);
    }
    printf("listening %d\n", bound);
    fflush(stdout);
    g.now = now_ms();
    snprintf(g.last_event_id, sizeof g.last_event_id, "-");
    int rc = run_loop();
    shutdown_all();
    return rc;
}
