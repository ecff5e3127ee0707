/*
 * s2.h — the C core of the Lua client for S2 (s2.dev), readable as its documentation.
 *
 * Layers, each in its own file, each with one job:
 *
 *   s2_buf.c       growable byte buffer
 *   s2_error.c     error values: server JSON error bodies, retry classification
 *   s2_proto.c     protobuf codec of the S2 v1 messages, metered bytes, batch validation
 *   s2_endpoint.c  endpoint parsing and URL building ({basin} host templates, s2-basin header)
 *   s2_frame.c     S2S framing (with zstd/gzip), incremental decoder
 *   s2_json.c      JSON scanning; s2_sse_parse.c: server-sent events
 *   s2_http.c      one unary HTTP attempt through libcurl; blocking calls
 *   s2_retry.c     the retry rule (attempt budget, append policy, final error), the clock
 *   s2_runtime.c   the I/O thread: epoll loop, timers, HTTP/2 connections (nghttp2, TLS);
 *                  runs operations through their ops tables (s2_internal.h)
 *   s2_notice.c    completions: eventfds and the notice socket (s2_wait.h)
 *   s2_events.c    observability events: a bounded queue per runtime (s2_events.h), filled
 *                  by the layers above, drained by the binding
 *   s2_call.c      unary calls as an operation of the I/O thread (libcurl multi)
 *   s2_session.c   append sessions (HTTP/2 stream, or HTTP/1.1 worker), tickets
 *   s2_producer.c  the producer: owns an append session, hooks on it
 *   s2_reader.c    read sessions over HTTP/2
 *   s2_sse.c       read sessions over HTTP/1.1 (SSE); opening a read session
 *   lua_s2*.c      the Lua binding (s2.core), the only files that include lua.h: lua_s2.c
 *                  (module, error metatable, class registration), lua_s2_conv.c
 *                  (conversions, argument checks), lua_s2_codec.c (codec functions) and
 *                  one file per class: _client, _session, _producer, _ticket, _reader, _call
 *
 * Dependencies point one way (scripts/check-layers.sh fails on a circle):
 *   codecs (buf, json, error, proto, frame, endpoint, sse_parse) <- retry <- http, notice
 *     <- runtime <- { call ; session <- producer ; reader <- sse } <- binding
 *   events (a leaf: libc only) <- runtime, call, session, reader, sse, binding
 * The runtime knows operations only through their ops tables (s2_internal.h): unary calls
 * (one driver per client), append sessions (HTTP/2 or HTTP/1.1), read sessions (HTTP/2 or
 * SSE). The notice socket sits below it: it is given the runtime's lock and epoll fd.
 *
 * Conventions (as in hiredis): functions that can fail return 0 on success and -1 on
 * failure, and fill a caller-provided s2_error. Nothing here allocates an error; an
 * s2_error is a plain value. Every allocation is checked and failure reported as
 * S2_E_NOMEM. Nothing in the core touches a lua_State.
 */
#ifndef S2_H
#define S2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <limits.h>

#define S2_VERSION "0.1.0"

/* ---- Limits of the S2 v1 API ------------------------------------------------------------ */

#define S2_MAX_BATCH_RECORDS 1000u
#define S2_MAX_BATCH_BYTES (1024u * 1024u) /* metered */
#define S2_MAX_FENCING_TOKEN 36u           /* bytes of UTF-8 */
#define S2_RECORD_OVERHEAD 8u              /* metered bytes of an empty record */
#define S2_HEADER_OVERHEAD 2u              /* metered bytes per header, plus name and value */

/* ---- Errors ----------------------------------------------------------------------------- */

typedef enum s2_errkind {
    S2_E_NONE = 0,
    S2_E_INVALID,    /* bad input caught before anything was sent */
    S2_E_NOMEM,      /* an allocation failed */
    S2_E_SERVER,     /* the server answered with an error (code from its body) */
    S2_E_TIMEOUT,    /* a deadline passed (code "timeout") */
    S2_E_CONNECTION, /* connect, TLS or transfer failure (code "connection_failed") */
    S2_E_PROTOCOL,   /* the server's answer could not be decoded (code "protocol_error") */
    S2_E_CLOSED,     /* the object was closed (code "closed") */
} s2_errkind;

typedef struct s2_position {
    uint64_t seq_num;
    uint64_t timestamp;
} s2_position;

typedef struct s2_error {
    s2_errkind kind;
    int status;           /* HTTP status, 0 when there was no response */
    bool retryable;       /* worth trying again (S2 classification, see s2_error.c) */
    bool no_side_effects; /* provably nothing was applied: safe to retry any append */
    char code[64];        /* "stream_not_found", "seq_num_mismatch", "timeout", ... */
    char message[512];
    /* 412: which append condition failed, and what the server expected. */
    bool has_expected_seq_num;
    bool has_expected_fencing_token;
    uint64_t expected_seq_num;
    char expected_fencing_token[4 * S2_MAX_FENCING_TOKEN + 1];
    /* 416: the tail the read ran into. */
    bool has_tail;
    s2_position tail;
    /* 429 and friends: the server's retry-after-ms, 0 when absent. */
    uint64_t retry_after_ms;
} s2_error;

/* Fills err (printf-style message) and returns -1, so callers can `return s2_fail(...)`. */
int s2_fail(s2_error *err, s2_errkind kind, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Fills err from an HTTP error response: a JSON body {"code","message"}, a 412 body
 * {"seq_num_mismatch": n} | {"fencing_token_mismatch": "t"}, or a 416 body {"tail": {...}}.
 * Sets retryable and no_side_effects from the code and status. Never fails: a body that is
 * not JSON becomes the message. */
void s2_error_from_response(s2_error *err, int status, const uint8_t *body, size_t len);

/* Retry classification of a server error code at an HTTP status (S2's own table). */
void s2_error_classify(s2_error *err);

/* ---- Growable buffer -------------------------------------------------------------------- */

typedef struct s2_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} s2_buf;

void s2_buf_init(s2_buf *b);
void s2_buf_free(s2_buf *b);
/* Overwrites n bytes with zeros in a way the compiler keeps (secrets before a free). */
void s2_wipe(void *p, size_t n);
/* Frees a string holding a secret (the encryption key), zeroed first; NULL is fine. */
void s2_free_secret(char *s);
int s2_buf_reserve(s2_buf *b, size_t extra); /* 0, or -1 when out of memory */
int s2_buf_append(s2_buf *b, const void *p, size_t n);
int s2_buf_append_str(s2_buf *b, const char *s);
/* Spare buffers (a drained batch's memory reused for the next one, sparing page faults):
 * s2_buf_take moves b's memory out, leaving b empty; s2_buf_keep moves `from`'s memory into
 * spare, emptied, when spare holds none and it is at most max bytes large (true), else
 * leaves both as they are. */
s2_buf s2_buf_take(s2_buf *b);
bool s2_buf_keep(s2_buf *spare, s2_buf *from, size_t max);

/* ---- Records and messages (s2_proto.c) ---------------------------------------------------
 * Decoded messages point into the buffer they were decoded from (no copies of bodies):
 * keep that buffer alive while using them. Arrays are owned by the message and released by
 * its _free function. */

typedef struct s2_header {
    const uint8_t *name;
    size_t name_len;
    const uint8_t *value;
    size_t value_len;
} s2_header;

typedef struct s2_record {
    bool has_timestamp;
    uint64_t timestamp;
    const s2_header *headers;
    size_t num_headers;
    const uint8_t *body;
    size_t body_len;
} s2_record;

typedef struct s2_append_input {
    const s2_record *records;
    size_t num_records;
    bool has_match_seq_num;
    uint64_t match_seq_num;
    const char *fencing_token; /* NULL: no condition; "" is a valid token */
    size_t fencing_token_len;
    /* owned arrays, set by s2_append_input_decode only */
    s2_record *owned_records;
    s2_header *owned_headers;
} s2_append_input;

typedef struct s2_append_ack {
    s2_position start; /* first record */
    s2_position end;   /* seq_num: last record + 1; timestamp: last record's */
    s2_position tail;  /* next seq_num of the stream (may be past end) */
} s2_append_ack;

typedef struct s2_sequenced_record {
    uint64_t seq_num;
    uint64_t timestamp;
    const s2_header *headers;
    size_t num_headers;
    const uint8_t *body;
    size_t body_len;
} s2_sequenced_record;

typedef struct s2_read_batch {
    s2_sequenced_record *records;
    size_t num_records;
    bool has_tail;
    s2_position tail;
    s2_header *owned_headers;
} s2_read_batch;

/* Metered size: 8 + 2 * headers + sum of name, value and body lengths. */
size_t s2_record_metered_bytes(const s2_record *r);
size_t s2_sequenced_record_metered_bytes(const s2_sequenced_record *r);

/* Checks the batch limits (1..1000 records, <= 1 MiB metered, fencing token <= 36 bytes).
 * On success *metered (if not NULL) is the batch's metered size. */
int s2_append_input_validate(const s2_append_input *in, size_t *metered, s2_error *err);

/* Encoding writes exactly _encoded_len bytes; the caller sizes the buffer, so a batch is
 * written once, straight into its wire buffer. */
size_t s2_append_input_encoded_len(const s2_append_input *in);
void s2_append_input_encode(const s2_append_input *in, uint8_t *out);
int s2_append_input_decode(const uint8_t *p, size_t len, s2_append_input *out, s2_error *err);
void s2_append_input_free(s2_append_input *in);

/* Pieces of an AppendInput, for building one record at a time (the producer): a record as
 * the repeated field 1, and the trailing match_seq_num / fencing_token fields. */
size_t s2_record_field_len(const s2_record *r);
uint8_t *s2_record_field_encode(const s2_record *r, uint8_t *out); /* returns the end */
size_t s2_append_conditions_len(bool has_match_seq_num, uint64_t match_seq_num,
                                const char *fencing_token, size_t fencing_token_len);
uint8_t *s2_append_conditions_encode(bool has_match_seq_num, uint64_t match_seq_num,
                                     const char *fencing_token, size_t fencing_token_len,
                                     uint8_t *out);

#define S2_APPEND_ACK_MAX_LEN 96u
size_t s2_append_ack_encode(const s2_append_ack *ack, uint8_t out[S2_APPEND_ACK_MAX_LEN]);
int s2_append_ack_decode(const uint8_t *p, size_t len, s2_append_ack *out, s2_error *err);

size_t s2_read_batch_encoded_len(const s2_read_batch *b);
void s2_read_batch_encode(const s2_read_batch *b, uint8_t *out);
int s2_read_batch_decode(const uint8_t *p, size_t len, s2_read_batch *out, s2_error *err);
void s2_read_batch_free(s2_read_batch *b);

/* ---- S2S frames (s2_frame.c) -------------------------------------------------------------
 * A frame is a 3-byte big-endian length (flag byte + payload), a flag byte, the payload.
 * Flag: bit 7 terminal; bits 6-5 compression (0 none, 1 zstd, 2 gzip, 3 invalid);
 * bit 4 reconnect advised. A regular payload is one protobuf message; a terminal payload is
 * a 2-byte HTTP status and a JSON error body (never compressed). */

#define S2_FRAME_MAX_LEN (2u * 1024u * 1024u) /* largest length field */
#define S2_FRAME_HEADER_LEN 4u
#define S2_FRAME_TERMINAL 0x80u
#define S2_FRAME_COMPRESSION_MASK 0x60u
#define S2_FRAME_RECONNECT 0x10u
#define S2_COMPRESSION_THRESHOLD 1024u /* compress only payloads this big or bigger */

typedef enum s2_compression {
    S2_COMPRESSION_NONE = 0,
    S2_COMPRESSION_ZSTD = 1,
    S2_COMPRESSION_GZIP = 2,
} s2_compression;

/* Appends one regular frame holding the encoded AppendInput to out, compressed when asked
 * and the message is at least S2_COMPRESSION_THRESHOLD bytes. */
int s2_frame_append_input(const s2_append_input *in, s2_compression c, s2_buf *out,
                          s2_error *err);

/* Compresses n bytes of src with c (ZSTD or GZIP; level 1), appending to out: a whole zstd
 * frame or gzip member, what Content-Encoding: zstd | gzip means. Any size. */
int s2_compress(s2_compression c, const uint8_t *src, size_t n, s2_buf *out, s2_error *err);
/* The Content-Encoding token of c, or NULL for NONE. */
const char *s2_compression_name(s2_compression c);

/* Appends one frame with an already encoded payload (used by test servers too). */
int s2_frame_encode(const uint8_t *payload, size_t len, uint8_t flags, s2_compression c,
                    s2_buf *out, s2_error *err);

/* Incremental decoder: feed bytes as they arrive, take frames out one at a time. */
typedef struct s2_frame_decoder {
    s2_buf in;       /* bytes received, not yet consumed */
    size_t off;      /* start of the next frame in `in` */
    s2_buf inflated; /* payload of the last frame, when it was compressed */
} s2_frame_decoder;

typedef struct s2_frame {
    bool terminal;
    bool reconnect;
    const uint8_t *payload; /* valid until the next call on the decoder */
    size_t len;
    int status; /* terminal frames: the HTTP status; the payload is then the JSON body */
    size_t wire_len; /* bytes the frame took on the wire (header included) */
} s2_frame;

void s2_frame_decoder_init(s2_frame_decoder *d);
void s2_frame_decoder_free(s2_frame_decoder *d);
void s2_frame_decoder_reset(s2_frame_decoder *d); /* drop buffered bytes */
int s2_frame_feed(s2_frame_decoder *d, const uint8_t *p, size_t n, s2_error *err);
/* 1: *f is the next frame; 0: need more bytes; -1: malformed (err says why, bad_frame). */
int s2_frame_next(s2_frame_decoder *d, s2_frame *f, s2_error *err);

/* ---- Endpoints (s2_endpoint.c) -----------------------------------------------------------
 * Accepted forms: "host", "host:port", "http(s)://host[:port][/path]". No scheme means
 * https, except for localhost and 127.0.0.1 (http). No path means "/v1". A basin endpoint
 * whose host starts with "{basin}." is a template: the basin name goes into the host and
 * no s2-basin header is sent; any other basin endpoint gets the s2-basin header. */

typedef struct s2_endpoint {
    bool https;
    bool basin_template; /* host begins with "{basin}." */
    char host[256];      /* without the template prefix */
    int port;
    char path[256]; /* no trailing slash, e.g. "/v1" */
} s2_endpoint;

int s2_endpoint_parse(const char *text, s2_endpoint *out, s2_error *err);

/* S2's basin name rule: 8..48 of [a-z0-9-], no hyphen at either end. Checked before a name
 * goes into a host ({basin} templates) or a header (s2-basin). */
bool s2_basin_name_valid(const char *name);

/* An s2-encryption-key value as the SDKs accept it: 1 to S2_MAX_ENCRYPTION_KEY characters
 * of the standard base64 alphabet (A-Z a-z 0-9 + / and = padding). Checked before it goes
 * into a header; never echoed in an error. */
#define S2_MAX_ENCRYPTION_KEY 44u /* base64 of 32 bytes */
bool s2_encryption_key_valid(const char *key);

/* Builds "scheme://host:port/path" + suffix into b (basin: NULL for account scope). */
int s2_endpoint_url(const s2_endpoint *ep, const char *basin, const char *suffix, s2_buf *b);

/* Percent-encodes a path segment or query value (RFC 3986 unreserved kept). */
int s2_buf_append_urlencoded(s2_buf *b, const uint8_t *s, size_t n);

/* Appends "/streams/<encoded stream>/records" (a session's request path) to b. */
int s2_stream_records_path(const char *stream, s2_buf *b);

/* ---- Unary HTTP (s2_http.c) ---------------------------------------------------------------
 * One s2_http per client: it owns a curl handle whose connections are reused between calls.
 * Not thread-safe: one thread (the Lua state that owns the client) uses it at a time. */

typedef enum s2_append_retry_policy {
    S2_RETRY_ALL = 0,         /* retry appends on any retryable error (may duplicate) */
    S2_RETRY_NO_SIDE_EFFECTS, /* retry appends only when nothing can have been applied */
} s2_append_retry_policy;

/* A session's own retry settings (the retry option of stream:append_session, :producer and
 * :read_session), used instead of the client's by that session only. max_attempts 0: the
 * client's settings (all four fields); S2_RETRY_FOREVER: no attempt budget, the backoff alone
 * paces the attempts (sessions only: unary calls are always bounded, see client.lua). */
#define S2_RETRY_FOREVER UINT_MAX
typedef struct s2_retry_options {
    unsigned max_attempts;
    double min_base_delay; /* seconds */
    double max_base_delay; /* seconds */
    s2_append_retry_policy append_retry_policy;
} s2_retry_options;

typedef struct s2_config {
    const char *access_token;
    s2_endpoint account;
    s2_endpoint basin;
    double request_timeout;    /* seconds, per attempt */
    double connection_timeout; /* seconds */
    unsigned max_attempts;     /* total, including the first; S2_RETRY_FOREVER: no limit */
    double min_base_delay;     /* seconds */
    double max_base_delay;     /* seconds */
    s2_append_retry_policy append_retry_policy;
    const char *ca_file; /* NULL: system CAs */
    double drain_timeout; /* seconds a collected client (or exit) waits for unacked batches */
} s2_config;

typedef enum s2_call_kind {
    S2_CALL_IDEMPOTENT = 0, /* reads and management: retried on any retryable error */
    S2_CALL_APPEND,         /* retried per the append retry policy */
} s2_call_kind;

typedef struct s2_request {
    const char *method;        /* "GET", "POST", "PUT", "PATCH", "DELETE" */
    const char *basin;         /* NULL: account scope */
    const char *path;          /* after the endpoint's path, already encoded: "/streams/x" */
    const char *content_type;  /* NULL when there is no body */
    const char *accept;        /* NULL: application/json */
    const uint8_t *body;
    size_t body_len;
    const char *request_token; /* s2-request-token, the same on every attempt; or NULL */
    const char *encryption_key; /* s2-encryption-key (valid, see above), or NULL; a secret:
                                 * copies of it are zeroed when freed */
    const char *content_encoding; /* "zstd" | "gzip": the body is compressed so; or NULL */
    s2_call_kind kind;
    double extra_timeout; /* added to request_timeout (a read's long-poll wait) */
} s2_request;

typedef struct s2_response {
    int status;
    s2_buf body;
    char provision_result[16]; /* s2-provision-result header of ensure calls, or "" */
    unsigned attempts;         /* how many attempts the call took */
} s2_response;

typedef struct s2_http s2_http;

/* Copies what it needs from cfg (strings included). */
s2_http *s2_http_new(const s2_config *cfg, s2_error *err);
void s2_http_free(s2_http *h);

/* The client's configuration (strings owned by h). */
const s2_config *s2_http_config(const s2_http *h);

/* Sends req, retrying per cfg. Returns 0 with a 2xx response in resp, or -1 with err
 * (a non-2xx answer is an S2_E_SERVER error with its status). resp->body must be freed
 * with s2_buf_free either way. */
int s2_http_call(s2_http *h, const s2_request *req, s2_response *resp, s2_error *err);

/* The backoff before retry n (0-based): base = min(min * 2^n, max), plus jitter in
 * [0, base); at least retry_after_ms when the server asked for it. In seconds. */
double s2_backoff_delay(const s2_config *cfg, unsigned retry, uint64_t retry_after_ms);

/* 16 random bytes as 32 hex chars + NUL: s2-request-token values. */
int s2_random_token(char out[33]);

/* 32 random bytes (a 256-bit key for aegis-256 / aes-256-gcm) as 44 base64 chars + NUL: an
 * s2-encryption-key value. */
int s2_random_encryption_key(char out[45]);

/* ---- Runtime, append sessions and tickets (s2_runtime.c, s2_session.c) -------------------
 *
 * A runtime is the I/O side of one client: a thread, started on first use, that runs an
 * epoll loop over the client's HTTP/2 connections (nghttp2; OpenSSL for https). Callers
 * (the Lua state that owns the client) hand it work through locked queues and read results
 * from tickets; the thread never calls back into the caller, and never touches a lua_State.
 *
 * Thread model, in one place:
 *   - runtime->mu guards every field marked "under mu" in s2_internal.h: session queues and
 *     states, ticket states, counters. Held briefly; never across I/O or a wait.
 *   - runtime->cond is broadcast on every change a caller may wait for (a ticket resolved,
 *     capacity freed, a session finished). Callers wait on it; the I/O thread never does.
 *   - Everything else of a session, and all of a connection, belongs to the I/O thread;
 *     for a session over HTTP/1.1, to its own worker thread ("s2-http1", "s2-sse"), which
 *     takes batches and queues records under mu as the I/O thread does. Name lookups run on
 *     short-lived "s2-resolve" threads (each job has its own mutex, see s2_runtime.c).
 *   - Process-wide: live_mu guards the list of runtimes the exit handler drains.
 *   - The runtime knows a session only as an operation (an s2_op and its ops table, see
 *     s2_internal.h); a producer is an append session with hooks, not a kind of its own.
 *
 * Append session: batches go out in submission order on one HTTP/2 request stream (S2S
 * framing); acks come back in the same order and resolve tickets FIFO. On a retryable
 * failure the session reconnects with backoff and resends every unacked batch, under the
 * append retry policy; when it cannot, every outstanding ticket fails with the error. */

typedef struct s2_runtime s2_runtime;
typedef struct s2_ticket s2_ticket;
/* Handles, one type per kind: a read session cannot be passed where an append session or a
 * producer is expected. Each is released with its own _release. */
typedef struct s2_append_session s2_append_session;
typedef struct s2_producer s2_producer;
typedef struct s2_read_session s2_read_session;

/* The runtime copies cfg. The thread starts with the first session. */
s2_runtime *s2_runtime_new(const s2_config *cfg, s2_error *err);
/* Stops the thread and fails whatever is outstanding with "closed"; idempotent. Sessions
 * and tickets stay valid (in a failed state) until released. */
void s2_runtime_shutdown(s2_runtime *rt);
/* The same without waiting for the thread: s2_runtime_stopped tells when it has finished
 * (then s2_runtime_shutdown returns at once). */
void s2_runtime_shutdown_start(s2_runtime *rt);
bool s2_runtime_stopped(s2_runtime *rt);
/* Shuts down and drops the caller's reference. Sessions and tickets hold references of
 * their own, so they may be released (or used: they fail with "closed") afterwards; the
 * memory goes with the last of them. */
void s2_runtime_free(s2_runtime *rt);
/* For a client going away with work in flight (collected, or the process exiting): stops
 * every append session and producer taking batches (a producer's open batch is sealed),
 * waits up to cfg.drain_timeout seconds until all their batches are acked, and from then on
 * reports on stderr what any of them fails to deliver (`why` says what happened, for that
 * report). Read sessions are not waited for. True when nothing is left unacked. Call
 * s2_runtime_free (or shutdown) after it. */
bool s2_runtime_drain(s2_runtime *rt, const char *why);
/* The same for a client garbage-collected (a finalizer must not wait, it may run inside an
 * event loop): returns at once, and the I/O thread itself drains for up to drain_timeout,
 * stops, and frees the runtime. Replaces s2_runtime_free (the caller's reference goes). */
void s2_runtime_release(s2_runtime *rt, const char *why);
typedef struct s2_runtime_stats {
    uint64_t connections_opened; /* HTTP/2 connections opened so far */
    uint64_t connections_open;   /* open now */
    uint64_t loop_turns;         /* turns of the I/O loop (each after a wake-up) */
    uint64_t op_runs;            /* operations run in those turns: one per session a turn
                                  * concerned, or all of them after a wake of all */
} s2_runtime_stats;

void s2_runtime_get_stats(s2_runtime *rt, s2_runtime_stats *out);

/* A counter bumped whenever something a caller may wait for happens (capacity freed, a
 * ticket resolved, a session ended), and an eventfd that becomes readable with each bump
 * (drained by this call). For schedulers that wait on fds instead of blocking in submit. */
uint64_t s2_runtime_progress(s2_runtime *rt);
int s2_runtime_progress_fd(s2_runtime *rt);

/* Notices (for event loops that can read a unix socket but not poll an eventfd, such as
 * OpenResty's cosockets): the path of the runtime's notice socket, made on first call. Its
 * one peer reads each armed completion's id as 16 lowercase hex digits, once, when it is
 * done (s2_ticket_notice, s2_call_notice, s2_read_session_notice, ...). A new peer replaces
 * the old one. */
int s2_runtime_notice_path(s2_runtime *rt, char *out, size_t cap, s2_error *err);
/* Arms an id posted at the next progress (see s2_runtime_progress). */
uint64_t s2_runtime_progress_notice(s2_runtime *rt);

/* The configuration the runtime copied (strings owned by it). */
const s2_config *s2_runtime_config(s2_runtime *rt);

/* False in a forked child: a runtime belongs to the process that made it. */
bool s2_runtime_owned(const s2_runtime *rt);

typedef struct s2_session_options {
    size_t max_inflight_bytes;   /* metered bytes admitted and not yet acked */
    size_t max_inflight_batches; /* 0: no limit */
    s2_compression compression;
    bool http1; /* HTTP/1.1: sequential unary appends, one batch in flight (also chosen
                 * automatically when TLS ALPN does not offer h2) */
    const char *encryption_key; /* s2-encryption-key on every request, or NULL; copied (and
                                 * the copy zeroed when the session is freed) */
    s2_retry_options retry; /* zero: the client's */
} s2_session_options;

typedef struct s2_session_stats {
    uint64_t records_submitted; /* producer: records taken */
    size_t inflight_bytes;
    size_t inflight_batches;
    size_t peak_inflight_bytes;
    size_t peak_inflight_batches;
    uint64_t batches_submitted;
    uint64_t batches_acked;
    uint64_t batches_resent;
    uint64_t reconnects;
} s2_session_stats;

s2_append_session *s2_append_session_open(s2_runtime *rt, const char *basin, const char *stream,
                                          const s2_session_options *opts, s2_error *err);

/* Validates and encodes the batch on the caller's thread, waits (up to timeout seconds; < 0
 * forever) for capacity, then queues it. On success *ticket is a new reference. Fails fast
 * once the session has failed or is closing. */
int s2_append_session_submit(s2_append_session *s, const s2_append_input *in, double timeout,
                             s2_ticket **ticket, s2_error *err);

/* Stops new submits, sends what is queued, waits for every ack (timeout < 0: forever),
 * ends the request stream. 0 when everything was acked; -1 with the session's error.
 * With timeout 0 it only starts closing (code "timeout" until it has finished). */
int s2_append_session_close(s2_append_session *s, double timeout, s2_error *err);

void s2_append_session_stats(s2_append_session *s, s2_session_stats *out);
/* Closed or failed: close() would return at once. Never waits. */
bool s2_append_session_finished(s2_append_session *s);

/* False in a forked child for a session made by the parent (its I/O thread is not here). */
bool s2_append_session_owned(const s2_append_session *s);
s2_runtime *s2_append_session_runtime(const s2_append_session *s);

/* Drops the caller's reference. A session not closed yet drains in the background. */
void s2_append_session_release(s2_append_session *s);

/* ---- Producer (s2_producer.c) --------------------------------------------------------------
 * A session that batches single records in the core: a batch is sealed when the next record
 * would exceed max_batch_records or max_batch_bytes, when it reaches either, or `linger`
 * after its first record (the I/O thread's timer; 0: at its next turn). Each record's
 * ticket is its batch's ticket plus its index in the batch. With a match_seq_num the value
 * is chained: each batch carries the running value. Idempotent mode (one writer per stream)
 * starts the chain at the tail and, after a reconnect, treats a seq_num_mismatch that shows
 * a resent batch already landed as that batch's ack, so nothing is written twice. */

typedef struct s2_producer_options {
    s2_session_options session; /* max_inflight_bytes (records admitted, not acked), ... */
    double linger;              /* seconds */
    size_t max_batch_records;
    size_t max_batch_bytes; /* metered */
    bool idempotent;        /* needs has_match_seq_num (the stream's tail) */
    bool has_match_seq_num;
    uint64_t match_seq_num;
    const char *fencing_token; /* NULL: none; copied */
    size_t fencing_token_len;
} s2_producer_options;

s2_producer *s2_producer_open(s2_runtime *rt, const char *basin, const char *stream,
                              const s2_producer_options *opts, s2_error *err);
/* Copies the record into the open batch (waiting up to timeout for capacity; 0: none). On
 * success *ticket is the batch's ticket and *index the record's place in it: the same
 * pointer as known (a ticket the caller holds a reference on, or NULL) when the record went
 * into that batch, with no new reference; otherwise a new reference. */
int s2_producer_submit(s2_producer *p, const s2_record *r, double timeout, s2_ticket *known,
                       s2_ticket **ticket, uint32_t *index, s2_error *err);
/* Seals the open batch now and waits until everything submitted so far is acked. */
int s2_producer_flush(s2_producer *p, double timeout, s2_error *err);
/* The same without waiting: seals the open batch; 0 with *last the last sealed batch's
 * ticket (a new reference; NULL when nothing was ever sealed), whose settling means
 * everything submitted so far is; -1 with the producer's error once it failed. */
int s2_producer_flush_start(s2_producer *p, s2_ticket **last, s2_error *err);
/* As s2_append_session_close (the open batch is sealed without an extra linger). */
int s2_producer_close(s2_producer *p, double timeout, s2_error *err);
void s2_producer_stats(s2_producer *p, s2_session_stats *out);
bool s2_producer_owned(const s2_producer *p);
/* Closed or failed: close() would return at once. Never waits. */
bool s2_producer_finished(s2_producer *p);
s2_runtime *s2_producer_runtime(const s2_producer *p);
/* Drops the caller's reference; what is submitted drains in the background. */
void s2_producer_release(s2_producer *p);

/* ---- Read sessions (s2_reader.c; over HTTP/1.1 and opening: s2_sse.c) ----------------------
 * A GET .../records stream with S2S framing: ReadBatch frames, heartbeats (no records, a
 * tail) consumed here. Batches wait in a buffer for the caller, who takes records one at a
 * time; the HTTP/2 window is given back only as the caller drains, so a slow consumer stops
 * the server instead of growing memory. On a retryable failure (or 20 s without any frame)
 * it resumes from the last seq_num + 1 with count/bytes/wait reduced by what was delivered,
 * so no record comes twice or goes missing. */

typedef enum s2_read_start {
    S2_READ_SEQ_NUM = 0,
    S2_READ_TIMESTAMP,
    S2_READ_TAIL_OFFSET,
} s2_read_start;

typedef struct s2_read_options {
    s2_read_start start_kind;
    uint64_t start;
    bool clamp;
    bool has_count, has_bytes, has_until, has_wait;
    uint64_t count, bytes, until; /* bytes: metered */
    double wait;                  /* seconds between records; without: follow forever */
    bool ignore_command_records;
    s2_compression compression; /* what the server may use (accept-encoding) */
    bool http1; /* server-sent events over HTTP/1.1 (also chosen when ALPN offers no h2) */
    const char *encryption_key; /* s2-encryption-key on every request, or NULL; copied */
    s2_retry_options retry; /* zero: the client's */
} s2_read_options;

typedef struct s2_read_status {
    bool caught_up; /* the consumer's view: the last tail report reached the tail, no record
                     * or reconnect came after it, and every record before it was handed out
                     * by next() (ignored command records count as handed out) */
    bool has_tail;
    s2_position tail; /* last observed tail */
    bool ended;       /* a limit was reached; no more records */
    uint64_t delivered;
    uint64_t reconnects;
    uint64_t buffered_bytes; /* decoded bytes received and not yet taken by the caller */
} s2_read_status;

s2_read_session *s2_read_session_open(s2_runtime *rt, const char *basin, const char *stream,
                                      const s2_read_options *opts, s2_error *err);
/* The next record, waiting up to timeout (< 0: forever). 1: *rec filled (valid until the
 * next call); 0: ended (a limit was reached); -1: err (also a timeout: code "timeout"). */
int s2_read_session_next(s2_read_session *s, double timeout, s2_sequenced_record *rec,
                         s2_error *err);
/* Up to max (>= 1) records of one of the server's batches in one call, waiting as next()
 * does only while none is buffered (timeout 0: never waits). 1: *taken (>= 1) records in
 * out, valid until the next call of either; 0: ended; -1: err (the session failed); -2: none came in time (err: code
 * "timeout"; a failed session whose error is a timeout gives -1). A failure after some
 * records is reported by the call after the one that handed them out. */
int s2_read_session_next_batch(s2_read_session *s, double timeout, s2_sequenced_record *out,
                               size_t max, size_t *taken, s2_error *err);
void s2_read_session_status(s2_read_session *s, s2_read_status *out);
/* Whether next() would return at once (a record, the end, or the failure). Never waits. */
bool s2_read_session_ready(s2_read_session *s);
/* An eventfd readable while next() would not wait, and the notice (see
 * s2_runtime_notice_path) posted once it would not. */
int s2_read_session_fd(s2_read_session *s);
uint64_t s2_read_session_notice(s2_read_session *s);
/* Waiting until caught up (s2_read_status.caught_up), which takes records being handed
 * out: the wait itself reads nothing. self_consumes: the waiter is the one who takes them
 * (no one else will), so buffered records end the wait with code "records_pending" rather
 * than a deadlock. Besides: the session's failure, "closed" (closed, or ended by a limit
 * short of the tail). poll: 1 caught up, 0 would wait, -1 err. Never waits. */
int s2_read_session_caught_up_poll(s2_read_session *s, bool self_consumes, s2_error *err);
/* Blocks up to timeout (< 0: forever) as self_consumes: 1, or -1 err (code "timeout"). */
int s2_read_session_wait_caught_up(s2_read_session *s, double timeout, s2_error *err);
/* An eventfd readable, and the notice posted, while poll would not return 0. */
int s2_read_session_caught_up_fd(s2_read_session *s, bool self_consumes);
uint64_t s2_read_session_caught_up_notice(s2_read_session *s, bool self_consumes);
/* Stops reading; buffered records are dropped. */
void s2_read_session_close(s2_read_session *s);
bool s2_read_session_owned(const s2_read_session *s);
s2_runtime *s2_read_session_runtime(const s2_read_session *s);
/* Closes (if not yet) and drops the caller's reference. */
void s2_read_session_release(s2_read_session *s);

typedef enum s2_ticket_state {
    S2_TICKET_PENDING = 0,
    S2_TICKET_OK,
    S2_TICKET_FAILED,
} s2_ticket_state;

/* The state now; with OK fills ack, with FAILED fills err. Never waits. */
s2_ticket_state s2_ticket_result(s2_ticket *t, s2_append_ack *ack, s2_error *err);
/* Waits until resolved or timeout seconds pass (< 0: forever); returns the state. */
s2_ticket_state s2_ticket_wait(s2_ticket *t, double timeout);
/* An fd that becomes readable once the ticket resolves (made on first call, closed with the
 * ticket; never drained, so it stays readable). For poll/epoll-based schedulers. -1 on error. */
int s2_ticket_fd(s2_ticket *t);
/* Arms the ticket's notice (see s2_runtime_notice_path); posted at once if resolved. */
uint64_t s2_ticket_notice(s2_ticket *t);
bool s2_ticket_owned(const s2_ticket *t); /* false in a forked child */
s2_runtime *s2_ticket_runtime(const s2_ticket *t);
void s2_ticket_ref(s2_ticket *t);
void s2_ticket_unref(s2_ticket *t);

/* ---- Unary calls on the I/O thread (s2_call.c) -------------------------------------------
 * A call is a request the runtime's I/O thread carries out (libcurl multi in its epoll loop,
 * retries and backoff as timers there) while the caller waits the way its event loop wants:
 * s2_call_wait blocks (plain scripts), s2_call_fd is an eventfd readable once it is done
 * (cqueues, luv), s2_call_notice arms a notice on the runtime's notice socket (OpenResty).
 * States are those of tickets: PENDING, then OK (a 2xx answer) or FAILED. */

typedef struct s2_call s2_call;

/* Copies req (strings and body) and queues it; starts the I/O thread if needed. */
s2_call *s2_call_start(s2_runtime *rt, const s2_request *req, s2_error *err);
/* Never waits. OK: *resp points at the answer, valid while the call is held. */
s2_ticket_state s2_call_result(s2_call *c, const s2_response **resp, s2_error *err);
s2_ticket_state s2_call_wait(s2_call *c, double timeout); /* timeout < 0: forever */
int s2_call_fd(s2_call *c);
uint64_t s2_call_notice(s2_call *c);
bool s2_call_owned(const s2_call *c); /* false in a forked child */
s2_runtime *s2_call_runtime(const s2_call *c);
/* Drops the caller's handle; a call still pending is abandoned (the I/O thread drops it). */
void s2_call_release(s2_call *c);

/* This process's id, cached (refreshed after fork). */
int s2_process_id(void);

/* Monotonic clock, seconds. */
double s2_now(void);

#endif /* S2_H */
