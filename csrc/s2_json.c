/* s2_json.c — a tiny bounds-checked JSON scanner: just enough to read S2's error bodies and,
 * for the HTTP/1.1 read fallback, SSE ReadBatch events. No allocation; strings are copied
 * into caller buffers or handed out as spans. Nesting is limited to 32 levels. */
#include <string.h>

#include "s2_internal.h"

static int skip_container(s2_json *s, uint8_t close);


void s2_json_ws(s2_json *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int hexval(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int read_hex4(s2_json *s, unsigned *out) {
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

/* Reads a JSON string at s->p (which is at '"') into out (NUL-terminated, truncated to cap);
 * *decoded gets its full decoded length. */
static int json_string(s2_json *s, char *out, size_t cap, size_t *decoded) {
    size_t n = 0;
    if (s->p >= s->end || *s->p != '"') return -1;
    s->p++;
    while (s->p < s->end) {
        uint8_t c = *s->p++;
        if (c == '"') {
            if (out && cap) out[n < cap ? n : cap - 1] = 0;
            *decoded = n;
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

int s2_json_string(s2_json *s, char *out, size_t cap) {
    size_t n;
    return json_string(s, out, cap, &n);
}

/* Reads a non-negative integer that fits in u64. */
int s2_json_u64(s2_json *s, uint64_t *out) {
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


static int skip_container(s2_json *s, uint8_t close) {
    if (++s->depth > 32) return -1;
    s->p++;
    s2_json_ws(s);
    if (s->p < s->end && *s->p == close) {
        s->p++;
        s->depth--;
        return 0;
    }
    for (;;) {
        if (close == '}') {
            s2_json_ws(s);
            if (s2_json_string(s, NULL, 0) != 0) return -1;
            s2_json_ws(s);
            if (s->p >= s->end || *s->p++ != ':') return -1;
        }
        if (s2_json_skip(s) != 0) return -1;
        s2_json_ws(s);
        if (s->p >= s->end) return -1;
        uint8_t c = *s->p++;
        if (c == close) break;
        if (c != ',') return -1;
    }
    s->depth--;
    return 0;
}

int s2_json_skip(s2_json *s) {
    s2_json_ws(s);
    if (s->p >= s->end) return -1;
    switch (*s->p) {
    case '"': return s2_json_string(s, NULL, 0);
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
int s2_json_object(s2_json *s, s2_json_member_cb cb, void *ud) {
    s2_json_ws(s);
    if (s->p >= s->end || *s->p != '{') return -1;
    if (++s->depth > 32) return -1;
    s->p++;
    s2_json_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        s->depth--;
        return 0;
    }
    for (;;) {
        char key[64];
        size_t klen;
        s2_json_ws(s);
        if (json_string(s, key, sizeof key, &klen) != 0) return -1;
        /* A key cut short or holding an escaped NUL ("headers\u0000") must not pass for the
         * member it starts like: it matches no name. */
        if (klen >= sizeof key || strlen(key) != klen) key[0] = 0;
        s2_json_ws(s);
        if (s->p >= s->end || *s->p++ != ':') return -1;
        s2_json_ws(s);
        int r = cb(s, key, ud);
        if (r < 0) return -1;
        if (r == 0 && s2_json_skip(s) != 0) return -1;
        s2_json_ws(s);
        if (s->p >= s->end) return -1;
        uint8_t c = *s->p++;
        if (c == '}') break;
        if (c != ',') return -1;
    }
    s->depth--;
    return 0;
}


int s2_json_array(s2_json *s, s2_json_element_cb cb, void *ud) {
    s2_json_ws(s);
    if (s->p >= s->end || *s->p != '[') return -1;
    if (++s->depth > 32) return -1;
    s->p++;
    s2_json_ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        s->depth--;
        return 0;
    }
    for (size_t i = 0;; i++) {
        s2_json_ws(s);
        if (cb(s, i, ud) != 0) return -1;
        s2_json_ws(s);
        if (s->p >= s->end) return -1;
        uint8_t c = *s->p++;
        if (c == ']') break;
        if (c != ',') return -1;
    }
    s->depth--;
    return 0;
}

int s2_json_span(s2_json *s, const uint8_t **out, size_t *len) {
    if (s->p >= s->end || *s->p != '"') return -1;
    const uint8_t *start = ++s->p;
    while (s->p < s->end && *s->p != '"') {
        if (*s->p == '\\') return -1; /* spans are for escape-free strings (base64) */
        s->p++;
    }
    if (s->p >= s->end) return -1;
    *out = start;
    *len = (size_t)(s->p - start);
    s->p++;
    return 0;
}

static int position_member(s2_json *s, const char *key, void *ud) {
    s2_position *pos = ud;
    if (strcmp(key, "seq_num") == 0) return s2_json_u64(s, &pos->seq_num) == 0 ? 1 : -1;
    if (strcmp(key, "timestamp") == 0) return s2_json_u64(s, &pos->timestamp) == 0 ? 1 : -1;
    return 0;
}

int s2_json_position(s2_json *s, s2_position *pos) {
    memset(pos, 0, sizeof *pos);
    return s2_json_object(s, position_member, pos);
}
