/* s2_frame.c — S2S framing (specs s2s.md) and its zstd/gzip compression.
 *
 * The decoder keeps unconsumed bytes in one buffer and hands out frames that point into it,
 * so a frame is copied once (from the socket into the buffer) unless it was compressed. */
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "s2.h"

static int nomem(s2_error *err) {
    return s2_fail(err, S2_E_NOMEM, "out_of_memory", "out of memory in the frame codec");
}

static void put_header(uint8_t *h, size_t len_with_flag, uint8_t flags) {
    h[0] = (uint8_t)(len_with_flag >> 16);
    h[1] = (uint8_t)(len_with_flag >> 8);
    h[2] = (uint8_t)len_with_flag;
    h[3] = flags;
}

/* Compresses src into out (appending): frame payloads, and unary bodies (s2.h). */
int s2_compress(s2_compression c, const uint8_t *src, size_t n, s2_buf *out, s2_error *err) {
    if (c == S2_COMPRESSION_NONE) return s2_buf_append(out, src, n) == 0 ? 0 : nomem(err);
    if (c == S2_COMPRESSION_ZSTD) {
        size_t bound = ZSTD_compressBound(n);
        if (s2_buf_reserve(out, bound) != 0) return nomem(err);
        size_t r = ZSTD_compress(out->data + out->len, bound, src, n, 1);
        if (ZSTD_isError(r))
            return s2_fail(err, S2_E_INVALID, "invalid", "zstd: %s", ZSTD_getErrorName(r));
        out->len += r;
        return 0;
    }
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, 1, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return nomem(err);
    uLong bound = deflateBound(&zs, (uLong)n);
    if (s2_buf_reserve(out, bound) != 0) {
        deflateEnd(&zs);
        return nomem(err);
    }
    zs.next_in = (Bytef *)(uintptr_t)src;
    zs.avail_in = (uInt)n;
    zs.next_out = out->data + out->len;
    zs.avail_out = (uInt)bound;
    int r = deflate(&zs, Z_FINISH);
    size_t produced = bound - zs.avail_out;
    deflateEnd(&zs);
    if (r != Z_STREAM_END) return s2_fail(err, S2_E_INVALID, "invalid", "gzip: deflate failed");
    out->len += produced;
    return 0;
}

const char *s2_compression_name(s2_compression c) {
    return c == S2_COMPRESSION_ZSTD ? "zstd" : c == S2_COMPRESSION_GZIP ? "gzip" : NULL;
}

int s2_frame_encode(const uint8_t *payload, size_t len, uint8_t flags, s2_compression c,
                    s2_buf *out, s2_error *err) {
    size_t start = out->len;
    if (s2_buf_reserve(out, S2_FRAME_HEADER_LEN + len) != 0) return nomem(err);
    out->len += S2_FRAME_HEADER_LEN;
    if (c != S2_COMPRESSION_NONE && !(flags & S2_FRAME_TERMINAL) && len >= S2_COMPRESSION_THRESHOLD) {
        if (s2_compress(c, payload, len, out, err) != 0) {
            out->len = start;
            return -1;
        }
        flags = (uint8_t)((flags & ~S2_FRAME_COMPRESSION_MASK) | ((unsigned)c << 5));
    } else {
        if (len) memcpy(out->data + out->len, payload, len);
        out->len += len;
        flags &= (uint8_t)~S2_FRAME_COMPRESSION_MASK;
    }
    size_t body = out->len - start - S2_FRAME_HEADER_LEN;
    if (body + 1 > S2_FRAME_MAX_LEN) {
        out->len = start;
        return s2_fail(err, S2_E_INVALID, "invalid", "frame of %zu bytes is over the limit of %u",
                       body + 1, S2_FRAME_MAX_LEN);
    }
    put_header(out->data + start, body + 1, flags);
    return 0;
}

int s2_frame_append_input(const s2_append_input *in, s2_compression c, s2_buf *out,
                          s2_error *err) {
    size_t len = s2_append_input_encoded_len(in);
    if (c == S2_COMPRESSION_NONE || len < S2_COMPRESSION_THRESHOLD) {
        /* The common path: encode straight after the header, no intermediate copy. */
        if (len + 1 > S2_FRAME_MAX_LEN)
            return s2_fail(err, S2_E_INVALID, "invalid", "frame of %zu bytes is over the limit of %u",
                           len + 1, S2_FRAME_MAX_LEN);
        if (s2_buf_reserve(out, S2_FRAME_HEADER_LEN + len) != 0) return nomem(err);
        put_header(out->data + out->len, len + 1, 0);
        s2_append_input_encode(in, out->data + out->len + S2_FRAME_HEADER_LEN);
        out->len += S2_FRAME_HEADER_LEN + len;
        return 0;
    }
    s2_buf tmp;
    s2_buf_init(&tmp);
    if (s2_buf_reserve(&tmp, len) != 0) return nomem(err);
    s2_append_input_encode(in, tmp.data);
    tmp.len = len;
    int rc = s2_frame_encode(tmp.data, tmp.len, 0, c, out, err);
    s2_buf_free(&tmp);
    return rc;
}

void s2_frame_decoder_init(s2_frame_decoder *d) {
    s2_buf_init(&d->in);
    s2_buf_init(&d->inflated);
    d->off = 0;
}

void s2_frame_decoder_free(s2_frame_decoder *d) {
    s2_buf_free(&d->in);
    s2_buf_free(&d->inflated);
    d->off = 0;
}

void s2_frame_decoder_reset(s2_frame_decoder *d) {
    d->in.len = 0;
    d->off = 0;
}

int s2_frame_feed(s2_frame_decoder *d, const uint8_t *p, size_t n, s2_error *err) {
    /* Compact consumed bytes before growing, so the buffer stays about one frame large. */
    if (d->off > 0 && (d->off == d->in.len || d->off > d->in.cap / 2)) {
        memmove(d->in.data, d->in.data + d->off, d->in.len - d->off);
        d->in.len -= d->off;
        d->off = 0;
    }
    return s2_buf_append(&d->in, p, n) == 0 ? 0 : nomem(err);
}

static int bad_frame(s2_error *err, const char *why) {
    s2_fail(err, S2_E_PROTOCOL, "bad_frame", "malformed S2S frame: %s", why);
    return -1;
}

/* Inflates into d->inflated, refusing more than the frame limit. */
static int decompress(s2_frame_decoder *d, unsigned c, const uint8_t *src, size_t n,
                      s2_error *err) {
    const size_t limit = S2_FRAME_MAX_LEN - 1;
    d->inflated.len = 0;
    if (c == S2_COMPRESSION_ZSTD) {
        ZSTD_DCtx *dctx = ZSTD_createDCtx();
        if (!dctx) return nomem(err);
        ZSTD_inBuffer zin = {src, n, 0};
        int rc = 0;
        for (;;) {
            if (s2_buf_reserve(&d->inflated, 64 * 1024) != 0) {
                rc = nomem(err);
                break;
            }
            ZSTD_outBuffer zout = {d->inflated.data + d->inflated.len,
                                   d->inflated.cap - d->inflated.len - 1, 0};
            size_t r = ZSTD_decompressStream(dctx, &zout, &zin);
            if (ZSTD_isError(r)) {
                rc = bad_frame(err, "zstd payload does not decompress");
                break;
            }
            d->inflated.len += zout.pos;
            if (d->inflated.len > limit) {
                rc = bad_frame(err, "decompressed payload over 2 MiB");
                break;
            }
            if (r == 0 && zin.pos == zin.size) break;
            if (zin.pos == zin.size && zout.pos < zout.size) {
                rc = bad_frame(err, "truncated zstd payload");
                break;
            }
        }
        ZSTD_freeDCtx(dctx);
        return rc;
    }
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) return nomem(err);
    zs.next_in = (Bytef *)(uintptr_t)src;
    zs.avail_in = (uInt)n;
    int rc = 0;
    for (;;) {
        if (s2_buf_reserve(&d->inflated, 64 * 1024) != 0) {
            rc = nomem(err);
            break;
        }
        size_t room = d->inflated.cap - d->inflated.len - 1;
        zs.next_out = d->inflated.data + d->inflated.len;
        zs.avail_out = (uInt)room;
        int r = inflate(&zs, Z_NO_FLUSH);
        d->inflated.len += room - zs.avail_out;
        if (d->inflated.len > limit) {
            rc = bad_frame(err, "decompressed payload over 2 MiB");
            break;
        }
        if (r == Z_STREAM_END) break;
        if (r != Z_OK && r != Z_BUF_ERROR) {
            rc = bad_frame(err, "gzip payload does not decompress");
            break;
        }
        if (zs.avail_in == 0 && zs.avail_out != 0) {
            rc = bad_frame(err, "truncated gzip payload");
            break;
        }
    }
    inflateEnd(&zs);
    return rc;
}

int s2_frame_next(s2_frame_decoder *d, s2_frame *f, s2_error *err) {
    size_t avail = d->in.len - d->off;
    if (avail < 3) return 0;
    const uint8_t *h = d->in.data + d->off;
    size_t len = (size_t)h[0] << 16 | (size_t)h[1] << 8 | h[2];
    if (len == 0) return bad_frame(err, "zero length");
    if (len > S2_FRAME_MAX_LEN) return bad_frame(err, "length over 2 MiB");
    if (avail < 3 + len) return 0;
    uint8_t flags = h[3];
    const uint8_t *payload = h + 4;
    size_t plen = len - 1;
    d->off += 3 + len;
    memset(f, 0, sizeof *f);
    f->wire_len = 3 + len;
    f->terminal = (flags & S2_FRAME_TERMINAL) != 0;
    f->reconnect = (flags & S2_FRAME_RECONNECT) != 0;
    if (f->terminal) {
        /* Terminal frames are never compressed: status + JSON. */
        if (plen < 2) return bad_frame(err, "terminal frame without a status");
        f->status = payload[0] << 8 | payload[1];
        f->payload = payload + 2;
        f->len = plen - 2;
        return 1;
    }
    unsigned c = (flags & S2_FRAME_COMPRESSION_MASK) >> 5;
    if (c == 3) return bad_frame(err, "unknown compression");
    if (c == 0) {
        f->payload = payload;
        f->len = plen;
        return 1;
    }
    if (decompress(d, c, payload, plen, err) != 0) return -1;
    f->payload = d->inflated.data;
    f->len = d->inflated.len;
    return 1;
}
