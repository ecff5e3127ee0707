/*
 * fault_proxy — a loopback TCP proxy that injects faults, for tests.
 *
 *   fault_proxy --listen PORT --target HOST:PORT [--control PORT] [--seed N]
 *               [--exit-on-stdin-eof] [-v]
 *   fault_proxy --echo-server PORT [--exit-on-stdin-eof] [-v]     (test helper)
 *   fault_proxy --client PORT < in > out                           (test helper)
 *
 * It listens on 127.0.0.1:PORT (0 = any free port) and, for every accepted
 * connection, opens one to the target (HOST must be 127.0.0.1 or localhost) and
 * forwards bytes both ways, untouched: it knows nothing of HTTP, so HTTP/1.1 and
 * h2c (prior knowledge or upgrade) pass through alike. When ready it prints, on
 * stdout, flushed, `control <port>` (only with --control) and then
 * `listening <port>`; `listening` is always the last line and means "ready".
 *
 * Design. One thread, one epoll loop, level-triggered, non-blocking sockets. A
 * connection is a pair (client fd, server fd) and two directions, up
 * (client->server) and down (server->client). Each direction holds a FIFO of
 * chunks (one per recv, <= 64 KiB) stamped with the time they may be sent
 * (arrival + delay). Reading from a side pauses while its direction holds
 * >= 1 MiB (so a slow or stalled receiver pushes back through TCP to the
 * sender) and, for the upstream side, until the connect to the target is done.
 * Writes go out as soon as a chunk is due; EPOLLOUT is asked for only after
 * EAGAIN. After every wakeup all connections are "pumped" (flush what is due,
 * recompute interest), and epoll_wait sleeps until the next fd event or the
 * earliest due time (delayed chunk, end of stall, cut drain poll): nothing
 * ever spins. A side that reports EPOLLHUP while we do not want to read it is
 * removed from epoll until we do (EPOLLHUP cannot be masked). Objects closed
 * during a batch of events are freed only after the batch.
 *
 * Half-close: when one side sends FIN (recv == 0), the direction is drained and
 * then shutdown(SHUT_WR) is done on the other side; when both directions have
 * been half-closed this way the pair is closed normally. A reset or socket error
 * on either side (or a failed connect to the target) closes both sides with
 * SO_LINGER 0, i.e. an RST is passed on. These are not counted as cuts.
 *
 * Control protocol (with --control): plain text over TCP on 127.0.0.1, one
 * command per line (\n or \r\n, <= 1 KiB), one answer line per command,
 * `ok ...` or `err <reason>`. Any number of commands per connection.
 *   cut_after N          each new connection is cut once N bytes have been read
 *                        from the client (and forwarded to the server); 0 = off
 *   cut_after_down N     same, counting server->client bytes; 0 = off
 *   cut_random P MIN MAX each new connection, with probability P (0..1), is cut
 *                        after T bytes, T uniform in [MIN, MAX], counting the
 *                        bytes of BOTH directions together (T = 0: the client
 *                        is cut right after accept). `cut_random 0 0 0` = off
 *   seed N               reseed the RNG used by cut_random (default seed 1, or
 *                        --seed); the draws are: per new connection, one for P,
 *                        and if cut, one for T
 *   cut_all              cut every open connection now (queued data dropped);
 *                        answers `ok cut_all <count>`
 *   stall MS             hold all server->client data on every connection
 *                        (open and new) for MS ms; data is kept, not dropped,
 *                        and reading from servers continues up to the 1 MiB
 *                        per-connection cap. `stall 0` ends a stall now. A new
 *                        stall replaces the running one.
 *   delay MS             every chunk read from now on, both ways, is sent MS ms
 *                        after it arrived; 0 = off (chunks already queued keep
 *                        their time)
 *   refuse on|off        accept new connections and close them at once (RST)
 *   stats                `ok conns=N open=N cuts=N bytes_up=N bytes_down=N
 *                        refused=N`: conns = accepted in total (refused ones
 *                        too), open = pairs open now, cuts = connections cut by
 *                        a fault, bytes_* = bytes written to the server/client
 *   reset                all faults off: thresholds, random cuts, stall, delay,
 *                        refuse; open connections lose their cut thresholds
 *                        too (ones already being cut still are). Stats kept.
 *   show                 current settings; ping -> `ok pong`; help
 *
 * Which connections a fault applies to: cut_after, cut_after_down and
 * cut_random are decided when a connection is accepted and stay with it
 * (changing them later does not touch open connections; `reset` clears them,
 * `cut_all` cuts everything). stall, delay and refuse are global and immediate.
 *
 * A cut: once a threshold is reached, no more bytes are read from either side
 * (the read that reaches it is shortened, so exactly N bytes pass); the bytes
 * up to the threshold are delivered to their destination (respecting delay and
 * stall) and the proxy waits until the kernel has handed them to the peer
 * (TIOCOUTQ == 0, polled every 2 ms, at most 1 s) so the peer can read exactly
 * N bytes before it sees the reset; then both sides are closed with SO_LINGER
 * 0 (RST). Meanwhile the other direction's queue keeps being flushed (nothing
 * new is read); whatever it still holds at the RST is dropped. So: the peer
 * that receives the cut direction reads exactly N bytes (if it keeps reading),
 * the other peer reads at most what had crossed before the cut.
 *
 * Test helpers in the same binary:
 *   --echo-server PORT   listen on 127.0.0.1:PORT, echo every byte back, and
 *                        answer a FIN with a FIN once everything is echoed.
 *                        Prints `listening <port>`.
 *   --client PORT        connect to 127.0.0.1:PORT, copy stdin to the socket
 *                        (shutdown(SHUT_WR) at stdin EOF) and the socket to
 *                        stdout until the peer ends. Exit status 0 if it ended
 *                        with a FIN, 2 with a reset, 3 if the connect failed,
 *                        1 on other errors; a summary goes to stderr.
 *
 * --exit-on-stdin-eof makes the server modes exit when stdin reaches EOF, so a
 * test harness that holds the write end of a pipe cannot leak the process.
 * SIGTERM / SIGINT close everything and exit with status 0.
 *
 * Build: cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -O2 -pthread \
 *           -o build/fault-proxy tools/fault_proxy.c
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK_MAX (64 * 1024)       /* bytes per recv */
#define QUEUE_CAP (1024 * 1024)     /* per direction; reading pauses at or above */
#define CUT_DRAIN_MAX_MS 1000       /* longest wait for the kernel to hand bytes over */
#define CUT_POLL_MS 2
#define ACCEPT_PAUSE_MS 100         /* after EMFILE & co */
#define CTL_LINE_MAX 1024
#define MAX_EVENTS 256
#define NO_LIMIT UINT64_MAX

enum kind { K_LISTEN, K_CTL_LISTEN, K_CTL, K_CLIENT, K_SERVER, K_SIGNAL, K_STDIN,
            K_ECHO_LISTEN, K_ECHO };

struct handle {
    enum kind kind;
    int fd;            /* -1 once closed */
    uint32_t events;   /* interest registered in epoll; 0 = not registered */
    int hup;           /* EPOLLHUP seen: keep out of epoll unless we want to read */
    void *owner;
};

struct chunk {
    struct chunk *next;
    int64_t due;       /* monotonic ms at which it may be sent */
    size_t len, off;
    char data[];
};

struct dir {
    struct chunk *head, *tail;
    size_t queued;     /* bytes read but not yet written */
    uint64_t nread;    /* bytes read from the source */
    int eof;           /* source sent FIN */
    int shut;          /* FIN passed on to the destination */
    int blocked;       /* last write got EAGAIN: want EPOLLOUT */
};

struct conn {
    struct conn *prev, *next;   /* live list; next = dead list once dead */
    struct handle ch, sh;       /* client side, server side */
    struct dir up, down;        /* up: client -> server, down: server -> client */
    int connecting, dead;
    uint64_t cut_up, cut_down, cut_any;   /* thresholds, 0 = none */
    struct dir *cutting;        /* direction that reached a threshold, or NULL */
    int64_t cut_deadline;       /* set once that direction is drained; 0 = not yet */
    uint64_t id;
};

struct ctl {
    struct ctl *prev, *next;
    struct handle h;
    size_t len;
    int dead;
    char in[CTL_LINE_MAX + 1];
};

struct echo {
    struct echo *prev, *next;
    struct handle h;
    size_t len, off;
    int eof, dead;
    char buf[CHUNK_MAX];
};

static struct {
    int ep;
    struct handle listen, ctl_listen, sig, in;
    struct sockaddr_in target;
    int verbose;
    int quit;
    int64_t accept_resume;      /* accepting paused until then; 0 = not paused */

    /* faults */
    uint64_t cut_up, cut_down;
    double rnd_p;
    uint64_t rnd_min, rnd_max;
    int64_t stall_until;        /* 0 = no stall */
    int64_t delay_ms;
    int refuse;
    uint64_t rng, seed;

    /* stats */
    uint64_t n_conns, n_open, n_cuts, n_refused, bytes_up, bytes_down;

    struct conn *conns, *dead_conns;
    struct ctl *ctls, *dead_ctls;
    struct echo *echos, *dead_echos;
    uint64_t next_id;
} g;

/* ---------------------------------------------------------------- utilities */

static void vlog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void vlog(const char *fmt, ...)
{
    if (!g.verbose) return;
    va_list ap;
    va_start(ap, fmt);
    fputs("fault_proxy: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void logw(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logw(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("fault_proxy: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t rng_next(void)       /* splitmix64 */
{
    uint64_t z = (g.rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unit(void) { return (double)(rng_next() >> 11) * 0x1.0p-53; }

static void rng_seed(uint64_t s) { g.seed = s; g.rng = s; }

/* Strict decimal parse of a whole token. */
static int parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+') return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

static int parse_port(const char *s, int *out)
{
    uint64_t v;
    if (parse_u64(s, &v) < 0 || v > 65535) return -1;
    *out = (int)v;
    return 0;
}

static int ep_set(struct handle *h, uint32_t want)
{
    if (h->fd < 0) return 0;
    if (h->hup && !(want & EPOLLIN)) want = 0;
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

static void close_handle(struct handle *h, int abortive)
{
    if (h->fd < 0) return;
    if (abortive) {
        struct linger lg = { .l_onoff = 1, .l_linger = 0 };
        (void)setsockopt(h->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(h->fd);   /* also leaves the epoll set */
    h->fd = -1;
    h->events = 0;
}

static int sock_error(int fd)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return errno;
    return err;
}

static void set_nodelay(int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* A non-blocking listening socket on 127.0.0.1:port; *bound gets the real port. */
static int listen_on(int port, int *bound)
{
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

/* ------------------------------------------------------------- connections */

static int stalled(int64_t now) { return g.stall_until != 0 && now < g.stall_until; }

static void dir_free(struct dir *d)
{
    struct chunk *c = d->head;
    while (c) {
        struct chunk *n = c->next;
        free(c);
        c = n;
    }
    d->head = d->tail = NULL;
    d->queued = 0;
}

static void conn_finish(struct conn *c, int abortive, const char *why)
{
    if (c->dead) return;
    vlog("conn %" PRIu64 " closed (%s) up=%" PRIu64 " down=%" PRIu64, c->id, why,
         c->up.nread, c->down.nread);
    close_handle(&c->ch, abortive);
    close_handle(&c->sh, abortive);
    dir_free(&c->up);
    dir_free(&c->down);
    c->dead = 1;
    if (c->prev) c->prev->next = c->next; else g.conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = NULL;
    c->next = g.dead_conns;
    g.dead_conns = c;
    g.n_open--;
}

static void conn_abort(struct conn *c, const char *why) { conn_finish(c, 1, why); }

static void conn_cut(struct conn *c, const char *why)
{
    if (c->dead) return;
    g.n_cuts++;
    conn_finish(c, 1, why);
}

/* How many more bytes may be read in direction d before a threshold is hit. */
static uint64_t cut_room(const struct conn *c, const struct dir *d)
{
    uint64_t room = NO_LIMIT;
    uint64_t own = d == &c->up ? c->cut_up : c->cut_down;
    if (own) room = own > d->nread ? own - d->nread : 0;
    if (c->cut_any) {
        uint64_t both = c->up.nread + c->down.nread;
        uint64_t r = c->cut_any > both ? c->cut_any - both : 0;
        if (r < room) room = r;
    }
    return room;
}

static int may_read(const struct conn *c, const struct dir *d)
{
    return !c->connecting && !c->cutting && !d->eof && d->queued < QUEUE_CAP;
}

/* Reads what is available from fd into d. Returns -1 if the pair was closed. */
static int dir_read(struct conn *c, struct dir *d, int fd, int64_t now)
{
    char buf[CHUNK_MAX];
    while (may_read(c, d)) {
        size_t want = sizeof buf;
        uint64_t room = cut_room(c, d);
        if (room < want) want = (size_t)room;
        ssize_t n = recv(fd, buf, want, 0);
        if (n > 0) {
            struct chunk *ch = malloc(sizeof *ch + (size_t)n);
            if (!ch) {
                logw("out of memory: dropping connection %" PRIu64, c->id);
                conn_abort(c, "out of memory");
                return -1;
            }
            ch->next = NULL;
            ch->due = now + g.delay_ms;
            ch->len = (size_t)n;
            ch->off = 0;
            memcpy(ch->data, buf, (size_t)n);
            if (d->tail) d->tail->next = ch; else d->head = ch;
            d->tail = ch;
            d->queued += (size_t)n;
            d->nread += (uint64_t)n;
            if (room != NO_LIMIT && (uint64_t)n >= room) {
                vlog("conn %" PRIu64 " reached its cut threshold (%s)", c->id,
                     d == &c->up ? "up" : "down");
                c->cutting = d;
            }
            continue;
        }
        if (n == 0) {
            d->eof = 1;
            vlog("conn %" PRIu64 " %s EOF", c->id, d == &c->up ? "client" : "server");
            break;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        conn_abort(c, strerror(errno));
        return -1;
    }
    return 0;
}

/* Writes the due chunks of d to fd. Returns -1 if the pair was closed. */
static int dir_flush(struct conn *c, struct dir *d, int fd, int held, int64_t now,
                     uint64_t *counter)
{
    d->blocked = 0;
    while (d->head && !held && d->head->due <= now) {
        struct chunk *ch = d->head;
        ssize_t n = send(fd, ch->data + ch->off, ch->len - ch->off, MSG_NOSIGNAL);
        if (n > 0) {
            ch->off += (size_t)n;
            d->queued -= (size_t)n;
            *counter += (uint64_t)n;
            if (ch->off == ch->len) {
                d->head = ch->next;
                if (!d->head) d->tail = NULL;
                free(ch);
            }
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            d->blocked = 1;
            break;
        }
        conn_abort(c, n < 0 ? strerror(errno) : "short send");
        return -1;
    }
    if (!d->head && d->eof && !d->shut && !c->cutting) {
        if (shutdown(fd, SHUT_WR) < 0 && errno != ENOTCONN) {
            conn_abort(c, strerror(errno));
            return -1;
        }
        d->shut = 1;
    }
    return 0;
}

static void conn_pump(struct conn *c, int64_t now)
{
    if (c->dead) return;
    if (c->connecting) {
        ep_set(&c->ch, 0);
        ep_set(&c->sh, EPOLLOUT);
        return;
    }
    if (dir_flush(c, &c->up, c->sh.fd, 0, now, &g.bytes_up) < 0) return;
    if (dir_flush(c, &c->down, c->ch.fd, stalled(now), now, &g.bytes_down) < 0) return;
    if (c->cutting && !c->cutting->head) {
        int dest = c->cutting == &c->up ? c->sh.fd : c->ch.fd;
        int outq = 0;
        if (!c->cut_deadline) c->cut_deadline = now + CUT_DRAIN_MAX_MS;
        if (ioctl(dest, TIOCOUTQ, &outq) < 0 || outq <= 0 || now >= c->cut_deadline) {
            conn_cut(c, "cut: threshold reached");
            return;
        }
    }
    if (c->up.shut && c->down.shut) {
        conn_finish(c, 0, "both sides done");
        return;
    }
    ep_set(&c->ch, (may_read(c, &c->up) ? EPOLLIN : 0) | (c->down.blocked ? EPOLLOUT : 0));
    ep_set(&c->sh, (may_read(c, &c->down) ? EPOLLIN : 0) | (c->up.blocked ? EPOLLOUT : 0));
}

/* Earliest time (ms) at which conn c needs attention without an fd event. */
static int64_t conn_due(const struct conn *c, int64_t now)
{
    int64_t due = INT64_MAX;
    if (c->dead || c->connecting) return due;
    /* A head that is due but unsent and not waiting for EPOLLOUT gives 0. */
    if (c->up.head && !c->up.blocked) due = c->up.head->due;
    if (c->down.head && !c->down.blocked && !stalled(now) && c->down.head->due < due)
        due = c->down.head->due;
    if (c->cutting && !c->cutting->head) {
        int64_t t = now + CUT_POLL_MS;
        if (c->cut_deadline && c->cut_deadline < t) t = c->cut_deadline;
        if (t < due) due = t;
    }
    return due;
}

static void on_accept(int64_t now)
{
    for (;;) {
        int fd = accept4(g.listen.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            logw("accept: %s (pausing %d ms)", strerror(errno), ACCEPT_PAUSE_MS);
            ep_set(&g.listen, 0);
            g.accept_resume = now + ACCEPT_PAUSE_MS;
            return;
        }
        g.n_conns++;
        if (g.refuse) {
            g.n_refused++;
            struct handle tmp = { .kind = K_CLIENT, .fd = fd };
            close_handle(&tmp, 1);
            vlog("refused a connection");
            continue;
        }
        struct conn *c = calloc(1, sizeof *c);
        int sfd = c ? socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) : -1;
        if (sfd < 0) {
            logw("%s: dropping a connection", c ? strerror(errno) : "out of memory");
            free(c);
            struct handle tmp = { .kind = K_CLIENT, .fd = fd };
            close_handle(&tmp, 1);
            continue;
        }
        c->id = ++g.next_id;
        c->ch = (struct handle){ .kind = K_CLIENT, .fd = fd, .owner = c };
        c->sh = (struct handle){ .kind = K_SERVER, .fd = sfd, .owner = c };
        c->connecting = 1;
        c->cut_up = g.cut_up;
        c->cut_down = g.cut_down;
        c->next = g.conns;
        if (g.conns) g.conns->prev = c;
        g.conns = c;
        g.n_open++;
        set_nodelay(fd);
        set_nodelay(sfd);
        int random_cut_now = 0;
        if (g.rnd_p > 0 && rng_unit() < g.rnd_p) {
            uint64_t span = g.rnd_max - g.rnd_min;
            uint64_t t = g.rnd_min + (span == UINT64_MAX ? rng_next() : rng_next() % (span + 1));
            if (t == 0) random_cut_now = 1; else c->cut_any = t;
            vlog("conn %" PRIu64 " will be cut after %" PRIu64 " bytes", c->id, t);
        }
        vlog("conn %" PRIu64 " accepted", c->id);
        if (random_cut_now) {
            conn_cut(c, "cut: random threshold 0");
            continue;
        }
        if (connect(sfd, (struct sockaddr *)&g.target, sizeof g.target) == 0) {
            c->connecting = 0;
        } else if (errno != EINPROGRESS) {
            logw("connect to target: %s", strerror(errno));
            conn_abort(c, "connect failed");
            continue;
        }
        conn_pump(c, now);
    }
}

static void on_conn_event(struct handle *h, uint32_t ev, int64_t now)
{
    struct conn *c = h->owner;
    if (c->dead) return;
    if (ev & EPOLLHUP) h->hup = 1;
    if (h->kind == K_SERVER && c->connecting) {
        int err = sock_error(h->fd);
        if (err) {
            logw("connect to target: %s", strerror(err));
            conn_abort(c, "connect failed");
            return;
        }
        if (!(ev & EPOLLOUT)) return;
        c->connecting = 0;
        vlog("conn %" PRIu64 " connected upstream", c->id);
        conn_pump(c, now);
        return;
    }
    struct dir *src = h->kind == K_CLIENT ? &c->up : &c->down;
    if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) && may_read(c, src))
        if (dir_read(c, src, h->fd, now) < 0) return;
    if (ev & EPOLLERR) {
        int err = sock_error(h->fd);
        if (err) {
            conn_abort(c, strerror(err));
            return;
        }
    }
    conn_pump(c, now);
}

/* ---------------------------------------------------------------- control */

static void ctl_close(struct ctl *k)
{
    if (k->dead) return;
    close_handle(&k->h, 0);
    k->dead = 1;
    if (k->prev) k->prev->next = k->next; else g.ctls = k->next;
    if (k->next) k->next->prev = k->prev;
    k->prev = NULL;
    k->next = g.dead_ctls;
    g.dead_ctls = k;
}

static void reset_faults(void)
{
    g.cut_up = g.cut_down = 0;
    g.rnd_p = 0;
    g.rnd_min = g.rnd_max = 0;
    g.stall_until = 0;
    g.delay_ms = 0;
    g.refuse = 0;
    for (struct conn *c = g.conns; c; c = c->next)
        c->cut_up = c->cut_down = c->cut_any = 0;
}

/* Runs one command line; writes the answer (no newline) into out. */
static void ctl_exec(char *line, char *out, size_t outsz, int64_t now)
{
    char *argv[6];
    int argc = 0;
    char *save = NULL;
    for (char *t = strtok_r(line, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
        if (argc == 5) {
            snprintf(out, outsz, "err too many arguments");
            return;
        }
        argv[argc++] = t;
    }
    argv[argc] = NULL;
    if (argc == 0) {
        snprintf(out, outsz, "err empty command");
        return;
    }
    const char *cmd = argv[0];
    uint64_t a = 0, b = 0;

#define NEED(n)                                                              \
    do {                                                                     \
        if (argc != (n) + 1) {                                               \
            snprintf(out, outsz, "err %s takes %d argument%s", cmd, (n),     \
                     (n) == 1 ? "" : "s");                                   \
            return;                                                          \
        }                                                                    \
    } while (0)
#define NUM(i, var)                                                          \
    do {                                                                     \
        if (parse_u64(argv[i], &(var)) < 0) {                                \
            snprintf(out, outsz, "err %s: bad number '%s'", cmd, argv[i]);   \
            return;                                                          \
        }                                                                    \
    } while (0)

    if (!strcmp(cmd, "cut_after")) {
        NEED(1); NUM(1, a);
        g.cut_up = a;
        snprintf(out, outsz, "ok cut_after %" PRIu64, a);
    } else if (!strcmp(cmd, "cut_after_down")) {
        NEED(1); NUM(1, a);
        g.cut_down = a;
        snprintf(out, outsz, "ok cut_after_down %" PRIu64, a);
    } else if (!strcmp(cmd, "cut_random")) {
        NEED(3);
        char *end;
        errno = 0;
        double p = strtod(argv[1], &end);
        if (errno || *end || !(p >= 0.0 && p <= 1.0)) {
            snprintf(out, outsz, "err cut_random: probability must be in [0, 1]");
            return;
        }
        NUM(2, a); NUM(3, b);
        if (a > b) {
            snprintf(out, outsz, "err cut_random: MIN > MAX");
            return;
        }
        g.rnd_p = p;
        g.rnd_min = a;
        g.rnd_max = b;
        snprintf(out, outsz, "ok cut_random %g %" PRIu64 " %" PRIu64, p, a, b);
    } else if (!strcmp(cmd, "seed")) {
        NEED(1); NUM(1, a);
        rng_seed(a);
        snprintf(out, outsz, "ok seed %" PRIu64, a);
    } else if (!strcmp(cmd, "cut_all")) {
        NEED(0);
        unsigned n = 0;
        while (g.conns) {
            conn_cut(g.conns, "cut: cut_all");
            n++;
        }
        snprintf(out, outsz, "ok cut_all %u", n);
    } else if (!strcmp(cmd, "stall")) {
        NEED(1); NUM(1, a);
        if (a > 86400000) {
            snprintf(out, outsz, "err stall: at most 86400000 ms");
            return;
        }
        g.stall_until = a ? now + (int64_t)a : 0;
        snprintf(out, outsz, "ok stall %" PRIu64, a);
    } else if (!strcmp(cmd, "delay")) {
        NEED(1); NUM(1, a);
        if (a > 86400000) {
            snprintf(out, outsz, "err delay: at most 86400000 ms");
            return;
        }
        g.delay_ms = (int64_t)a;
        snprintf(out, outsz, "ok delay %" PRIu64, a);
    } else if (!strcmp(cmd, "refuse")) {
        NEED(1);
        if (!strcmp(argv[1], "on")) g.refuse = 1;
        else if (!strcmp(argv[1], "off")) g.refuse = 0;
        else {
            snprintf(out, outsz, "err refuse takes on or off");
            return;
        }
        snprintf(out, outsz, "ok refuse %s", g.refuse ? "on" : "off");
    } else if (!strcmp(cmd, "stats")) {
        NEED(0);
        snprintf(out, outsz,
                 "ok conns=%" PRIu64 " open=%" PRIu64 " cuts=%" PRIu64 " bytes_up=%" PRIu64
                 " bytes_down=%" PRIu64 " refused=%" PRIu64,
                 g.n_conns, g.n_open, g.n_cuts, g.bytes_up, g.bytes_down, g.n_refused);
    } else if (!strcmp(cmd, "reset")) {
        NEED(0);
        reset_faults();
        snprintf(out, outsz, "ok reset");
    } else if (!strcmp(cmd, "show")) {
        NEED(0);
        snprintf(out, outsz,
                 "ok cut_after=%" PRIu64 " cut_after_down=%" PRIu64 " cut_random=%g,%" PRIu64
                 ",%" PRIu64 " seed=%" PRIu64 " stall_left=%" PRId64 " delay=%" PRId64
                 " refuse=%s",
                 g.cut_up, g.cut_down, g.rnd_p, g.rnd_min, g.rnd_max, g.seed,
                 stalled(now) ? g.stall_until - now : 0, g.delay_ms, g.refuse ? "on" : "off");
    } else if (!strcmp(cmd, "ping")) {
        NEED(0);
        snprintf(out, outsz, "ok pong");
    } else if (!strcmp(cmd, "help")) {
        snprintf(out, outsz,
                 "ok commands: cut_after N | cut_after_down N | cut_random P MIN MAX | seed N"
                 " | cut_all | stall MS | delay MS | refuse on|off | stats | reset | show"
                 " | ping");
    } else {
        snprintf(out, outsz, "err unknown command '%.64s'", cmd);
    }
#undef NEED
#undef NUM
}

static void ctl_reply(struct ctl *k, const char *s)
{
    char buf[CTL_LINE_MAX + 2];
    int n = snprintf(buf, sizeof buf, "%s\n", s);
    if (n < 0 || (size_t)n >= sizeof buf) n = (int)strlen(buf);
    /* Answers are tiny; a client that does not read them is dropped. */
    ssize_t w = send(k->h.fd, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w != n) ctl_close(k);
}

static void on_ctl_event(struct ctl *k, int64_t now)
{
    if (k->dead) return;
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
        char answer[CTL_LINE_MAX];
        ctl_exec(k->in, answer, sizeof answer, now);
        vlog("control: %s", answer);
        memmove(k->in, k->in + used, k->len - used);
        k->len -= used;
        ctl_reply(k, answer);
        if (k->dead) return;
    }
    if (k->len >= CTL_LINE_MAX) {
        ctl_reply(k, "err line too long");
        ctl_close(k);
    }
}

static void on_ctl_accept(void)
{
    for (;;) {
        int fd = accept4(g.ctl_listen.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) logw("control accept: %s", strerror(errno));
            return;
        }
        struct ctl *k = calloc(1, sizeof *k);
        if (!k) {
            logw("out of memory: dropping a control connection");
            close(fd);
            continue;
        }
        k->h = (struct handle){ .kind = K_CTL, .fd = fd, .owner = k };
        k->next = g.ctls;
        if (g.ctls) g.ctls->prev = k;
        g.ctls = k;
        if (ep_set(&k->h, EPOLLIN) < 0) ctl_close(k);
    }
}

/* ------------------------------------------------------------ echo server */

static void echo_close(struct echo *e, int abortive)
{
    if (e->dead) return;
    close_handle(&e->h, abortive);
    e->dead = 1;
    if (e->prev) e->prev->next = e->next; else g.echos = e->next;
    if (e->next) e->next->prev = e->prev;
    e->prev = NULL;
    e->next = g.dead_echos;
    g.dead_echos = e;
}

static void on_echo_event(struct echo *e, uint32_t ev)
{
    if (e->dead) return;
    if (ev & EPOLLHUP) e->h.hup = 1;
    for (;;) {
        if (e->off < e->len) {
            ssize_t n = send(e->h.fd, e->buf + e->off, e->len - e->off, MSG_NOSIGNAL);
            if (n > 0) {
                e->off += (size_t)n;
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            echo_close(e, 1);
            return;
        }
        e->off = e->len = 0;
        if (e->eof) break;
        ssize_t n = recv(e->h.fd, e->buf, sizeof e->buf, 0);
        if (n > 0) {
            e->len = (size_t)n;
            continue;
        }
        if (n == 0) {
            e->eof = 1;
            break;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        echo_close(e, 1);
        return;
    }
    if (e->eof && e->off == e->len) {
        (void)shutdown(e->h.fd, SHUT_WR);
        echo_close(e, 0);
        return;
    }
    ep_set(&e->h, e->off < e->len ? EPOLLOUT : EPOLLIN);
}

static void on_echo_accept(void)
{
    for (;;) {
        int fd = accept4(g.listen.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) logw("accept: %s", strerror(errno));
            return;
        }
        struct echo *e = malloc(sizeof *e);
        if (!e) {
            logw("out of memory: dropping a connection");
            close(fd);
            continue;
        }
        memset(e, 0, offsetof(struct echo, buf));
        e->h = (struct handle){ .kind = K_ECHO, .fd = fd, .owner = e };
        e->next = g.echos;
        if (g.echos) g.echos->prev = e;
        g.echos = e;
        set_nodelay(fd);
        if (ep_set(&e->h, EPOLLIN) < 0) echo_close(e, 1);
    }
}

/* ------------------------------------------------------------ main loop */

static void free_dead(void)
{
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
    while (g.dead_echos) {
        struct echo *e = g.dead_echos;
        g.dead_echos = e->next;
        free(e);
    }
}

static int run_loop(void)
{
    struct epoll_event evs[MAX_EVENTS];
    while (!g.quit) {
        int64_t now = now_ms();
        int64_t due = INT64_MAX;
        if (stalled(now)) due = g.stall_until;
        if (g.accept_resume && g.accept_resume < due) due = g.accept_resume;
        for (struct conn *c = g.conns; c; c = c->next) {
            int64_t t = conn_due(c, now);
            if (t < due) due = t;
        }
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
        now = now_ms();
        for (int i = 0; i < n && !g.quit; i++) {
            struct handle *h = evs[i].data.ptr;
            uint32_t ev = evs[i].events;
            switch (h->kind) {
            case K_LISTEN: on_accept(now); break;
            case K_ECHO_LISTEN: on_echo_accept(); break;
            case K_CTL_LISTEN: on_ctl_accept(); break;
            case K_CTL: on_ctl_event(h->owner, now); break;
            case K_CLIENT:
            case K_SERVER: on_conn_event(h, ev, now); break;
            case K_ECHO: on_echo_event(h->owner, ev); break;
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
        if (g.stall_until && now >= g.stall_until) g.stall_until = 0;
        if (g.accept_resume && now >= g.accept_resume) {
            g.accept_resume = 0;
            ep_set(&g.listen, EPOLLIN);
        }
        for (struct conn *c = g.conns, *next; c; c = next) {
            next = c->next;
            conn_pump(c, now);
        }
        free_dead();
    }
    return 0;
}

static void shutdown_all(void)
{
    while (g.conns) conn_finish(g.conns, 1, "exiting");
    while (g.ctls) ctl_close(g.ctls);
    while (g.echos) echo_close(g.echos, 1);
    free_dead();
    close_handle(&g.listen, 0);
    close_handle(&g.ctl_listen, 0);
    if (g.sig.fd >= 0) close(g.sig.fd);
    if (g.ep >= 0) close(g.ep);
}

/* --------------------------------------------------------------- client mode */

static int run_client(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        logw("socket: %s", strerror(errno));
        return 1;
    }
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        fprintf(stderr, "client: connect failed: %s\n", strerror(errno));
        close(fd);
        return 3;
    }
    set_nodelay(fd);
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
        logw("fcntl: %s", strerror(errno));
        close(fd);
        return 1;
    }
    static char inbuf[CHUNK_MAX], netbuf[CHUNK_MAX];
    size_t pend = 0, poff = 0;
    int in_eof = 0, shut = 0, send_reset = 0, rc = -1;
    uint64_t sent = 0, got = 0;
    const char *end = "?";
    while (rc < 0) {
        struct pollfd p[2] = {
            { .fd = (!in_eof && pend == 0) ? 0 : -1, .events = POLLIN },
            { .fd = fd, .events = (short)(POLLIN | (pend > poff ? POLLOUT : 0)) },
        };
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            end = strerror(errno);
            rc = 1;
            break;
        }
        if (p[0].revents) {
            ssize_t r = read(0, inbuf, sizeof inbuf);
            if (r > 0) {
                pend = (size_t)r;
                poff = 0;
            } else if (r == 0 || errno != EINTR) {
                in_eof = 1;
            }
        }
        while (pend > poff) {
            ssize_t w = send(fd, inbuf + poff, pend - poff, MSG_NOSIGNAL);
            if (w > 0) {
                poff += (size_t)w;
                sent += (uint64_t)w;
                continue;
            }
            if (w < 0 && errno == EINTR) continue;
            if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            /* The peer is gone; what it sent may still be readable. */
            if (errno == ECONNRESET || errno == EPIPE) send_reset = 1;
            pend = poff = 0;
            in_eof = 1;
            shut = 1;
            break;
        }
        if (pend == poff) pend = poff = 0;
        if (in_eof && pend == 0 && !shut) {
            (void)shutdown(fd, SHUT_WR);
            shut = 1;
        }
        if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            for (;;) {
                ssize_t r = recv(fd, netbuf, sizeof netbuf, 0);
                if (r > 0) {
                    size_t off = 0;
                    while (off < (size_t)r) {
                        ssize_t w = write(1, netbuf + off, (size_t)r - off);
                        if (w < 0 && errno == EINTR) continue;
                        if (w <= 0) {
                            end = "stdout write failed";
                            rc = 1;
                            break;
                        }
                        off += (size_t)w;
                    }
                    if (rc >= 0) break;
                    got += (uint64_t)r;
                    continue;
                }
                if (r == 0) {
                    end = send_reset ? "reset" : "eof";
                    rc = send_reset ? 2 : 0;
                } else if (errno == EINTR) {
                    continue;
                } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    break;
                } else if (errno == ECONNRESET) {
                    end = "reset";
                    rc = 2;
                } else {
                    end = strerror(errno);
                    rc = 1;
                }
                break;
            }
        }
    }
    fprintf(stderr, "client: sent=%" PRIu64 " received=%" PRIu64 " end=%s\n", sent, got, end);
    close(fd);
    return rc;
}

/* ------------------------------------------------------------------- main */

static void usage(FILE *f)
{
    fputs("usage: fault_proxy --listen PORT --target HOST:PORT [--control PORT] [--seed N]\n"
          "                   [--exit-on-stdin-eof] [-v]\n"
          "       fault_proxy --echo-server PORT [--exit-on-stdin-eof] [-v]\n"
          "       fault_proxy --client PORT\n"
          "HOST must be 127.0.0.1 or localhost; PORT 0 picks a free port.\n"
          "See the comment at the top of tools/fault_proxy.c for the control protocol.\n",
          f);
}

int main(int argc, char **argv)
{
    int listen_port = -1, ctl_port = -1, echo_port = -1, client_port = -1;
    int exit_on_eof = 0;
    const char *target = NULL;
    uint64_t seed = 1;

    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(o, "--listen")) bad = parse_port(v, &listen_port), i++;
        else if (!strcmp(o, "--control")) bad = parse_port(v, &ctl_port), i++;
        else if (!strcmp(o, "--echo-server")) bad = parse_port(v, &echo_port), i++;
        else if (!strcmp(o, "--client")) bad = parse_port(v, &client_port), i++;
        else if (!strcmp(o, "--target")) bad = !v, target = v, i++;
        else if (!strcmp(o, "--seed")) bad = parse_u64(v, &seed), i++;
        else if (!strcmp(o, "--exit-on-stdin-eof")) exit_on_eof = 1;
        else if (!strcmp(o, "-v") || !strcmp(o, "--verbose")) g.verbose = 1;
        else if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "fault_proxy: unknown option '%s'\n", o);
            usage(stderr);
            return 64;
        }
        if (bad) {
            fprintf(stderr, "fault_proxy: bad or missing value for %s\n", o);
            return 64;
        }
    }

    signal(SIGPIPE, SIG_IGN);
    if (client_port >= 0) {
        if (client_port == 0) {
            fprintf(stderr, "fault_proxy: --client needs a real port\n");
            return 64;
        }
        return run_client(client_port);
    }

    int echo_mode = echo_port >= 0;
    if (!echo_mode) {
        if (listen_port < 0 || !target) {
            usage(stderr);
            return 64;
        }
        const char *colon = strrchr(target, ':');
        int tport;
        if (!colon || parse_port(colon + 1, &tport) < 0 || tport == 0) {
            fprintf(stderr, "fault_proxy: --target must be HOST:PORT\n");
            return 64;
        }
        size_t hl = (size_t)(colon - target);
        if (!((hl == 9 && !strncmp(target, "127.0.0.1", hl)) ||
              (hl == 9 && !strncmp(target, "localhost", hl)))) {
            fprintf(stderr, "fault_proxy: the target host must be 127.0.0.1 or localhost\n");
            return 64;
        }
        memset(&g.target, 0, sizeof g.target);
        g.target.sin_family = AF_INET;
        g.target.sin_port = htons((uint16_t)tport);
        g.target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    }
    rng_seed(seed);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }

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
        g.in = (struct handle){ .kind = K_STDIN, .fd = 0 };
        if (ep_set(&g.in, EPOLLIN) < 0) logw("--exit-on-stdin-eof: stdin cannot be watched");
    }

    int bound;
    int lfd = listen_on(echo_mode ? echo_port : listen_port, &bound);
    if (lfd < 0) {
        logw("listen on 127.0.0.1:%d: %s", echo_mode ? echo_port : listen_port, strerror(errno));
        shutdown_all();
        return 1;
    }
    g.listen = (struct handle){ .kind = echo_mode ? K_ECHO_LISTEN : K_LISTEN, .fd = lfd };
    if (ep_set(&g.listen, EPOLLIN) < 0) {
        shutdown_all();
        return 1;
    }
    if (!echo_mode && ctl_port >= 0) {
        int cbound;
        int cfd = listen_on(ctl_port, &cbound);
        if (cfd < 0) {
            logw("listen on 127.0.0.1:%d: %s", ctl_port, strerror(errno));
            shutdown_all();
            return 1;
        }
        g.ctl_listen = (struct handle){ .kind = K_CTL_LISTEN, .fd = cfd };
        if (ep_set(&g.ctl_listen, EPOLLIN) < 0) {
            shutdown_all();
            return 1;
        }
        printf("control %d\n", cbound);
    }
    printf("listening %d\n", bound);
    fflush(stdout);

    int rc = run_loop();
    shutdown_all();
    return rc;
}
