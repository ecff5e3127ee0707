/* fuzz_proto.c — libFuzzer harness for the protobuf codec (csrc/s2_proto.c).
 *
 * The first byte picks the message; the rest is decoded as that message:
 *   0  AppendAck:   decode, re-encode, decode again: the same positions.
 *   1  ReadBatch:   decode, re-encode into a buffer of exactly s2_read_batch_encoded_len
 *                   bytes (zero-filled, so a short write is caught by the decode after it),
 *                   decode again: the same records (seq_num, timestamp, headers, body) and
 *                   tail.
 *   2  AppendInput: decode, re-encode two ways (s2_append_input_encode, and record fields +
 *                   conditions as the producer does; both must be byte-identical and exactly
 *                   _encoded_len long), decode again: the same records and conditions;
 *                   validate and metered bytes must agree with the per-record sums.
 * Every decoded byte range is read, so ASan reports pointers outside the input.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "s2.h"

#define CHECK(c)                                                                               \
    do {                                                                                       \
        if (!(c)) {                                                                            \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);             \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

static volatile uint8_t sink;

static void touch(const uint8_t *p, size_t n) {
    uint8_t x = 0;
    for (size_t i = 0; i < n; i++) x ^= p[i];
    sink ^= x;
}

static int same_bytes(const uint8_t *a, size_t an, const uint8_t *b, size_t bn) {
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

static void check_error(const s2_error *err) {
    CHECK(err->kind == S2_E_PROTOCOL || err->kind == S2_E_NOMEM);
    CHECK(memchr(err->code, 0, sizeof err->code) && memchr(err->message, 0, sizeof err->message));
}

static int same_headers(const s2_header *a, size_t an, const s2_header *b, size_t bn) {
    if (an != bn) return 0;
    for (size_t i = 0; i < an; i++) {
        if (!same_bytes(a[i].name, a[i].name_len, b[i].name, b[i].name_len)) return 0;
        if (!same_bytes(a[i].value, a[i].value_len, b[i].value, b[i].value_len)) return 0;
    }
    return 1;
}

static void fuzz_ack(const uint8_t *p, size_t n) {
    s2_append_ack a, b;
    s2_error err;
    if (s2_append_ack_decode(p, n, &a, &err) != 0) {
        check_error(&err);
        return;
    }
    uint8_t out[S2_APPEND_ACK_MAX_LEN];
    size_t len = s2_append_ack_encode(&a, out);
    CHECK(len <= S2_APPEND_ACK_MAX_LEN);
    CHECK(s2_append_ack_decode(out, len, &b, &err) == 0);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
}

static void fuzz_read_batch(const uint8_t *p, size_t n) {
    s2_read_batch a, b;
    s2_error err;
    if (s2_read_batch_decode(p, n, &a, &err) != 0) {
        check_error(&err);
        return;
    }
    for (size_t i = 0; i < a.num_records; i++) {
        const s2_sequenced_record *r = &a.records[i];
        touch(r->body, r->body_len);
        CHECK(r->num_headers == 0 || r->headers != NULL);
        for (size_t j = 0; j < r->num_headers; j++) {
            touch(r->headers[j].name, r->headers[j].name_len);
            touch(r->headers[j].value, r->headers[j].value_len);
        }
    }
    size_t len = s2_read_batch_encoded_len(&a);
    uint8_t *out = calloc(1, len ? len : 1);
    CHECK(out);
    s2_read_batch_encode(&a, out);
    CHECK(s2_read_batch_decode(out, len, &b, &err) == 0);
    CHECK(a.num_records == b.num_records);
    CHECK(a.has_tail == b.has_tail);
    if (a.has_tail) CHECK(a.tail.seq_num == b.tail.seq_num && a.tail.timestamp == b.tail.timestamp);
    for (size_t i = 0; i < a.num_records; i++) {
        const s2_sequenced_record *x = &a.records[i], *y = &b.records[i];
        CHECK(x->seq_num == y->seq_num && x->timestamp == y->timestamp);
        CHECK(same_bytes(x->body, x->body_len, y->body, y->body_len));
        CHECK(same_headers(x->headers, x->num_headers, y->headers, y->num_headers));
    }
    /* Canonical: encoding the re-decoded batch gives the same bytes. */
    CHECK(s2_read_batch_encoded_len(&b) == len);
    uint8_t *again = calloc(1, len ? len : 1);
    CHECK(again);
    s2_read_batch_encode(&b, again);
    CHECK(len == 0 || memcmp(out, again, len) == 0);
    free(again);
    s2_read_batch_free(&b);
    free(out);
    s2_read_batch_free(&a);
}

static void fuzz_append_input(const uint8_t *p, size_t n) {
    s2_append_input a, b;
    s2_error err;
    if (s2_append_input_decode(p, n, &a, &err) != 0) {
        check_error(&err);
        return;
    }
    size_t metered_sum = 0;
    for (size_t i = 0; i < a.num_records; i++) {
        const s2_record *r = &a.records[i];
        touch(r->body, r->body_len);
        CHECK(r->num_headers == 0 || r->headers != NULL);
        for (size_t j = 0; j < r->num_headers; j++) {
            touch(r->headers[j].name, r->headers[j].name_len);
            touch(r->headers[j].value, r->headers[j].value_len);
        }
        size_t m = s2_record_metered_bytes(r);
        CHECK(m >= S2_RECORD_OVERHEAD + r->body_len);
        metered_sum += m;
    }
    if (a.fencing_token) touch((const uint8_t *)a.fencing_token, a.fencing_token_len);
    size_t metered = 0;
    if (s2_append_input_validate(&a, &metered, &err) == 0) {
        CHECK(metered == metered_sum);
        CHECK(a.num_records >= 1 && a.num_records <= S2_MAX_BATCH_RECORDS);
        CHECK(metered <= S2_MAX_BATCH_BYTES);
    } else {
        CHECK(err.kind == S2_E_INVALID);
        CHECK(a.num_records == 0 || a.num_records > S2_MAX_BATCH_RECORDS ||
              metered_sum > S2_MAX_BATCH_BYTES ||
              (a.fencing_token && a.fencing_token_len > S2_MAX_FENCING_TOKEN));
    }
    size_t len = s2_append_input_encoded_len(&a);
    uint8_t *out = calloc(1, len ? len : 1);
    uint8_t *pieces = calloc(1, len ? len : 1);
    CHECK(out && pieces);
    s2_append_input_encode(&a, out);
    /* The producer's way: record fields one by one, then the conditions. */
    uint8_t *q = pieces;
    size_t fields = 0;
    for (size_t i = 0; i < a.num_records; i++) {
        size_t fl = s2_record_field_len(&a.records[i]);
        uint8_t *end = s2_record_field_encode(&a.records[i], q);
        CHECK((size_t)(end - q) == fl);
        q = end;
        fields += fl;
    }
    size_t cl = s2_append_conditions_len(a.has_match_seq_num, a.match_seq_num, a.fencing_token,
                                         a.fencing_token_len);
    CHECK(fields + cl == len);
    uint8_t *end = s2_append_conditions_encode(a.has_match_seq_num, a.match_seq_num,
                                               a.fencing_token, a.fencing_token_len, q);
    CHECK((size_t)(end - pieces) == len);
    CHECK(len == 0 || memcmp(out, pieces, len) == 0);
    CHECK(s2_append_input_decode(out, len, &b, &err) == 0);
    CHECK(a.num_records == b.num_records);
    for (size_t i = 0; i < a.num_records; i++) {
        const s2_record *x = &a.records[i], *y = &b.records[i];
        CHECK(x->has_timestamp == y->has_timestamp);
        if (x->has_timestamp) CHECK(x->timestamp == y->timestamp);
        CHECK(same_bytes(x->body, x->body_len, y->body, y->body_len));
        CHECK(same_headers(x->headers, x->num_headers, y->headers, y->num_headers));
    }
    CHECK(a.has_match_seq_num == b.has_match_seq_num);
    if (a.has_match_seq_num) CHECK(a.match_seq_num == b.match_seq_num);
    CHECK((a.fencing_token == NULL) == (b.fencing_token == NULL));
    if (a.fencing_token)
        CHECK(same_bytes((const uint8_t *)a.fencing_token, a.fencing_token_len,
                         (const uint8_t *)b.fencing_token, b.fencing_token_len));
    s2_append_input_free(&b);
    free(pieces);
    free(out);
    s2_append_input_free(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    /* Copy the message so ASan sees reads past its end (libFuzzer's buffer is exact too,
     * but the selector byte sits before it). */
    size_t n = size - 1;
    uint8_t *p = malloc(n ? n : 1);
    if (!p) return 0;
    if (n) memcpy(p, data + 1, n);
    switch (data[0] % 3) {
    case 0: fuzz_ack(p, n); break;
    case 1: fuzz_read_batch(p, n); break;
    case 2: fuzz_append_input(p, n); break;
    }
    free(p);
    return 0;
}
