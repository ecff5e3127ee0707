/* s2_events.c — the bounded event queue of a runtime (see s2_events.h).
 *
 * Locking: q->mu guards the list, its length, the drop count and the retired flag. It is a
 * leaf lock: taken by emitters that may hold runtime->mu, never held while taking another
 * lock, and never across anything that blocks (the stderr write of a loss report happens
 * after it is released). `on` is atomic so that emit sites test it without the lock. */
#include "s2_events.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct s2_events {
    atomic_bool on;
    atomic_size_t len; /* also read without mu (s2_events_pending) */
    pthread_mutex_t mu;
    /* under mu */
    s2_event *head, *tail;
    uint64_t dropped; /* not kept since the last take (queue full, or no memory) */
    bool retired;
};

s2_events *s2_events_new(void) {
    s2_events *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    atomic_init(&q->on, false);
    atomic_init(&q->len, 0);
    pthread_mutex_init(&q->mu, NULL);
    return q;
}

void s2_events_list_free(s2_event *e) {
    while (e) {
        s2_event *next = e->next;
        free(e);
        e = next;
    }
}

void s2_events_free(s2_events *q) {
    if (!q) return;
    s2_events_list_free(q->head);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

bool s2_events_on(const s2_events *q) {
    return q && atomic_load_explicit(&q->on, memory_order_relaxed);
}

bool s2_events_pending(const s2_events *q) {
    return q && atomic_load_explicit(&q->len, memory_order_relaxed) > 0;
}

void s2_events_enable(s2_events *q, bool on) {
    if (!q) return;
    pthread_mutex_lock(&q->mu);
    if (!q->retired) atomic_store(&q->on, on);
    s2_event *drop = NULL;
    if (!on) { /* nobody will take them */
        drop = q->head;
        q->head = q->tail = NULL;
        atomic_store(&q->len, 0);
        q->dropped = 0;
    }
    pthread_mutex_unlock(&q->mu);
    s2_events_list_free(drop);
}

static void print_loss(const s2_event *e) {
    fprintf(stderr,
            "s2: %llu record%s in %llu batch%s for stream \"%s\" of basin \"%s\" were not "
            "acknowledged and are dropped (they may not have been written): %s\n",
            (unsigned long long)e->count, e->count == 1 ? "" : "s",
            (unsigned long long)e->batches, e->batches == 1 ? "" : "es", e->stream, e->basin,
            e->message);
}

void s2_events_retire(s2_events *q) {
    if (!q) return;
    pthread_mutex_lock(&q->mu);
    q->retired = true;
    atomic_store(&q->on, false);
    s2_event *list = q->head;
    q->head = q->tail = NULL;
    atomic_store(&q->len, 0);
    pthread_mutex_unlock(&q->mu);
    for (s2_event *e = list; e; e = e->next)
        if (e->type == S2_EVENT_RECORDS_DISCARDED) print_loss(e);
    s2_events_list_free(list);
}

s2_event *s2_events_take(s2_events *q) {
    if (!s2_events_pending(q)) {
        /* Drops with nothing kept (allocation failures) still get reported. */
        pthread_mutex_lock(&q->mu);
        bool dropped = q->dropped > 0;
        pthread_mutex_unlock(&q->mu);
        if (!dropped) return NULL;
    }
    s2_event *extra = calloc(1, sizeof *extra); /* events_dropped, if needed */
    pthread_mutex_lock(&q->mu);
    s2_event *list = q->head;
    s2_event *tail = q->tail;
    q->head = q->tail = NULL;
    atomic_store(&q->len, 0);
    if (q->dropped && extra) {
        extra->type = S2_EVENT_EVENTS_DROPPED;
        extra->count = q->dropped;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        extra->time = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
        q->dropped = 0;
        if (tail) tail->next = extra;
        else list = extra;
        extra = NULL;
    }
    pthread_mutex_unlock(&q->mu);
    free(extra);
    return list;
}

/* Queues a copy of *e (stamped now); false when it was not kept. */
static bool push(s2_events *q, const s2_event *e) {
    if (!s2_events_on(q)) return false;
    s2_event *c = malloc(sizeof *c);
    pthread_mutex_lock(&q->mu);
    bool kept = false;
    if (!q->retired && atomic_load(&q->on)) {
        if (c && atomic_load(&q->len) < S2_EVENTS_CAPACITY) {
            *c = *e;
            c->next = NULL;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            c->time = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
            if (q->tail) q->tail->next = c;
            else q->head = c;
            q->tail = c;
            atomic_fetch_add(&q->len, 1);
            kept = true;
            c = NULL;
        } else {
            q->dropped++;
        }
    }
    pthread_mutex_unlock(&q->mu);
    free(c);
    return kept;
}

#define COPY(dst, src) snprintf((dst), sizeof(dst), "%s", (src) ? (src) : "")

static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The stream of a path "/streams/<percent-encoded name>[/...]", decoded into out. */
static void stream_of_path(const char *path, char *out, size_t cap) {
    static const char prefix[] = "/streams/";
    if (!path || strncmp(path, prefix, sizeof prefix - 1) != 0) return;
    size_t n = 0;
    for (const char *p = path + sizeof prefix - 1; *p && *p != '/' && *p != '?' && n + 1 < cap; p++) {
        if (*p == '%' && hex(p[1]) >= 0 && hex(p[2]) >= 0) {
            out[n++] = (char)(hex(p[1]) * 16 + hex(p[2]));
            p += 2;
        } else {
            out[n++] = *p;
        }
    }
    out[n] = 0;
}

/* A unary call names its method and path (the stream comes from the path); a session
 * names its stream (or only a path, for the stream). */
static void fill_src(s2_event *e, const s2_event_src *src) {
    if (!src) return;
    COPY(e->what, src->what);
    COPY(e->basin, src->basin);
    if (src->stream) COPY(e->stream, src->stream);
    else stream_of_path(src->path, e->stream, sizeof e->stream);
    if (src->method) {
        COPY(e->method, src->method);
        COPY(e->path, src->path);
    }
}

static void fill_error(s2_event *e, const s2_error *err) {
    if (!err) return;
    e->has_error = true;
    e->status = err->status;
    COPY(e->code, err->code);
    COPY(e->message, err->message);
}

/* Each builds the event on its stack (several threads emit) and push copies it once. */
void s2_event_retry(s2_events *q, const s2_event_src *src, unsigned attempt,
                    unsigned max_attempts, double delay, const s2_error *err) {
    if (!s2_events_on(q)) return;
    s2_event e;
    memset(&e, 0, sizeof e);
    e.type = S2_EVENT_RETRY;
    fill_src(&e, src);
    e.attempt = attempt;
    e.max_attempts = max_attempts;
    e.delay = delay > 0 ? delay : 0;
    fill_error(&e, err);
    push(q, &e);
}

void s2_event_reconnect(s2_events *q, const s2_event_src *src, const char *reason,
                        const s2_error *err) {
    if (!s2_events_on(q)) return;
    s2_event e;
    memset(&e, 0, sizeof e);
    e.type = S2_EVENT_RECONNECT;
    fill_src(&e, src);
    COPY(e.reason, reason);
    fill_error(&e, err);
    push(q, &e);
}

void s2_event_connection(s2_events *q, s2_event_type type, const char *host,
                         const char *http, const char *reason, const s2_error *err) {
    if (!s2_events_on(q)) return;
    s2_event e;
    memset(&e, 0, sizeof e);
    e.type = type;
    COPY(e.host, host);
    COPY(e.http, http);
    COPY(e.reason, reason);
    fill_error(&e, err);
    push(q, &e);
}

void s2_event_session_failed(s2_events *q, const s2_event_src *src, const s2_error *err) {
    if (!s2_events_on(q)) return;
    s2_event e;
    memset(&e, 0, sizeof e);
    e.type = S2_EVENT_SESSION_FAILED;
    fill_src(&e, src);
    fill_error(&e, err);
    push(q, &e);
}

void s2_event_records_discarded(s2_events *q, const s2_event_src *src, uint64_t records,
                                uint64_t batches, const s2_error *err) {
    if (!batches) return;
    s2_event e;
    memset(&e, 0, sizeof e);
    e.type = S2_EVENT_RECORDS_DISCARDED;
    fill_src(&e, src);
    e.count = records;
    e.batches = batches;
    fill_error(&e, err);
    if (!push(q, &e)) print_loss(&e); /* outside q->mu: a full stderr pipe stalls no one else */
}
