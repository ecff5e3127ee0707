/* s2_runtime.c — the I/O thread of a client and its HTTP/2 connections.
 *
 * One thread per runtime, started with the first session. It sleeps in epoll_wait on the
 * connections' sockets and an eventfd that callers write to when they queue work. Each
 * turn of the loop: service every operation (take queued batches, open streams), let nghttp2
 * write what it has, wait, read, run timers, drop what is finished. Operations (append and
 * read sessions) are known only through their ops table (s2_internal.h).
 *
 * Connections are keyed by authority (host:port) and shared by every session of the client
 * up to the server's concurrent-stream limit (at most 100 here, as in the official SDKs);
 * then another is opened. http:// speaks HTTP/2 with prior knowledge (what s2-lite serves);
 * https:// negotiates h2 by ALPN, with certificate and host-name verification.
 *
 * Locking: see s2.h. This file holds runtime->mu only around the operation list and state
 * flags; nghttp2 and the sockets are touched by the I/O thread alone. */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "s2_internal.h"
#include "s2_unary.h"
#include "s2_wait.h"

#define WINDOW_SIZE S2_H2_WINDOW
#define MAX_STREAMS_PER_CONN 100u
/* Keep-alive: a connection that has received nothing for this long gets a PING: sooner when
 * a stream is open on it (half the request timeout), else after IDLE_PING_AFTER. A PING unanswered
 * within the request timeout (at least PING_TIMEOUT_MIN) retires the connection: it is
 * failed, and its sessions move to a fresh one. */
#define IDLE_PING_AFTER 30.0
#define PING_TIMEOUT_MIN 1.0
#define READ_CHUNK (64 * 1024)

typedef enum { CONN_RESOLVING, CONN_CONNECTING, CONN_TLS, CONN_READY, CONN_DEAD } conn_state;

/* A name lookup on a thread of its own: getaddrinfo blocks, and the I/O thread must not
 * (every session's timers would freeze). Shared by the connection and the resolver thread;
 * the last of the two to let go frees it. The thread writes `fd` (an eventfd the I/O thread
 * polls) when done. */
typedef struct resolve_job {
    pthread_mutex_t mu; /* guards refs, done, rc, res */
    int refs;
    bool done;
    int rc;               /* getaddrinfo's result */
    struct addrinfo *res; /* owned by the job until the connection takes it */
    int fd;
    char host[300];
    char port[16];
} resolve_job;

struct s2_conn {
    s2_io_watch watch; /* first: the epoll data of its socket and lookup fds */
    s2_conn *next;
    s2_runtime *rt;
    char host[300]; /* the endpoint host, with the basin prefix for {basin} templates */
    int port;
    bool https;
    char authority[320];
    int fd;
    SSL *ssl;
    conn_state state;
    double connect_deadline; /* the whole set-up: lookup, every address, TLS */
    resolve_job *resolve;    /* while CONN_RESOLVING */
    struct addrinfo *addrs;  /* the name's addresses, tried in order */
    struct addrinfo *next_addr;
    double addr_deadline;    /* the current address's share of connection_timeout */
    char last_error[160];    /* why the previous address failed */
    nghttp2_session *h2;
    unsigned streams; /* open request streams */
    bool goaway;
    uint32_t events; /* current epoll interest */
    s2_buf out;      /* bytes nghttp2 produced that the socket did not take yet */
    size_t out_off;
    double last_recv;    /* when bytes last arrived (keep-alive) */
    double last_write;   /* when the socket last took bytes (write stalls) */
    double ping_sent_at; /* an unanswered keep-alive PING went out then; 0: none */
    s2_error failure;    /* why it died (CONN_DEAD): for a session that never saw conn_fail */
    bool was_ready;      /* it got to CONN_READY: its end is a connection_retired event */
    bool failed;         /* conn_fail ran: failure says why */
    const char *retired; /* why it takes no new streams or died (static), for that event */
};

struct s2_runtime {
    s2_config cfg; /* strings point at the copies below */
    char *access_token;
    char *ca_file;
    pid_t pid;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int epfd;
    int wakefd;

    /* under mu */
    bool started;
    bool stopping;
    bool io_done; /* the I/O thread has finished (everything outstanding failed) */
    bool joined;   /* the thread was (or is being) joined by s2_runtime_shutdown */
    bool orphaned; /* the client was collected: the thread drains, stops and frees it all */
    double orphan_deadline;
    s2_op *ops; /* the operations, newest first */
    /* Which operations the next turn runs: those queued on `ready` (under ready_mu, a leaf
     * lock: taken with or without mu, nothing taken under it), or all of them when
     * all_ready is set. So a wake for one session costs that session, not a walk of
     * thousands. */
    pthread_mutex_t ready_mu;
    s2_op *ready;
    atomic_bool all_ready;
    s2_runtime_stats stats;
    bool http1; /* a TLS handshake chose no h2: new sessions use the HTTP/1.1 fallback */
    uint64_t progress; /* bumped on every broadcast: capacity freed, tickets resolved, ... */
    int progress_fd;   /* eventfd written with each bump, made on request (schedulers) */

    /* Lifecycle. refs: the client's + one per session and ticket not freed yet (atomic, see
     * s2_runtime_ref). stop_reason (under mu): what outstanding batches fail with when the
     * thread stops after s2_runtime_drain. live_next (under live_mu): the exit list. */
    atomic_int refs;
    bool has_stop_reason;
    s2_error stop_reason;
    s2_runtime *live_next;

    pthread_t thread; /* set once, when started */
    s2_op *unary;        /* under mu: the unary calls' driver (s2_call.c), an op like any */
    s2_notices *notices; /* under mu: the notice socket (OpenResty), made on request */
    s2_events *events;   /* the event queue; its own lock (s2_events.c) */

    /* I/O */
    s2_op **turn; /* the operations of the current turn */
    size_t turn_len, turn_cap;
    s2_op **heap; /* the operations with a deadline, a binary min-heap on armed; 1-based */
    size_t heap_len, heap_cap;
    s2_conn *conns;
    SSL_CTX *ssl_ctx;
    uint64_t rng;
};

/* ---- locking and waiting ------------------------------------------------------------------ */

void s2_runtime_lock(s2_runtime *rt) { pthread_mutex_lock(&rt->mu); }
void s2_runtime_unlock(s2_runtime *rt) { pthread_mutex_unlock(&rt->mu); }
void s2_runtime_broadcast(s2_runtime *rt) {
    pthread_cond_broadcast(&rt->cond);
    /* An orphan's I/O thread stops once everything is drained (check_orphan), and it has no
     * periodic wake: progress made elsewhere (an HTTP/1.1 worker's ack) must wake it. */
    if (rt->orphaned && !pthread_equal(pthread_self(), rt->thread)) s2_runtime_wake(rt);
    rt->progress++;
    if (rt->notices) s2_notices_progress_locked(rt->notices);
    if (rt->progress_fd >= 0) {
        uint64_t one = 1;
        ssize_t n = write(rt->progress_fd, &one, sizeof one);
        (void)n;
    }
}

uint64_t s2_runtime_progress(s2_runtime *rt) {
    s2_runtime_lock(rt);
    uint64_t p = rt->progress;
    s2_runtime_unlock(rt);
    return p;
}

int s2_runtime_progress_fd(s2_runtime *rt) {
    s2_runtime_lock(rt);
    if (rt->progress_fd < 0) rt->progress_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int fd = rt->progress_fd;
    if (fd >= 0) { /* drained: readable again only after the next bump */
        uint64_t v;
        ssize_t n = read(fd, &v, sizeof v);
        (void)n;
    }
    s2_runtime_unlock(rt);
    return fd;
}
const s2_config *s2_runtime_config(s2_runtime *rt) { return &rt->cfg; }
/* The process id, cached: getpid() is a system call, and the fork checks run on every submit
 * and ticket call. A pthread_atfork child handler refreshes it; it runs in the child before
 * any other code (the only process-wide state of the core; lua_s2.c pins the library so the
 * handler can never outlive it). */
static atomic_int cached_pid;
static pthread_once_t pid_once = PTHREAD_ONCE_INIT;
static void refresh_pid(void) { atomic_store(&cached_pid, (int)getpid()); }

/* Runtimes whose client has not been freed yet, for the exit handler: a script that ends
 * with os.exit() skips lua_close, so no __gc runs and only atexit can still drain. A fork
 * child starts with an empty list (those runtimes are the parent's). */
static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static s2_runtime *live_head;
static bool live_exiting; /* under live_mu: drain_at_exit runs (runtimes are left alone) */
static void live_lock(void) { pthread_mutex_lock(&live_mu); }
static void live_unlock(void) { pthread_mutex_unlock(&live_mu); }
static void live_reset(void) {
    pthread_mutex_init(&live_mu, NULL);
    live_head = NULL;
}
static void drain_at_exit(void);
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;

/* Registered with the first runtime. atexit handlers run last-registered first, so OpenSSL
 * (whose own handler frees its global state) is initialised before: the drain, and the I/O
 * threads it joins, must be done with TLS before OpenSSL is torn down. lua_s2.c pins the
 * library, so the handler stays mapped. */
static void exit_init(void) {
    OPENSSL_init_ssl(0, NULL);
    pthread_atfork(live_lock, live_unlock, live_reset);
    atexit(drain_at_exit);
}

static void pid_init(void) {
    refresh_pid();
    pthread_atfork(NULL, NULL, refresh_pid);
}

int s2_process_id(void) {
    pthread_once(&pid_once, pid_init);
    return atomic_load_explicit(&cached_pid, memory_order_relaxed);
}

bool s2_runtime_owned(const s2_runtime *rt) { return rt->pid == s2_process_id(); }

bool s2_runtime_wait(s2_runtime *rt, double deadline) {
    if (deadline < 0) {
        pthread_cond_wait(&rt->cond, &rt->mu);
        return true;
    }
    double now = s2_now();
    if (now >= deadline) return false;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double rest = deadline - now;
    ts.tv_sec += (time_t)rest;
    ts.tv_nsec += (long)((rest - (double)(time_t)rest) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&rt->cond, &rt->mu, &ts);
    return s2_now() < deadline;
}

static void nudge(s2_runtime *rt) {
    uint64_t one = 1;
    ssize_t n = write(rt->wakefd, &one, sizeof one);
    (void)n; /* EAGAIN: the counter is saturated, the thread is awake anyway */
}

static void queue_op(s2_runtime *rt, s2_op *op) {
    pthread_mutex_lock(&rt->ready_mu);
    if (op->listed && !op->ready) {
        op->ready = true;
        op->ready_next = rt->ready;
        rt->ready = op;
    }
    pthread_mutex_unlock(&rt->ready_mu);
}

void s2_runtime_wake_op(s2_runtime *rt, s2_op *op) {
    queue_op(rt, op);
    if (!pthread_equal(pthread_self(), rt->thread)) nudge(rt);
}

void s2_runtime_wake(s2_runtime *rt) {
    atomic_store(&rt->all_ready, true);
    nudge(rt);
}

bool s2_runtime_stopping(s2_runtime *rt) { return rt->stopping; }
bool s2_runtime_http1(s2_runtime *rt) { return rt->http1; }

double s2_runtime_backoff(s2_runtime *rt, unsigned retry, uint64_t retry_after_ms) {
    return s2_backoff_with(&rt->cfg, retry, retry_after_ms, &rt->rng);
}

s2_events *s2_runtime_events(s2_runtime *rt) { return rt->events; }

/* ---- lifecycle ----------------------------------------------------------------------------- */

s2_runtime *s2_runtime_new(const s2_config *cfg, s2_error *err) {
    s2_runtime *rt = calloc(1, sizeof *rt);
    if (!rt) goto nomem;
    rt->epfd = rt->wakefd = rt->progress_fd = -1;
    rt->cfg = *cfg;
    rt->access_token = strdup(cfg->access_token ? cfg->access_token : "");
    rt->ca_file = cfg->ca_file ? strdup(cfg->ca_file) : NULL;
    if (!rt->access_token || (cfg->ca_file && !rt->ca_file)) goto nomem;
    rt->cfg.access_token = rt->access_token;
    rt->cfg.ca_file = rt->ca_file;
    rt->pid = s2_process_id();
    atomic_init(&rt->refs, 1);
    rt->rng = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)rt ^ 0x9E3779B97F4A7C15ull;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&rt->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&rt->mu, NULL);
    pthread_mutex_init(&rt->ready_mu, NULL);
    atomic_init(&rt->all_ready, false);
    rt->epfd = epoll_create1(EPOLL_CLOEXEC);
    rt->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (rt->epfd < 0 || rt->wakefd < 0) {
        s2_fail(err, S2_E_CONNECTION, "connection_failed", "epoll/eventfd: %s", strerror(errno));
        s2_runtime_free(rt);
        return NULL;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(rt->epfd, EPOLL_CTL_ADD, rt->wakefd, &ev);
    if (!(rt->notices = s2_notices_new(&rt->mu, rt->epfd)) || !(rt->events = s2_events_new())) {
        s2_runtime_free(rt);
        goto nomem_freed;
    }
    pthread_once(&exit_once, exit_init);
    live_lock();
    rt->live_next = live_head;
    live_head = rt;
    live_unlock();
    return rt;
nomem:
    if (rt) {
        free(rt->access_token);
        free(rt);
    }
nomem_freed:
    s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory creating a runtime");
    return NULL;
}

static void *io_main(void *arg);

int s2_runtime_start_locked(s2_runtime *rt, s2_error *err) {
    if (rt->stopping) return s2_fail(err, S2_E_CLOSED, "closed", "the client is closed");
    if (rt->started) return 0;
    int rc = s2_thread_start(&rt->thread, "s2-io", io_main, rt, false);
    if (rc != 0)
        return s2_fail(err, S2_E_NOMEM, "out_of_memory", "cannot start the I/O thread: %s",
                       strerror(rc));
    rt->started = true;
    return 0;
}

int s2_runtime_watch(s2_runtime *rt, int op, int fd, uint32_t events, s2_io_watch *w) {
    struct epoll_event ev = {.events = events, .data.ptr = w};
    return epoll_ctl(rt->epfd, op, fd, &ev);
}

s2_op **s2_runtime_unary_slot_locked(s2_runtime *rt) { return &rt->unary; }
s2_notices *s2_runtime_notices(s2_runtime *rt) { return rt->notices; }

int s2_runtime_notice_path(s2_runtime *rt, char *out, size_t cap, s2_error *err) {
    s2_runtime_lock(rt);
    int rc = s2_runtime_start_locked(rt, err); /* the I/O thread serves the socket */
    if (rc == 0) rc = s2_notices_path_locked(rt->notices, out, cap, err);
    s2_runtime_unlock(rt);
    return rc;
}

uint64_t s2_runtime_progress_notice(s2_runtime *rt) {
    s2_runtime_lock(rt);
    uint64_t id = s2_notices_arm_progress_locked(rt->notices);
    s2_runtime_unlock(rt);
    return id;
}

int s2_runtime_start_op_locked(s2_runtime *rt, s2_op *op, s2_error *err) {
    if (s2_runtime_start_locked(rt, err) != 0) return -1;
    op->next = rt->ops;
    rt->ops = op;
    pthread_mutex_lock(&rt->ready_mu);
    op->listed = true;
    pthread_mutex_unlock(&rt->ready_mu);
    return 0;
}

int s2_runtime_start_op(s2_runtime *rt, s2_op *op, s2_error *err) {
    s2_runtime_lock(rt);
    int rc = s2_runtime_start_op_locked(rt, op, err);
    s2_runtime_unlock(rt);
    if (rc == 0) s2_runtime_wake_op(rt, op);
    return rc;
}

void s2_runtime_get_stats(s2_runtime *rt, s2_runtime_stats *out) {
    s2_runtime_lock(rt);
    *out = rt->stats;
    s2_runtime_unlock(rt);
}

void s2_runtime_shutdown_start(s2_runtime *rt) {
    if (!rt || !s2_runtime_owned(rt)) return;
    s2_runtime_lock(rt);
    rt->stopping = true;
    s2_runtime_broadcast(rt);
    s2_runtime_unlock(rt);
    s2_runtime_wake(rt);
}

bool s2_runtime_stopped(s2_runtime *rt) {
    if (!rt || !s2_runtime_owned(rt)) return true;
    s2_runtime_lock(rt);
    bool done = !rt->started || rt->io_done;
    s2_runtime_unlock(rt);
    return done;
}

void s2_runtime_shutdown(s2_runtime *rt) {
    if (!rt || !s2_runtime_owned(rt)) return;
    s2_runtime_lock(rt);
    if (rt->orphaned) { /* detached: wait for its end, not for the thread (exit only) */
        rt->stopping = true;
        s2_runtime_broadcast(rt);
        s2_runtime_unlock(rt);
        s2_runtime_wake(rt);
        s2_runtime_lock(rt);
        while (!rt->io_done) s2_runtime_wait(rt, -1);
        s2_runtime_unlock(rt);
        return;
    }
    rt->stopping = true;
    bool join = rt->started && !rt->joined; /* shutdown_start may have stopped it already */
    rt->joined = true;
    s2_runtime_broadcast(rt); /* HTTP/1.1 workers wait on cond */
    s2_runtime_unlock(rt);
    if (!join) return;
    s2_runtime_wake(rt);
    pthread_join(rt->thread, NULL);
}

void s2_runtime_free(s2_runtime *rt) {
    if (!rt) return;
    if (!s2_runtime_owned(rt)) return; /* a forked child must not touch the parent's thread */
    s2_runtime_shutdown(rt);
    live_lock();
    for (s2_runtime **pp = &live_head; *pp; pp = &(*pp)->live_next)
        if (*pp == rt) {
            *pp = rt->live_next;
            break;
        }
    live_unlock();
    s2_runtime_unref(rt);
}

void s2_runtime_ref(s2_runtime *rt) {
    atomic_fetch_add_explicit(&rt->refs, 1, memory_order_relaxed);
}

/* The last reference: the thread was joined (the client's reference outlives it). */
void s2_runtime_unref(s2_runtime *rt) {
    if (atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_acq_rel) != 1) return;
    if (rt->epfd >= 0) close(rt->epfd);
    if (rt->wakefd >= 0) close(rt->wakefd);
    if (rt->progress_fd >= 0) close(rt->progress_fd);
    if (rt->ssl_ctx) SSL_CTX_free(rt->ssl_ctx);
    s2_notices_free(rt->notices);
    s2_events_free(rt->events);
    pthread_mutex_destroy(&rt->mu);
    pthread_mutex_destroy(&rt->ready_mu);
    pthread_cond_destroy(&rt->cond);
    free(rt->turn);
    free(rt->heap);
    free(rt->access_token);
    free(rt->ca_file);
    free(rt);
}

/* ---- threads ------------------------------------------------------------------------------- */

int s2_thread_start(pthread_t *t, const char *name, void *(*fn)(void *), void *arg,
                    bool detached) {
    /* Every signal is blocked in the core's threads: asynchronous ones go to the host's
     * threads, and a write to a socket the peer closed (OpenSSL's socket BIO writes without
     * MSG_NOSIGNAL) must fail with EPIPE, not kill the process with SIGPIPE. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    if (detached) pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0) pthread_setname_np(*t, name); /* for top, gdb and /proc: "s2-io", ... */
    return rc;
}

/* ---- name lookups ------------------------------------------------------------------------- */

static void resolve_release(resolve_job *j) {
    pthread_mutex_lock(&j->mu);
    bool last = --j->refs == 0;
    pthread_mutex_unlock(&j->mu);
    if (!last) return;
    if (j->res) freeaddrinfo(j->res);
    close(j->fd);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

static void *resolve_main(void *arg) {
    resolve_job *j = arg;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_ADDRCONFIG};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(j->host, j->port, &hints, &res);
    pthread_mutex_lock(&j->mu);
    j->rc = rc;
    j->res = rc == 0 ? res : NULL;
    j->done = true;
    pthread_mutex_unlock(&j->mu);
    uint64_t one = 1;
    ssize_t n = write(j->fd, &one, sizeof one);
    (void)n;
    resolve_release(j);
    return NULL;
}

static bool all_drained_locked(s2_runtime *rt) {
    for (s2_op *op = rt->ops; op; op = op->next)
        if (op->ops->drained_locked && !op->ops->drained_locked(op)) return false;
    return true;
}

/* Stops every session taking batches, from now on reports what they fail to deliver, and
 * names why for the batches still out when the thread stops. under mu */
static void begin_drain_locked(s2_runtime *rt, const char *why, double timeout) {
    s2_fail(&rt->stop_reason, S2_E_CLOSED, "closed",
            "%s before they were acknowledged (drain_timeout %g s)", why, timeout);
    rt->has_stop_reason = true;
    for (s2_op *op = rt->ops; op; op = op->next)
        if (op->ops->drain_locked) op->ops->drain_locked(op);
    s2_runtime_broadcast(rt); /* HTTP/1.1 workers wait on cond for sealed batches */
}

bool s2_runtime_drain(s2_runtime *rt, const char *why) {
    if (!rt || !s2_runtime_owned(rt)) return true;
    double timeout = rt->cfg.drain_timeout > 0 ? rt->cfg.drain_timeout : 0;
    s2_runtime_lock(rt);
    if (!rt->started || rt->stopping) { /* no session yet, or closed already */
        s2_runtime_unlock(rt);
        return true;
    }
    begin_drain_locked(rt, why, timeout);
    s2_runtime_unlock(rt);
    s2_runtime_wake(rt);
    double deadline = s2_now() + timeout;
    s2_runtime_lock(rt);
    bool drained;
    while (!(drained = all_drained_locked(rt)) && s2_runtime_wait(rt, deadline)) {
    }
    s2_runtime_unlock(rt);
    return drained;
}

void s2_runtime_release(s2_runtime *rt, const char *why) {
    if (!rt || !s2_runtime_owned(rt)) return;
    s2_events_retire(rt->events); /* no handler can run any more: losses go to stderr */
    double timeout = rt->cfg.drain_timeout > 0 ? rt->cfg.drain_timeout : 0;
    s2_runtime_lock(rt);
    bool running = rt->started && !rt->stopping && !rt->orphaned;
    if (running) {
        begin_drain_locked(rt, why, timeout);
        rt->orphaned = true;
        rt->orphan_deadline = s2_now() + timeout;
        pthread_detach(rt->thread);
        /* Under mu: once it is let go, the detached thread may find nothing to drain, stop
         * and free rt (free_orphan) before a wake from here would reach it. */
        s2_runtime_wake(rt);
    }
    s2_runtime_unlock(rt);
    if (!running) s2_runtime_free(rt);
}

/* I/O thread: an orphaned runtime stops once drained or past its drain deadline. */
static void check_orphan(s2_runtime *rt, double now) {
    s2_runtime_lock(rt);
    if (rt->orphaned && !rt->stopping && (all_drained_locked(rt) || now >= rt->orphan_deadline))
        rt->stopping = true;
    s2_runtime_unlock(rt);
}

/* I/O thread, at its very end: an orphaned runtime leaves the exit list and goes. When the
 * process is exiting (drain_at_exit holds the list) it is left to the exit instead. */
static void free_orphan(s2_runtime *rt) {
    s2_runtime_lock(rt);
    bool orphan = rt->orphaned;
    s2_runtime_unlock(rt);
    if (!orphan) return;
    /* A lock, not a trylock: the list is also held briefly by runtimes being made, freed or
     * ending like this one, and losing that race leaked the runtime. */
    live_lock();
    if (live_exiting) {
        live_unlock();
        return;
    }
    for (s2_runtime **pp = &live_head; *pp; pp = &(*pp)->live_next)
        if (*pp == rt) {
            *pp = rt->live_next;
            break;
        }
    live_unlock();
    s2_runtime_unref(rt);
}

/* os.exit() without closing the state: drain and stop what __gc never will. The runtimes
 * stay allocated (the process is ending, and Lua may still point at them). live_mu is held
 * throughout so that no other thread frees one meanwhile. */
static void drain_at_exit(void) {
    live_lock();
    live_exiting = true;
    for (s2_runtime *rt = live_head; rt; rt = rt->live_next) {
        if (!s2_runtime_owned(rt)) continue;
        s2_events_retire(rt->events);
        s2_runtime_drain(rt, "the process exited");
        s2_runtime_shutdown(rt);
    }
    live_unlock();
}

/* ---- connections ----------------------------------------------------------------------------- */

static void conn_drop_socket(s2_conn *c);
static void conn_try_next(s2_conn *c);
static void touch(s2_op *op);
static void touch_all(s2_runtime *rt);

static void conn_set_events(s2_conn *c, uint32_t events) {
    if (c->fd < 0 || c->events == events) return;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(c->rt->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->events = events;
}

/* Marks the connection dead and tells every session that used it. The socket and nghttp2
 * session are released by reap_conns, outside any nghttp2 callback. */
static void conn_fail(s2_conn *c, const s2_error *err) {
    if (c->state == CONN_DEAD) return;
    c->state = CONN_DEAD;
    c->failure = *err;
    c->failed = true;
    if (!c->retired) c->retired = "error";
    s2_runtime_lock(c->rt);
    s2_op *list = c->rt->ops;
    s2_runtime_unlock(c->rt);
    for (s2_op *op = list; op; op = op->next)
        if (op->conn == c && op->ops->on_conn_lost) op->ops->on_conn_lost(op, err);
    touch_all(c->rt); /* its sessions retry, and others may have waited for it */
}

static void conn_free(s2_conn *c) {
    if (c->was_ready)
        s2_event_connection(c->rt->events, S2_EVENT_CONNECTION_RETIRED, c->authority, "2",
                            c->retired ? c->retired : "closed", c->failed ? &c->failure : NULL);
    s2_runtime_lock(c->rt);
    c->rt->stats.connections_open--;
    s2_runtime_unlock(c->rt);
    conn_drop_socket(c);
    if (c->resolve) { /* the lookup finishes on its own and frees what it holds */
        epoll_ctl(c->rt->epfd, EPOLL_CTL_DEL, c->resolve->fd, NULL);
        resolve_release(c->resolve);
    }
    if (c->addrs) freeaddrinfo(c->addrs);
    if (c->ssl) SSL_free(c->ssl);
    if (c->h2) nghttp2_session_del(c->h2);
    s2_buf_free(&c->out);
    free(c);
}

static unsigned conn_max_streams(s2_conn *c) {
    if (!c->h2) return MAX_STREAMS_PER_CONN;
    uint32_t remote = nghttp2_session_get_remote_settings(c->h2,
                                                          NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    return remote < MAX_STREAMS_PER_CONN ? remote : MAX_STREAMS_PER_CONN;
}

/* Raw writes: TLS or plain. Returns bytes written, 0 when the socket is full, -1 on error. */
static ssize_t conn_write(s2_conn *c, const uint8_t *p, size_t n) {
    if (c->ssl) {
        ERR_clear_error();
        int r = SSL_write(c->ssl, p, (int)(n > INT32_MAX ? INT32_MAX : n));
        if (r > 0) return r;
        int e = SSL_get_error(c->ssl, r);
        return (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) ? 0 : -1;
    }
    ssize_t r = send(c->fd, p, n, MSG_NOSIGNAL);
    if (r >= 0) return r;
    return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
}

static void conn_lost(s2_conn *c, const char *what) {
    if (!c->retired) c->retired = "lost";
    s2_error err;
    s2_fail(&err, S2_E_CONNECTION, "connection_failed", "connection to %s lost: %s",
            c->authority, what);
    err.retryable = true;
    conn_fail(c, &err);
}

/* Moves nghttp2's output to the socket until either is exhausted. Bytes the socket did not
 * take wait in c->out and are retried from there, the same bytes in the same order: an
 * SSL_write that wanted a retry gets it with the same data (the context allows the buffer
 * to move, see ssl_ctx; nothing is added to c->out while it holds unwritten bytes). Frames
 * (DATA is 16 KiB at most) are gathered in c->out into writes of up to COALESCE bytes: a
 * send() per frame costs more in the kernel (and in wake-ups of the peer) than the copy. */
#define COALESCE (256u * 1024u)

static void conn_flush(s2_conn *c) {
    if (c->state != CONN_READY) return;
    for (;;) {
        if (c->out_off < c->out.len) {
            ssize_t n = conn_write(c, c->out.data + c->out_off, c->out.len - c->out_off);
            if (n > 0) c->last_write = s2_now();
            if (n < 0) {
                conn_lost(c, "write failed");
                return;
            }
            c->out_off += (size_t)n;
            if (c->out_off < c->out.len) break; /* socket full */
            c->out.len = c->out_off = 0;
        }
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->h2, &data);
        if (n < 0) {
            conn_lost(c, nghttp2_strerror((int)n));
            return;
        }
        if (n == 0) break;
        if (c->out.len == 0 && (size_t)n < COALESCE) {
            do {
                if (s2_buf_append(&c->out, data, (size_t)n) != 0) {
                    conn_lost(c, "out of memory");
                    return;
                }
                if (c->out.len >= COALESCE) break;
                n = nghttp2_session_mem_send(c->h2, &data);
                if (n < 0) {
                    conn_lost(c, nghttp2_strerror((int)n));
                    return;
                }
            } while (n > 0);
            c->out_off = 0;
            continue; /* written from c->out at the top of the loop */
        }
        ssize_t w = conn_write(c, data, (size_t)n);
        if (w < 0) {
            conn_lost(c, "write failed");
            return;
        }
        if (w > 0) c->last_write = s2_now();
        if (w < n && s2_buf_append(&c->out, data + w, (size_t)(n - w)) != 0) {
            conn_lost(c, "out of memory");
            return;
        }
    }
    if (c->state != CONN_READY) return;
    conn_set_events(c, EPOLLIN | (c->out_off < c->out.len ? EPOLLOUT : 0u));
    if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2) &&
        c->out_off >= c->out.len)
        conn_lost(c, "closed by the HTTP/2 session");
}

/* ---- nghttp2 callbacks ----------------------------------------------------------------------- */

static s2_op *stream_op(nghttp2_session *h2, int32_t id) {
    return nghttp2_session_get_stream_user_data(h2, id);
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud) {
    (void)flags;
    (void)ud;
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    s2_op *op = stream_op(h2, frame->hd.stream_id);
    if (!op) return 0;
    touch(op);
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        int status = 0;
        for (size_t i = 0; i < valuelen && i < 3; i++) status = status * 10 + (value[i] - '0');
        op->http_status = status;
    } else if (namelen == 14 && memcmp(name, "retry-after-ms", 14) == 0) {
        uint64_t ms = 0;
        for (size_t i = 0; i < valuelen && value[i] >= '0' && value[i] <= '9' && ms < 86400000u; i++)
            ms = ms * 10 + (uint64_t)(value[i] - '0');
        op->retry_after_ms = ms;
    }
    return 0;
}

/* Flow control is manual (no automatic WINDOW_UPDATE). The connection window is given back
 * as data arrives, for every stream: one undrained reader must never starve the other
 * sessions of the connection. Stream windows: append sessions give their bytes back at once;
 * read sessions as their caller drains them (s2_reader.c), so a reader's stream window alone
 * bounds what it buffers. */
static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *ud) {
    (void)flags;
    (void)ud;
    s2_op *op = stream_op(h2, stream_id);
    nghttp2_session_consume_connection(h2, len);
    if (!op) return 0;
    if (!op->ops->window_on_drain) nghttp2_session_consume_stream(h2, stream_id, len);
    touch(op);
    op->ops->on_data(op, data, len);
    return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t stream_id, uint32_t error_code,
                           void *ud) {
    s2_conn *c = ud;
    s2_op *op = stream_op(h2, stream_id);
    if (!op) return 0; /* cancelled by us; already accounted */
    nghttp2_session_set_stream_user_data(h2, stream_id, NULL);
    if (c->streams) c->streams--;
    op->stream_id = 0; /* the stream is gone; the op must not reset it again */
    touch(op);
    op->ops->on_stream_close(op, error_code);
    return 0;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *ud) {
    (void)h2;
    s2_conn *c = ud;
    if (frame->hd.type == NGHTTP2_GOAWAY) { /* no new streams here */
        c->goaway = true;
        if (!c->retired) c->retired = "goaway";
        touch_all(c->rt);
    }
    if (frame->hd.type == NGHTTP2_SETTINGS) touch_all(c->rt); /* the stream limit may move */
    if (frame->hd.type == NGHTTP2_PING && (frame->hd.flags & NGHTTP2_FLAG_ACK))
        c->ping_sent_at = 0;
    return 0;
}

static ssize_t read_body(nghttp2_session *h2, int32_t stream_id, uint8_t *buf, size_t len,
                         uint32_t *flags, nghttp2_data_source *src, void *ud) {
    (void)h2;
    (void)stream_id;
    (void)ud;
    s2_op *op = src->ptr;
    ssize_t n = op->ops->read_body(op, buf, len, flags);
    /* What it wrote (or its end of the body) may set a deadline: acks are awaited from now
     * on. A deferral sets none, and must not queue the op: its service resumes the stream
     * every turn it runs (a probe after a reconnect holds the rest back), so a touch here
     * made the next turn run it again at once, and the thread spun until the ack came. */
    if (n != NGHTTP2_ERR_DEFERRED) touch(op);
    return n;
}

static int conn_start_h2(s2_conn *c, s2_error *err) {
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    if (nghttp2_session_callbacks_new(&cb) != 0) goto nomem;
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cb);
        goto nomem;
    }
    nghttp2_option_set_peer_max_concurrent_streams(opt, MAX_STREAMS_PER_CONN);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    int rc = nghttp2_session_client_new2(&c->h2, cb, c, opt);
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    if (rc != 0) goto nomem;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, WINDOW_SIZE},
    };
    if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 2) != 0 ||
        nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, WINDOW_SIZE) != 0)
        goto nomem;
    c->state = CONN_READY;
    c->connect_deadline = 0;
    c->last_recv = c->last_write = s2_now();
    c->was_ready = true;
    touch_all(c->rt); /* the sessions waiting for it open their streams */
    s2_event_connection(c->rt->events, S2_EVENT_CONNECTION_OPENED, c->authority, "2", NULL, NULL);
    return 0;
nomem:
    return s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory starting HTTP/2");
}

/* ---- connect and TLS --------------------------------------------------------------------------- */

static SSL_CTX *ssl_ctx(s2_runtime *rt, s2_error *err) {
    if (rt->ssl_ctx) return rt->ssl_ctx;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        s2_fail(err, S2_E_NOMEM, "out_of_memory", "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* conn_flush retries a write the socket refused with the same bytes from its own buffer,
     * at another address: OpenSSL must allow that, or it fails the connection with "bad
     * write retry" as soon as a slow link fills the socket. Partial writes keep records
     * small when the socket has little room. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int ok = rt->cfg.ca_file ? SSL_CTX_load_verify_locations(ctx, rt->cfg.ca_file, NULL)
                             : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        s2_fail(err, S2_E_CONNECTION, "connection_failed", "cannot load CA certificates%s%s",
                rt->cfg.ca_file ? " from " : "", rt->cfg.ca_file ? rt->cfg.ca_file : "");
        err->no_side_effects = true;
        SSL_CTX_free(ctx);
        return NULL;
    }
    static const unsigned char alpn[] = "\x02h2";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1);
    rt->ssl_ctx = ctx;
    return ctx;
}

static int conn_tls_step(s2_conn *c) {
    ERR_clear_error();
    int r = SSL_connect(c->ssl);
    if (r == 1) {
        const unsigned char *proto;
        unsigned len;
        SSL_get0_alpn_selected(c->ssl, &proto, &len);
        s2_error err;
        if (len != 2 || memcmp(proto, "h2", 2) != 0) {
            /* No HTTP/2 on this path: sessions continue over HTTP/1.1, one batch at a time. */
            s2_runtime_lock(c->rt);
            c->rt->http1 = true;
            s2_op *list = c->rt->ops;
            s2_runtime_unlock(c->rt);
            for (s2_op *op = list; op; op = op->next)
                if (op->conn == c && op->ops->switch_http1) op->ops->switch_http1(op);
            s2_fail(&err, S2_E_CONNECTION, "connection_failed",
                    "%s did not agree to HTTP/2 (ALPN h2)", c->authority);
            err.no_side_effects = true;
            conn_fail(c, &err);
            return -1;
        }
        if (conn_start_h2(c, &err) != 0) {
            conn_fail(c, &err);
            return -1;
        }
        conn_set_events(c, EPOLLIN | EPOLLOUT);
        return 0;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        conn_set_events(c, EPOLLIN);
        return 0;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        conn_set_events(c, EPOLLOUT);
        return 0;
    }
    s2_error err;
    long vr = SSL_get_verify_result(c->ssl);
    if (vr != X509_V_OK) {
        s2_fail(&err, S2_E_CONNECTION, "connection_failed",
                "TLS certificate verification failed for %s: %s", c->host,
                X509_verify_cert_error_string(vr));
    } else {
        char buf[160];
        ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
        s2_fail(&err, S2_E_CONNECTION, "connection_failed", "TLS handshake with %s failed: %s",
                c->authority, buf);
    }
    err.no_side_effects = true; /* nothing was sent */
    conn_fail(c, &err);
    return -1;
}

static void conn_connected(s2_conn *c) {
    int soerr = 0;
    socklen_t len = sizeof soerr;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
    if (soerr != 0) {
        snprintf(c->last_error, sizeof c->last_error, "%s", strerror(soerr));
        conn_try_next(c);
        return;
    }
    c->addr_deadline = 0;
    s2_error err;
    if (!c->https) {
        if (conn_start_h2(c, &err) != 0) conn_fail(c, &err);
        else conn_set_events(c, EPOLLIN | EPOLLOUT);
        return;
    }
    SSL_CTX *ctx = ssl_ctx(c->rt, &err);
    if (!ctx || !(c->ssl = SSL_new(ctx))) {
        if (ctx) s2_fail(&err, S2_E_NOMEM, "out_of_memory", "cannot create a TLS session");
        conn_fail(c, &err);
        return;
    }
    SSL_set_fd(c->ssl, c->fd);
    SSL_set_tlsext_host_name(c->ssl, c->host);
    SSL_set1_host(c->ssl, c->host);
    c->state = CONN_TLS;
    conn_tls_step(c);
}

static void conn_resolve_fail(s2_conn *c, int rc) {
    s2_error err;
    s2_fail(&err, S2_E_CONNECTION, "connection_failed", "cannot resolve %s: %s", c->host,
            gai_strerror(rc));
    err.no_side_effects = true;
    err.retryable = rc == EAI_AGAIN;
    conn_fail(c, &err);
}

static void conn_drop_socket(s2_conn *c) {
    if (c->fd < 0) return;
    epoll_ctl(c->rt->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
}

/* Starts a non-blocking connect to the next address of the name that accepts one. Each
 * address gets an equal share of the time left, so every one is tried within
 * connection_timeout. Fails the connection when none is left. */
static void conn_try_next(s2_conn *c) {
    conn_drop_socket(c);
    while (c->next_addr) {
        struct addrinfo *a = c->next_addr;
        c->next_addr = a->ai_next;
        int fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            snprintf(c->last_error, sizeof c->last_error, "socket: %s", strerror(errno));
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
            snprintf(c->last_error, sizeof c->last_error, "%s", strerror(errno));
            close(fd);
            continue;
        }
        c->fd = fd;
        c->state = CONN_CONNECTING;
        c->events = EPOLLOUT;
        struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
        epoll_ctl(c->rt->epfd, EPOLL_CTL_ADD, fd, &ev);
        unsigned left = 1;
        for (struct addrinfo *b = c->next_addr; b; b = b->ai_next) left++;
        double now = s2_now();
        double rest = c->connect_deadline - now;
        c->addr_deadline = left > 1 && rest > 0 ? now + rest / left : 0;
        return;
    }
    s2_error err;
    s2_fail(&err, S2_E_CONNECTION, "connection_failed", "could not connect to %s: %s",
            c->authority, c->last_error[0] ? c->last_error : "no address");
    err.retryable = err.no_side_effects = true;
    conn_fail(c, &err);
}

/* The lookup is done: take its addresses and start connecting. */
static void conn_resolved(s2_conn *c) {
    resolve_job *j = c->resolve;
    pthread_mutex_lock(&j->mu);
    bool done = j->done;
    int rc = j->rc;
    struct addrinfo *res = j->res;
    j->res = NULL;
    pthread_mutex_unlock(&j->mu);
    if (!done) return;
    epoll_ctl(c->rt->epfd, EPOLL_CTL_DEL, j->fd, NULL);
    c->resolve = NULL;
    resolve_release(j);
    if (rc != 0) {
        conn_resolve_fail(c, rc);
        return;
    }
    c->addrs = c->next_addr = res;
    conn_try_next(c);
}

/* Starts the lookup: numeric addresses at once, names on a resolver thread. */
static int conn_start_resolve(s2_conn *c, s2_error *err) {
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", c->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST};
    struct addrinfo *res = NULL;
    if (getaddrinfo(c->host, portstr, &hints, &res) == 0) {
        c->addrs = c->next_addr = res;
        return 0;
    }
    resolve_job *j = calloc(1, sizeof *j);
    if (!j) return s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory resolving a name");
    j->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (j->fd < 0) {
        free(j);
        return s2_fail(err, S2_E_CONNECTION, "connection_failed", "eventfd: %s", strerror(errno));
    }
    pthread_mutex_init(&j->mu, NULL);
    j->refs = 2;
    snprintf(j->host, sizeof j->host, "%s", c->host);
    snprintf(j->port, sizeof j->port, "%s", portstr);
    pthread_t t;
    int rc = s2_thread_start(&t, "s2-resolve", resolve_main, j, true);
    if (rc != 0) {
        j->refs = 1;
        resolve_release(j);
        return s2_fail(err, S2_E_NOMEM, "out_of_memory", "cannot start a resolver thread: %s",
                       strerror(rc));
    }
    c->resolve = j;
    c->state = CONN_RESOLVING;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(c->rt->epfd, EPOLL_CTL_ADD, j->fd, &ev);
    return 0;
}

static void conn_io(s2_conn *c, uint32_t events);
static void conn_on_events(s2_io_watch *w, uint32_t events) { conn_io((s2_conn *)w, events); }

static s2_conn *conn_new(s2_runtime *rt, const char *host, int port, bool https, s2_error *err) {
    s2_conn *c = calloc(1, sizeof *c);
    if (c) c->watch.on_events = conn_on_events;
    if (!c) {
        s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory opening a connection");
        return NULL;
    }
    c->rt = rt;
    c->fd = -1;
    snprintf(c->host, sizeof c->host, "%s", host);
    c->port = port;
    c->https = https;
    if (port == (https ? 443 : 80)) snprintf(c->authority, sizeof c->authority, "%s", host);
    else snprintf(c->authority, sizeof c->authority, "%s:%d", host, port);
    s2_buf_init(&c->out);
    c->connect_deadline = s2_now() + rt->cfg.connection_timeout;
    if (conn_start_resolve(c, err) != 0) {
        s2_buf_free(&c->out);
        free(c);
        return NULL;
    }
    c->next = rt->conns;
    rt->conns = c;
    s2_runtime_lock(rt);
    rt->stats.connections_opened++;
    rt->stats.connections_open++;
    s2_runtime_unlock(rt);
    if (!c->resolve) conn_try_next(c); /* a numeric address; may fail it: the caller sees DEAD */
    return c;
}

static void conn_io(s2_conn *c, uint32_t events) {
    if (c->state == CONN_RESOLVING) {
        conn_resolved(c);
        return;
    }
    if (c->state == CONN_CONNECTING) {
        conn_connected(c);
        return;
    }
    if (c->state == CONN_TLS) {
        conn_tls_step(c);
        return;
    }
    if (c->state != CONN_READY) return;
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        uint8_t buf[READ_CHUNK];
        for (int rounds = 0; rounds < 64 && c->state == CONN_READY; rounds++) {
            ssize_t n;
            if (c->ssl) {
                ERR_clear_error();
                int r = SSL_read(c->ssl, buf, sizeof buf);
                if (r <= 0) {
                    int e = SSL_get_error(c->ssl, r);
                    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
                    conn_lost(c, e == SSL_ERROR_ZERO_RETURN ? "closed by the server" : "TLS read failed");
                    return;
                }
                n = r;
            } else {
                n = recv(c->fd, buf, sizeof buf, 0);
                if (n < 0) {
                    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
                    conn_lost(c, strerror(errno));
                    return;
                }
                if (n == 0) {
                    conn_lost(c, "closed by the server");
                    return;
                }
            }
            c->last_recv = s2_now();
            ssize_t used = nghttp2_session_mem_recv(c->h2, buf, (size_t)n);
            if (used < 0) {
                conn_lost(c, nghttp2_strerror((int)used));
                return;
            }
            if (!c->ssl && n < (ssize_t)sizeof buf) break;
        }
    }
    conn_flush(c);
}

/* ---- streams (called from sessions on the I/O thread) ------------------------------------------ */

static s2_op *op_list(s2_runtime *rt);

/* Operations that chose the connection (open streams and those waiting for it to be ready).
 * Compared only, never followed. */
static unsigned conn_attached(s2_runtime *rt, const s2_conn *c) {
    unsigned n = 0;
    for (s2_op *op = op_list(rt); op; op = op->next)
        if (op->conn == c) n++;
    return n;
}

/* A connection with room for one more stream. One still being set up counts the sessions
 * already waiting for it: taking every session opened meanwhile (a thousand at once) put
 * them all on it, nghttp2 queued those beyond the server's limit, and since sessions hold
 * their streams, those waited forever (no ack, no record). */
static s2_conn *find_conn(s2_runtime *rt, const char *host, int port) {
    for (s2_conn *c = rt->conns; c; c = c->next) {
        if (c->state == CONN_DEAD || c->goaway || c->port != port || strcmp(c->host, host) != 0)
            continue;
        if (c->state == CONN_READY ? c->streams < conn_max_streams(c)
                                   : conn_attached(rt, c) < MAX_STREAMS_PER_CONN)
            return c;
    }
    return NULL;
}

int s2_runtime_open_stream(s2_runtime *rt, s2_op *s, s2_error *err) {
    const s2_endpoint *ep = &rt->cfg.basin;
    char host[300];
    if (ep->basin_template) snprintf(host, sizeof host, "%s.%s", s->basin, ep->host);
    else snprintf(host, sizeof host, "%s", ep->host);

    s2_conn *c = s->conn;
    if (c && c->state == CONN_READY && !c->goaway && c->streams >= conn_max_streams(c))
        c = s->conn = NULL; /* full (its server allows fewer streams than were waiting): another */
    if (!c) {
        c = find_conn(rt, host, ep->port);
        if (!c && !(c = conn_new(rt, host, ep->port, ep->https, err))) return -1;
        s->conn = c;
    }
    if (c->state == CONN_DEAD) {
        /* Failed before the session was attached (conn_new: a numeric address whose every
         * connect failed at once): the session gets the connection's own error, retryable
         * as it is. */
        s->conn = NULL;
        if (err) *err = c->failure;
        return -1;
    }
    if (c->state != CONN_READY) return 1;

    char path[1200], auth[600];
    s2_stream_request req = {.method = "POST"};
    s2_buf_init(&req.path);
    if (s->ops->request(s, &req, err) != 0) {
        s2_buf_free(&req.path);
        return -1;
    }
    if (req.path.len + strlen(ep->path) >= sizeof path) {
        s2_buf_free(&req.path);
        return s2_fail(err, S2_E_INVALID, "invalid", "request path too long");
    }
    snprintf(path, sizeof path, "%s%.*s", ep->path, (int)req.path.len, (const char *)req.path.data);
    s2_buf_free(&req.path);
    bool has_body = strcmp(req.method, "GET") != 0;
    snprintf(auth, sizeof auth, "Bearer %s", rt->cfg.access_token);
    const char *scheme = ep->https ? "https" : "http";
    const char *encoding = req.accept_encoding == S2_COMPRESSION_ZSTD   ? "zstd"
                           : req.accept_encoding == S2_COMPRESSION_GZIP ? "gzip"
                                                                        : NULL;
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv nva[10] = {
        NV(":method", req.method),
        NV(":scheme", scheme),
        NV(":authority", c->authority),
        NV(":path", path),
        NV("content-type", "s2s/proto"),
        NV("authorization", auth),
        NV("user-agent", "s2-lua/" S2_VERSION),
    };
    size_t n = 7;
    if (!ep->basin_template) nva[n++] = (nghttp2_nv)NV("s2-basin", s->basin);
    if (encoding) nva[n++] = (nghttp2_nv)NV("accept-encoding", encoding);
    if (req.encryption_key) { /* a secret: never put in the HPACK tables */
        nva[n] = (nghttp2_nv)NV("s2-encryption-key", req.encryption_key);
        nva[n++].flags = NGHTTP2_NV_FLAG_NO_INDEX;
    }
#undef NV
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = read_body};
    int32_t id = nghttp2_submit_request(c->h2, NULL, nva, n, has_body ? &prd : NULL, s);
    if (id < 0) {
        s->conn = NULL;
        s2_fail(err, S2_E_CONNECTION, "connection_failed", "cannot open a stream: %s",
                nghttp2_strerror(id));
        err->retryable = err->no_side_effects = true;
        return -1;
    }
    s->stream_id = id;
    c->streams++;
    return 0;
}

void s2_runtime_consume(s2_runtime *rt, s2_op *s, size_t n) {
    (void)rt;
    /* Stream window only: the connection window was given back when the bytes arrived. */
    s2_conn *c = s->conn;
    if (n > s->unconsumed) n = s->unconsumed;
    if (c && c->state == CONN_READY && s->stream_id && n)
        nghttp2_session_consume_stream(c->h2, s->stream_id, n);
    s->unconsumed -= n;
}

void s2_runtime_retire_conn(s2_runtime *rt, s2_op *s) {
    (void)rt;
    if (s->conn) {
        s->conn->goaway = true;
        if (!s->conn->retired) s->conn->retired = "draining";
    }
}

void s2_runtime_resume_stream(s2_runtime *rt, s2_op *s) {
    (void)rt;
    if (s->conn && s->conn->state == CONN_READY && s->stream_id)
        nghttp2_session_resume_data(s->conn->h2, s->stream_id);
}

void s2_runtime_cancel_stream(s2_runtime *rt, s2_op *s) {
    (void)rt;
    s2_conn *c = s->conn;
    if (c && s->stream_id) {
        if (c->state == CONN_READY) {
            nghttp2_session_set_stream_user_data(c->h2, s->stream_id, NULL);
            nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, s->stream_id, NGHTTP2_CANCEL);
        }
        if (c->streams) c->streams--;
    }
    s->stream_id = 0;
    s->conn = NULL;
}

/* ---- the loop ------------------------------------------------------------------------------------ */

static s2_op *op_list(s2_runtime *rt) {
    s2_runtime_lock(rt);
    s2_op *op = rt->ops;
    s2_runtime_unlock(rt);
    return op;
}

/* ---- the deadline heap: operations by their next deadline ------------------------------------- */

/* Room for `need` entries in an array of operations (the heap, the turn), doubling. */
static bool ops_reserve(s2_op ***v, size_t *cap, size_t need) {
    if (need <= *cap) return true;
    size_t n = *cap ? *cap * 2 : 64;
    while (n < need) n *= 2;
    s2_op **grown = realloc(*v, n * sizeof *grown);
    if (!grown) return false;
    *v = grown;
    *cap = n;
    return true;
}

static bool heap_less(s2_runtime *rt, size_t a, size_t b) {
    return rt->heap[a]->armed < rt->heap[b]->armed;
}

static void heap_swap(s2_runtime *rt, size_t a, size_t b) {
    s2_op *t = rt->heap[a];
    rt->heap[a] = rt->heap[b];
    rt->heap[b] = t;
    rt->heap[a]->heap_at = a;
    rt->heap[b]->heap_at = b;
}

static void heap_fix(s2_runtime *rt, size_t i) {
    while (i > 1 && heap_less(rt, i, i / 2)) {
        heap_swap(rt, i, i / 2);
        i /= 2;
    }
    for (;;) {
        size_t l = 2 * i, r = l + 1, m = i;
        if (l <= rt->heap_len && heap_less(rt, l, m)) m = l;
        if (r <= rt->heap_len && heap_less(rt, r, m)) m = r;
        if (m == i) return;
        heap_swap(rt, i, m);
        i = m;
    }
}

static void heap_remove(s2_runtime *rt, s2_op *op) {
    size_t i = op->heap_at;
    if (!i) return;
    op->heap_at = 0;
    op->armed = 0;
    s2_op *last = rt->heap[rt->heap_len--];
    if (last == op) return;
    rt->heap[i] = last;
    last->heap_at = i;
    heap_fix(rt, i);
}

/* Files the op under its current next deadline. Returns -1 out of memory (the op is then
 * not filed: the caller runs every op in the next turn instead). */
static int arm(s2_runtime *rt, s2_op *op) {
    double d = op->ops->next_deadline ? op->ops->next_deadline(op) : 0;
    if (!d) {
        heap_remove(rt, op);
        return 0;
    }
    if (op->heap_at) {
        if (d != op->armed) {
            op->armed = d;
            heap_fix(rt, op->heap_at);
        }
        return 0;
    }
    if (!ops_reserve(&rt->heap, &rt->heap_cap, rt->heap_len + 2)) return -1; /* 1-based */
    op->armed = d;
    op->heap_at = ++rt->heap_len;
    rt->heap[op->heap_at] = op;
    heap_fix(rt, op->heap_at);
    return 0;
}

/* ---- turns: which operations run ------------------------------------------------------------- */

/* An I/O-thread event concerned the op (its stream, its connection): it runs next turn. */
static void touch(s2_op *op) { queue_op(op->rt, op); }

/* Something that may concern any op (a connection became ready or died, a stream slot
 * freed up): all of them run next turn. */
static void touch_all(s2_runtime *rt) { atomic_store(&rt->all_ready, true); }

static bool turn_push(s2_runtime *rt, s2_op *op) {
    if (!ops_reserve(&rt->turn, &rt->turn_cap, rt->turn_len + 1)) return false;
    rt->turn[rt->turn_len++] = op;
    return true;
}

/* The operations this turn runs, into rt->turn: the queued ones, or every one. Their
 * `ready` is cleared first, so a wake while they run queues them for the turn after. */
static void take_turn(s2_runtime *rt) {
    rt->turn_len = 0;
    bool all = atomic_exchange(&rt->all_ready, false);
    /* Copied out under the lock: once unqueued, an op's ready_next is another thread's to
     * write (a wake queues it again). */
    pthread_mutex_lock(&rt->ready_mu);
    for (s2_op *op = rt->ready; op; op = op->ready_next) {
        op->ready = false;
        if (!all && !turn_push(rt, op)) all = true;
    }
    rt->ready = NULL;
    pthread_mutex_unlock(&rt->ready_mu);
    if (all) {
        rt->turn_len = 0;
        for (s2_op *op = op_list(rt); op; op = op->next)
            if (!turn_push(rt, op)) { /* out of memory: the rest run next turn */
                touch_all(rt);
                break;
            }
    }
}

static bool has_ready(s2_runtime *rt) {
    if (atomic_load(&rt->all_ready)) return true;
    pthread_mutex_lock(&rt->ready_mu);
    bool any = rt->ready != NULL;
    pthread_mutex_unlock(&rt->ready_mu);
    return any;
}

/* Drops a finished operation from the lists (and frees it when nobody holds it any more). */
static void reap_op(s2_runtime *rt, s2_op *op) {
    heap_remove(rt, op);
    pthread_mutex_lock(&rt->ready_mu);
    op->listed = false;
    if (op->ready) {
        for (s2_op **pp = &rt->ready; *pp; pp = &(*pp)->ready_next)
            if (*pp == op) {
                *pp = op->ready_next;
                break;
            }
        op->ready = false;
    }
    pthread_mutex_unlock(&rt->ready_mu);
    s2_runtime_lock(rt);
    s2_op **pp = &rt->ops;
    while (*pp && *pp != op) pp = &(*pp)->next;
    if (*pp) *pp = op->next;
    bool last = --op->refs == 0;
    s2_runtime_unlock(rt);
    if (last) op->ops->free(op);
}

/* After the turn's operations ran and the connections flushed: the finished ones go, the
 * others are filed under their next deadline. */
static void end_turn(s2_runtime *rt) {
    s2_runtime_lock(rt);
    rt->stats.loop_turns++;
    rt->stats.op_runs += rt->turn_len;
    s2_runtime_unlock(rt);
    for (size_t i = 0; i < rt->turn_len; i++) {
        s2_op *op = rt->turn[i];
        if (op->ops->done(op)) reap_op(rt, op);
        else if (arm(rt, op) != 0) touch_all(rt);
    }
    rt->turn_len = 0;
}

/* Every operation, at shutdown. */
static void reap_all(s2_runtime *rt) {
    for (s2_op *op = op_list(rt), *next; op; op = next) {
        next = op->next;
        if (op->ops->done(op)) reap_op(rt, op);
    }
}

static void reap_conns(s2_runtime *rt) {
    for (s2_conn **pp = &rt->conns; *pp;) {
        s2_conn *c = *pp;
        bool idle_goaway = c->state == CONN_READY && c->goaway && c->streams == 0;
        if (c->state == CONN_DEAD || idle_goaway) {
            *pp = c->next;
            conn_free(c);
        } else {
            pp = &c->next;
        }
    }
}

/* ---- keep-alive and stalls -------------------------------------------------------------- */

static double ping_timeout(s2_runtime *rt) {
    double t = rt->cfg.request_timeout;
    return t > PING_TIMEOUT_MIN ? t : PING_TIMEOUT_MIN;
}

/* When the connection's next keep-alive event is due: the PING's deadline, the stall
 * deadline of output the socket does not take, or when silence earns a PING. */
static double conn_next_check(s2_runtime *rt, s2_conn *c, bool owes) {
    if (c->state != CONN_READY)
        return c->addr_deadline && c->addr_deadline < c->connect_deadline ? c->addr_deadline
                                                                          : c->connect_deadline;
    if (c->ping_sent_at) return c->ping_sent_at + ping_timeout(rt);
    double after = owes ? rt->cfg.request_timeout / 2 : IDLE_PING_AFTER;
    double d = c->last_recv + (after > 0.05 ? after : 0.05);
    if (c->out_off < c->out.len && c->last_write + ping_timeout(rt) < d)
        d = c->last_write + ping_timeout(rt);
    return d;
}

static void conn_timed_out(s2_conn *c, const char *what, double seconds) {
    s2_error err;
    s2_fail(&err, S2_E_TIMEOUT, "timeout", "connection to %s retired: %s within %.3f s",
            c->authority, what, seconds);
    err.retryable = true;
    conn_fail(c, &err);
}

/* A connection whose peer stopped answering (no PING ACK) or stopped taking bytes is
 * retired: failed, so that every session on it moves to a fresh connection. */
static void conn_check(s2_runtime *rt, s2_conn *c, double now) {
    if (c->state == CONN_RESOLVING || c->state == CONN_CONNECTING || c->state == CONN_TLS) {
        if (c->state == CONN_CONNECTING && c->addr_deadline && now >= c->addr_deadline &&
            now < c->connect_deadline) {
            snprintf(c->last_error, sizeof c->last_error, "timed out");
            conn_try_next(c); /* this address had its share of the time: the next one */
            return;
        }
        if (c->connect_deadline && now >= c->connect_deadline) {
            s2_error err;
            s2_fail(&err, S2_E_TIMEOUT, "timeout", "%s %s timed out after %.3f s",
                    c->state == CONN_RESOLVING ? "resolving" : "connecting to",
                    c->state == CONN_RESOLVING ? c->host : c->authority,
                    rt->cfg.connection_timeout);
            err.retryable = true;
            err.no_side_effects = true;
            conn_fail(c, &err);
        }
        return;
    }
    if (c->state != CONN_READY) return;
    double limit = ping_timeout(rt);
    if (c->ping_sent_at && now - c->ping_sent_at >= limit) {
        if (!c->retired) c->retired = "ping_timeout";
        conn_timed_out(c, "no answer to a PING", limit);
    } else if (c->out_off < c->out.len && now - c->last_write >= limit) {
        if (!c->retired) c->retired = "write_stall";
        conn_timed_out(c, "the server took no bytes", limit);
    } else if (!c->ping_sent_at && now >= conn_next_check(rt, c, c->streams > 0)) {
        if (nghttp2_submit_ping(c->h2, NGHTTP2_FLAG_NONE, NULL) == 0) {
            c->ping_sent_at = now;
            conn_flush(c);
        }
    }
}

/* Fires what is due: the notices' timers, the connections' keep-alive checks, and the
 * operations whose deadline passed (each then runs in the next turn and is filed again). */
static void run_timers(s2_runtime *rt, double now) {
    s2_runtime_lock(rt);
    s2_notices_tick_locked(rt->notices, now);
    s2_runtime_unlock(rt);
    for (s2_conn *c = rt->conns; c; c = c->next) conn_check(rt, c, now);
    while (rt->heap_len && rt->heap[1]->armed <= now) {
        s2_op *op = rt->heap[1];
        heap_remove(rt, op);
        if (op->ops->check_timers) op->ops->check_timers(op, now);
        touch(op);
    }
}

/* Seconds until the earliest deadline of a connection, an operation, the notice socket or
 * an orphan's drain; 0 when operations are queued; -1 (sleep until an event) when nothing
 * is due. There is no periodic wake: an idle client (sessions open, nothing in flight)
 * costs no CPU but for its connections' keep-alive PINGs and what the server sends (read
 * sessions' heartbeats, each of which runs its own session only). Whatever makes work for
 * the thread from outside wakes it (s2_runtime_wake_op, s2_runtime_wake). */
static double next_wait(s2_runtime *rt, double now) {
    if (has_ready(rt)) return 0;
    double next = rt->heap_len ? rt->heap[1]->armed : 0;
    s2_runtime_lock(rt);
    double more[2] = {s2_notices_next_deadline_locked(rt->notices),
                      rt->orphaned && !rt->stopping ? rt->orphan_deadline : 0};
    s2_runtime_unlock(rt);
    for (int i = 0; i < 2; i++)
        if (more[i] && (!next || more[i] < next)) next = more[i];
    for (s2_conn *c = rt->conns; c; c = c->next) {
        double d = conn_next_check(rt, c, c->state == CONN_READY && c->streams > 0);
        if (d && (!next || d < next)) next = d;
    }
    if (!next) return -1;
    return next > now ? next - now : 0;
}

/* epoll_wait to the microsecond: a producer's linger of 5 ms must not become 6 (whole
 * milliseconds, rounded up so as not to wake early, add up to 1 ms to every timer). */
static int wait_events(s2_runtime *rt, struct epoll_event *events, int max, double wait) {
    if (wait < 0) return epoll_wait(rt->epfd, events, max, -1); /* nothing due */
#ifdef SYS_epoll_pwait2
    static atomic_int no_pwait2;
    if (!atomic_load_explicit(&no_pwait2, memory_order_relaxed)) {
        struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
        int n = (int)syscall(SYS_epoll_pwait2, rt->epfd, events, max, &ts, NULL, (size_t)8);
        if (n >= 0 || errno != ENOSYS) return n;
        atomic_store(&no_pwait2, 1);
    }
#endif
    return epoll_wait(rt->epfd, events, max, (int)ceil(wait * 1000.0));
}

static void *io_main(void *arg) {
    s2_runtime *rt = arg;
    struct epoll_event events[64];
    for (;;) {
        s2_runtime_lock(rt);
        bool stopping = rt->stopping;
        s2_runtime_unlock(rt);
        if (stopping) break;

        take_turn(rt);
        for (size_t i = 0; i < rt->turn_len; i++)
            if (rt->turn[i]->ops->service) rt->turn[i]->ops->service(rt->turn[i]);
        for (s2_conn *c = rt->conns; c; c = c->next) conn_flush(c);
        end_turn(rt);
        reap_conns(rt);

        int n = wait_events(rt, events, 64, next_wait(rt, s2_now()));
        for (int i = 0; i < n; i++) {
            if (!events[i].data.ptr) {
                uint64_t v;
                ssize_t r = read(rt->wakefd, &v, sizeof v);
                (void)r;
                continue;
            }
            s2_io_watch *w = events[i].data.ptr;
            w->on_events(w, events[i].events);
        }
        run_timers(rt, s2_now());
        check_orphan(rt, s2_now());
    }

    /* Shutting down. HTTP/1.1 workers first finish their current request (bounded by its
     * timeouts) and exit, so that batch gets its real outcome and is not counted lost. */
    s2_runtime_lock(rt);
    for (s2_op *op = rt->ops; op; op = op->next)
        while (op->ops->worker_busy_locked && op->ops->worker_busy_locked(op))
            s2_runtime_wait(rt, -1);
    s2_error closed;
    if (rt->has_stop_reason) closed = rt->stop_reason;
    else s2_fail(&closed, S2_E_CLOSED, "closed", "the client was closed");
    s2_runtime_unlock(rt);
    /* Then everything outstanding fails with "closed" (reported on stderr for sessions whose
     * tickets nobody can see). */
    /* Before io_done: whoever waits for the stop must find every session failed, and the
     * tickets' notices must go out before the socket closes. */
    for (s2_op *op = op_list(rt); op; op = op->next) op->ops->abort(op, &closed);
    /* The connections (TLS included) go before io_done too: at exit, the process tears
     * OpenSSL down as soon as io_done is seen, and a detached (orphaned) thread still
     * freeing an SSL then would race it. */
    for (s2_conn *c = rt->conns; c; c = c->next) {
        if (!c->retired) c->retired = "closed";
        c->state = CONN_DEAD;
    }
    reap_conns(rt);
    OPENSSL_thread_stop(); /* its thread-local state, instead of at thread exit (likewise) */
    s2_runtime_lock(rt);
    rt->io_done = true;
    s2_runtime_broadcast(rt); /* progress notices go out before the socket closes */
    s2_notices_stop_locked(rt->notices);
    s2_runtime_unlock(rt);
    reap_all(rt);
    free_orphan(rt);
    return NULL;
}
