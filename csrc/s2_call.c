/* s2_call.c — unary calls (reads, appends, management) as operations of the runtime.
 *
 * A caller queues a call and gets a handle to wait on (s2_wait.h); the I/O thread drives
 * every call of the client through one libcurl multi handle inside its epoll loop (curl's
 * sockets and timer are the loop's), so connections are shared and reused, and a retry's
 * backoff is a timer of the loop, never a sleep. One attempt is s2_http.c's: the same
 * request building, resend guard and error classification as a blocking call.
 *
 * Ownership: `refs` (under mu) counts the caller's handle and the driver's hold until the
 * call completes. A caller that lets go of a pending call abandons it: the I/O thread takes
 * it out of the multi handle and frees it. Everything marked I/O is the I/O thread's. */
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "s2_internal.h"
#include "s2_unary.h"
#include "s2_wait.h"

#define EASY_POOL 32 /* idle easy handles kept for reuse */

typedef struct s2_calls s2_calls; /* the driver: one per runtime, an op of its loop */

struct s2_call {
    s2_runtime *rt;
    s2_calls *d;
    struct s2_call *prev, *next; /* queued: under mu; active or retrying: I/O */

    int refs;              /* under mu */
    bool abandoned;        /* under mu: the caller let go before it completed */
    s2_ticket_state state; /* under mu */
    s2_error err;          /* under mu, valid when FAILED */
    s2_completion done;    /* under mu */
    s2_response resp;      /* I/O until completed, then read-only */

    s2_request req; /* a copy: its strings and body are owned below */
    char *strings;  /* may hold the encryption key: zeroed when freed */
    size_t strings_len;
    uint8_t *body;

    /* I/O */
    CURL *easy;
    s2_http_attempt attempt;
    unsigned attempts;
    double retry_at; /* on the retrying list: when the next attempt starts */
};

typedef struct curl_sock {
    s2_io_watch watch;
    s2_calls *d;
    curl_socket_t fd;
    uint32_t events;
    bool dead;             /* curl let go of it: events still queued for it are dropped */
    struct curl_sock *next_dead;
} curl_sock;

struct s2_calls {
    s2_op op; /* first: the runtime runs the driver through its ops table */
    s2_runtime *rt;
    bool aborted; /* I/O: the runtime stopped; the op is done */
    CURLM *multi;
    s2_call *queued_head, *queued_tail; /* under mu */
    size_t abandoned;                   /* under mu: abandoned calls not yet dropped */
    s2_call *active;   /* I/O: in the multi handle */
    s2_call *retrying; /* I/O: waiting out a backoff */
    double timer_at;   /* I/O: curl's timer, 0: none */
    CURL *pool[EASY_POOL];
    size_t npool;
    /* I/O: sockets curl removed. Freed only between epoll batches: a batch may still hold
     * events that point at them. */
    curl_sock *dead;
};

/* ---- lists (I/O) ----------------------------------------------------------------------------- */

static void list_push(s2_call **head, s2_call *c) {
    c->prev = NULL;
    c->next = *head;
    if (*head) (*head)->prev = c;
    *head = c;
}

static void list_remove(s2_call **head, s2_call *c) {
    if (c->prev) c->prev->next = c->next;
    else *head = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static s2_calls *driver_locked(s2_runtime *rt, s2_error *err);

/* ---- lifetime ------------------------------------------------------------------------------- */

static void call_free(s2_call *c) {
    s2_runtime *rt = c->rt;
    s2_completion_free(&c->done);
    s2_buf_free(&c->resp.body);
    s2_http_attempt_cleanup(NULL, &c->attempt);
    if (c->strings) s2_wipe(c->strings, c->strings_len);
    free(c->strings);
    free(c->body);
    free(c);
    s2_runtime_unref(rt);
}

static char *copy_into(char **at, const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = memcpy(*at, s, n);
    *at += n;
    return d;
}

s2_call *s2_call_start(s2_runtime *rt, const s2_request *req, s2_error *err) {
    if (s2_http_global_init(err) != 0) return NULL;
    s2_call *c = calloc(1, sizeof *c);
    const char *strs[] = {req->method,         req->basin,          req->path,
                          req->content_type,   req->accept,         req->request_token,
                          req->encryption_key, req->content_encoding};
    size_t total = 0;
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if (strs[i]) total += strlen(strs[i]) + 1;
    if (c) c->strings = malloc(total ? total : 1);
    if (c && req->body && req->body_len) c->body = malloc(req->body_len);
    if (!c || !c->strings || (req->body && req->body_len && !c->body)) {
        if (c) {
            free(c->strings);
            free(c->body);
            free(c);
        }
        s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory starting a request");
        return NULL;
    }
    c->rt = rt;
    c->strings_len = total;
    s2_completion_init(&c->done);
    s2_buf_init(&c->resp.body);
    s2_buf_init(&c->attempt.url);
    c->req = *req;
    char *at = c->strings;
    c->req.method = copy_into(&at, req->method);
    c->req.basin = copy_into(&at, req->basin);
    c->req.path = copy_into(&at, req->path);
    c->req.content_type = copy_into(&at, req->content_type);
    c->req.accept = copy_into(&at, req->accept);
    c->req.request_token = copy_into(&at, req->request_token);
    c->req.encryption_key = copy_into(&at, req->encryption_key);
    c->req.content_encoding = copy_into(&at, req->content_encoding);
    if (c->body) memcpy(c->body, req->body, req->body_len);
    c->req.body = c->body ? c->body : (req->body ? (const uint8_t *)"" : NULL);
    c->state = S2_TICKET_PENDING;
    c->refs = 2; /* the caller's handle and the driver's hold */
    s2_runtime_ref(rt);

    s2_runtime_lock(rt);
    s2_calls *d = driver_locked(rt, err);
    if (!d) {
        s2_runtime_unlock(rt);
        call_free(c);
        return NULL;
    }
    c->d = d;
    c->next = NULL;
    c->prev = d->queued_tail;
    if (d->queued_tail) d->queued_tail->next = c;
    else d->queued_head = c;
    d->queued_tail = c;
    s2_runtime_wake_op(rt, &d->op); /* under mu: the driver cannot be reaped meanwhile */
    s2_runtime_unlock(rt);
    return c;
}

s2_ticket_state s2_call_result(s2_call *c, const s2_response **resp, s2_error *err) {
    s2_runtime_lock(c->rt);
    s2_ticket_state st = c->state;
    if (st == S2_TICKET_FAILED && err) *err = c->err;
    s2_runtime_unlock(c->rt);
    if (st == S2_TICKET_OK && resp) *resp = &c->resp; /* the I/O thread is done with it */
    return st;
}

s2_ticket_state s2_call_wait(s2_call *c, double timeout) {
    double deadline = timeout < 0 ? -1 : s2_now() + timeout;
    s2_runtime_lock(c->rt);
    while (c->state == S2_TICKET_PENDING && s2_runtime_wait(c->rt, deadline)) {
    }
    s2_ticket_state st = c->state;
    s2_runtime_unlock(c->rt);
    return st;
}

int s2_call_fd(s2_call *c) {
    s2_runtime_lock(c->rt);
    int fd = s2_completion_fd_locked(&c->done);
    s2_runtime_unlock(c->rt);
    return fd;
}

uint64_t s2_call_notice(s2_call *c) {
    s2_runtime_lock(c->rt);
    uint64_t id = s2_completion_arm_locked(s2_runtime_notices(c->rt), &c->done);
    s2_runtime_unlock(c->rt);
    return id;
}

s2_runtime *s2_call_runtime(const s2_call *c) {
    return c->rt;
}

bool s2_call_owned(const s2_call *c) {
    return s2_runtime_owned(c->rt);
}

void s2_call_release(s2_call *c) {
    if (!c) return;
    s2_runtime *rt = c->rt;
    s2_runtime_lock(rt);
    bool last = --c->refs == 0;
    bool pending = c->state == S2_TICKET_PENDING;
    if (pending && !c->abandoned) {
        c->abandoned = true;
        c->d->abandoned++;
    }
    s2_runtime_unlock(rt);
    if (last) call_free(c);
    else if (pending) s2_runtime_wake(rt);
}

/* ---- the driver (I/O thread) ------------------------------------------------------------------ */

static void easy_put(s2_calls *d, CURL *e) {
    if (!e) return;
    if (d->npool < EASY_POOL) d->pool[d->npool++] = e;
    else curl_easy_cleanup(e);
}

/* The driver lets go: state set, waiters told, the hold dropped. */
static void complete(s2_call *c, int rc, const s2_error *err) {
    s2_calls *d = c->d;
    easy_put(d, c->easy);
    c->easy = NULL;
    c->resp.attempts = c->attempts;
    s2_runtime_lock(c->rt);
    if (c->abandoned) d->abandoned--;
    if (rc == 0) {
        c->state = S2_TICKET_OK;
    } else {
        c->state = S2_TICKET_FAILED;
        c->err = *err;
    }
    s2_completion_set_locked(s2_runtime_notices(c->rt), &c->done);
    s2_runtime_broadcast(c->rt);
    bool last = --c->refs == 0;
    s2_runtime_unlock(c->rt);
    if (last) call_free(c);
}

static void start_attempt(s2_calls *d, s2_call *c) {
    s2_error err;
    c->attempts++;
    if (!c->easy) c->easy = d->npool ? d->pool[--d->npool] : curl_easy_init();
    if (!c->easy) {
        s2_fail(&err, S2_E_NOMEM, "out_of_memory", "out of memory starting a request");
        complete(c, -1, &err);
        return;
    }
    s2_buf_free(&c->resp.body);
    if (s2_http_attempt_setup(c->easy, s2_runtime_config(d->rt), &c->req, &c->attempt,
                              &c->resp, &err) != 0) {
        complete(c, -1, &err);
        return;
    }
    curl_easy_setopt(c->easy, CURLOPT_PRIVATE, (char *)c);
    if (curl_multi_add_handle(d->multi, c->easy) != CURLM_OK) {
        s2_http_attempt_cleanup(c->easy, &c->attempt);
        s2_fail(&err, S2_E_NOMEM, "out_of_memory", "libcurl refused a transfer");
        complete(c, -1, &err);
        return;
    }
    list_push(&d->active, c);
}

/* A transfer ended: answer, retry later, or fail. */
static void attempt_done(s2_calls *d, s2_call *c, CURLcode cr) {
    list_remove(&d->active, c);
    curl_multi_remove_handle(d->multi, c->easy);
    s2_error err;
    int rc = s2_http_attempt_finish(c->easy, &c->attempt, cr, &err);
    if (rc == 0) {
        complete(c, 0, NULL);
        return;
    }
    s2_runtime_lock(d->rt);
    bool abandoned = c->abandoned;
    s2_runtime_unlock(d->rt);
    if (!abandoned && s2_http_should_retry(s2_runtime_config(d->rt), &c->req, c->attempts, &err)) {
        double delay = s2_runtime_backoff(d->rt, c->attempts - 1, err.retry_after_ms);
        c->retry_at = s2_now() + delay;
        s2_event_retry(s2_runtime_events(d->rt),
                       &(s2_event_src){"unary", c->req.basin, NULL, c->req.method, c->req.path},
                       c->attempts, s2_runtime_config(d->rt)->max_attempts, delay, &err);
        list_push(&d->retrying, c);
        return;
    }
    s2_error_note_attempts(&err, c->attempts);
    complete(c, -1, &err);
}

static void collect_done(s2_calls *d) {
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(d->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        char *p = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &p);
        CURLcode cr = m->data.result;
        if (p) attempt_done(d, (s2_call *)p, cr);
    }
}

static void on_sock_events(s2_io_watch *w, uint32_t events) {
    curl_sock *s = (curl_sock *)w;
    s2_runtime_wake_op(s->d->rt, &s->d->op); /* the driver runs next turn (and buries s) */
    if (s->dead) return;
    int mask = 0;
    if (events & EPOLLIN) mask |= CURL_CSELECT_IN;
    if (events & EPOLLOUT) mask |= CURL_CSELECT_OUT;
    if (events & (EPOLLERR | EPOLLHUP)) mask |= CURL_CSELECT_ERR;
    s2_calls *d = s->d; /* s may be freed by curl's callbacks below */
    int running;
    curl_multi_socket_action(d->multi, s->fd, mask, &running);
    collect_done(d);
}

/* CURLMOPT_SOCKETFUNCTION: curl says which of its sockets to watch for what. */
static int on_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp) {
    (void)e;
    s2_calls *d = userp;
    curl_sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            s2_runtime_watch(d->rt, EPOLL_CTL_DEL, fd, 0, NULL);
            s->dead = true;
            s->next_dead = d->dead;
            d->dead = s;
            curl_multi_assign(d->multi, fd, NULL);
        }
        return 0;
    }
    uint32_t ev = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) return -1;
        s->watch.on_events = on_sock_events;
        s->d = d;
        s->fd = fd;
        s->events = ev;
        curl_multi_assign(d->multi, fd, s);
        return s2_runtime_watch(d->rt, EPOLL_CTL_ADD, fd, ev, &s->watch) == 0 ? 0 : -1;
    }
    if (s->events != ev) {
        s->events = ev;
        s2_runtime_watch(d->rt, EPOLL_CTL_MOD, fd, ev, &s->watch);
    }
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: when curl wants socket_action(CURL_SOCKET_TIMEOUT). */
static int on_timer(CURLM *m, long timeout_ms, void *userp) {
    (void)m;
    s2_calls *d = userp;
    d->timer_at = timeout_ms < 0 ? 0 : s2_now() + (double)timeout_ms / 1000.0;
    return 0;
}

static void bury_dead(s2_calls *d) {
    while (d->dead) {
        curl_sock *s = d->dead;
        d->dead = s->next_dead;
        free(s);
    }
}

static s2_calls *calls_new(s2_runtime *rt, s2_error *err) {
    s2_calls *d = calloc(1, sizeof *d);
    if (!d || !(d->multi = curl_multi_init())) {
        free(d);
        s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory creating a client");
        return NULL;
    }
    d->rt = rt;
    curl_multi_setopt(d->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(d->multi, CURLMOPT_SOCKETDATA, d);
    curl_multi_setopt(d->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(d->multi, CURLMOPT_TIMERDATA, d);
    /* HTTP/1.1 (plain endpoints) needs a connection per call in flight: keep up to 512
     * alive so a burst reuses them instead of opening and closing one per call, and queue
     * calls beyond that (HTTP/2 multiplexes them on one connection anyway). */
    curl_multi_setopt(d->multi, CURLMOPT_MAXCONNECTS, 512L);
    curl_multi_setopt(d->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 512L);
    return d;
}

static void calls_free(s2_calls *d) {
    if (!d) return;
    /* s2_calls_abort ran (or nothing was ever started): no transfer is left. */
    curl_multi_cleanup(d->multi);
    bury_dead(d);
    for (size_t i = 0; i < d->npool; i++) curl_easy_cleanup(d->pool[i]);
    free(d);
}

/* Abandoned calls leave the multi handle (or the retry list) and go. */
static void drop_abandoned(s2_calls *d, s2_call **list, bool in_multi) {
    for (s2_call *c = *list, *next; c; c = next) {
        next = c->next;
        s2_runtime_lock(d->rt);
        bool gone = c->abandoned;
        s2_runtime_unlock(d->rt);
        if (!gone) continue;
        list_remove(list, c);
        if (in_multi) {
            curl_multi_remove_handle(d->multi, c->easy);
            s2_http_attempt_cleanup(c->easy, &c->attempt);
        }
        s2_error err;
        s2_fail(&err, S2_E_CLOSED, "closed", "the request was abandoned");
        complete(c, -1, &err);
    }
}

static void calls_service(s2_calls *d) {
    bury_dead(d); /* the loop is between epoll batches here */
    s2_runtime_lock(d->rt);
    s2_call *q = d->queued_head;
    d->queued_head = d->queued_tail = NULL;
    bool abandoned = d->abandoned > 0;
    s2_runtime_unlock(d->rt);
    while (q) {
        s2_call *c = q;
        q = q->next;
        c->next = c->prev = NULL;
        start_attempt(d, c); /* an abandoned one is dropped below, like any other */
    }
    if (abandoned) {
        drop_abandoned(d, &d->active, true);
        drop_abandoned(d, &d->retrying, false);
    }
}

static double calls_next_deadline(s2_calls *d) {
    double next = d->timer_at;
    for (s2_call *c = d->retrying; c; c = c->next)
        if (!next || c->retry_at < next) next = c->retry_at;
    return next;
}

static void calls_check_timers(s2_calls *d, double now) {
    for (s2_call *c = d->retrying, *next; c; c = next) {
        next = c->next;
        if (c->retry_at > now) continue;
        list_remove(&d->retrying, c);
        start_attempt(d, c);
    }
    if (d->timer_at && now >= d->timer_at) {
        d->timer_at = 0;
        int running;
        curl_multi_socket_action(d->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        collect_done(d);
    }
}

static void calls_abort(s2_calls *d, const s2_error *err) {
    calls_service(d); /* queued ones become active, so they fail the same way */
    while (d->active) {
        s2_call *c = d->active;
        list_remove(&d->active, c);
        curl_multi_remove_handle(d->multi, c->easy);
        s2_http_attempt_cleanup(c->easy, &c->attempt);
        complete(c, -1, err);
    }
    while (d->retrying) {
        s2_call *c = d->retrying;
        list_remove(&d->retrying, c);
        complete(c, -1, err);
    }
}

/* ---- the driver as an operation of the runtime --------------------------------------------- */

static void op_service(s2_op *op) { calls_service((s2_calls *)op); }
static double op_next_deadline(s2_op *op) { return calls_next_deadline((s2_calls *)op); }
static void op_check_timers(s2_op *op, double now) { calls_check_timers((s2_calls *)op, now); }

static void op_abort(s2_op *op, const s2_error *err) {
    s2_calls *d = (s2_calls *)op;
    calls_abort(d, err);
    d->aborted = true;
}

static bool op_done(s2_op *op) { return ((s2_calls *)op)->aborted; }

static void op_free(s2_op *op) {
    s2_calls *d = (s2_calls *)op;
    s2_runtime_lock(d->rt);
    *s2_runtime_unary_slot_locked(d->rt) = NULL;
    s2_runtime_unlock(d->rt);
    calls_free(d);
}

static const s2_op_ops unary_ops = {
    .kind = "unary",
    .service = op_service,
    .next_deadline = op_next_deadline,
    .check_timers = op_check_timers,
    .abort = op_abort,
    .done = op_done,
    .free = op_free,
};

/* The runtime's driver, made and started with its first call; NULL, *err once it stopped.
 * under mu */
static s2_calls *driver_locked(s2_runtime *rt, s2_error *err) {
    if (s2_runtime_stopping(rt)) {
        s2_fail(err, S2_E_CLOSED, "closed", "the client is closed");
        return NULL;
    }
    s2_op **slot = s2_runtime_unary_slot_locked(rt);
    if (*slot) return (s2_calls *)*slot;
    s2_calls *d = calls_new(rt, err);
    if (!d) return NULL;
    d->op.ops = &unary_ops;
    d->op.rt = rt;
    d->op.refs = 1; /* the runtime's list */
    if (s2_runtime_start_op_locked(rt, &d->op, err) != 0) {
        calls_free(d);
        return NULL;
    }
    *slot = &d->op;
    return d;
}
