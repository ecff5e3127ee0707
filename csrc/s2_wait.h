/* s2_wait.h — how a caller learns that something it waits for happened (internal).
 *
 * Everything a caller can wait for (a ticket, a unary call, a reader's next record, a
 * session's end) holds an s2_completion. The I/O thread (or whichever core thread finishes
 * the work) sets it under runtime->mu; a waiter learns of it in one of three ways, chosen by
 * lua/s2/await.lua for where the Lua code runs:
 *   - the runtime's condition variable (a plain script blocks its thread: s2_runtime_wait);
 *   - an eventfd, readable while the completion is set (cqueues, luv, copas poll it);
 *   - a notice: the completion's id written to the runtime's notice socket, a unix socket
 *     whose one peer is the OpenResty worker's dispatcher (a cosocket; nginx cannot poll an
 *     eventfd). One notice per armed completion, however many requests wait on it.
 * All of it is under runtime->mu. Nothing here blocks. */
#ifndef S2_WAIT_H
#define S2_WAIT_H

#include <stdbool.h>
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>

#include "s2.h"

typedef struct s2_notices s2_notices; /* the notice socket, below */

typedef struct s2_completion {
    bool ready;      /* under mu */
    int fd;          /* under mu: eventfd made on request, readable while ready; -1: none */
    uint64_t notice; /* under mu: armed with this id (posted once ready); 0: not armed */
} s2_completion;

void s2_completion_init(s2_completion *c);
/* Closes the fd. */
void s2_completion_free(s2_completion *c);
/* Sets it: rings the fd, posts the armed notice. The caller broadcasts the runtime's cond
 * (once for many: an ack resolves several tickets). under mu */
void s2_completion_set_locked(s2_notices *n, s2_completion *c);
/* Not ready any more (a reader whose buffer ran dry): drains the fd. under mu */
void s2_completion_clear_locked(s2_completion *c);
/* The eventfd (made now if needed), or -1 when none can be made. under mu */
int s2_completion_fd_locked(s2_completion *c);
/* Arms a notice and returns its id; posts it at once when already set. 0: no notice socket
 * could be made. under mu */
uint64_t s2_completion_arm_locked(s2_notices *n, s2_completion *c);

/* ---- the notice socket (s2_notice.c) ------------------------------------------------------
 * Each notice on the wire is the id as 16 lowercase hex digits. The socket file is made on
 * first use in $TMPDIR (or /tmp), mode 0600, only this uid's peers are accepted, and it is
 * removed when the runtime stops. A new peer replaces the old one (a dispatcher restarted);
 * notices posted while no peer is connected wait in a bounded buffer. */

/* mu: the lock that guards the notices (the runtime's); epfd: the loop that serves them. */
s2_notices *s2_notices_new(pthread_mutex_t *mu, int epfd);
void s2_notices_free(s2_notices *n); /* closes and removes the socket */
/* The socket's path into out (made and listening on first call). under mu */
int s2_notices_path_locked(s2_notices *n, char *out, size_t cap,
                           s2_error *err);
/* A heartbeat (id 0) after a second without notices, so the peer's reads time out only
 * when the runtime is gone. I/O thread, under mu */
void s2_notices_tick_locked(s2_notices *n, double now);
/* When s2_notices_tick_locked next has something to do (0: nothing is due), so that the I/O
 * thread sleeps until then and not a moment less. I/O thread, under mu */
double s2_notices_next_deadline_locked(const s2_notices *n);
/* Closes the sockets and removes the file (the runtime stopped). under mu */
void s2_notices_stop_locked(s2_notices *n);
/* A fresh id, never 0. under mu */
uint64_t s2_notices_next_id_locked(s2_notices *n);
void s2_notices_post_locked(s2_notices *n, uint64_t id);
/* Ids armed for "the next progress" (capacity freed, a session ended: waits that are not
 * one completion) are posted all at once by s2_notices_progress_locked. under mu */
uint64_t s2_notices_arm_progress_locked(s2_notices *n);
void s2_notices_progress_locked(s2_notices *n);

/* ---- provided by the runtime (s2_runtime.c) ---- */

/* A file descriptor the I/O thread's epoll loop watches: on_events runs on the I/O thread. */
typedef struct s2_io_watch {
    void (*on_events)(struct s2_io_watch *w, uint32_t events);
} s2_io_watch;

/* epoll_ctl on the runtime's loop (op: EPOLL_CTL_ADD / MOD / DEL). Any thread. */
int s2_runtime_watch(s2_runtime *rt, int op, int fd, uint32_t events, s2_io_watch *w);
/* Starts the I/O thread if it is not running. under mu */
int s2_runtime_start_locked(s2_runtime *rt, s2_error *err);
s2_notices *s2_runtime_notices(s2_runtime *rt);

#endif /* S2_WAIT_H */
