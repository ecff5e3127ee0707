/* s2_sse_parse.c — server-sent event framing and S2's JSON read events (see s2_sse_parse.h).
 *
 * Everything here is bounded by its input: an event is at most S2_SSE_EVENT_MAX bytes, JSON
 * nesting at most 32 levels (s2_json.c), and every array the batch parser grows holds one
 * entry per element actually present in the JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "s2_sse_parse.h"

/* ---- event framing ------------------------------------------------------------------------- */

void s2_sse_parser_init(s2_sse_parser *p) {
    memset(p, 0, sizeof *p);
    s2_buf_init(&p->line);
    s2_buf_init(&p->data);
}

static void clear_event(s2_sse_parser *p) {
    p->data.len = 0;
    p->has_data = false;
    p->event[0] = 0;
    p->event_long = false;
    p->id[0] = 0;
    p->id_long = false;
}

void s2_sse_parser_reset(s2_sse_parser *p) {
    p->line.len = 0;
    p->cr = false;
    clear_event(p);
}

void s2_sse_parser_free(s2_sse_parser *p) {
    s2_buf_free(&p->line);
    s2_buf_free(&p->data);
}

static void copy_field(char *out, size_t cap, bool *too_long, const uint8_t *v, size_t n) {
    *too_long = n >= cap;
    if (n >= cap) n = cap - 1;
    memcpy(out, v, n);
    out[n] = 0;
}

/* One complete line. Returns 1 when cb asked to stop, 0 to go on, -1 on error. */
static int take_line(s2_sse_parser *p, s2_sse_event_cb cb, void *ud, s2_error *err) {
    const uint8_t *line = p->line.data;
    size_t n = p->line.len;
    if (n == 0) {
        int rc = 0;
        if (p->has_data) {
            const uint8_t *d = p->data.data ? p->data.data : (const uint8_t *)"";
            rc = cb(ud, p, d, p->data.len) != 0;
        }
        clear_event(p);
        return rc;
    }
    if (line[0] == ':') return 0; /* comment */
    const uint8_t *colon = memchr(line, ':', n);
    size_t klen = colon ? (size_t)(colon - line) : n;
    const uint8_t *v = colon ? colon + 1 : line + n;
    size_t vlen = (size_t)(line + n - v);
    if (vlen && *v == ' ') {
        v++;
        vlen--;
    }
    if (klen == 4 && memcmp(line, "data", 4) == 0) {
        if (p->data.len + vlen + 1 > S2_SSE_EVENT_MAX)
            return s2_fail(err, S2_E_PROTOCOL, "protocol_error",
                           "event stream: an event over %u bytes", S2_SSE_EVENT_MAX);
        if ((p->has_data && s2_buf_append(&p->data, "\n", 1) != 0) ||
            s2_buf_append(&p->data, v, vlen) != 0)
            return s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory reading");
        p->has_data = true;
    } else if (klen == 5 && memcmp(line, "event", 5) == 0) {
        copy_field(p->event, sizeof p->event, &p->event_long, v, vlen);
        if (memchr(v, 0, vlen)) p->event_long = true; /* names nothing known */
    } else if (klen == 2 && memcmp(line, "id", 2) == 0) {
        if (!memchr(v, 0, vlen)) copy_field(p->id, sizeof p->id, &p->id_long, v, vlen);
    }
    return 0;
}

int s2_sse_feed(s2_sse_parser *p, const uint8_t *in, size_t n, s2_sse_event_cb cb, void *ud,
                size_t *used, s2_error *err) {
    size_t i = 0;
    *used = 0;
    while (i < n) {
        if (p->cr) {
            p->cr = false;
            if (in[i] == '\n') { /* the LF of a CRLF: the CR ended the line already */
                i++;
                continue;
            }
        }
        size_t j = i;
        while (j < n && in[j] != '\n' && in[j] != '\r') j++;
        if (j - i > S2_SSE_EVENT_MAX - p->line.len)
            return s2_fail(err, S2_E_PROTOCOL, "protocol_error",
                           "event stream: a line over %u bytes", S2_SSE_EVENT_MAX);
        if (s2_buf_append(&p->line, in + i, j - i) != 0)
            return s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory reading");
        if (j == n) break; /* the line goes on in the next chunk */
        p->cr = in[j] == '\r';
        i = j + 1;
        int rc = take_line(p, cb, ud, err);
        p->line.len = 0;
        if (rc < 0) return -1;
        if (rc > 0) {
            *used = i;
            return 1;
        }
    }
    *used = n;
    return 0;
}

/* ---- base64 ---------------------------------------------------------------------------------- */

static int b64val(uint8_t c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Appends the decoded bytes of s[0..n) to out: standard alphabet, padding optional (at most
 * two '=' at the end). -1 on bad input, -2 when out of memory. */
static int b64_decode(const uint8_t *s, size_t n, s2_buf *out) {
    size_t pad = 0;
    while (n > 0 && s[n - 1] == '=' && pad < 2) n--, pad++;
    if (n % 4 == 1 || (pad && (n + pad) % 4 != 0)) return -1;
    if (s2_buf_reserve(out, n / 4 * 3 + 2) != 0) return -2;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64val(s[i]);
        if (v < 0) return -1;
        acc = (acc << 6 | (uint32_t)v) & 0xFFFFFFu;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out->data[out->len++] = (uint8_t)(acc >> bits);
        }
    }
    return 0;
}

/* ---- JSON ReadBatch ---------------------------------------------------------------------------- */

/* Offsets into the arena while parsing (it moves as it grows). */
typedef struct {
    size_t name, name_len, value, value_len;
} hdr_off;

enum { SEEN_SEQ = 1, SEEN_TS = 2, SEEN_HEADERS = 4, SEEN_BODY = 8 };

typedef struct {
    uint64_t seq_num, timestamp;
    size_t first_hdr, num_hdrs;
    size_t body, body_len;
    unsigned seen;
} rec_off;

typedef struct {
    s2_buf arena; /* decoded bodies and header bytes */
    rec_off *recs;
    size_t nrecs, cap_recs;
    hdr_off *hdrs;
    size_t nhdrs, cap_hdrs;
    size_t pair_len; /* strings in the header pair being read */
    bool has_records, seen_tail, has_tail;
    s2_position tail;
    char why[96]; /* what was wrong, when a callback knows */
    bool nomem;
} batch_parse;

static int bad(batch_parse *bp, const char *fmt, const char *what, size_t rec) {
    snprintf(bp->why, sizeof bp->why, fmt, what, rec);
    return -1;
}

static int b64_field(s2_json *s, batch_parse *bp, size_t *off, size_t *len, const char *what) {
    const uint8_t *p;
    size_t n;
    *off = bp->arena.len;
    int rc = s2_json_span(s, &p, &n) == 0 ? b64_decode(p, n, &bp->arena) : -1;
    if (rc == -2) bp->nomem = true;
    if (rc != 0) return bad(bp, "%s of record %zu is not a base64 string", what, bp->nrecs - 1);
    *len = bp->arena.len - *off;
    return 0;
}

static int header_string(s2_json *s, size_t index, void *ud) {
    batch_parse *bp = ud;
    hdr_off *h = &bp->hdrs[bp->nhdrs - 1];
    bp->pair_len = index + 1;
    if (index == 0) return b64_field(s, bp, &h->name, &h->name_len, "a header name");
    if (index == 1) return b64_field(s, bp, &h->value, &h->value_len, "a header value");
    return bad(bp, "%s in record %zu has more than two strings", "a header", bp->nrecs - 1);
}

static int header_elem(s2_json *s, size_t index, void *ud) {
    (void)index;
    batch_parse *bp = ud;
    if (bp->nhdrs == bp->cap_hdrs) {
        size_t cap = bp->cap_hdrs ? bp->cap_hdrs * 2 : 16;
        hdr_off *n = realloc(bp->hdrs, cap * sizeof *n);
        if (!n) {
            bp->nomem = true;
            return -1;
        }
        bp->hdrs = n;
        bp->cap_hdrs = cap;
    }
    memset(&bp->hdrs[bp->nhdrs++], 0, sizeof(hdr_off));
    bp->pair_len = 0;
    if (s2_json_array(s, header_string, bp) != 0) return -1;
    if (bp->pair_len != 2)
        return bad(bp, "%s in record %zu is not a [name, value] pair", "a header", bp->nrecs - 1);
    return 0;
}

/* Marks a member of the current record seen; a second occurrence is an error. */
static int first_time(batch_parse *bp, unsigned bit, const char *key) {
    rec_off *r = &bp->recs[bp->nrecs - 1];
    if (r->seen & bit) return bad(bp, "duplicate \"%s\" in record %zu", key, bp->nrecs - 1);
    r->seen |= bit;
    return 0;
}

static int record_member(s2_json *s, const char *key, void *ud) {
    batch_parse *bp = ud;
    rec_off *r = &bp->recs[bp->nrecs - 1];
    if (strcmp(key, "seq_num") == 0) {
        if (first_time(bp, SEEN_SEQ, key) != 0) return -1;
        if (s2_json_u64(s, &r->seq_num) != 0)
            return bad(bp, "%s of record %zu is not a u64", key, bp->nrecs - 1);
        return 1;
    }
    if (strcmp(key, "timestamp") == 0) {
        if (first_time(bp, SEEN_TS, key) != 0) return -1;
        if (s2_json_u64(s, &r->timestamp) != 0)
            return bad(bp, "%s of record %zu is not a u64", key, bp->nrecs - 1);
        return 1;
    }
    if (strcmp(key, "body") == 0) {
        if (first_time(bp, SEEN_BODY, key) != 0) return -1;
        return b64_field(s, bp, &r->body, &r->body_len, "the body") == 0 ? 1 : -1;
    }
    if (strcmp(key, "headers") == 0) {
        if (first_time(bp, SEEN_HEADERS, key) != 0) return -1;
        /* The record's headers are the ones this array adds, and only those. */
        size_t first = bp->nhdrs;
        if (s2_json_array(s, header_elem, bp) != 0) return -1;
        r = &bp->recs[bp->nrecs - 1];
        r->first_hdr = first;
        r->num_hdrs = bp->nhdrs - first;
        return 1;
    }
    return 0;
}

static int record_elem(s2_json *s, size_t index, void *ud) {
    (void)index;
    batch_parse *bp = ud;
    if (bp->nrecs == bp->cap_recs) {
        size_t cap = bp->cap_recs ? bp->cap_recs * 2 : 64;
        rec_off *n = realloc(bp->recs, cap * sizeof *n);
        if (!n) {
            bp->nomem = true;
            return -1;
        }
        bp->recs = n;
        bp->cap_recs = cap;
    }
    rec_off *r = &bp->recs[bp->nrecs++];
    memset(r, 0, sizeof *r);
    r->first_hdr = bp->nhdrs;
    if (s2_json_object(s, record_member, bp) != 0) return -1;
    r = &bp->recs[bp->nrecs - 1];
    if (!(r->seen & SEEN_SEQ)) return bad(bp, "no \"%s\" in record %zu", "seq_num", bp->nrecs - 1);
    if (!(r->seen & SEEN_TS)) return bad(bp, "no \"%s\" in record %zu", "timestamp", bp->nrecs - 1);
    return 0;
}

static int batch_member(s2_json *s, const char *key, void *ud) {
    batch_parse *bp = ud;
    if (strcmp(key, "records") == 0) {
        if (bp->has_records) return bad(bp, "duplicate \"%s\" (after record %zu)", key, bp->nrecs);
        bp->has_records = true;
        return s2_json_array(s, record_elem, bp) == 0 ? 1 : -1;
    }
    if (strcmp(key, "tail") == 0) {
        if (bp->seen_tail) return bad(bp, "duplicate \"%s\" (after record %zu)", key, bp->nrecs);
        bp->seen_tail = true;
        if (s->end - s->p >= 4 && memcmp(s->p, "null", 4) == 0) { /* no tail */
            s->p += 4;
            return 1;
        }
        bp->has_tail = true;
        return s2_json_position(s, &bp->tail) == 0 ? 1 : -1;
    }
    return 0;
}

void s2_sse_rbatch_free(s2_rbatch *b) {
    if (!b) return;
    s2_read_batch_free(&b->batch);
    s2_buf_free(&b->payload);
    free(b);
}

s2_rbatch *s2_sse_parse_batch(const uint8_t *json, size_t len, s2_error *err) {
    batch_parse bp;
    memset(&bp, 0, sizeof bp);
    s2_buf_init(&bp.arena);
    s2_json s = {json, json + len, 0};
    s2_rbatch *b = NULL;
    int rc = s2_json_object(&s, batch_member, &bp);
    if (rc == 0) {
        s2_json_ws(&s);
        if (s.p != s.end) snprintf(bp.why, sizeof bp.why, "bytes after the JSON object");
        else if (!bp.has_records) snprintf(bp.why, sizeof bp.why, "no \"records\"");
        if (bp.why[0]) rc = -1;
    }
    if (rc != 0 && bp.nomem) {
        s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory reading");
        goto done;
    }
    if (rc != 0) {
        if (!bp.why[0])
            snprintf(bp.why, sizeof bp.why, "malformed JSON at byte %zu",
                     (size_t)(s.p - json));
        s2_fail(err, S2_E_PROTOCOL, "protocol_error", "malformed ReadBatch event: %s", bp.why);
        goto done;
    }
    b = calloc(1, sizeof *b);
    s2_sequenced_record *recs = bp.nrecs ? calloc(bp.nrecs, sizeof *recs) : NULL;
    s2_header *hdrs = bp.nhdrs ? calloc(bp.nhdrs, sizeof *hdrs) : NULL;
    if (!b || (bp.nrecs && !recs) || (bp.nhdrs && !hdrs)) {
        free(b);
        free(recs);
        free(hdrs);
        b = NULL;
        s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory reading");
        goto done;
    }
    const uint8_t *base = bp.arena.data;
    for (size_t i = 0; i < bp.nhdrs; i++) {
        hdrs[i].name = base + bp.hdrs[i].name;
        hdrs[i].name_len = bp.hdrs[i].name_len;
        hdrs[i].value = base + bp.hdrs[i].value;
        hdrs[i].value_len = bp.hdrs[i].value_len;
    }
    for (size_t i = 0; i < bp.nrecs; i++) {
        const rec_off *r = &bp.recs[i];
        recs[i].seq_num = r->seq_num;
        recs[i].timestamp = r->timestamp;
        recs[i].headers = r->num_hdrs ? hdrs + r->first_hdr : NULL;
        recs[i].num_headers = r->num_hdrs;
        /* An absent body is empty; base may be NULL when nothing was decoded at all. */
        recs[i].body = base ? base + r->body : (const uint8_t *)"";
        recs[i].body_len = r->body_len;
    }
    b->payload = bp.arena; /* owned by the batch now */
    s2_buf_init(&bp.arena);
    b->batch.records = recs;
    b->batch.num_records = bp.nrecs;
    b->batch.owned_headers = hdrs;
    b->batch.has_tail = bp.has_tail;
    b->batch.tail = bp.tail;
done:
    s2_buf_free(&bp.arena);
    free(bp.recs);
    free(bp.hdrs);
    return b;
}

/* ---- ping and id --------------------------------------------------------------------------- */

typedef struct {
    bool has_tail;
    s2_position tail;
} ping_parse;

static int ping_member(s2_json *s, const char *key, void *ud) {
    ping_parse *pp = ud;
    if (strcmp(key, "tail") != 0 || s->p >= s->end || *s->p != '{') return 0;
    if (pp->has_tail) return -1; /* duplicate */
    pp->has_tail = true;
    return s2_json_position(s, &pp->tail) == 0 ? 1 : -1;
}

int s2_sse_parse_ping(const uint8_t *json, size_t len, s2_position *tail) {
    ping_parse pp;
    memset(&pp, 0, sizeof pp);
    s2_json s = {json, json + len, 0};
    if (s2_json_object(&s, ping_member, &pp) != 0) return -1;
    if (!pp.has_tail) return 0;
    *tail = pp.tail;
    return 1;
}

static const char *id_number(const char *p, uint64_t *out) {
    uint64_t v = 0;
    const char *start = p;
    while (*p >= '0' && *p <= '9') {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) return NULL;
        v = v * 10 + d;
        p++;
    }
    if (p == start) return NULL;
    *out = v;
    return p;
}

int s2_sse_parse_id(const char *id, uint64_t *seq_num, uint64_t *count, uint64_t *bytes) {
    const char *p = id_number(id, seq_num);
    if (!p || *p++ != ',' || !(p = id_number(p, count)) || *p++ != ',' ||
        !(p = id_number(p, bytes)) || *p != 0)
        return -1;
    return 0;
}
