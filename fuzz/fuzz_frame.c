/* fuzz_frame.c — libFuzzer harness for the S2S frame codec (csrc/s2_frame.c).
 *
 * The first byte picks a mode; the rest is the input of that mode:
 *   0  raw wire bytes fed to one decoder in chunks (chunk sizes from the input), frames
 *      taken out after every feed; every payload byte is read (ASan sees overreads) and
 *      the frame fields are checked against the wire.
 *   1  round trip: s2_frame_encode(payload, flags, compression) then decode; the frame
 *      must come back with the same payload (and status for terminal frames). Then a few
 *      bytes of the encoded frame are overwritten and the result decoded (must not crash).
 *   2  a well-formed frame header around arbitrary bytes with compression bits 1..3, so
 *      garbage reaches the zstd and gzip decompressors.
 *   3  a real zstd/gzip stream of the input, truncated and/or with bytes flipped, in a
 *      frame: near-valid compressed payloads.
 *   4  s2_frame_append_input round trip: records cut out of the input, encoded in a frame
 *      (compressed or not), decoded, and decoded again as an AppendInput.
 */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

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

/* Takes every complete frame out of d; returns -1 once the decoder reported an error. */
static int drain(s2_frame_decoder *d) {
    s2_frame f;
    s2_error err;
    int rc;
    while ((rc = s2_frame_next(d, &f, &err)) > 0) {
        CHECK(f.wire_len >= S2_FRAME_HEADER_LEN);
        CHECK(f.wire_len <= 3 + S2_FRAME_MAX_LEN);
        CHECK(f.len < S2_FRAME_MAX_LEN);
        CHECK(f.payload != NULL || f.len == 0);
        if (f.terminal) CHECK(f.status >= 0 && f.status <= 0xffff);
        touch(f.payload, f.len);
    }
    if (rc < 0) {
        CHECK(err.kind == S2_E_PROTOCOL || err.kind == S2_E_NOMEM);
        CHECK(memchr(err.code, 0, sizeof err.code) != NULL);
        CHECK(memchr(err.message, 0, sizeof err.message) != NULL);
        if (err.kind == S2_E_PROTOCOL) CHECK(strcmp(err.code, "bad_frame") == 0);
        return -1;
    }
    CHECK(d->off <= d->in.len);
    return 0;
}

static void decode_raw(const uint8_t *data, size_t size, const uint8_t *chunks, size_t nchunks) {
    s2_frame_decoder d;
    s2_frame_decoder_init(&d);
    s2_error err;
    size_t at = 0, ci = 0;
    while (at < size) {
        size_t step = nchunks ? (size_t)chunks[ci++ % nchunks] + 1 : size;
        if (step > size - at) step = size - at;
        CHECK(s2_frame_feed(&d, data + at, step, &err) == 0);
        at += step;
        if (drain(&d) < 0) break;
    }
    s2_frame_decoder_free(&d);
}

/* Decodes one complete frame from wire; returns 1 with a copy of it, 0 if incomplete, -1. */
static int decode_one(const uint8_t *wire, size_t n, s2_frame_decoder *d, s2_frame *f) {
    s2_error err;
    s2_frame_decoder_reset(d);
    CHECK(s2_frame_feed(d, wire, n, &err) == 0);
    int rc = s2_frame_next(d, f, &err);
    if (rc > 0) touch(f->payload, f->len);
    return rc;
}

static void round_trip(const uint8_t *data, size_t size) {
    if (size < 2) return;
    uint8_t flags = data[0];
    s2_compression c = (s2_compression)(data[1] % 3);
    /* Big payloads make the compressors slow; a few KiB cover the threshold (1 KiB). */
    const uint8_t *payload = data + 2;
    size_t len = size - 2;
    s2_buf out;
    s2_buf_init(&out);
    s2_error err;
    int rc = s2_frame_encode(payload, len, flags, c, &out, &err);
    CHECK(rc == 0); /* inputs are far below 2 MiB */
    CHECK(out.len >= S2_FRAME_HEADER_LEN);
    bool terminal = (flags & S2_FRAME_TERMINAL) != 0;
    bool compressed = (out.data[3] & S2_FRAME_COMPRESSION_MASK) != 0;
    CHECK(!(terminal && compressed));
    if (compressed) CHECK(c != S2_COMPRESSION_NONE && len >= S2_COMPRESSION_THRESHOLD);
    s2_frame_decoder d;
    s2_frame_decoder_init(&d);
    s2_frame f;
    int r = decode_one(out.data, out.len, &d, &f);
    if (terminal && len < 2) {
        CHECK(r < 0); /* a terminal frame needs its 2-byte status */
    } else {
        CHECK(r == 1);
        CHECK(f.terminal == terminal);
        CHECK(f.reconnect == ((flags & S2_FRAME_RECONNECT) != 0));
        CHECK(f.wire_len == out.len);
        if (terminal) {
            CHECK(f.status == (payload[0] << 8 | payload[1]));
            CHECK(f.len == len - 2 && memcmp(f.payload, payload + 2, len - 2) == 0);
        } else {
            CHECK(f.len == len && (len == 0 || memcmp(f.payload, payload, len) == 0));
        }
    }
    /* Damage: overwrite up to 4 bytes at positions taken from the payload itself. */
    if (len >= 4 && out.len > 4) {
        for (int i = 0; i < 4; i++) out.data[payload[i] % out.len] ^= (uint8_t)(payload[i] | 1);
        decode_raw(out.data, out.len, NULL, 0);
    }
    s2_frame_decoder_free(&d);
    s2_buf_free(&out);
}

static void put_header(uint8_t *h, size_t len_with_flag, uint8_t flags) {
    h[0] = (uint8_t)(len_with_flag >> 16);
    h[1] = (uint8_t)(len_with_flag >> 8);
    h[2] = (uint8_t)len_with_flag;
    h[3] = flags;
}

static void wrap_and_decode(const uint8_t *payload, size_t len, uint8_t flags) {
    uint8_t *wire = malloc(S2_FRAME_HEADER_LEN + len);
    CHECK(wire);
    put_header(wire, len + 1, flags);
    if (len) memcpy(wire + S2_FRAME_HEADER_LEN, payload, len);
    decode_raw(wire, S2_FRAME_HEADER_LEN + len, NULL, 0);
    free(wire);
}

static void garbage_compressed(const uint8_t *data, size_t size) {
    if (size < 1) return;
    uint8_t flags = (uint8_t)((data[0] & ~S2_FRAME_TERMINAL) | 0x20);
    if ((flags & S2_FRAME_COMPRESSION_MASK) == 0) flags |= 0x20;
    wrap_and_decode(data + 1, size - 1, flags);
}

static void damaged_compressed(const uint8_t *data, size_t size) {
    if (size < 4) return;
    int algo = data[0] & 1 ? 2 : 1;
    size_t cut = (size_t)data[1] << 8 | data[2]; /* bytes removed from the end */
    uint8_t flip = data[3];
    const uint8_t *src = data + 4;
    size_t n = size - 4;
    size_t bound = algo == 1 ? ZSTD_compressBound(n) : compressBound((uLong)n) + 32;
    uint8_t *comp = malloc(bound + 1);
    CHECK(comp);
    size_t clen = 0;
    /* The harness's own compressors are made once (speed); the decoder's are not ours. */
    static ZSTD_CCtx *cctx;
    static z_stream zs;
    static bool zs_ready;
    if (algo == 1) {
        if (!cctx) CHECK((cctx = ZSTD_createCCtx()) != NULL);
        clen = ZSTD_compressCCtx(cctx, comp, bound, src, n, 1);
        CHECK(!ZSTD_isError(clen));
    } else {
        if (!zs_ready) {
            memset(&zs, 0, sizeof zs);
            CHECK(deflateInit2(&zs, 1, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
            zs_ready = true;
        } else {
            CHECK(deflateReset(&zs) == Z_OK);
        }
        zs.next_in = (Bytef *)(uintptr_t)src;
        zs.avail_in = (uInt)n;
        zs.next_out = comp;
        zs.avail_out = (uInt)bound;
        CHECK(deflate(&zs, Z_FINISH) == Z_STREAM_END);
        clen = bound - zs.avail_out;
    }
    /* The undamaged stream must decode to the input. */
    {
        uint8_t *wire = malloc(S2_FRAME_HEADER_LEN + clen);
        CHECK(wire);
        put_header(wire, clen + 1, (uint8_t)(algo << 5));
        memcpy(wire + S2_FRAME_HEADER_LEN, comp, clen);
        s2_frame_decoder d;
        s2_frame_decoder_init(&d);
        s2_frame f;
        CHECK(decode_one(wire, S2_FRAME_HEADER_LEN + clen, &d, &f) == 1);
        CHECK(f.len == n && (n == 0 || memcmp(f.payload, src, n) == 0));
        s2_frame_decoder_free(&d);
        free(wire);
    }
    if (cut % (clen + 1) != 0) clen -= cut % (clen + 1);
    if (flip && clen) comp[flip % clen] ^= flip;
    wrap_and_decode(comp, clen, (uint8_t)(algo << 5 | (data[0] & S2_FRAME_RECONNECT)));
    free(comp);
}

/* Records: each is [len byte][body]; a header when the length byte's top bit is set. */
static void append_input_frame(const uint8_t *data, size_t size) {
    if (size < 1) return;
    s2_compression c = (s2_compression)(data[0] % 3);
    data++, size--;
    s2_record recs[64];
    s2_header hdrs[64];
    size_t n = 0;
    while (size > 0 && n < 64) {
        size_t l = data[0] & 0x7f;
        bool hdr = data[0] & 0x80;
        data++, size--;
        if (l > size) l = size;
        memset(&recs[n], 0, sizeof recs[n]);
        recs[n].body = data;
        recs[n].body_len = l;
        if (hdr) {
            hdrs[n].name = data;
            hdrs[n].name_len = l / 2;
            hdrs[n].value = data + l / 2;
            hdrs[n].value_len = l - l / 2;
            recs[n].headers = &hdrs[n];
            recs[n].num_headers = 1;
            recs[n].has_timestamp = true;
            recs[n].timestamp = l;
        }
        data += l, size -= l;
        n++;
    }
    if (n == 0) return;
    /* Repeat the records until the message passes the compression threshold (1 KiB), so
     * compression kicks in for most inputs; no further (compressing is the slow part). */
    s2_record many[256];
    size_t m = 0, bytes = 0;
    while (m < 256 && (m < n || bytes < S2_COMPRESSION_THRESHOLD + 64)) {
        many[m] = recs[m % n];
        bytes += s2_record_field_len(&many[m]);
        m++;
    }
    s2_append_input in = {.records = many, .num_records = m, .has_match_seq_num = true,
                          .match_seq_num = m, .fencing_token = "tok", .fencing_token_len = 3};
    s2_error err;
    CHECK(s2_append_input_validate(&in, NULL, &err) == 0);
    s2_buf out;
    s2_buf_init(&out);
    CHECK(s2_frame_append_input(&in, c, &out, &err) == 0);
    s2_frame_decoder d;
    s2_frame_decoder_init(&d);
    s2_frame f;
    CHECK(decode_one(out.data, out.len, &d, &f) == 1);
    CHECK(f.len == s2_append_input_encoded_len(&in));
    s2_append_input back;
    CHECK(s2_append_input_decode(f.payload, f.len, &back, &err) == 0);
    CHECK(back.num_records == m);
    for (size_t i = 0; i < m; i++) {
        CHECK(back.records[i].body_len == many[i].body_len);
        CHECK(many[i].body_len == 0 ||
              memcmp(back.records[i].body, many[i].body, many[i].body_len) == 0);
        CHECK(back.records[i].num_headers == many[i].num_headers);
        CHECK(back.records[i].has_timestamp == many[i].has_timestamp);
    }
    CHECK(back.has_match_seq_num && back.match_seq_num == m);
    CHECK(back.fencing_token_len == 3 && memcmp(back.fencing_token, "tok", 3) == 0);
    s2_append_input_free(&back);
    s2_frame_decoder_free(&d);
    s2_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t mode = data[0];
    data++, size--;
    switch (mode % 5) {
    case 0: {
        /* the first up to 8 bytes are chunk sizes, the rest is the wire */
        size_t nchunks = size ? (size_t)(data[0] % 8) : 0;
        if (nchunks + 1 > size) nchunks = 0;
        const uint8_t *chunks = data + 1;
        decode_raw(data + 1 + nchunks, size - (size ? 1 + nchunks : 0), chunks, nchunks);
        break;
    }
    case 1: round_trip(data, size); break;
    case 2: garbage_compressed(data, size); break;
    case 3: damaged_compressed(data, size); break;
    case 4: append_input_frame(data, size); break;
    }
    return 0;
}
