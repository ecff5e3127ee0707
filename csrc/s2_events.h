/* s2_events.h — observability events of a client (internal): a bounded queue per runtime
 * that the core's threads (the I/O thread, HTTP/1.1 and SSE workers) fill where something
 * worth logging happens (a retry, a reconnect, a connection opened or retired, a session
 * failed, records discarded), and that the binding drains into Lua tables for the client's
 * on_event handler (or s2.set_logger) at safe points of the Lua side. Nothing here touches
 * a lua_State, and nothing is queued unless the binding enabled the queue (a handler is
 * set): then every emit costs one atomic load.
 *
 * Events never carry request headers (the access token, an encryption key): only the names
 * of what was involved (basin, stream, method and path, host), numbers and error texts.
 *
 * Layering: below everything that emits (runtime, call, session, reader, sse); it uses only
 * libc and s2.h types, no other file of the core. */
#ifndef S2_EVENTS_H
#define S2_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "s2.h"

#define S2_EVENTS_CAPACITY 1024u /* events waiting for delivery; more are counted as dropped */

typedef enum s2_event_type {
    S2_EVENT_RETRY = 0,          /* a failed attempt is tried again after `delay` */
    S2_EVENT_RECONNECT,          /* a session moves to a new request stream */
    S2_EVENT_CONNECTION_OPENED,  /* an HTTP/2 connection is ready */
    S2_EVENT_CONNECTION_RETIRED, /* an HTTP/2 connection that was ready is gone */
    S2_EVENT_SESSION_FAILED,     /* a session failed for good */
    S2_EVENT_RECORDS_DISCARDED,  /* records of a session nobody watches were dropped */
    S2_EVENT_EVENTS_DROPPED,     /* the queue was full: `count` events were not kept */
} s2_event_type;

/* One event. Strings are "" when they do not apply. */
typedef struct s2_event {
    struct s2_event *next;
    s2_event_type type;
    double time;     /* wall clock, seconds since the epoch */
    char what[16];   /* "unary", "append_session", "producer", "read_session" */
    char basin[64];
    char stream[520];
    char method[8];   /* unary calls */
    char path[600];   /* unary calls: after the endpoint's path, query included */
    char host[320];   /* connections: the authority */
    char http[8];     /* connections: "2" */
    char reason[32];  /* reconnect, connection_retired */
    unsigned attempt; /* retry: the failed attempt, 1-based (consecutive failures) */
    unsigned max_attempts;
    double delay;     /* retry: seconds until the next attempt */
    bool has_error;
    int status;       /* the error's HTTP status, 0: none */
    char code[64];
    char message[512];
    uint64_t count;   /* records_discarded: records; events_dropped: events */
    uint64_t batches; /* records_discarded */
} s2_event;

typedef struct s2_events s2_events;

s2_events *s2_events_new(void);
void s2_events_free(s2_events *q);

/* Whether events are wanted (the binding set a handler). Any thread, lock-free. */
bool s2_events_on(const s2_events *q);
/* The binding: a handler exists (true) or not (false: what is queued is dropped). */
void s2_events_enable(s2_events *q, bool on);
/* The client is gone (collected, or the process exits): no more events; records_discarded
 * events still queued are written to stderr instead, as if no handler had been set. */
void s2_events_retire(s2_events *q);
/* The queued events, oldest first, and an events_dropped event last when some were not
 * kept; NULL when none. The caller frees the list with s2_events_list_free. */
s2_event *s2_events_take(s2_events *q);
void s2_events_list_free(s2_event *e);
/* Whether something waits to be taken (a cheap check before s2_events_take). */
bool s2_events_pending(const s2_events *q);

/* Provided by the runtime (s2_runtime.c): its queue, for the emit sites and the binding. */
s2_events *s2_runtime_events(s2_runtime *rt);

/* ---- the emit sites: one call each; nothing happens unless s2_events_on ---- */

/* Who an event is about: what kind of work, its basin and stream (NULL: none), or for a
 * unary call its method and path. */
typedef struct s2_event_src {
    const char *what;
    const char *basin;
    const char *stream;
    const char *method;
    const char *path;
} s2_event_src;

/* A failed attempt (the `attempt`-th in a row) is tried again in `delay` seconds. */
void s2_event_retry(s2_events *q, const s2_event_src *src, unsigned attempt,
                    unsigned max_attempts, double delay, const s2_error *err);
/* A session moves to a new request stream: reason "retry" (after a failure, err), or a
 * planned handover ("server_draining", "reconnect_advised", "stream_ended"). */
void s2_event_reconnect(s2_events *q, const s2_event_src *src, const char *reason,
                        const s2_error *err);
/* connection_opened (err NULL) or connection_retired (reason, and err when it failed). */
void s2_event_connection(s2_events *q, s2_event_type type, const char *host,
                         const char *http, const char *reason, const s2_error *err);
void s2_event_session_failed(s2_events *q, const s2_event_src *src, const s2_error *err);
/* Records of a session that nobody watches any more were dropped: queued for the handler,
 * or (no handler, the client gone, the queue full) written to stderr as one line. */
void s2_event_records_discarded(s2_events *q, const s2_event_src *src, uint64_t records,
                                uint64_t batches, const s2_error *err);

#endif /* S2_EVENTS_H */
