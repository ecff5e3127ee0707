/* s2_error.c — error values: server error bodies and S2's retry classification.
 *
 * Error bodies are small JSON objects. A tiny bounds-checked scanner reads just the keys we
 * need, so the core has no JSON dependency (management bodies are parsed in Lua by cjson). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "s2.h"

int s2_fail(s2_error *err, s2_errkind kind, const char *code, const char *fmt, ...) {
    if (!err) return -1;
    memset(err, 0, sizeof *err);
    err->kind = kind;
    snprintf(err->code, sizeof err->code, "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

/* S2's per-code table (status, retryable, no side effects), from the server's error.rs. */
static const struct {
    const char *code;
    bool retryable;
    bool no_side_effects;
} code_table[] = {
    {"authn", false, true},
    {"bad_frame", false, true},
    {"bad_header", false, true},
    {"bad_json", false, true},
    {"bad_path", false, true},
    {"bad_proto", false, true},
    {"bad_query", false, true},
    {"decryption_failed", false, true},
    {"permission_denied", false, true},
    {"quota_exhausted", false, true},
    {"access_token_not_found", false, true},
    {"basin_not_found", false, true},
    {"stream_not_found", false, true},
    {"request_timeout", true, false},
    {"resource_already_exists", false, true},
    {"basin_deletion_pending", false, true},
    {"stream_deletion_pending", false, true},
    {"transaction_conflict", true, true},
    {"invalid", false, true},
    {"rate_limited", true, true},
    {"client_hangup", false, false},
    {"other", true, false},
    {"storage", true, false},
    {"not_implemented", false, true},
    {"hot_server", true, true},
    {"unavailable", true, false},
    {"server_draining", true, true},
    {"upstream_timeout", true, false},
    {"seq_num_mismatch", false, true},
    {"fencing_token_mismatch", false, true},
    {"range_not_satisfiable", false, true},
};

void s2_error_classify(s2_error *err) {
    for (size_t i = 0; i < sizeof code_table / sizeof code_table[0]; i++) {
        if (strcmp(err->code, code_table[i].code) == 0) {
            err->retryable = code_table[i].retryable;
            err->no_side_effects = code_table[i].no_side_effects;
            return;
        }
    }
    /* Unknown code: fall back to the status, as every SDK does. */
    switch (err->status) {
    case 408: case 429: case 500: case 502: case 503: case 504:
        err->retryable = true;
        break;
    default:
        err->retryable = false;
    }
    err->no_side_effects = err->status == 429;
}

/* ---- minimal JSON scanning ------------------------------------------------------------- */

typedef struct {
    const uint8_t *p, *end;
    int depth;
} scan;

static void ws(scan *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int hexval(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int read_hex4(scan *s, unsigned *out) {
    if (s->end - s->p < 4) return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(s->p[i]);
        if (h < 0) return -1;
        v = v << 4 | (unsigned)h;
    }
    s->p += 4;
    *out = v;
    return 0;
}

static void put(char *out, size_t cap, size_t *n, char c) {
    if (out && *n + 1 < cap) out[*n] = c;
    (*n)++;
}

/* Reads a JSON string at s->p (which is at '"') into out (NUL-terminated, truncated to cap). */
static int str(scan *s, char *out, size_t cap) {
    size_t n = 0;
    if (s->p >= s->end || *s->p != '"') return -1;
    s->p++;
    while (s->p < s->end) {
        uint8_t c = *s->p++;
        if (c == '"') {
            if (out && cap) out[n < cap ? n : cap - 1] = 0;
            return 0;
        }
        if (c != '\\') {
            put(out, cap, &n, (char)c);
            continue;
        }
        if (s->p >= s->end) return -1;
        c = *s->p++;
        switch (c) {
        case '"': case '\\': case '/': put(out, cap, &n, (char)c); break;
        case 'b': put(out, cap, &n, '\b'); break;
        case 'f': put(out, cap, &n, '\f'); break;
        case 'n': put(out, cap, &n, '\n'); break;
        case 'r': put(out, cap, &n, '\r'); break;
        case 't': put(out, cap, &n, '\t'); break;
        case 'u': {
            unsigned cp;
            if (read_hex4(s, &cp) != 0) return -1;
            if (cp >= 0xD800 && cp < 0xDC00 && s->end - s->p >= 6 && s->p[0] == '\\' &&
                s->p[1] == 'u') {
                unsigned lo;
                s->p += 2;
                if (read_hex4(s, &lo) != 0) return -1;
                if (lo >= 0xDC00 && lo < 0xE000) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                else cp = 0xFFFD;
            } else if (cp >= 0xD800 && cp < 0xE000) {
                cp = 0xFFFD;
            }
            if (cp < 0x80) {
                put(out, cap, &n, (char)cp);
            } else if (cp < 0x800) {
                put(out, cap, &n, (char)(0xC0 | cp >> 6));
                put(out, cap, &n, (char)(0x80 | (cp & 0x3F)));
            } else if (cp < 0x10000) {
                put(out, cap, &n, (char)(0xE0 | cp >> 12));
                put(out, cap, &n, (char)(0x80 | (cp >> 6 & 0x3F)));
                put(out, cap, &n, (char)(0x80 | (cp & 0x3F)));
            } else {
                put(out, cap, &n, (char)(0xF0 | cp >> 18));
                put(out, cap, &n, (char)(0x80 | (cp >> 12 & 0x3F)));
                put(out, cap, &n, (char)(0x80 | (cp >> 6 & 0x3F)));
                put(out, cap, &n, (char)(0x80 | (cp & 0x3F)));
            }
            break;
        }
        default: return -1;
        }
    }
    return -1;
}

/* Reads a non-negative integer that fits in u64. */
static int u64num(scan *s, uint64_t *out) {
    uint64_t v = 0;
    const uint8_t *start = s->p;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9') {
        unsigned d = (unsigned)(*s->p - '0');
        if (v > (UINT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
        s->p++;
    }
    if (s->p == start) return -1;
    if (s->p < s->end && (*s->p == '.' || *s->p == 'e' || *s->p == 'E')) return -1;
    *out = v;
    return 0;
}

static int skip_value(scan *s);

static int skip_container(scan *s, uint8_t close) {
    if (++s->depth > 32) return -1;
    s->p++;
    ws(s);
    if (s->p < s->end && *s->p == close) {
        s->p++;
        s->depth--;
        return 0;
    }
    for (;;) {
        if (close == '}') {
            ws(s);
            if (str(s, NULL, 0) != 0) return -1;
            ws(s);
            if (s->p >= s->end || *s->p++ != ':') return -1;
        }
        if (skip_value(s) != 0) return -1;
        ws(s);
        if (s->p >= s->end) return -1;
        uint8_t c = *s->p++;
        if (c == close) break;
        if (c != ',') return -1;
    }
    s->depth--;
    return 0;
}

static int skip_value(scan *s) {
    ws(s);
    if (s->p >= s->end) return -1;
    switch (*s->p) {
    case '"': return str(s, NULL, 0);
    case '{': return skip_container(s, '}');
    case '[': return skip_container(s, ']');
    default:
        /* numbers, true, false, null: a run of literal characters */
        if (!((*s->p >= '0' && *s->p <= '9') || *s->p == '-' || *s->p == 't' || *s->p == 'f' ||
              *s->p == 'n'))
            return -1;
        while (s->p < s->end && *s->p != ',' && *s->p != '}' && *s->p != ']' && *s->p != ' ' &&
               *s->p != '\n' && *s->p != '\r' && *s->p != '\t')
            s->p++;
        return 0;
    }
}

/* Visits the members of the object at s->p: cb(key) returns 1 when it consumed the value,
 * 0 to have it skipped, -1 on error. */
typedef int (*member_cb)(scan *s, const char *key, void *ud);

static int object(scan *s, member_cb cb, void *ud) {
    ws(s);
    if (s->p >= s->end || *s->p != '{') return -1;
    if (++s->depth > 32) return -1;
    s->p++;
    ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        s->depth--;
        return 0;
    }
    for (;;) {
        char key[64];
        ws(s);
        if (str(s, key, sizeof key) != 0) return -1;
        ws(s);
        if (s->p >= s->end || *s->p++ != ':') return -1;
        ws(s);
        int r = cb(s, key, ud);
        if (r < 0) return -1;
        if (r == 0 && skip_value(s) != 0) return -1;
        ws(s);
        if (s->p >= s->end) return -1;
        uint8_t c = *s->p++;
        if (c == '}') break;
        if (c != ',') return -1;
    }
    s->depth--;
    return 0;
}

static int position_member(scan *s, const char *key, void *ud) {
    s2_position *pos = ud;
    if (strcmp(key, "seq_num") == 0) return u64num(s, &pos->seq_num) == 0 ? 1 : -1;
    if (strcmp(key, "timestamp") == 0) return u64num(s, &pos->timestamp) == 0 ? 1 : -1;
    return 0;
}

static int error_member(scan *s, const char *key, void *ud) {
    s2_error *err = ud;
    if (strcmp(key, "code") == 0 && s->p < s->end && *s->p == '"')
        return str(s, err->code, sizeof err->code) == 0 ? 1 : -1;
    if (strcmp(key, "message") == 0 && s->p < s->end && *s->p == '"')
        return str(s, err->message, sizeof err->message) == 0 ? 1 : -1;
    if (strcmp(key, "seq_num_mismatch") == 0) {
        if (u64num(s, &err->expected_seq_num) != 0) return -1;
        err->has_expected_seq_num = true;
        return 1;
    }
    if (strcmp(key, "fencing_token_mismatch") == 0 && s->p < s->end && *s->p == '"') {
        if (str(s, err->expected_fencing_token, sizeof err->expected_fencing_token) != 0) return -1;
        err->has_expected_fencing_token = true;
        return 1;
    }
    if (strcmp(key, "tail") == 0 && s->p < s->end && *s->p == '{') {
        if (object(s, position_member, &err->tail) != 0) return -1;
        err->has_tail = true;
        return 1;
    }
    return 0;
}

static void set_message_from_body(s2_error *err, const uint8_t *body, size_t len) {
    size_t n = len < sizeof err->message - 1 ? len : sizeof err->message - 1;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) /* keep one readable line */
        err->message[j++] = (body[i] == '\n' || body[i] == '\r') ? ' ' : (char)body[i];
    err->message[j] = 0;
}

void s2_error_from_response(s2_error *err, int status, const uint8_t *body, size_t len) {
    memset(err, 0, sizeof *err);
    err->kind = S2_E_SERVER;
    err->status = status;
    scan s = {body, body + len, 0};
    bool parsed = len > 0 && object(&s, error_member, err) == 0;
    if (!parsed) {
        /* Keep whatever was read before the parse failed out of the 412/416 details. */
        err->has_expected_seq_num = err->has_expected_fencing_token = err->has_tail = false;
        err->code[0] = 0;
        set_message_from_body(err, body, len);
    }
    if (err->has_expected_seq_num) {
        snprintf(err->code, sizeof err->code, "seq_num_mismatch");
        snprintf(err->message, sizeof err->message,
                 "append condition failed: expected seq_num %llu",
                 (unsigned long long)err->expected_seq_num);
    } else if (err->has_expected_fencing_token) {
        snprintf(err->code, sizeof err->code, "fencing_token_mismatch");
        snprintf(err->message, sizeof err->message,
                 "append condition failed: expected fencing token \"%s\"",
                 err->expected_fencing_token);
    } else if (status == 416) {
        snprintf(err->code, sizeof err->code, "range_not_satisfiable");
        if (err->has_tail)
            snprintf(err->message, sizeof err->message,
                     "read start is beyond the tail (tail seq_num %llu)",
                     (unsigned long long)err->tail.seq_num);
    }
    if (!err->code[0]) snprintf(err->code, sizeof err->code, "http_%d", status);
    if (!err->message[0]) snprintf(err->message, sizeof err->message, "HTTP status %d", status);
    s2_error_classify(err);
}
