/* s2_internal.h — the structs shared by the runtime (I/O thread, connections) and the
 * append session. Not part of the public C API (s2.h). Each field says who owns it:
 * "under mu" means runtime->mu must be held; "I/O" means only the I/O thread touches it. */
#ifndef S2_INTERNAL_H
#define S2_INTERNAL_H

#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "s2.h"
#include "s2_wait.h"

typedef struct s2_conn s2_conn;

/* HTTP/2 windows the client grants, per stream and per connection (as the SDKs use). */
#define S2_H2_WINDOW (10u * 1024u * 1024u)

/* ---- JSON scanning (s2_json.c) ---- */
typedef struct s2_json {
    const uint8_t *p, *end;
    int depth;
} s2_json;
/* Object members: the callback returns 1 when it consumed the value, 0 to skip it, -1 on
 * error. Array elements: the callback consumes the element, 0 or -1. */
typedef int (*s2_json_member_cb)(s2_json *s, const char *key, void *ud);
typedef int (*s2_json_element_cb)(s2_json *s, size_t index, void *ud);
void s2_json_ws(s2_json *s);
int s2_json_string(s2_json *s, char *out, size_t cap); /* copies (truncating) with escapes */
int s2_json_span(s2_json *s, const uint8_t **p, size_t *len); /* escape-free strings */
int s2_json_u64(s2_json *s, uint64_t *out);
int s2_json_skip(s2_json *s);
int s2_json_object(s2_json *s, s2_json_member_cb cb, void *ud);
int s2_json_array(s2_json *s, s2_json_element_cb cb, void *ud);
int s2_json_position(s2_json *s, s2_position *pos); /* {seq_num, timestamp} */

struct s2_ticket {
    atomic_int refs;
    s2_runtime *rt;
    s2_ticket_state state; /* under mu */
    s2_append_ack ack;     /* under mu, valid when OK */
    s2_error err;          /* under mu, valid when FAILED */
    s2_completion done;    /* under mu: set when resolved (fd, notice) */
};

/* One submitted batch: its encoded S2S frame and the ticket it resolves. */
typedef struct s2_batch {
    struct s2_batch *next;
    s2_buf frame;
    size_t metered;
    size_t num_records;
    s2_ticket *ticket;
    bool has_msn; /* carries match_seq_num = msn (producer chains) */
    uint64_t msn;
    /* I/O */
    bool written;          /* some of its bytes went out on the current request stream */
    bool sent_before;      /* written on an earlier stream that failed */
    bool compress_pending; /* producer batch: compress when the I/O thread takes it */
    double deadline;       /* ack deadline once fully written, else 0 */
} s2_batch;

/* A ReadBatch waiting for the reader: its payload and the records decoded from it. */
typedef struct s2_rbatch {
    struct s2_rbatch *next;
    s2_buf payload;
    s2_read_batch batch; /* points into payload */
    size_t pos;          /* next record to hand out */
    size_t wire_bytes;   /* DATA bytes it took on the stream, given back when drained */
    unsigned gen;        /* the stream it came on (window credit goes to that one only) */
} s2_rbatch;

typedef enum s2_session_state {
    S2_SESSION_OPEN = 0,
    S2_SESSION_CLOSING, /* close() called or the handle dropped: drain, then end */
    S2_SESSION_CLOSED,  /* everything acked, stream ended */
    S2_SESSION_FAILED,  /* failure holds the error every ticket got */
} s2_session_state;

struct s2_append_session {
    s2_runtime *rt;
    struct s2_append_session *next; /* runtime's list; under mu */
    char *basin;
    char *stream; /* the name, for loss reports */
    char *path; /* "/streams/<encoded>/records" after the endpoint's path */
    s2_session_options opts;

    /* under mu */
    int refs; /* the caller's handle + the runtime's list */
    s2_session_state state;
    bool released;
    bool report_loss; /* no caller can see its tickets any more (handle dropped, client
                       * collected): batches it fails to deliver are reported on stderr */
    s2_error failure;
    s2_batch *pending_head, *pending_tail; /* submitted, not yet taken by the I/O thread */
    s2_session_stats stats;                /* inflight_* count pending + unacked */

    /* I/O */
    s2_batch *inflight_head, *inflight_tail; /* taken, unacked, in submission order */
    s2_batch *cursor;                        /* next batch to write on the stream, or NULL */
    size_t cursor_off;
    s2_conn *conn;
    int32_t stream_id; /* 0: no request stream */
    int http_status;
    uint64_t retry_after_ms; /* retry-after-ms header of a non-200 answer */
    s2_buf error_body;       /* body of a non-200 answer */
    s2_frame_decoder dec;
    bool have_last_end;
    uint64_t last_end;
    unsigned attempt;     /* consecutive failed attempts without an ack */
    double retry_at;      /* when to reconnect after a failure, 0: not waiting */
    bool eof_sent;
    double eof_deadline;  /* when a server that owes nothing must have ended the response */
    bool probing;         /* after a reconnect: only the oldest batch goes out until acked */
    bool resend;          /* the next stream starts by resending the unacked batches */
    bool draining;        /* the server advised a reconnect: finish this stream, move on */
    double last_advised;  /* when the last advised reconnect began (one per 60 s) */

    /* Producer (s2_producer.c): the batch being filled. under mu */
    bool producer;
    s2_producer_options popts; /* fencing_token points at fencing_token below */
    char *fencing_token;
    s2_batch *open;
    size_t open_metered;
    double open_deadline; /* linger expiry, 0: none */
    bool chain;           /* batches carry a chained match_seq_num */
    uint64_t next_msn;
    s2_ticket *last_ticket; /* of the last sealed batch (a reference) */

    /* Read session (s2_reader.c). `reader` and `ropts` are set at open. */
    bool reader;
    s2_read_options ropts;
    /* under mu */
    s2_rbatch *rq_head, *rq_tail; /* batches for the caller, in order */
    s2_rbatch *rq_taken;          /* the batch the caller's last record came from */
    size_t credit;                /* drained bytes of the current stream to give back */
    size_t rq_bytes;              /* decoded payload bytes queued for the caller */
    unsigned gen;                 /* current stream generation */
    s2_read_status rstatus;
    s2_completion readable;       /* set while next() would not wait (see s2_reader_signal) */
    /* I/O */
    bool have_next_seq;
    uint64_t next_seq;           /* resume point: last received seq_num + 1 */
    uint64_t got_count, got_bytes; /* received so far (for resume) */
    double last_frame_at;        /* inactivity: 20 s without a frame is a timeout */
    double last_record_at;       /* for reducing `wait` on resume */
    size_t unconsumed;           /* DATA bytes of the current stream not given back yet */
    size_t held;                 /* drained bytes held back while the queue is full */

    /* HTTP/1.1 fallback: a worker thread of the session's own posts the pending batches one
     * at a time; the I/O thread then leaves the session alone. */
    bool http1;          /* under mu */
    bool worker_started; /* under mu */
    bool worker_done;    /* under mu */
    pthread_t worker;
};

/* ---- shared by s2_session.c and s2_producer.c ---- */

s2_ticket *s2_ticket_new(s2_runtime *rt);
void s2_ticket_resolve_locked(s2_ticket *t, const s2_append_ack *ack); /* under mu */
s2_append_session *s2_session_new(s2_runtime *rt, const char *basin, const char *stream,
                                  const s2_session_options *opts, s2_error *err);
int s2_session_register(s2_append_session *s, s2_error *err);
void s2_batch_free(s2_batch *b);
/* Queues a sealed batch on pending and counts it in flight. under mu */
void s2_session_enqueue_locked(s2_append_session *s, s2_batch *b);
/* Resolves the oldest inflight batch with ack, frees it and releases its capacity. I/O. */
void s2_session_pop_acked(s2_append_session *s, const s2_append_ack *ack);
/* Seals the producer's open batch into pending (no-op without one). under mu */
void s2_producer_seal_locked(s2_append_session *s);
/* Producer batches are compressed by the I/O thread when it takes them. */
int s2_producer_compress(s2_append_session *s, s2_batch *b, s2_error *err);
/* Idempotent producers: a seq_num_mismatch after a resend may mean batches already landed.
 * Resolves those; true when the session can go on by resending the rest. I/O thread. */
bool s2_producer_recover(s2_append_session *s, const s2_error *err);

/* Reader hooks (s2_reader.c), dispatched from the session's. I/O thread. */
void s2_reader_service(s2_append_session *s);
void s2_reader_on_data(s2_append_session *s, const uint8_t *p, size_t n);
void s2_reader_on_stream_close(s2_append_session *s, uint32_t h2_error);
void s2_reader_attempt_failed(s2_append_session *s, const s2_error *err);
double s2_reader_next_deadline(s2_append_session *s);
void s2_reader_check_timers(s2_append_session *s, double now);
void s2_reader_free(s2_append_session *s);
/* Sets `readable` when a record, the end or a failure is there for the caller. under mu */
void s2_reader_signal_locked(s2_append_session *s);
/* Queues a decoded batch for the caller: 1 queued, 0 heartbeat (freed), -1 error. */
int s2_reader_enqueue(s2_append_session *s, s2_rbatch *b, s2_error *err);
/* HTTP/1.1 (SSE) reading on a worker thread (s2_sse.c). under mu */
int s2_reader_start_sse(s2_append_session *s, s2_error *err);
/* The server offered no HTTP/2: continue over SSE. I/O thread. */
void s2_reader_switch_sse(s2_append_session *s);
/* Builds the reader's current path + query (resume-adjusted) into b. */
int s2_reader_path(s2_append_session *s, s2_buf *b);

/* A planned handover (server_draining, an advised reconnect) is taken at most once per
 * 60 s: true, and the clock restarts, when this one may be; false when it counts as a
 * failure. Append and read sessions alike. I/O thread. */
bool s2_session_take_handover(s2_append_session *s, double now);

/* ---- called by the runtime on the I/O thread (s2_session.c) ---- */

/* Takes pending batches, handles close/release; may open a stream. */
void s2_session_service(s2_append_session *s);
/* The earliest time the session needs the loop to wake (0: none). */
double s2_session_next_deadline(s2_append_session *s);
/* Fires expired ack deadlines and backoff timers. */
void s2_session_check_timers(s2_append_session *s, double now);
/* Stream events. */
void s2_session_on_status(s2_append_session *s, int status);
void s2_session_on_data(s2_append_session *s, const uint8_t *p, size_t n);
void s2_session_on_stream_close(s2_append_session *s, uint32_t h2_error);
ssize_t s2_session_read_body(s2_append_session *s, uint8_t *buf, size_t len, uint32_t *flags);
/* The connection under the stream died. */
void s2_session_on_conn_lost(s2_append_session *s, const s2_error *err);
/* The runtime shuts down: fail everything with err. */
void s2_session_abort(s2_append_session *s, const s2_error *err);
/* The server offered no HTTP/2 (ALPN): move the session to the HTTP/1.1 fallback. */
void s2_session_switch_http1(s2_append_session *s);
/* True when the session is finished and the runtime can drop it. */
bool s2_session_done(s2_append_session *s);
void s2_session_free(s2_append_session *s);

/* Exit and collection (s2_runtime_drain): stop taking batches and report losses from now
 * on; and whether the session still holds batches to deliver. under mu */
void s2_session_drain_locked(s2_append_session *s);
bool s2_session_drained_locked(const s2_append_session *s);

/* ---- provided by the runtime (s2_runtime.c) ---- */

/* Starts a core thread named `name` with every signal blocked (SIGPIPE included). */
int s2_thread_start(pthread_t *t, const char *name, void *(*fn)(void *), void *arg,
                    bool detached);

/* Sessions and tickets keep their runtime's memory alive (the client may be collected
 * first). Atomic: the last reference can go on any thread but the I/O thread, which only
 * runs while the client's own reference is held. */
void s2_runtime_ref(s2_runtime *rt);
void s2_runtime_unref(s2_runtime *rt);

void s2_runtime_lock(s2_runtime *rt);
void s2_runtime_unlock(s2_runtime *rt);
void s2_runtime_broadcast(s2_runtime *rt); /* with mu held */
/* Waits on cond with mu held, until `deadline` (monotonic seconds; < 0 forever). Returns
 * false on timeout. */
bool s2_runtime_wait(s2_runtime *rt, double deadline);
void s2_runtime_wake(s2_runtime *rt); /* nudge the I/O thread */
bool s2_runtime_stopping(s2_runtime *rt); /* with mu held */
bool s2_runtime_http1(s2_runtime *rt);     /* with mu held: the server spoke no HTTP/2 */
/* Adds the session to the runtime (starting the thread if needed). */
int s2_runtime_add_session(s2_runtime *rt, s2_append_session *s, s2_error *err);
/* Opens an S2S request stream for the session on a suitable connection, or -1 (err) when
 * it cannot start one now; returns 1 when a connection is still being set up (the runtime
 * calls s2_session_service again once it is ready). */
int s2_runtime_open_stream(s2_runtime *rt, s2_append_session *s, s2_error *err);
/* Takes no new streams on the session's connection (the server advised a reconnect). */
void s2_runtime_retire_conn(s2_runtime *rt, s2_append_session *s);
/* Gives n DATA bytes of the session's stream back to its HTTP/2 stream window (the
 * connection window is given back as data arrives). */
void s2_runtime_consume(s2_runtime *rt, s2_append_session *s, size_t n);
/* Lets the stream's data provider run again (new batches, or EOF to send). */
void s2_runtime_resume_stream(s2_runtime *rt, s2_append_session *s);
/* Resets and forgets the session's stream (no more callbacks for it). */
void s2_runtime_cancel_stream(s2_runtime *rt, s2_append_session *s);
double s2_runtime_backoff(s2_runtime *rt, unsigned retry, uint64_t retry_after_ms);

/* The backoff formula (s2_http.c), with the caller's jitter state. */
double s2_backoff_with(const s2_config *cfg, unsigned retry, uint64_t retry_after_ms,
                       uint64_t *rng);

#endif /* S2_INTERNAL_H */
