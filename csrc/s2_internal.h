/* s2_internal.h — the structs shared by the layers of the core: retry, the runtime (I/O
 * thread, connections) and the operations it runs (append and read sessions), the producer
 * on top of an append session. Not part of the public C API (s2.h). Each field says who owns it:
 * "under mu" means runtime->mu must be held; "I/O" means only the I/O thread touches it. */
#ifndef S2_INTERNAL_H
#define S2_INTERNAL_H

#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "s2.h"
#include "s2_events.h"
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

/* ---- retry (s2_retry.c) ------------------------------------------------------------------ */

/* Whether a failed attempt, the `attempts`-th in a row (1-based), may be followed by
 * another: err is retryable, the budget (max_attempts) is not spent, and, for an append
 * whose bytes may have been applied (`append_at_stake`) under S2_RETRY_NO_SIDE_EFFECTS, err
 * says nothing was applied. */
bool s2_retry_allowed(const s2_config *cfg, unsigned attempts, bool append_at_stake,
                      const s2_error *err);
/* " (after N attempts)" on the final error of something that took more than one. */
void s2_error_note_attempts(s2_error *err, unsigned attempts);
/* Both in one: the decision after a failed attempt, the `attempts`-th in a row (1-based): true when
 * another may be made: err is retryable, the budget (max_attempts) is not spent, and, for an
 * append whose bytes may have been applied (`append_at_stake`) under
 * S2_RETRY_NO_SIDE_EFFECTS, err says nothing was applied. When not, err becomes the final
 * error: its message gains " (after N attempts)" when more than one was made. */
bool s2_retry_decide(const s2_config *cfg, unsigned attempts, bool append_at_stake,
                     s2_error *err);
/* A session's retry settings: *out = *base (the client's config) with the retry fields of o
 * when o->max_attempts is set. Only out's retry fields are meant to be read (the decision
 * above, s2_backoff_with); the rest are the client's, borrowed. */
void s2_retry_config_for(const s2_config *base, const s2_retry_options *o, s2_config *out);
/* A non-zero xorshift seed for a session's own backoff jitter (p: the session). */
uint64_t s2_retry_seed(const void *p);
/* A planned handover (server_draining, an advised reconnect) is taken at most once per
 * 60 s: true, and *last restarts the clock, when this one may be; false when it counts as a
 * failure like any other. */
bool s2_retry_take_handover(double *last, double now);

/* ---- operations: all the runtime knows of a session ---------------------------------------
 * Each kind of operation (append session over HTTP/2, append session over HTTP/1.1, read
 * session over HTTP/2, read session over SSE; unary requests later) has its own state struct
 * whose first member is an s2_op, and a table of functions the runtime calls through. The
 * runtime never names a kind's functions. All calls are on the I/O thread unless marked
 * "under mu" (then runtime->mu is held, on any thread). */

typedef struct s2_op s2_op;

/* What an operation's HTTP/2 request stream asks for (ops->request fills it). */
typedef struct s2_stream_request {
    const char *method;              /* "GET": no request body; else ops->read_body feeds it */
    s2_buf path;                     /* after the endpoint's path, encoded, query included */
    s2_compression accept_encoding;  /* NONE: no accept-encoding header */
    const char *encryption_key;      /* s2-encryption-key (the op's own copy), or NULL */
} s2_stream_request;

/* abort, done and free are required; a NULL anything else means "nothing to do". The
 * stream functions are called only for an op with a stream (op->conn set). */
typedef struct s2_op_ops {
    const char *kind; /* "append", "append-http1", "read", "read-sse": for debugging */
    /* In a turn of the loop after something happened to the op: its own wake
     * (s2_runtime_wake_op), an event of its stream or connection, its deadline, a wake of
     * all (s2_runtime_wake). Takes queued work, opens a stream when one is needed. */
    void (*service)(s2_op *op);
    /* The earliest time the op needs the loop to wake (0: none). Asked after each turn the
     * op ran in; a deadline that moved later makes an early, harmless check_timers. */
    double (*next_deadline)(s2_op *op);
    /* Fires expired deadlines and backoff timers. */
    void (*check_timers)(s2_op *op, double now);
    /* HTTP/2 stream (ops that run on a worker thread of their own never open one). */
    int (*request)(s2_op *op, s2_stream_request *req, s2_error *err);
    void (*on_data)(s2_op *op, const uint8_t *p, size_t n);
    void (*on_stream_close)(s2_op *op, uint32_t h2_error); /* op->stream_id is 0 by then */
    ssize_t (*read_body)(s2_op *op, uint8_t *buf, size_t len, uint32_t *flags);
    bool window_on_drain; /* the stream window is given back as the caller drains (readers,
                           * with s2_runtime_consume), not as data arrives */
    /* The connection under the stream died (retryable or not, as err says). */
    void (*on_conn_lost)(s2_op *op, const s2_error *err);
    /* The server offered no HTTP/2 (ALPN): continue over HTTP/1.1. */
    void (*switch_http1)(s2_op *op);
    /* The runtime shuts down: fail everything with err. */
    void (*abort)(s2_op *op, const s2_error *err);
    /* Finished: the runtime drops it from its list (and frees it with the last reference). */
    bool (*done)(s2_op *op);
    void (*free)(s2_op *op);
    /* Exit and collection (s2_runtime_drain): stop taking work and report losses from now
     * on; and whether work is still to be delivered. NULL: not waited for. under mu */
    void (*drain_locked)(s2_op *op);
    bool (*drained_locked)(s2_op *op);
    /* A worker thread of the op's own is still running (the runtime's shutdown waits for
     * it to finish its current request). NULL: none. under mu */
    bool (*worker_busy_locked)(s2_op *op);
} s2_op_ops;

struct s2_op {
    /* Set before s2_runtime_start_op; changed later only by the I/O thread with mu held (a
     * switch to HTTP/1.1). So the I/O thread reads it freely, other threads under mu. */
    const s2_op_ops *ops;
    s2_runtime *rt;
    const char *basin; /* the host of {basin} templates and the s2-basin header (op's own) */
    s2_op *next;       /* runtime's list; under mu */
    int refs;          /* under mu: the caller's handle + the runtime's list */
    /* The stream binding. I/O */
    s2_conn *conn;
    int32_t stream_id; /* 0: no request stream */
    int http_status;
    uint64_t retry_after_ms; /* retry-after-ms header of a non-200 answer */
    size_t unconsumed;       /* window_on_drain: DATA bytes not given back yet */
    /* The loop's bookkeeping (s2_runtime.c). listed, ready, ready_next: under the
     * runtime's ready_mu; in the runtime's list (a wake of an op no longer there is
     * ignored), queued for the next turn. heap_at, armed: I/O, its place in the deadline
     * heap (heap_at 0: not there) and the deadline it is filed under. */
    bool listed;
    bool ready;
    s2_op *ready_next;
    size_t heap_at;
    double armed;
};

/* ---- append sessions (s2_session.c) ------------------------------------------------------ */

/* What an owner of the session (the producer) adds: the session calls these without
 * knowing who set them. Set between s2_session_new and s2_append_session_start; constant
 * after. Each may be NULL. */
typedef struct s2_append_hooks {
    void *ud;
    /* Seal what is being filled into pending (close, release, drain, linger). under mu */
    void (*seal_locked)(void *ud);
    /* When what is being filled must be sealed (linger), 0: never. under mu */
    double (*seal_deadline_locked)(void *ud);
    /* The session failed: hand over the batch being filled (NULL: none), to fail with the
     * rest. under mu */
    s2_batch *(*take_open_locked)(void *ud);
    /* A batch marked compress_pending, as the I/O thread takes it. */
    int (*compress)(void *ud, s2_batch *b, s2_error *err);
    /* A seq_num_mismatch after a resend may mean batches already landed: resolve those;
     * true when the session can go on by resending the rest. I/O */
    bool (*recover)(void *ud, const s2_error *err);
    /* The session is freed. */
    void (*destroy)(void *ud);
} s2_append_hooks;

struct s2_append_session {
    s2_op op; /* first: the runtime's view */
    char *basin;
    char *stream; /* the name, for loss reports */
    char *path; /* "/streams/<encoded>/records" after the endpoint's path */
    char *encryption_key; /* owned copy (opts.encryption_key points at it), zeroed when freed */
    s2_session_options opts;
    s2_append_hooks hooks;

    /* under mu */
    s2_session_state state;
    bool released;
    bool report_loss; /* no caller can see its tickets any more (handle dropped, client
                       * collected): batches it fails to deliver are reported on stderr */
    s2_error failure;
    s2_batch *pending_head, *pending_tail; /* submitted, not yet taken by the I/O thread */
    s2_session_stats stats;                /* inflight_* count pending + unacked */
    /* An acked batch's frame buffer (len 0), for the next batch to fill: kept only while the
     * session is busy (something pending, unacked or being filled), so a busy session does
     * not map and fault in a fresh megabyte per batch and an idle one holds nothing. */
    s2_buf spare;

    /* I/O */
    s2_batch *inflight_head, *inflight_tail; /* taken, unacked, in submission order */
    s2_batch *cursor;                        /* next batch to write on the stream, or NULL */
    size_t cursor_off;
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
    double last_advised;  /* when the last planned handover began (one per 60 s) */
    s2_config retry_cfg;  /* set at open, read-only after: the client's config with this
                           * session's retry override (opts.retry); only its retry fields
                           * are read (s2_retry_config_for) */
    uint64_t rng;         /* backoff jitter */

    /* HTTP/1.1 fallback (ops "append-http1"): a worker thread of the session's own posts the
     * pending batches one at a time; the I/O thread then leaves the session alone. */
    bool http1;          /* under mu */
    bool worker_started; /* under mu */
    bool worker_done;    /* under mu */
    pthread_t worker;
};

s2_ticket *s2_ticket_new(s2_runtime *rt);
void s2_ticket_resolve_locked(s2_ticket *t, const s2_append_ack *ack); /* under mu */

/* Allocates a session, not yet known to the runtime: set hooks, then start it. */
s2_append_session *s2_session_new(s2_runtime *rt, const char *basin, const char *stream,
                                  const s2_session_options *opts, s2_error *err);
/* Hands the session to the runtime (and its I/O thread). On failure it is freed (its
 * destroy hook runs) and -1 returned. */
int s2_append_session_start(s2_append_session *s, s2_error *err);
void s2_batch_free(s2_batch *b);
/* Queues a sealed batch on pending and counts it in flight. under mu */
void s2_session_enqueue_locked(s2_append_session *s, s2_batch *b);
/* Resolves the oldest inflight batch with ack, frees it and releases its capacity. I/O. */
void s2_session_pop_acked(s2_append_session *s, const s2_append_ack *ack);
/* The session's spare frame buffer (see spare), or an empty one. under mu */
s2_buf s2_session_take_spare_locked(s2_append_session *s);

/* ---- read sessions (s2_reader.c; SSE in s2_sse.c) ------------------------------------------ */

struct s2_read_session {
    s2_op op; /* first: the runtime's view */
    char *basin;
    char *path; /* "/streams/<encoded>/records" after the endpoint's path */
    char *encryption_key; /* owned copy (ropts.encryption_key points at it), zeroed when freed */
    s2_read_options ropts;
    /* The HTTP/1.1 (SSE) transport, set by the opener before start (the read session does
     * not know it): its ops, and what starts its worker thread (under mu). */
    const s2_op_ops *http1_ops;
    int (*start_http1)(s2_read_session *s, s2_error *err);

    /* under mu */
    s2_session_state state; /* OPEN, CLOSED (by the caller) or FAILED */
    s2_error failure;
    s2_rbatch *rq_head, *rq_tail; /* batches for the caller, in order */
    s2_rbatch *rq_taken;          /* the batch the caller's last record came from */
    s2_buf spare; /* a drained batch's payload buffer, for the next frame (a fresh megabyte
                   * per frame costs page faults); a heartbeat frame, which comes when the
                   * stream is idle at its tail, takes it and frees it */
    size_t credit;                /* drained bytes of the current stream to give back */
    size_t rq_bytes;              /* decoded payload bytes queued for the caller */
    unsigned gen;                 /* current stream generation */
    s2_read_status rstatus;
    s2_completion readable;       /* set while next() would not wait (see s2_reader_signal) */
    bool io_caught_up;            /* the last tail report (a heartbeat, or a batch that
                                   * reached its tail) is the latest news: no record and no
                                   * reconnect came after it */
    size_t rq_pending;            /* records queued that next() will hand out (ignored
                                   * command records are not counted) */
    /* Set while wait_caught_up would not wait (caught up, failed, closed, ended short of the
     * tail): cu_other for a waiter that another coroutine feeds; cu_self also while records
     * are pending, which the waiter itself would have to take (see caught_up_outcome). */
    s2_completion cu_other, cu_self;
    bool worker_started, worker_done; /* the SSE worker */
    pthread_t worker;

    /* I/O (or the SSE worker, which owns them once it runs) */
    s2_buf error_body;
    s2_frame_decoder dec;
    unsigned attempt;            /* consecutive failed attempts without a record */
    double retry_at;             /* when to resume after a failure, 0: not waiting */
    double last_advised;         /* when the last planned handover began (one per 60 s) */
    bool have_next_seq;
    uint64_t next_seq;           /* resume point: last received seq_num + 1 */
    uint64_t got_count, got_bytes; /* received so far (for resume) */
    double last_frame_at;        /* inactivity: 20 s without a frame is a timeout */
    double last_record_at;       /* for reducing `wait` on resume */
    size_t held;                 /* drained bytes held back while the queue is full */
    s2_config retry_cfg;         /* set at open, read-only after: the client's config with
                                  * ropts.retry applied; only its retry fields are read */
    uint64_t rng;                /* backoff jitter (I/O thread, or the SSE worker) */
};

/* Allocates a read session over HTTP/2, not yet known to the runtime. */
s2_read_session *s2_read_session_new(s2_runtime *rt, const char *basin, const char *stream,
                                     const s2_read_options *opts, s2_error *err);
/* Hands it to the runtime; over HTTP/1.1 (start_http1) when asked or when the server
 * offered no HTTP/2. On failure it is freed and -1 returned. */
int s2_read_session_start(s2_read_session *s, s2_error *err);
/* Sets `readable` when a record, the end or a failure is there for the caller. under mu */
void s2_reader_signal_locked(s2_read_session *s);
/* The session reconnects (a retry, an advised reconnect, a handover): counts it and resets
 * caught-up until the new connection reports a tail. under mu */
void s2_reader_reconnecting_locked(s2_read_session *s);
/* Queues a decoded batch for the caller: 1 queued, 0 heartbeat (freed), -1 error. */
int s2_reader_enqueue(s2_read_session *s, s2_rbatch *b, s2_error *err);
/* Builds the reader's current path + query (resume-adjusted) into b. */
int s2_reader_path(s2_read_session *s, s2_buf *b);
/* The parts of the read ops another transport (SSE) shares. */
void s2_reader_op_abort(s2_op *op, const s2_error *err);
bool s2_reader_op_done(s2_op *op);
void s2_reader_op_free(s2_op *op);
bool s2_reader_op_worker_busy_locked(s2_op *op);

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
/* Nudges the I/O thread. s2_runtime_wake_op: for work of that operation (it runs in the
 * next turn); s2_runtime_wake: every operation runs in the next turn. Either with or
 * without mu held. */
void s2_runtime_wake_op(s2_runtime *rt, s2_op *op);
void s2_runtime_wake(s2_runtime *rt);
bool s2_runtime_stopping(s2_runtime *rt); /* with mu held */
bool s2_runtime_http1(s2_runtime *rt);     /* with mu held: the server spoke no HTTP/2 */
/* Adds the operation to the runtime's list (starting the thread if needed): from now on
 * the I/O thread calls it through op->ops. */
int s2_runtime_start_op(s2_runtime *rt, s2_op *op, s2_error *err);
int s2_runtime_start_op_locked(s2_runtime *rt, s2_op *op, s2_error *err); /* under mu */
/* Where the unary calls' driver (s2_call.c) keeps itself: the runtime only holds it. */
s2_op **s2_runtime_unary_slot_locked(s2_runtime *rt);
/* Opens a request stream for the op (ops->request says what) on a suitable connection, or
 * -1 (err) when it cannot start one now; returns 1 when a connection is still being set up
 * (the runtime calls ops->service again once it is ready). */
int s2_runtime_open_stream(s2_runtime *rt, s2_op *op, s2_error *err);
/* Takes no new streams on the op's connection (the server advised a reconnect). */
void s2_runtime_retire_conn(s2_runtime *rt, s2_op *op);
/* Gives n DATA bytes of the op's stream back to its HTTP/2 stream window (the connection
 * window is given back as data arrives). */
void s2_runtime_consume(s2_runtime *rt, s2_op *op, size_t n);
/* Lets the stream's data provider run again (new batches, or EOF to send). */
void s2_runtime_resume_stream(s2_runtime *rt, s2_op *op);
/* Resets and forgets the op's stream (no more callbacks for it). */
void s2_runtime_cancel_stream(s2_runtime *rt, s2_op *op);
double s2_runtime_backoff(s2_runtime *rt, unsigned retry, uint64_t retry_after_ms);

/* The backoff formula (s2_http.c), with the caller's jitter state. */
double s2_backoff_with(const s2_config *cfg, unsigned retry, uint64_t retry_after_ms,
                       uint64_t *rng);

#endif /* S2_INTERNAL_H */
