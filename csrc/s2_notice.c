/* s2_notice.c — completions and the notice socket (see s2_wait.h).
 *
 * The notice socket exists for OpenResty: a worker cannot poll an eventfd, but a cosocket
 * can read a unix socket without blocking the worker. The I/O thread accepts the worker's
 * dispatcher; any core thread that sets a completion writes its id there under mu with a
 * non-blocking write, and what the socket does not take waits in `out` until the I/O thread
 * sees it writable. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "s2_internal.h"
#include "s2_wait.h"

#define NOTICE_LEN 16u
#define NOTICE_BUFFER_MAX (1024u * 1024u) /* ids waiting for a peer: a lost one costs a waiter
                                           * one await slice (lua/s2/await.lua), not a hang */

/* ---- completions --------------------------------------------------------------------------- */

void s2_completion_init(s2_completion *c) {
    c->ready = false;
    c->fd = -1;
    c->notice = 0;
}

void s2_completion_free(s2_completion *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}

static void ring(int fd) {
    uint64_t one = 1;
    ssize_t n = write(fd, &one, sizeof one);
    (void)n; /* EAGAIN: readable already */
}

void s2_completion_set_locked(s2_notices *n, s2_completion *c) {
    if (!c->ready) {
        c->ready = true;
        if (c->fd >= 0) ring(c->fd);
    }
    if (c->notice) {
        s2_notices_post_locked(n, c->notice);
        c->notice = 0;
    }
}

void s2_completion_clear_locked(s2_completion *c) {
    if (!c->ready) return;
    c->ready = false;
    if (c->fd >= 0) {
        uint64_t v;
        ssize_t n = read(c->fd, &v, sizeof v);
        (void)n;
    }
}

int s2_completion_fd_locked(s2_completion *c) {
    if (c->fd < 0) {
        c->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (c->fd >= 0 && c->ready) ring(c->fd);
    }
    return c->fd;
}

uint64_t s2_completion_arm_locked(s2_notices *n, s2_completion *c) {
    if (!n) return 0;
    if (!c->notice) c->notice = s2_notices_next_id_locked(n);
    uint64_t id = c->notice;
    if (c->ready) {
        s2_notices_post_locked(n, id);
        c->notice = 0;
    }
    return id;
}

/* ---- the notice socket ----------------------------------------------------------------------- */

struct s2_notices {
    pthread_mutex_t *mu; /* the runtime's: guards every field marked under mu */
    int epfd;            /* the I/O thread's loop, which accepts and flushes */
    s2_io_watch listen_watch, peer_watch;
    int listen_fd, peer_fd;  /* under mu */
    bool peer_wants_out;     /* under mu: EPOLLOUT asked for (out holds bytes) */
    char path[108];          /* under mu: "" until listening */
    uint64_t next_id;        /* under mu */
    s2_buf out;              /* under mu: ids not written yet */
    size_t out_off;
    uint64_t *progress;      /* under mu: ids armed for the next progress */
    size_t nprogress, progress_cap;
    double last_post; /* under mu: when a notice last went out (heartbeats) */
    double listen_paused_until; /* under mu: accept failed (no fd left): not watched till then */
};

static void on_listen(s2_io_watch *w, uint32_t events);
static void on_peer(s2_io_watch *w, uint32_t events);

s2_notices *s2_notices_new(pthread_mutex_t *mu, int epfd) {
    s2_notices *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    n->mu = mu;
    n->epfd = epfd;
    n->listen_watch.on_events = on_listen;
    n->peer_watch.on_events = on_peer;
    n->listen_fd = n->peer_fd = -1;
    s2_buf_init(&n->out);
    return n;
}

void s2_notices_free(s2_notices *n) {
    if (!n) return;
    if (n->peer_fd >= 0) close(n->peer_fd);
    if (n->listen_fd >= 0) close(n->listen_fd);
    if (n->path[0]) unlink(n->path);
    s2_buf_free(&n->out);
    free(n->progress);
    free(n);
}

uint64_t s2_notices_next_id_locked(s2_notices *n) {
    return ++n->next_id;
}

static void watch(s2_notices *n, int op, int fd, uint32_t events, s2_io_watch *w) {
    struct epoll_event ev = {.events = events, .data.ptr = w};
    epoll_ctl(n->epfd, op, fd, &ev);
}

static void peer_close(s2_notices *n) {
    if (n->peer_fd < 0) return;
    watch(n, EPOLL_CTL_DEL, n->peer_fd, 0, NULL);
    close(n->peer_fd);
    n->peer_fd = -1;
    n->peer_wants_out = false;
}

void s2_notices_stop_locked(s2_notices *n) {
    peer_close(n);
    if (n->listen_fd >= 0) {
        watch(n, EPOLL_CTL_DEL, n->listen_fd, 0, NULL);
        close(n->listen_fd);
        n->listen_fd = -1;
    }
    if (n->path[0]) unlink(n->path);
    n->path[0] = 0;
}

/* Writes what the peer takes; asks for EPOLLOUT while bytes are left. under mu */
static void flush_out(s2_notices *n) {
    while (n->peer_fd >= 0 && n->out_off < n->out.len) {
        ssize_t w = send(n->peer_fd, n->out.data + n->out_off, n->out.len - n->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            n->out_off += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            peer_close(n); /* gone: keep the bytes for the next peer */
            return;
        }
    }
    if (n->out_off == n->out.len) n->out.len = n->out_off = 0;
    bool want = n->peer_fd >= 0 && n->out_off < n->out.len;
    if (n->peer_fd >= 0 && want != n->peer_wants_out) {
        watch(n, EPOLL_CTL_MOD, n->peer_fd, EPOLLIN | (want ? EPOLLOUT : 0),
                         &n->peer_watch);
        n->peer_wants_out = want;
    }
}

void s2_notices_post_locked(s2_notices *n, uint64_t id) {
    if (n->out.len - n->out_off + NOTICE_LEN > NOTICE_BUFFER_MAX) return;
    if (n->out_off > 0 && n->out_off == n->out.len) n->out.len = n->out_off = 0;
    char text[NOTICE_LEN + 1];
    snprintf(text, sizeof text, "%016llx", (unsigned long long)id);
    if (s2_buf_append(&n->out, text, NOTICE_LEN) != 0) return; /* lost: the slice recovers */
    n->last_post = s2_now();
    flush_out(n);
}

void s2_notices_tick_locked(s2_notices *n, double now) {
    if (n->listen_paused_until > 0 && now >= n->listen_paused_until && n->listen_fd >= 0) {
        n->listen_paused_until = 0;
        watch(n, EPOLL_CTL_MOD, n->listen_fd, EPOLLIN, &n->listen_watch);
    }
    if (n->peer_fd >= 0 && now - n->last_post >= 1.0) {
        s2_notices_post_locked(n, 0);
        if (n->last_post < now) n->last_post = now; /* dropped (buffer full): next in 1 s */
    }
}

double s2_notices_next_deadline_locked(const s2_notices *n) {
    double d = n->listen_paused_until > 0 && n->listen_fd >= 0 ? n->listen_paused_until : 0;
    if (n->peer_fd >= 0 && (!d || n->last_post + 1.0 < d)) d = n->last_post + 1.0;
    return d;
}

uint64_t s2_notices_arm_progress_locked(s2_notices *n) {
    if (n->nprogress == n->progress_cap) {
        size_t cap = n->progress_cap ? n->progress_cap * 2 : 16;
        uint64_t *p = realloc(n->progress, cap * sizeof *p);
        if (!p) return 0;
        n->progress = p;
        n->progress_cap = cap;
    }
    uint64_t id = s2_notices_next_id_locked(n);
    n->progress[n->nprogress++] = id;
    return id;
}

void s2_notices_progress_locked(s2_notices *n) {
    size_t k = n->nprogress;
    n->nprogress = 0;
    for (size_t i = 0; i < k; i++) s2_notices_post_locked(n, n->progress[i]);
}

/* I/O thread: the peer wrote (it never should: drained and ignored) or closed, or has room. */
static void on_peer(s2_io_watch *w, uint32_t events) {
    s2_notices *n = (s2_notices *)((char *)w - offsetof(s2_notices, peer_watch));
    pthread_mutex_lock(n->mu);
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        char junk[256];
        ssize_t r = recv(n->peer_fd, junk, sizeof junk, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            peer_close(n);
    }
    if (n->peer_fd >= 0 && (events & EPOLLOUT)) flush_out(n);
    pthread_mutex_unlock(n->mu);
}

/* I/O thread: a dispatcher connects. Only this user's processes may. */
static void on_listen(s2_io_watch *w, uint32_t events) {
    (void)events;
    s2_notices *n = (s2_notices *)((char *)w - offsetof(s2_notices, listen_watch));
    pthread_mutex_lock(n->mu);
    for (;;) {
        int fd = accept4(n->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && errno == EINTR) continue;
        if (fd < 0 && (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)) {
            /* The connection stays queued and the socket readable: watched, it would spin
             * the I/O thread. Looked at again from the tick (at most a second later). */
            watch(n, EPOLL_CTL_MOD, n->listen_fd, 0, &n->listen_watch);
            n->listen_paused_until = s2_now() + 0.1;
            break;
        }
        if (fd < 0) break;
        struct ucred cred;
        socklen_t len = sizeof cred;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.uid != getuid()) {
            close(fd);
            continue;
        }
        peer_close(n);
        n->peer_fd = fd;
        watch(n, EPOLL_CTL_ADD, fd, EPOLLIN, &n->peer_watch);
        flush_out(n);
    }
    pthread_mutex_unlock(n->mu);
}

int s2_notices_path_locked(s2_notices *n, char *out, size_t cap, s2_error *err) {
    if (n->listen_fd < 0) {
        const char *dir = getenv("TMPDIR");
        if (!dir || !*dir || strlen(dir) > 60) dir = "/tmp";
        static atomic_uint seq;
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s/s2-notice-%d-%u.sock", dir,
                 (int)getpid(), atomic_fetch_add(&seq, 1));
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return s2_fail(err, S2_E_CONNECTION, "connection_failed", "notice socket: %s",
                           strerror(errno));
        unlink(sa.sun_path);
        /* Peers are checked by uid on accept, so the moment before chmod is harmless (umask
         * is process-wide and cannot be changed from a library thread). */
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || chmod(sa.sun_path, 0600) != 0 ||
            listen(fd, 8) != 0) {
            int e = errno;
            close(fd);
            return s2_fail(err, S2_E_CONNECTION, "connection_failed", "notice socket %s: %s",
                           sa.sun_path, strerror(e));
        }
        n->listen_fd = fd;
        memcpy(n->path, sa.sun_path, sizeof n->path);
        watch(n, EPOLL_CTL_ADD, fd, EPOLLIN, &n->listen_watch);
    }
    if (strlen(n->path) + 1 > cap)
        return s2_fail(err, S2_E_INVALID, "invalid", "notice path buffer too small");
    memcpy(out, n->path, strlen(n->path) + 1);
    return 0;
}
