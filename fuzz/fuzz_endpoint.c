/* fuzz_endpoint.c — libFuzzer harness for endpoints (csrc/s2_endpoint.c).
 *
 * Input: TEXT [\0 BASIN [\0 SUFFIX]]. TEXT goes to s2_endpoint_parse; a parsed endpoint must
 * be well-formed (NUL-terminated host of allowed characters, port 1..65535, a path that
 * starts with '/', has no trailing '/', no '?' or '#'). s2_endpoint_url is then built with
 * and without BASIN and SUFFIX; the account-scope URL must parse back to the same endpoint
 * (scheme, host, port, path), and for a template endpoint with a valid S2 basin name
 * ([a-z0-9-]) the basin URL must parse back with host "<basin>.<host>". Finally
 * s2_buf_append_urlencoded(BASIN) must give only unreserved characters and %XX escapes
 * that decode back to BASIN.
 */
#include <ctype.h>
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

static int valid_basin(const char *b) {
    if (!*b) return 0;
    for (const char *p = b; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-')) return 0;
    return 1;
}

static void check_endpoint(const s2_endpoint *ep) {
    CHECK(memchr(ep->host, 0, sizeof ep->host) != NULL);
    CHECK(memchr(ep->path, 0, sizeof ep->path) != NULL);
    CHECK(ep->host[0] != 0);
    for (const char *p = ep->host; *p; p++)
        CHECK(isalnum((unsigned char)*p) || *p == '.' || *p == '-' || *p == '_');
    CHECK(ep->port >= 1 && ep->port <= 65535);
    CHECK(ep->path[0] == '/');
    size_t pl = strlen(ep->path);
    CHECK(pl == 1 ? 1 : ep->path[pl - 1] != '/');
    CHECK(strpbrk(ep->path, "?#") == NULL);
}

static int hexv(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void check_urlencode(const uint8_t *s, size_t n) {
    s2_buf b;
    s2_buf_init(&b);
    CHECK(s2_buf_append_urlencoded(&b, s, n) == 0);
    size_t j = 0;
    for (size_t i = 0; i < b.len; i++) {
        uint8_t c = b.data[i];
        if (c == '%') {
            CHECK(i + 2 < b.len);
            int hi = hexv(b.data[i + 1]), lo = hexv(b.data[i + 2]);
            CHECK(hi >= 0 && lo >= 0);
            CHECK(j < n && s[j] == (uint8_t)(hi << 4 | lo));
            i += 2;
        } else {
            CHECK(isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~');
            CHECK(j < n && s[j] == c);
        }
        j++;
    }
    CHECK(j == n);
    s2_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size + 2);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    buf[size] = 0;
    buf[size + 1] = 0;
    const char *text = buf;
    size_t tl = strlen(text);
    const char *basin = tl < size ? buf + tl + 1 : NULL;
    size_t bl = basin ? strlen(basin) : 0;
    const char *suffix = basin && tl + 1 + bl < size ? basin + bl + 1 : NULL;

    if (basin) check_urlencode((const uint8_t *)basin, bl);

    s2_endpoint ep;
    s2_error err;
    memset(&err, 0, sizeof err);
    if (s2_endpoint_parse(text, &ep, &err) != 0) {
        CHECK(err.kind == S2_E_INVALID);
        CHECK(memchr(err.message, 0, sizeof err.message) != NULL);
        free(buf);
        return 0;
    }
    check_endpoint(&ep);

    s2_buf url;
    s2_buf_init(&url);
    CHECK(s2_endpoint_url(&ep, NULL, NULL, &url) == 0);
    CHECK(strncmp((char *)url.data, ep.https ? "https://" : "http://", ep.https ? 8 : 7) == 0);
    s2_endpoint back;
    CHECK(s2_endpoint_parse((char *)url.data, &back, &err) == 0);
    CHECK(back.https == ep.https && back.port == ep.port && !back.basin_template);
    CHECK(strcmp(back.host, ep.host) == 0 && strcmp(back.path, ep.path) == 0);

    if (basin) {
        url.len = 0;
        CHECK(s2_endpoint_url(&ep, basin, suffix, &url) == 0);
        CHECK(url.len == strlen((char *)url.data));
        if (ep.basin_template && valid_basin(basin) && bl + 1 + strlen(ep.host) < sizeof ep.host) {
            url.len = 0;
            CHECK(s2_endpoint_url(&ep, basin, NULL, &url) == 0);
            CHECK(s2_endpoint_parse((char *)url.data, &back, &err) == 0);
            CHECK(strncmp(back.host, basin, bl) == 0 && back.host[bl] == '.');
            CHECK(strcmp(back.host + bl + 1, ep.host) == 0);
            CHECK(back.port == ep.port && strcmp(back.path, ep.path) == 0);
        }
    }
    s2_buf_free(&url);
    free(buf);
    return 0;
}
