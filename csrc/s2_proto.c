/* s2_proto.c — hand-written protobuf codec for the S2 v1 messages (specs/s2.proto).
 *
 * Encoding is two passes over the input: sizes first, then one write into a buffer of
 * exactly that size, so record bodies are copied once, straight into the wire buffer.
 * Decoding is bounds-checked and zero-copy: headers and bodies point into the input.
 * Unknown fields are skipped, as protobuf requires; a known field with the wrong wire
 * type, a truncated field or an overlong varint is an error. */
#include <stdlib.h>
#include <string.h>

#include "s2.h"

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

/* ---- encoding ------------------------------------------------------------------------- */

static size_t varint_len(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v) {
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

static uint8_t *put_key(uint8_t *p, unsigned field, unsigned wt) {
    return put_varint(p, (uint64_t)field << 3 | wt);
}

/* A length-delimited field of n bytes (tag is one byte for fields 1..15). */
static size_t len_field(size_t n) {
    return 1 + varint_len(n) + n;
}

static uint8_t *put_bytes(uint8_t *p, unsigned field, const uint8_t *data, size_t n) {
    p = put_key(p, field, WT_LEN);
    p = put_varint(p, n);
    if (n) memcpy(p, data, n);
    return p + n;
}

static size_t header_len(const s2_header *h) {
    return (h->name_len ? len_field(h->name_len) : 0) + (h->value_len ? len_field(h->value_len) : 0);
}

static uint8_t *put_header(uint8_t *p, unsigned field, const s2_header *h) {
    p = put_key(p, field, WT_LEN);
    p = put_varint(p, header_len(h));
    if (h->name_len) p = put_bytes(p, 1, h->name, h->name_len);
    if (h->value_len) p = put_bytes(p, 2, h->value, h->value_len);
    return p;
}

static size_t position_len(const s2_position *pos) {
    return (pos->seq_num ? 1 + varint_len(pos->seq_num) : 0) +
           (pos->timestamp ? 1 + varint_len(pos->timestamp) : 0);
}

static uint8_t *put_position(uint8_t *p, unsigned field, const s2_position *pos) {
    p = put_key(p, field, WT_LEN);
    p = put_varint(p, position_len(pos));
    if (pos->seq_num) p = put_varint(put_key(p, 1, WT_VARINT), pos->seq_num);
    if (pos->timestamp) p = put_varint(put_key(p, 2, WT_VARINT), pos->timestamp);
    return p;
}

static size_t record_len(const s2_record *r) {
    size_t n = r->has_timestamp ? 1 + varint_len(r->timestamp) : 0;
    for (size_t i = 0; i < r->num_headers; i++) n += len_field(header_len(&r->headers[i]));
    if (r->body_len) n += len_field(r->body_len);
    return n;
}

static size_t metered(const s2_header *h, size_t num_headers, size_t body_len) {
    size_t n = S2_RECORD_OVERHEAD + body_len;
    for (size_t i = 0; i < num_headers; i++)
        n += S2_HEADER_OVERHEAD + h[i].name_len + h[i].value_len;
    return n;
}

size_t s2_record_metered_bytes(const s2_record *r) {
    return metered(r->headers, r->num_headers, r->body_len);
}

size_t s2_sequenced_record_metered_bytes(const s2_sequenced_record *r) {
    return metered(r->headers, r->num_headers, r->body_len);
}

int s2_append_input_validate(const s2_append_input *in, size_t *metered, s2_error *err) {
    if (in->num_records == 0)
        return s2_fail(err, S2_E_INVALID, "invalid", "records: a batch needs at least 1 record");
    if (in->num_records > S2_MAX_BATCH_RECORDS)
        return s2_fail(err, S2_E_INVALID, "invalid",
                       "records: %zu records is over the limit of %u per batch", in->num_records,
                       S2_MAX_BATCH_RECORDS);
    size_t total = 0;
    for (size_t i = 0; i < in->num_records; i++) {
        size_t m = s2_record_metered_bytes(&in->records[i]);
        if (m > S2_MAX_BATCH_BYTES)
            return s2_fail(err, S2_E_INVALID, "invalid",
                           "records[%zu]: %zu metered bytes is over the limit of %u per record",
                           i + 1, m, S2_MAX_BATCH_BYTES);
        total += m;
    }
    if (total > S2_MAX_BATCH_BYTES)
        return s2_fail(err, S2_E_INVALID, "invalid",
                       "records: %zu metered bytes is over the limit of %u per batch", total,
                       S2_MAX_BATCH_BYTES);
    if (in->fencing_token && in->fencing_token_len > S2_MAX_FENCING_TOKEN)
        return s2_fail(err, S2_E_INVALID, "invalid",
                       "fencing_token: %zu bytes is over the limit of %u", in->fencing_token_len,
                       S2_MAX_FENCING_TOKEN);
    if (metered) *metered = total;
    return 0;
}

size_t s2_record_field_len(const s2_record *r) {
    return len_field(record_len(r));
}

uint8_t *s2_record_field_encode(const s2_record *r, uint8_t *p) {
    p = put_key(p, 1, WT_LEN);
    p = put_varint(p, record_len(r));
    if (r->has_timestamp) p = put_varint(put_key(p, 1, WT_VARINT), r->timestamp);
    for (size_t j = 0; j < r->num_headers; j++) p = put_header(p, 2, &r->headers[j]);
    if (r->body_len) p = put_bytes(p, 3, r->body, r->body_len);
    return p;
}

size_t s2_append_conditions_len(bool has_match_seq_num, uint64_t match_seq_num,
                                const char *fencing_token, size_t fencing_token_len) {
    return (has_match_seq_num ? 1 + varint_len(match_seq_num) : 0) +
           (fencing_token ? len_field(fencing_token_len) : 0);
}

uint8_t *s2_append_conditions_encode(bool has_match_seq_num, uint64_t match_seq_num,
                                     const char *fencing_token, size_t fencing_token_len,
                                     uint8_t *p) {
    if (has_match_seq_num) p = put_varint(put_key(p, 2, WT_VARINT), match_seq_num);
    if (fencing_token) p = put_bytes(p, 3, (const uint8_t *)fencing_token, fencing_token_len);
    return p;
}

size_t s2_append_input_encoded_len(const s2_append_input *in) {
    size_t n = 0;
    for (size_t i = 0; i < in->num_records; i++) n += s2_record_field_len(&in->records[i]);
    return n + s2_append_conditions_len(in->has_match_seq_num, in->match_seq_num,
                                        in->fencing_token, in->fencing_token_len);
}

void s2_append_input_encode(const s2_append_input *in, uint8_t *out) {
    uint8_t *p = out;
    for (size_t i = 0; i < in->num_records; i++) p = s2_record_field_encode(&in->records[i], p);
    s2_append_conditions_encode(in->has_match_seq_num, in->match_seq_num, in->fencing_token,
                                in->fencing_token_len, p);
}

size_t s2_append_ack_encode(const s2_append_ack *ack, uint8_t out[S2_APPEND_ACK_MAX_LEN]) {
    uint8_t *p = out;
    p = put_position(p, 1, &ack->start);
    p = put_position(p, 2, &ack->end);
    p = put_position(p, 3, &ack->tail);
    return (size_t)(p - out);
}

static size_t seq_record_len(const s2_sequenced_record *r) {
    size_t n = (r->seq_num ? 1 + varint_len(r->seq_num) : 0) +
               (r->timestamp ? 1 + varint_len(r->timestamp) : 0);
    for (size_t i = 0; i < r->num_headers; i++) n += len_field(header_len(&r->headers[i]));
    if (r->body_len) n += len_field(r->body_len);
    return n;
}

size_t s2_read_batch_encoded_len(const s2_read_batch *b) {
    size_t n = 0;
    for (size_t i = 0; i < b->num_records; i++) n += len_field(seq_record_len(&b->records[i]));
    if (b->has_tail) n += len_field(position_len(&b->tail));
    return n;
}

void s2_read_batch_encode(const s2_read_batch *b, uint8_t *out) {
    uint8_t *p = out;
    for (size_t i = 0; i < b->num_records; i++) {
        const s2_sequenced_record *r = &b->records[i];
        p = put_key(p, 1, WT_LEN);
        p = put_varint(p, seq_record_len(r));
        if (r->seq_num) p = put_varint(put_key(p, 1, WT_VARINT), r->seq_num);
        if (r->timestamp) p = put_varint(put_key(p, 2, WT_VARINT), r->timestamp);
        for (size_t j = 0; j < r->num_headers; j++) p = put_header(p, 3, &r->headers[j]);
        if (r->body_len) p = put_bytes(p, 4, r->body, r->body_len);
    }
    if (b->has_tail) put_position(p, 2, &b->tail);
}

/* ---- decoding ------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *p, *end;
} reader;

typedef struct {
    unsigned field;
    unsigned wt;
    uint64_t u;          /* WT_VARINT value */
    const uint8_t *data; /* WT_LEN payload */
    size_t len;
} field;

static int get_varint_long(reader *r, uint64_t *out) {
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end) return -1;
        uint8_t b = *r->p++;
        if (shift == 63 && b > 1) return -1; /* would overflow 64 bits */
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* One and two bytes inline (tags, lengths of records up to 16 KiB); longer in a call. */
static inline int get_varint(reader *r, uint64_t *out) {
    const uint8_t *p = r->p;
    if (p < r->end && !(p[0] & 0x80)) {
        *out = p[0];
        r->p = p + 1;
        return 0;
    }
    if (r->end - p >= 2 && !(p[1] & 0x80)) {
        *out = (uint64_t)(p[0] & 0x7F) | (uint64_t)p[1] << 7;
        r->p = p + 2;
        return 0;
    }
    return get_varint_long(r, out);
}

/* Reads the next field. Returns 1 with *f filled, 0 at the end, -1 when malformed. */
static inline int next_field(reader *r, field *f) {
    if (r->p >= r->end) return 0;
    uint64_t key;
    if (get_varint(r, &key) != 0) return -1;
    f->field = (unsigned)(key >> 3);
    f->wt = (unsigned)(key & 7);
    if (f->field == 0 || key >> 3 > 0x1FFFFFFF) return -1;
    switch (f->wt) {
    case WT_VARINT:
        return get_varint(r, &f->u) == 0 ? 1 : -1;
    case WT_I64:
        if (r->end - r->p < 8) return -1;
        r->p += 8;
        return 1;
    case WT_I32:
        if (r->end - r->p < 4) return -1;
        r->p += 4;
        return 1;
    case WT_LEN: {
        uint64_t n;
        if (get_varint(r, &n) != 0 || n > (uint64_t)(r->end - r->p)) return -1;
        f->data = r->p;
        f->len = (size_t)n;
        r->p += n;
        return 1;
    }
    default:
        return -1; /* groups are not part of proto3 */
    }
}

static int bad(s2_error *err, const char *what) {
    return s2_fail(err, S2_E_PROTOCOL, "protocol_error", "malformed %s message", what);
}

/* Each decoder checks the wire type of the fields it knows. */
#define EXPECT(wt_) if (f.wt != (wt_)) return -1

static int decode_position(const uint8_t *p, size_t len, s2_position *pos) {
    reader r = {p, p + len};
    field f;
    int rc;
    memset(pos, 0, sizeof *pos);
    while ((rc = next_field(&r, &f)) > 0) {
        if (f.field == 1) { EXPECT(WT_VARINT); pos->seq_num = f.u; }
        else if (f.field == 2) { EXPECT(WT_VARINT); pos->timestamp = f.u; }
    }
    return rc;
}

static int decode_header(const uint8_t *p, size_t len, s2_header *h) {
    reader r = {p, p + len};
    field f;
    int rc;
    memset(h, 0, sizeof *h);
    while ((rc = next_field(&r, &f)) > 0) {
        if (f.field == 1) { EXPECT(WT_LEN); h->name = f.data; h->name_len = f.len; }
        else if (f.field == 2) { EXPECT(WT_LEN); h->value = f.data; h->value_len = f.len; }
    }
    return rc;
}

int s2_append_ack_decode(const uint8_t *p, size_t len, s2_append_ack *out, s2_error *err) {
    reader r = {p, p + len};
    field f;
    int rc;
    memset(out, 0, sizeof *out);
    while ((rc = next_field(&r, &f)) > 0) {
        s2_position *pos = f.field == 1 ? &out->start : f.field == 2 ? &out->end
                         : f.field == 3 ? &out->tail : NULL;
        if (!pos) continue;
        if (f.wt != WT_LEN || decode_position(f.data, f.len, pos) != 0) return bad(err, "AppendAck");
    }
    return rc < 0 ? bad(err, "AppendAck") : 0;
}

/* A record-like message: the numbers of its timestamp/headers/body fields (and seq_num, or
 * 0 when it has none). Headers go to hdrs (NULL: only count them into *nhdrs). */
typedef struct {
    unsigned f_seq, f_ts, f_hdr, f_body;
} record_shape;

static const record_shape append_record_shape = {0, 1, 2, 3};
static const record_shape sequenced_record_shape = {1, 2, 3, 4};

static int decode_record(const uint8_t *p, size_t len, const record_shape *shape,
                         s2_sequenced_record *rec, bool *has_ts, s2_header *hdrs, size_t *nhdrs) {
    reader r = {p, p + len};
    field f;
    int rc;
    size_t n = 0;
    if (rec) memset(rec, 0, sizeof *rec);
    if (has_ts) *has_ts = false;
    /* The shape every server writes: seq_num, timestamp, body, in field order, no headers.
     * Anything else (or anything malformed) is left to the general loop below. */
    if (rec && shape == &sequenced_record_shape) {
        reader q = r;
        uint64_t seq, ts, blen;
        if (q.p < q.end && *q.p++ == (1 << 3 | WT_VARINT) && get_varint(&q, &seq) == 0 &&
            q.p < q.end && *q.p++ == (2 << 3 | WT_VARINT) && get_varint(&q, &ts) == 0 &&
            q.p < q.end && *q.p++ == (4 << 3 | WT_LEN) && get_varint(&q, &blen) == 0 &&
            blen == (uint64_t)(q.end - q.p)) {
            rec->seq_num = seq;
            rec->timestamp = ts;
            rec->body = q.p;
            rec->body_len = (size_t)blen;
            if (has_ts) *has_ts = true;
            *nhdrs = 0;
            return 0;
        }
    }
    while ((rc = next_field(&r, &f)) > 0) {
        if (shape->f_seq && f.field == shape->f_seq) {
            EXPECT(WT_VARINT);
            if (rec) rec->seq_num = f.u;
        } else if (f.field == shape->f_ts) {
            EXPECT(WT_VARINT);
            if (rec) rec->timestamp = f.u;
            if (has_ts) *has_ts = true;
        } else if (f.field == shape->f_hdr) {
            EXPECT(WT_LEN);
            s2_header scratch; /* the counting pass validates too */
            if (decode_header(f.data, f.len, hdrs ? &hdrs[n] : &scratch) != 0) return -1;
            n++;
        } else if (f.field == shape->f_body) {
            EXPECT(WT_LEN);
            if (rec) {
                rec->body = f.data;
                rec->body_len = f.len;
            }
        }
    }
    if (rc < 0) return -1;
    if (rec) {
        rec->headers = hdrs;
        rec->num_headers = n;
    }
    *nhdrs = n;
    return 0;
}

/* A message with repeated records in field `f_records`. A first pass over the top level
 * only counts the records (each is a length and a skip); the second decodes and checks each
 * record once, into the records array, and its headers into an array grown as they come
 * (most records have none). Headers are stored in record order, so each record's pointer
 * into that array is set at the end, once it no longer moves. */
/* The message's other top-level fields, met in the counting pass: 0, or -1 (malformed). */
typedef int (*other_field_fn)(const field *f, void *ctx);

static int decode_records(const uint8_t *p, size_t len, unsigned f_records,
                          const record_shape *shape, other_field_fn other, void *ctx,
                          s2_sequenced_record **recs_out, bool **has_ts_out, size_t *nrec_out,
                          s2_header **hdrs_out) {
    reader r = {p, p + len};
    field f;
    int rc;
    size_t nrec = 0;
    while ((rc = next_field(&r, &f)) > 0) {
        if (f.field != f_records) {
            if (other(&f, ctx) != 0) return -1;
            continue;
        }
        if (f.wt != WT_LEN) return -1;
        nrec++;
    }
    if (rc < 0) return -1;
    s2_sequenced_record *recs = nrec ? malloc(nrec * sizeof *recs) : NULL;
    bool *has_ts = (has_ts_out && nrec) ? malloc(nrec * sizeof *has_ts) : NULL;
    s2_header *hdrs = NULL;
    size_t nhdr = 0, hcap = 0;
    if ((nrec && !recs) || (has_ts_out && nrec && !has_ts)) {
        rc = -2;
        goto fail;
    }
    r.p = p;
    size_t i = 0;
    while (next_field(&r, &f) > 0) {
        if (f.field != f_records) continue;
        size_t h;
        /* Headers first counted (and checked), then, if any, decoded into room made for
         * them: the common record (no headers) is decoded once. */
        if (decode_record(f.data, f.len, shape, &recs[i], has_ts ? &has_ts[i] : NULL, NULL,
                          &h) != 0) {
            rc = -1;
            goto fail;
        }
        if (h) {
            if (nhdr + h > hcap) {
                size_t cap = hcap ? hcap * 2 : 16;
                while (cap < nhdr + h) cap *= 2;
                s2_header *grown = realloc(hdrs, cap * sizeof *hdrs);
                if (!grown) {
                    rc = -2;
                    goto fail;
                }
                hdrs = grown;
                hcap = cap;
            }
            decode_record(f.data, f.len, shape, &recs[i], has_ts ? &has_ts[i] : NULL,
                          hdrs + nhdr, &h);
            nhdr += h;
        }
        i++;
    }
    for (size_t j = 0, used = 0; j < nrec; j++) {
        recs[j].headers = recs[j].num_headers ? hdrs + used : NULL;
        used += recs[j].num_headers;
    }
    *recs_out = recs;
    *nrec_out = nrec;
    *hdrs_out = hdrs;
    if (has_ts_out) *has_ts_out = has_ts;
    return 0;
fail:
    free(recs);
    free(hdrs);
    free(has_ts);
    return rc;
}

static int read_batch_field(const field *f, void *ctx) {
    s2_read_batch *out = ctx;
    if (f->field != 2) return 0;
    if (f->wt != WT_LEN || decode_position(f->data, f->len, &out->tail) != 0) return -1;
    out->has_tail = true;
    return 0;
}

int s2_read_batch_decode(const uint8_t *p, size_t len, s2_read_batch *out, s2_error *err) {
    memset(out, 0, sizeof *out);
    int rc = decode_records(p, len, 1, &sequenced_record_shape, read_batch_field, out,
                            &out->records, NULL, &out->num_records, &out->owned_headers);
    if (rc == -2) return s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory decoding a ReadBatch");
    if (rc != 0) {
        memset(out, 0, sizeof *out);
        return bad(err, "ReadBatch");
    }
    return 0;
}

void s2_read_batch_free(s2_read_batch *b) {
    free(b->records);
    free(b->owned_headers);
    memset(b, 0, sizeof *b);
}

static int append_input_field(const field *f, void *ctx) {
    s2_append_input *out = ctx;
    if (f->field == 2) {
        if (f->wt != WT_VARINT) return -1;
        out->has_match_seq_num = true;
        out->match_seq_num = f->u;
    } else if (f->field == 3) {
        if (f->wt != WT_LEN) return -1;
        out->fencing_token = (const char *)f->data;
        out->fencing_token_len = f->len;
    }
    return 0;
}

int s2_append_input_decode(const uint8_t *p, size_t len, s2_append_input *out, s2_error *err) {
    memset(out, 0, sizeof *out);
    s2_sequenced_record *recs;
    bool *has_ts;
    size_t n;
    s2_header *hdrs;
    int rc = decode_records(p, len, 1, &append_record_shape, append_input_field, out, &recs,
                            &has_ts, &n, &hdrs);
    if (rc != 0) memset(out, 0, sizeof *out);
    if (rc == -2) return s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory decoding an AppendInput");
    if (rc != 0) return bad(err, "AppendInput");
    s2_record *records = n ? calloc(n, sizeof *records) : NULL;
    if (n && !records) {
        free(recs);
        free(has_ts);
        free(hdrs);
        return s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory decoding an AppendInput");
    }
    for (size_t i = 0; i < n; i++) {
        records[i].has_timestamp = has_ts[i];
        records[i].timestamp = recs[i].timestamp;
        records[i].headers = recs[i].headers;
        records[i].num_headers = recs[i].num_headers;
        records[i].body = recs[i].body;
        records[i].body_len = recs[i].body_len;
    }
    free(recs);
    free(has_ts);
    out->records = out->owned_records = records;
    out->num_records = n;
    out->owned_headers = hdrs;
    return 0;
}

void s2_append_input_free(s2_append_input *in) {
    free(in->owned_records);
    free(in->owned_headers);
    memset(in, 0, sizeof *in);
}
