/*
 * fault_proxy — a loopback TCP proxy that injects faults, for tests.
 *
 *   fault_proxy --listen PORT --target HOST:PORT [--control PORT] [--seed N]
 *               [--rate-up BPS] [--rate-down BPS] [--latency-up MS] [--latency-down MS]
 *               [--delay MS] [--queue-cap BYTES] [--rcvbuf BYTES] [--mss BYTES]
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
 * (arrival + that direction's latency). Reading from a side pauses while its
 * direction holds its queue cap (1 MiB; less on a rated link, see WAN
 * shaping) so a slow or stalled receiver pushes back through TCP to the
 * sender, while the proxy is told to stop reading clients, and, for the
 * upstream side, until the connect to the target is done. Writes go out as
 * soon as a chunk is due and, on a rated direction, its pacing clock allows;
 * EPOLLOUT is asked for only after EAGAIN. After every wakeup all connections
 * are "pumped" (flush what is due, recompute interest), and epoll_wait sleeps
 * until the next fd event or the earliest due time (delayed chunk, pacing
 * clock, end of stall, cut drain poll): nothing ever spins. A side that reports EPOLLHUP while we do not want to read it is
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
 *   cut_next_answer K    for every connection open NOW (not later ones): K
 *                        more server->client bytes are forwarded, counted from
 *                        the first one not yet written to the client, then the
 *                        connection is cut (as below: RST both sides, counted
 *                        in cuts); bytes beyond K are dropped. If the proxy
 *                        holds no undelivered server bytes, the cut waits for
 *                        the server's next bytes: K = 0 then means the client
 *                        sees the connection die before any byte of the next
 *                        answer (the request itself went through). Meant for
 *                        killing a reused keep-alive connection between a
 *                        request and its answer. Answers `ok cut_next_answer
 *                        K <connections armed>`
 *   stall MS             hold all server->client data on every connection
 *                        (open and new) for MS ms; data is kept, not dropped,
 *                        and reading from servers continues up to the queue
 *                        cap. `stall 0` ends a stall now. A new stall replaces
 *                        the running one.
 *   delay MS             shorthand for latency_up MS + latency_down MS
 *   refuse on|off        accept new connections and close them at once (RST)
 * WAN shaping (open and new connections alike, unless said otherwise):
 *   rate_up BPS          pace client->server bytes at BPS bytes per second per
 *   rate_down BPS        connection (server->client for rate_down); 0 = no
 *                        limit. Due-time pacing: a direction's clock advances
 *                        by n / BPS for every n bytes written, writes go in
 *                        quanta of max(2 KiB, 5 ms worth), and at most 5 ms of
 *                        idle credit is kept, so the long-run rate is BPS.
 *                        With a rate on, that direction's queue cap shrinks
 *                        to max(64 KiB, BPS x latency), so the proxy never
 *                        reads far ahead of what the link could carry and the
 *                        sender's socket fills as behind a real slow link
 *   latency_up MS        one-way latency: every chunk read from now on in that
 *   latency_down MS      direction is sent no earlier than MS ms after it
 *                        arrived (chunks already queued keep their time); with
 *                        a rate, a chunk goes out at the later of arrival +
 *                        latency and the pacing clock. 50 ms RTT = 25 each way
 *   queue_cap BYTES      per-direction cap on bytes read but not yet written
 *                        (reading that side pauses at the cap); 0 = automatic
 *                        (1 MiB, or max(64 KiB, BPS x latency) when rated)
 *   rcvbuf BYTES         SO_RCVBUF and SO_SNDBUF of accepted client sockets,
 *                        set on the listening socket so that the window scale
 *                        offered in the SYN-ACK already honours it (Linux
 *                        doubles the value for its bookkeeping). NEW
 *                        connections only. 0 = kernel defaults and autotuning
 *                        again: the listening socket is re-created on the same
 *                        port (a connect in that instant may be refused)
 *   mss BYTES            TCP_MAXSEG of accepted client sockets (88..65535),
 *                        also set on the listening socket, so the SYN-ACK
 *                        offers it: 1460 is an Ethernet WAN. NEW connections
 *                        only; 0 = off (re-creates the listener, as rcvbuf).
 *                        Loopback's 64 KiB MSS makes the client's kernel size
 *                        its send buffer at ~4 MB from the start; with a WAN
 *                        MSS it starts near 64 KiB and grows with the window,
 *                        so a slow link really fills it
 *   stop_reading on|off  read nothing more from any client, open or new
 *                        (their bytes pile up in the kernel buffers until the
 *                        client's writes block); connections stay open and
 *                        server->client data keeps flowing. `off` resumes, in
 *                        order, nothing lost: a server or middlebox that stops
 *                        reading
 *   stats                `ok conns=N open=N cuts=N bytes_up=N bytes_down=N
 *                        refused=N queued_up=N queued_down=N`: conns =
 *                        accepted in total (refused ones too), open = pairs
 *                        open now, cuts = connections cut by a fault, bytes_*
 *                        = bytes written to the server/client, queued_* =
 *                        bytes held in the proxy's queues now (all pairs)
 *   reset                all faults and shaping off: thresholds, random cuts,
 *                        pending cut_next_answer, stall, latency, rates,
 *                        queue_cap, rcvbuf, mss, stop_reading, refuse; open
 *                        connections lose their cut thresholds too (ones
 *                        already being cut still are). Stats kept.
 *   show                 current settings (with the queue caps in force);
 *                        ping -> `ok pong`; help
 *
 * Which connections a fault applies to: cut_after, cut_after_down and
 * cut_random are decided when a connection is accepted and stay with it
 * (changing them later does not touch open connections; `reset` clears them,
 * `cut_all` cuts everything). cut_next_answer arms the connections open when
 * it is given. rcvbuf and mss are taken by a connection when it is accepted. stall,
 * latency, rates, queue_cap, stop_reading and refuse are global and immediate.
 *
 * Every shaping command has a command-line flag of the same name (--rate-up,
 * --rate-down, --latency-up, --latency-down, --delay, --queue-cap, --rcvbuf,
 * --mss)
 * so that a run can start shaped; `reset` turns those off too.
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
 *                        1 on other errors; a summary goes to stderr
 *                        (`client: sent=N received=N eagain=N end=...`, eagain
 *                        = non-blocking sends that found the socket full).
 *                        It also prints `client: first EAGAIN at sent=N` when
 *                        a send first finds the socket full, and `client: send
 *                        blocked at sent=N` when it has stayed full for 200 ms
 *                        (once per such episode): events tests wait for.
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
#define SHAPED_QUEUE_MIN (64 * 1024) /* auto cap of a rated direction: max(this, BDP) */
#define SHAPED_QUEUE_MAX (256u * 1024 * 1024)
#define RATE_MAX 10000000000ull     /* 10 GB/s: keeps BPS x latency far from overflow */
#define MS_MAX 86400000             /* longest stall / latency */
#define PACE_QUANTUM_MIN 2048       /* smallest write on a rated direction */
#define PACE_QUANTUM_NS 5000000     /* a write carries at most this much link time */
#define PACE_CREDIT_NS 5000000      /* idle credit kept by a pacing clock */
#define BLOCKED_REPORT_MS 200       /* --client: report a send blocked this long */
#define TUNED_RCVBUF 1
#define TUNED_MSS 2
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
    double pace_ns;    /* rated: monotonic ns at which the next byte may go */
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
    int answer_cut;             /* cut_next_answer armed: cut once answer_left more */
    uint64_t answer_left;       /*   server bytes have been read (0: at the next one) */
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
    int listen_port;            /* bound port of the proxy's listener */
    int listen_tuned;           /* TUNED_* options set on it (the kernel cannot unset them) */
    int verbose;
    int quit;
    int64_t accept_resume;      /* accepting paused until then; 0 = not paused */

    /* faults */
    uint64_t cut_up, cut_down;
    double rnd_p;
    uint64_t rnd_min, rnd_max;
    int64_t stall_until;        /* 0 = no stall */
    int refuse;

    /* WAN shaping; [0] = up (client->server), [1] = down */
    int64_t latency_ms[2];
    uint64_t rate[2];           /* bytes per second, 0 = unlimited */
    uint64_t queue_cap;         /* 0 = automatic */
    uint64_t rcvbuf;            /* 0 = kernel defaults */
    uint64_t mss;               /* 0 = kernel default */
    int stop_reading;
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

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
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

static int dir_index(const struct conn *c, const struct dir *d) { return d == &c->up ? 0 : 1; }

/* Bytes direction d may hold read but unwritten: an explicit queue_cap, else 1 MiB
 * unrated, else about one bandwidth-delay product (so the sender feels the link). */
static size_t dir_cap(const struct conn *c, const struct dir *d)
{
    if (g.queue_cap) return (size_t)g.queue_cap;
    int i = dir_index(c, d);
    if (!g.rate[i]) return QUEUE_CAP;
    uint64_t bdp = g.rate[i] * (uint64_t)g.latency_ms[i] / 1000;
    if (bdp > SHAPED_QUEUE_MAX) bdp = SHAPED_QUEUE_MAX;
    return bdp > SHAPED_QUEUE_MIN ? (size_t)bdp : SHAPED_QUEUE_MIN;
}

static int may_read(const struct conn *c, const struct dir *d)
{
    if (d == &c->up && g.stop_reading) return 0;
    return !c->connecting && !c->cutting && !d->eof && d->queued < dir_cap(c, d);
}

/* Keeps the first `keep` queued bytes of d, drops the rest. */
static void dir_truncate(struct dir *d, size_t keep)
{
    struct chunk *last = NULL;
    size_t kept = 0;
    struct chunk *ch = d->head;
    while (ch && kept < keep) {
        size_t left = ch->len - ch->off;
        if (kept + left > keep) ch->len = ch->off + (keep - kept);
        kept += ch->len - ch->off;
        last = ch;
        ch = ch->next;
    }
    while (ch) {
        struct chunk *n = ch->next;
        free(ch);
        ch = n;
    }
    if (last) last->next = NULL; else d->head = NULL;
    d->tail = last;
    d->queued = kept;
}

/* Reads what is available from fd into d. Returns -1 if the pair was closed. */
static int dir_read(struct conn *c, struct dir *d, int fd, int64_t now)
{
    char buf[CHUNK_MAX];
    int answer = d == &c->down && c->answer_cut;
    while (may_read(c, d)) {
        size_t want = sizeof buf;
        uint64_t room = cut_room(c, d);
        if (room < want) want = (size_t)room;
        size_t space = dir_cap(c, d) - d->queued;   /* > 0: may_read */
        if (space < want) want = space;
        /* An armed cut_next_answer with nothing left to pass still reads (and drops)
         * what comes: the arrival of the answer is what triggers the cut. */
        if (answer && c->answer_left > 0 && c->answer_left < want) want = (size_t)c->answer_left;
        ssize_t n = recv(fd, buf, want, 0);
        if (n > 0) {
            size_t keep = (size_t)n;
            d->nread += (uint64_t)n;
            if (answer) {
                if (keep > c->answer_left) keep = (size_t)c->answer_left;
                c->answer_left -= keep;
                if (c->answer_left == 0) {
                    vlog("conn %" PRIu64 " passed its next answer's bytes: cutting", c->id);
                    c->answer_cut = 0;
                    c->cutting = d;
                }
            }
            if (keep > 0) {
                struct chunk *ch = malloc(sizeof *ch + keep);
                if (!ch) {
                    logw("out of memory: dropping connection %" PRIu64, c->id);
                    conn_abort(c, "out of memory");
                    return -1;
                }
                ch->next = NULL;
                ch->due = now + g.latency_ms[dir_index(c, d)];
                ch->len = keep;
                ch->off = 0;
                memcpy(ch->data, buf, keep);
                if (d->tail) d->tail->next = ch; else d->head = ch;
                d->tail = ch;
                d->queued += keep;
            }
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

/* Largest single write on a direction rated at `rate` bytes/s. */
static size_t pace_quantum(uint64_t rate)
{
    uint64_t q = rate * PACE_QUANTUM_NS / 1000000000u;
    if (q < PACE_QUANTUM_MIN) q = PACE_QUANTUM_MIN;
    return q > CHUNK_MAX ? CHUNK_MAX : (size_t)q;
}

/* Writes the due chunks of d to fd, at the direction's rate if it has one. Returns -1 if
 * the pair was closed. */
static int dir_flush(struct conn *c, struct dir *d, int fd, int held, int64_t now,
                     uint64_t *counter)
{
    d->blocked = 0;
    uint64_t rate = g.rate[dir_index(c, d)];
    double tnow = 0;
    if (rate) {
        tnow = (double)now_ns();
        /* An idle link banks at most PACE_CREDIT_NS of sending time. */
        if (d->pace_ns < tnow - PACE_CREDIT_NS) d->pace_ns = tnow - PACE_CREDIT_NS;
    }
    while (d->head && !held && d->head->due <= now) {
        struct chunk *ch = d->head;
        size_t len = ch->len - ch->off;
        if (rate) {
            if (d->pace_ns > tnow) break;   /* conn_due wakes us at pace_ns */
            size_t q = pace_quantum(rate);
            if (len > q) len = q;
        }
        ssize_t n = send(fd, ch->data + ch->off, len, MSG_NOSIGNAL);
        if (n > 0) {
            if (rate) d->pace_ns += (double)n * 1e9 / (double)rate;
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

/* When direction d's head may go: its due time, or later if the pacing clock says so
 * (rounded up to the next ms, so that waking at it never finds it a hair early). */
static int64_t dir_due(const struct conn *c, const struct dir *d)
{
    int64_t due = d->head->due;
    if (g.rate[dir_index(c, d)]) {
        int64_t pace = (int64_t)(d->pace_ns / 1e6) + 1;
        if (pace > due) due = pace;
    }
    return due;
}

/* Earliest time (ms) at which conn c needs attention without an fd event. */
static int64_t conn_due(const struct conn *c, int64_t now)
{
    int64_t due = INT64_MAX;
    if (c->dead || c->connecting) return due;
    /* A head that is due but unsent and not waiting for EPOLLOUT gives 0. */
    if (c->up.head && !c->up.blocked) due = dir_due(c, &c->up);
    if (c->down.head && !c->down.blocked && !stalled(now)) {
        int64_t t = dir_due(c, &c->down);
        if (t < due) due = t;
    }
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

/* Gives the listening socket the options of `rcvbuf` and `mss`: accepted sockets inherit
 * them, and the SYN-ACK's window scale and MSS are chosen from them. The kernel cannot
 * unset either once set, so turning one back off re-creates the listener on the same
 * port, after accepting what is already queued on it. Returns 0, or -1 with errno. */
static int tune_listener(int64_t now)
{
    if (g.listen.fd < 0) return 0;
    if ((g.listen_tuned & TUNED_RCVBUF && !g.rcvbuf) || (g.listen_tuned & TUNED_MSS && !g.mss)) {
        on_accept(now);
        uint32_t events = g.listen.events;
        close_handle(&g.listen, 0);
        int bound;
        int fd = listen_on(g.listen_port, &bound);
        if (fd < 0) {
            int e = errno;
            logw("re-creating the listener on port %d: %s", g.listen_port, strerror(e));
            g.quit = 1;   /* no listener: nothing useful left to do */
            errno = e;
            return -1;
        }
        g.listen.fd = fd;
        g.listen_tuned = 0;
        ep_set(&g.listen, events);
    }
    if (g.rcvbuf) {
        int v = (int)g.rcvbuf;
        if (setsockopt(g.listen.fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof v) < 0 ||
            setsockopt(g.listen.fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v) < 0)
            return -1;
        g.listen_tuned |= TUNED_RCVBUF;
    }
    if (g.mss) {
        int v = (int)g.mss;
        if (setsockopt(g.listen.fd, IPPROTO_TCP, TCP_MAXSEG, &v, sizeof v) < 0) return -1;
        g.listen_tuned |= TUNED_MSS;
    }
    return 0;
}

static void reset_faults(int64_t now)
{
    g.cut_up = g.cut_down = 0;
    g.rnd_p = 0;
    g.rnd_min = g.rnd_max = 0;
    g.stall_until = 0;
    g.refuse = 0;
    g.latency_ms[0] = g.latency_ms[1] = 0;
    g.rate[0] = g.rate[1] = 0;
    g.queue_cap = 0;
    g.stop_reading = 0;
    g.rcvbuf = g.mss = 0;
    (void)tune_listener(now);
    for (struct conn *c = g.conns; c; c = c->next) {
        c->cut_up = c->cut_down = c->cut_any = 0;
        c->answer_cut = 0;
    }
}

/* Shaping values given as numbers of bytes per second, ms or bytes. */
static int set_ms(const char *cmd, uint64_t v, int64_t *dst, char *out, size_t outsz)
{
    if (v > MS_MAX) {
        snprintf(out, outsz, "err %s: at most %d ms", cmd, MS_MAX);
        return -1;
    }
    *dst = (int64_t)v;
    return 0;
}

static int set_rate(const char *cmd, uint64_t v, uint64_t *dst, char *out, size_t outsz)
{
    if (v > RATE_MAX) {
        snprintf(out, outsz, "err %s: at most %llu bytes/s", cmd, (unsigned long long)RATE_MAX);
        return -1;
    }
    *dst = v;
    return 0;
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
    } else if (!strcmp(cmd, "cut_next_answer")) {
        NEED(1); NUM(1, a);
        unsigned n = 0;
        for (struct conn *c = g.conns; c; c = c->next) {
            if (c->cutting) continue;   /* being cut already */
            struct dir *d = &c->down;
            n++;
            if (d->queued > 0 && d->queued >= a) {
                /* The next K bytes are already here: keep them, drop the rest, cut. */
                dir_truncate(d, (size_t)a);
                c->answer_cut = 0;
                c->cutting = d;
            } else {
                c->answer_cut = 1;
                c->answer_left = a - d->queued;
            }
        }
        snprintf(out, outsz, "ok cut_next_answer %" PRIu64 " %u", a, n);
    } else if (!strcmp(cmd, "stall")) {
        NEED(1); NUM(1, a);
        int64_t ms;
        if (set_ms(cmd, a, &ms, out, outsz) < 0) return;
        g.stall_until = a ? now + ms : 0;
        snprintf(out, outsz, "ok stall %" PRIu64, a);
    } else if (!strcmp(cmd, "delay")) {
        NEED(1); NUM(1, a);
        if (set_ms(cmd, a, &g.latency_ms[0], out, outsz) < 0) return;
        g.latency_ms[1] = g.latency_ms[0];
        snprintf(out, outsz, "ok delay %" PRIu64, a);
    } else if (!strcmp(cmd, "latency_up") || !strcmp(cmd, "latency_down")) {
        NEED(1); NUM(1, a);
        if (set_ms(cmd, a, &g.latency_ms[cmd[8] == 'u' ? 0 : 1], out, outsz) < 0) return;
        snprintf(out, outsz, "ok %s %" PRIu64, cmd, a);
    } else if (!strcmp(cmd, "rate_up") || !strcmp(cmd, "rate_down")) {
        NEED(1); NUM(1, a);
        if (set_rate(cmd, a, &g.rate[cmd[5] == 'u' ? 0 : 1], out, outsz) < 0) return;
        snprintf(out, outsz, "ok %s %" PRIu64, cmd, a);
    } else if (!strcmp(cmd, "queue_cap")) {
        NEED(1); NUM(1, a);
        if (a > SHAPED_QUEUE_MAX) {
            snprintf(out, outsz, "err queue_cap: at most %u bytes", SHAPED_QUEUE_MAX);
            return;
        }
        g.queue_cap = a;
        snprintf(out, outsz, "ok queue_cap %" PRIu64, a);
    } else if (!strcmp(cmd, "rcvbuf")) {
        NEED(1); NUM(1, a);
        if (a > INT32_MAX / 2) {
            snprintf(out, outsz, "err rcvbuf: at most %d bytes", INT32_MAX / 2);
            return;
        }
        uint64_t old = g.rcvbuf;
        g.rcvbuf = a;
        if (tune_listener(now) < 0) {
            snprintf(out, outsz, "err rcvbuf: %s", strerror(errno));
            g.rcvbuf = old;
            return;
        }
        snprintf(out, outsz, "ok rcvbuf %" PRIu64, a);
    } else if (!strcmp(cmd, "mss")) {
        NEED(1); NUM(1, a);
        if (a != 0 && (a < 88 || a > 65535)) {
            snprintf(out, outsz, "err mss: 0 or 88..65535");
            return;
        }
        uint64_t old = g.mss;
        g.mss = a;
        if (tune_listener(now) < 0) {
            snprintf(out, outsz, "err mss: %s", strerror(errno));
            g.mss = old;
            return;
        }
        snprintf(out, outsz, "ok mss %" PRIu64, a);
    } else if (!strcmp(cmd, "stop_reading")) {
        NEED(1);
        if (!strcmp(argv[1], "on")) g.stop_reading = 1;
        else if (!strcmp(argv[1], "off")) g.stop_reading = 0;
        else {
            snprintf(out, outsz, "err stop_reading takes on or off");
            return;
        }
        snprintf(out, outsz, "ok stop_reading %s", g.stop_reading ? "on" : "off");
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
        uint64_t qu = 0, qd = 0;
        for (struct conn *c = g.conns; c; c = c->next) {
            qu += c->up.queued;
            qd += c->down.queued;
        }
        snprintf(out, outsz,
                 "ok conns=%" PRIu64 " open=%" PRIu64 " cuts=%" PRIu64 " bytes_up=%" PRIu64
                 " bytes_down=%" PRIu64 " refused=%" PRIu64 " queued_up=%" PRIu64
                 " queued_down=%" PRIu64,
                 g.n_conns, g.n_open, g.n_cuts, g.bytes_up, g.bytes_down, g.n_refused, qu, qd);
    } else if (!strcmp(cmd, "reset")) {
        NEED(0);
        reset_faults(now);
        snprintf(out, outsz, "ok reset");
    } else if (!strcmp(cmd, "show")) {
        NEED(0);
        /* The caps in force, computed as for a connection (any one: they are global). */
        struct conn probe;
        memset(&probe, 0, sizeof probe);
        snprintf(out, outsz,
                 "ok cut_after=%" PRIu64 " cut_after_down=%" PRIu64 " cut_random=%g,%" PRIu64
                 ",%" PRIu64 " seed=%" PRIu64 " stall_left=%" PRId64 " refuse=%s"
                 " latency_up=%" PRId64 " latency_down=%" PRId64 " rate_up=%" PRIu64
                 " rate_down=%" PRIu64 " queue_cap=%" PRIu64 " cap_up=%zu cap_down=%zu"
                 " rcvbuf=%" PRIu64 " mss=%" PRIu64 " stop_reading=%s",
                 g.cut_up, g.cut_down, g.rnd_p, g.rnd_min, g.rnd_max, g.seed,
                 stalled(now) ? g.stall_until - now : 0, g.refuse ? "on" : "off",
                 g.latency_ms[0], g.latency_ms[1], g.rate[0], g.rate[1], g.queue_cap,
                 dir_cap(&probe, &probe.up), dir_cap(&probe, &probe.down), g.rcvbuf, g.mss,
                 g.stop_reading ? "on" : "off");
    } else if (!strcmp(cmd, "ping")) {
        NEED(0);
        snprintf(out, outsz, "ok pong");
    } else if (!strcmp(cmd, "help")) {
        snprintf(out, outsz,
                 "ok commands: cut_after N | cut_after_down N | cut_random P MIN MAX | seed N"
                 " | cut_all | cut_next_answer K | stall MS | delay MS | latency_up MS"
                 " | latency_down MS | rate_up BPS | rate_down BPS | queue_cap BYTES"
                 " | rcvbuf BYTES | mss BYTES | stop_reading on|off | refuse on|off | stats | reset"
                 " | show | ping");
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
    int full = 0, reported = 0;   /* last send found the socket full; episode reported */
    uint64_t sent = 0, got = 0, eagain = 0;
    const char *end = "?";
    while (rc < 0) {
        struct pollfd p[2] = {
            { .fd = (!in_eof && pend == 0) ? 0 : -1, .events = POLLIN },
            { .fd = fd, .events = (short)(POLLIN | (pend > poff ? POLLOUT : 0)) },
        };
        int waiting = full && pend > poff && !reported;
        int pr = poll(p, 2, waiting ? BLOCKED_REPORT_MS : -1);
        if (pr < 0) {
            if (errno == EINTR) continue;
            end = strerror(errno);
            rc = 1;
            break;
        }
        if (pr == 0) {   /* only when waiting: the socket stayed full */
            fprintf(stderr, "client: send blocked at sent=%" PRIu64 "\n", sent);
            reported = 1;
            continue;
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
                full = reported = 0;
                continue;
            }
            if (w < 0 && errno == EINTR) continue;
            if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                if (eagain++ == 0)
                    fprintf(stderr, "client: first EAGAIN at sent=%" PRIu64 "\n", sent);
                full = 1;
                break;
            }
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
    fprintf(stderr, "client: sent=%" PRIu64 " received=%" PRIu64 " eagain=%" PRIu64 " end=%s\n",
            sent, got, eagain, end);
    close(fd);
    return rc;
}

/* ------------------------------------------------------------------- main */

/* The command-line twins of the shaping commands, in the order they are applied (delay
 * before the per-direction latencies, so that these override it). */
static const char *const shaping_flags[] = { "--delay", "--latency-up", "--latency-down",
                                             "--rate-up", "--rate-down", "--queue-cap",
                                             "--rcvbuf", "--mss" };
#define N_SHAPING (sizeof shaping_flags / sizeof shaping_flags[0])

static int shaping_flag(const char *o)
{
    for (size_t k = 0; k < N_SHAPING; k++)
        if (!strcmp(o, shaping_flags[k])) return (int)k;
    return -1;
}

/* Runs the shaping flags as control commands; -1 (reported) if one is refused. */
static int apply_shaping_flags(const uint64_t *val, const int *set, int64_t now)
{
    for (size_t k = 0; k < N_SHAPING; k++) {
        if (!set[k]) continue;
        char line[64], answer[CTL_LINE_MAX];
        snprintf(line, sizeof line, "%s %" PRIu64, shaping_flags[k] + 2, val[k]);
        for (char *ch = line; *ch != ' '; ch++)   /* --rate-up -> rate_up */
            if (*ch == '-') *ch = '_';
        ctl_exec(line, answer, sizeof answer, now);
        if (strncmp(answer, "ok", 2) != 0) {
            fprintf(stderr, "fault_proxy: %s: %s\n", shaping_flags[k], answer);
            return -1;
        }
        vlog("startup: %s", answer);
    }
    return 0;
}

static void usage(FILE *f)
{
    fputs("usage: fault_proxy --listen PORT --target HOST:PORT [--control PORT] [--seed N]\n"
          "                   [--rate-up BPS] [--rate-down BPS] [--latency-up MS]\n"
          "                   [--latency-down MS] [--delay MS] [--queue-cap BYTES]\n"
          "                   [--rcvbuf BYTES] [--mss BYTES] [--exit-on-stdin-eof] [-v]\n"
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
    /* Shaping flags (last one wins) become control commands once the listener exists. */
    uint64_t shape_val[N_SHAPING];
    int shape_set[N_SHAPING] = { 0 };

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
        else if (shaping_flag(o) >= 0) {
            int k = shaping_flag(o);
            bad = parse_u64(v, &shape_val[k]), i++;
            shape_set[k] = !bad;
        }
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
    g.listen_port = bound;
    if (ep_set(&g.listen, EPOLLIN) < 0) {
        shutdown_all();
        return 1;
    }
    if (!echo_mode && apply_shaping_flags(shape_val, shape_set, now_ms()) < 0) {
        shutdown_all();
        return 64;
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
