/* s2_http.c — unary HTTP calls through libcurl, with S2's retry rules.
 *
 * One curl easy handle per client keeps its connections (and HTTP/2 sessions) alive
 * between calls. A call runs on the caller's thread; nothing here is shared with the I/O
 * thread of sessions, so there is no lock.
 *
 * Resends. When a reused connection dies before any answer byte (or a stream is refused),
 * libcurl sends the request again on a fresh connection by itself, rewinding the body. That
 * is below the retry policy, so for an append it is forbidden: the body is handed to curl by
 * a read callback that counts what curl took and cannot seek, and a pre-request callback
 * aborts any second send of a request whose body curl had already taken. The append then
 * fails with a connection error that is not side-effect-free, and s2_http_call's policy
 * decides. "No side effects" means curl took no body byte: nothing of the append can have
 * reached the server (S2 acts only on a whole body). Other calls (reads, management) keep
 * curl's transparent resend: they are retried on any retryable error anyway, and creates
 * carry a request token, so a resend is what a retry would do. */
#include <curl/curl.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "s2_internal.h"
#include "s2_unary.h"

#define MAX_RESPONSE_BYTES (64u * 1024u * 1024u) /* a unary answer is at most a few MiB */

struct s2_http {
    s2_config cfg; /* string fields point at the copies below */
    char *access_token;
    char *ca_file;
    CURL *curl;
    uint64_t rng; /* xorshift state for backoff jitter */
    s2_buf url;   /* scratch, reused between calls */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

/* curl_global_init is not thread-safe; run it exactly once per process. */
static void curl_init_once(void) {
    curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static char *dupstr(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

s2_http *s2_http_new(const s2_config *cfg, s2_error *err) {
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_result != CURLE_OK) {
        s2_fail(err, S2_E_CONNECTION, "connection_failed", "libcurl could not be initialised: %s",
                curl_easy_strerror(curl_init_result));
        return NULL;
    }
    s2_http *h = calloc(1, sizeof *h);
    if (!h) goto nomem;
    h->cfg = *cfg;
    h->access_token = dupstr(cfg->access_token ? cfg->access_token : "");
    h->ca_file = dupstr(cfg->ca_file);
    h->curl = curl_easy_init();
    if (!h->access_token || (cfg->ca_file && !h->ca_file) || !h->curl) goto nomem;
    h->cfg.access_token = h->access_token;
    h->cfg.ca_file = h->ca_file;
    h->rng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)h;
    if (!h->rng) h->rng = 0x9E3779B97F4A7C15ull;
    s2_buf_init(&h->url);
    return h;
nomem:
    s2_http_free(h);
    s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory creating a client");
    return NULL;
}

const s2_config *s2_http_config(const s2_http *h) {
    return &h->cfg;
}

void s2_http_free(s2_http *h) {
    if (!h) return;
    if (h->curl) curl_easy_cleanup(h->curl);
    free(h->access_token);
    free(h->ca_file);
    s2_buf_free(&h->url);
    free(h);
}

static double jitter01(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return (double)(x >> 11) / (double)(1ull << 53);
}

double s2_backoff_with(const s2_config *cfg, unsigned retry, uint64_t retry_after_ms, uint64_t *rng) {
    double base = cfg->min_base_delay;
    for (unsigned i = 0; i < retry && base < cfg->max_base_delay; i++) base *= 2;
    if (base > cfg->max_base_delay) base = cfg->max_base_delay;
    double d = base + base * jitter01(rng);
    /* A server's retry-after-ms is honoured up to a minute: more is not a backoff. */
    double after = (double)(retry_after_ms < 60000 ? retry_after_ms : 60000) / 1000.0;
    return after > d ? after : d;
}

double s2_backoff_delay(const s2_config *cfg, unsigned retry, uint64_t retry_after_ms) {
    uint64_t rng = (uint64_t)time(NULL) * 2654435761u + retry + 1;
    return s2_backoff_with(cfg, retry, retry_after_ms, &rng);
}

static void sleep_seconds(double s) {
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int s2_random_token(char out[33]) {
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof raw) != 1) return -1;
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[32] = 0;
    return 0;
}

int s2_random_encryption_key(char out[45]) {
    unsigned char raw[32];
    if (RAND_bytes(raw, sizeof raw) != 1) return -1;
    EVP_EncodeBlock((unsigned char *)out, raw, (int)sizeof raw); /* 44 chars + NUL */
    OPENSSL_cleanse(raw, sizeof raw);
    return 0;
}

typedef s2_http_attempt call_state;

static void refuse_resend(call_state *cs) {
    if (!cs->resend_refused) cs->cause_known = cs->errbuf[0] != 0;
    cs->resend_refused = true;
}

/* CURLOPT_READFUNCTION for an append's body: one pass, never rewound. */
static size_t on_read(char *p, size_t size, size_t n, void *ud) {
    call_state *cs = ud;
    size_t room = size * n, left = cs->body_len - cs->taken;
    size_t m = left < room ? left : room;
    memcpy(p, cs->body + cs->taken, m);
    cs->taken += m;
    return m;
}

/* CURLOPT_SEEKFUNCTION: curl asks to rewind only to send the body again; it then fails the
 * transfer with CURLE_SEND_FAIL_REWIND. */
static int on_seek(void *ud, curl_off_t offset, int origin) {
    (void)offset, (void)origin;
    refuse_resend(ud);
    return CURL_SEEKFUNC_CANTSEEK;
}

#if LIBCURL_VERSION_NUM >= 0x075000 /* CURLOPT_PREREQFUNCTION: 7.80.0 */
/* Called each time curl is about to send the request, on a new or reused connection. A
 * second send after curl took body bytes is a resend of what may have landed: refused. One
 * whose first try never took a body byte is fine (the server cannot have acted on it). */
static int on_prereq(void *ud, char *remote_ip, char *local_ip, int remote_port,
                     int local_port) {
    (void)remote_ip, (void)local_ip, (void)remote_port, (void)local_port;
    call_state *cs = ud;
    if (cs->sends++ > 0 && cs->taken > 0) {
        refuse_resend(cs);
        return CURL_PREREQFUNC_ABORT;
    }
    return CURL_PREREQFUNC_OK;
}
#endif

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
    call_state *cs = ud;
    size_t len = size * n;
    if (cs->resp->body.len + len > MAX_RESPONSE_BYTES) {
        cs->too_big = true;
        return 0; /* aborts the transfer */
    }
    return s2_buf_append(&cs->resp->body, p, len) == 0 ? len : 0;
}

/* Header names are case-insensitive; values end at CR/LF. */
static bool header_is(const char *line, size_t len, const char *name, const char **value,
                      size_t *vlen) {
    size_t n = strlen(name);
    if (len <= n || strncasecmp(line, name, n) != 0 || line[n] != ':') return false;
    const char *v = line + n + 1;
    const char *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ')) end--;
    *value = v;
    *vlen = (size_t)(end - v);
    return true;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
    call_state *cs = ud;
    size_t len = size * n;
    const char *v;
    size_t vlen;
    if (header_is(p, len, "retry-after-ms", &v, &vlen)) {
        uint64_t ms = 0;
        for (size_t i = 0; i < vlen && v[i] >= '0' && v[i] <= '9' && ms < 86400000u; i++)
            ms = ms * 10 + (uint64_t)(v[i] - '0');
        cs->retry_after_ms = ms;
    } else if (header_is(p, len, "s2-provision-result", &v, &vlen)) {
        size_t m = vlen < sizeof cs->resp->provision_result - 1 ? vlen
                                                                : sizeof cs->resp->provision_result - 1;
        memcpy(cs->resp->provision_result, v, m);
        cs->resp->provision_result[m] = 0;
    }
    return len;
}

/* Maps a failed transfer to an error. no_side_effects is what the caller proved: nothing of
 * the request can have reached the server. Only appends act on it (s2_http_call), and an
 * append's message says when it may have landed. */
static int transfer_error(CURLcode rc, const call_state *cs, bool append, bool no_side_effects,
                          s2_error *err) {
    const char *errbuf = cs->errbuf;
    const char *detail = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    switch (rc) {
    case CURLE_OUT_OF_MEMORY:
        return s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory in libcurl");
    case CURLE_OPERATION_TIMEDOUT:
        s2_fail(err, S2_E_TIMEOUT, "timeout", "request timed out: %s", detail);
        err->retryable = true;
        break;
    case CURLE_COULDNT_CONNECT:
        s2_fail(err, S2_E_CONNECTION, "connection_failed", "could not connect: %s", detail);
        err->retryable = true;
        break;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        s2_fail(err, S2_E_CONNECTION, "connection_failed", "%s", detail);
        break;
    case CURLE_WRITE_ERROR:
        return s2_fail(err, S2_E_PROTOCOL, "protocol_error", "response too large or unreadable");
    default:
        if (cs->resend_refused) /* curl wanted to send it again */
            s2_fail(err, S2_E_CONNECTION, "connection_failed",
                    "connection lost before any answer: %s",
                    cs->cause_known ? errbuf : "closed by the peer");
        else
            s2_fail(err, S2_E_CONNECTION, "connection_failed", "%s", detail);
        err->retryable = true;
        break;
    }
    err->no_side_effects = no_side_effects;
    if (append && !no_side_effects) {
        size_t len = strlen(err->message);
        snprintf(err->message + len, sizeof err->message - len,
                 " (the append was sent: it may have been applied)");
    }
    return -1;
}

/* For a call whose body curl holds (POSTFIELDS): a failure in these phases means the request
 * never left. Appends count body bytes instead (call_state.taken). */
static bool before_sending(CURLcode rc) {
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        return true;
    default:
        return false;
    }
}

void s2_http_free_headers(struct curl_slist *list) {
    for (struct curl_slist *h = list; h; h = h->next)
        if (h->data) s2_wipe(h->data, strlen(h->data));
    curl_slist_free_all(list);
}

static void free_headers(s2_http_attempt *cs) {
    s2_http_free_headers(cs->headers);
    cs->headers = NULL;
}

int s2_http_attempt_setup(CURL *c, const s2_config *cfg, const s2_request *req,
                          s2_http_attempt *cs, s2_response *resp, s2_error *err) {
    const s2_endpoint *ep = req->basin ? &cfg->basin : &cfg->account;
    bool append = req->kind == S2_CALL_APPEND;
    char line[512];
    struct curl_slist *tmp;
    s2_buf url = cs->url; /* kept between attempts */
    memset(cs, 0, sizeof *cs);
    cs->url = url;
    cs->url.len = 0;
    cs->resp = resp;
    cs->append = append;
    cs->body = req->body;
    cs->body_len = req->body ? req->body_len : 0;

    resp->body.len = 0;
    resp->status = 0;
    resp->provision_result[0] = 0;
    if (s2_endpoint_url(ep, req->basin, req->path, &cs->url) != 0) goto nomem;

#define ADD_HEADER(...)                                                                        \
    do {                                                                                       \
        snprintf(line, sizeof line, __VA_ARGS__);                                              \
        if (!(tmp = curl_slist_append(cs->headers, line))) goto nomem;                         \
        cs->headers = tmp;                                                                     \
    } while (0)

    ADD_HEADER("authorization: Bearer %s", cfg->access_token);
    ADD_HEADER("accept: %s", req->accept ? req->accept : "application/json");
    if (req->content_type) ADD_HEADER("content-type: %s", req->content_type);
    if (req->basin && !ep->basin_template) ADD_HEADER("s2-basin: %s", req->basin);
    if (req->request_token) ADD_HEADER("s2-request-token: %s", req->request_token);
    if (req->encryption_key) {
        if (!s2_encryption_key_valid(req->encryption_key)) { /* never echoed */
            s2_wipe(line, sizeof line);
            s2_http_attempt_cleanup(c, cs);
            return s2_fail(err, S2_E_INVALID, "invalid",
                           "encryption_key must be 1 to %u base64 characters",
                           S2_MAX_ENCRYPTION_KEY);
        }
        ADD_HEADER("s2-encryption-key: %s", req->encryption_key);
        s2_wipe(line, sizeof line);
    }
    if (req->content_encoding) ADD_HEADER("content-encoding: %s", req->content_encoding);
    ADD_HEADER("expect:"); /* no 100-continue round trip before a body */
#undef ADD_HEADER

    curl_easy_reset(c); /* keeps live connections and caches */
    curl_easy_setopt(c, CURLOPT_URL, (const char *)cs->url.data);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, cs->headers);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "s2-lua/" S2_VERSION);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, ""); /* gzip/zstd answers, decoded by curl */
    curl_easy_setopt(c, CURLOPT_HTTP_VERSION,
                     ep->https ? (long)CURL_HTTP_VERSION_2TLS : (long)CURL_HTTP_VERSION_1_1);
    /* Concurrent calls share one HTTP/2 connection rather than each opening one. */
    if (ep->https) curl_easy_setopt(c, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)(cfg->connection_timeout * 1000));
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS,
                     (long)((cfg->request_timeout + req->extra_timeout) * 1000));
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cs->errbuf);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, cs);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, cs);
    if (cfg->ca_file) curl_easy_setopt(c, CURLOPT_CAINFO, cfg->ca_file);
    if (strcmp(req->method, "GET") == 0) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
        if (append) {
            /* The body through on_read, never rewound, and no resend (see the top). */
            curl_easy_setopt(c, CURLOPT_POST, 1L);
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)cs->body_len);
            curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
            curl_easy_setopt(c, CURLOPT_READDATA, cs);
            curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, on_seek);
            curl_easy_setopt(c, CURLOPT_SEEKDATA, cs);
#if LIBCURL_VERSION_NUM >= 0x075000
            curl_easy_setopt(c, CURLOPT_PREREQFUNCTION, on_prereq);
            curl_easy_setopt(c, CURLOPT_PREREQDATA, cs);
#endif
        } else if (req->body || strcmp(req->method, "DELETE") != 0) {
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->body ? (const char *)req->body : "");
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        }
    }
    return 0;
nomem:
    s2_wipe(line, sizeof line);
    s2_http_attempt_cleanup(c, cs);
    return s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory building a request");
}

int s2_http_attempt_finish(CURL *c, s2_http_attempt *cs, CURLcode cr, s2_error *err) {
    s2_response *resp = cs->resp;
    int rc = -1;
    if (cr != CURLE_OK) {
        if (cs->too_big) s2_fail(err, S2_E_PROTOCOL, "protocol_error", "response over %u bytes",
                                MAX_RESPONSE_BYTES);
        else {
            /* An append with an empty body would take nothing: then any send counts. */
            bool unsent = cs->append ? cs->taken == 0 && (cs->body_len > 0 || cs->sends == 0)
                                     : before_sending(cr);
            transfer_error(cr, cs, cs->append, unsent, err);
        }
    } else {
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        resp->status = (int)status;
        if (status >= 200 && status < 300) {
            rc = 0;
        } else {
            s2_error_from_response(err, (int)status, resp->body.data, resp->body.len);
            err->retry_after_ms = cs->retry_after_ms;
        }
    }
    free_headers(cs);
    /* The handle must not keep pointers into the attempt or the caller's request. */
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    return rc;
}

void s2_http_attempt_cleanup(CURL *c, s2_http_attempt *cs) {
    free_headers(cs);
    if (c) {
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    }
    s2_buf_free(&cs->url);
}

bool s2_http_should_retry(const s2_config *cfg, const s2_request *req, unsigned attempts,
                          const s2_error *err) {
    return s2_retry_allowed(cfg, attempts, req->kind == S2_CALL_APPEND, err); /* s2_retry.c */
}

int s2_http_global_init(s2_error *err) {
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_result != CURLE_OK)
        return s2_fail(err, S2_E_CONNECTION, "connection_failed",
                       "libcurl could not be initialised: %s",
                       curl_easy_strerror(curl_init_result));
    return 0;
}

/* Blocking, for the core's own worker threads (the HTTP/1.1 append fallback): never on a
 * caller's thread, which goes through the I/O thread's calls (s2_call.c) instead. */
int s2_http_call(s2_http *h, const s2_request *req, s2_response *resp, s2_error *err) {
    const s2_config *cfg = &h->cfg;
    s2_http_attempt a;
    memset(&a, 0, sizeof a);
    s2_buf_init(&a.url);
    s2_buf_init(&resp->body);
    for (unsigned n = 1;; n++) {
        resp->attempts = n;
        int rc = s2_http_attempt_setup(h->curl, cfg, req, &a, resp, err);
        if (rc == 0) rc = s2_http_attempt_finish(h->curl, &a, curl_easy_perform(h->curl), err);
        if (rc == 0) {
            s2_http_attempt_cleanup(h->curl, &a);
            return 0;
        }
        if (!s2_http_should_retry(cfg, req, n, err)) {
            s2_error_note_attempts(err, n);
            s2_http_attempt_cleanup(h->curl, &a);
            return -1;
        }
        sleep_seconds(s2_backoff_with(cfg, n - 1, err->retry_after_ms, &h->rng));
    }
}
