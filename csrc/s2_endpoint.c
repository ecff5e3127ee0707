/* s2_endpoint.c — endpoint parsing and URL building. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "s2.h"

#define TEMPLATE "{basin}."

int s2_endpoint_parse(const char *text, s2_endpoint *out, s2_error *err) {
    memset(out, 0, sizeof *out);
    if (!text || !*text) return s2_fail(err, S2_E_INVALID, "invalid", "endpoint: empty");
    const char *s = text;
    bool scheme = false;
    if (strncmp(s, "https://", 8) == 0) {
        out->https = true;
        scheme = true;
        s += 8;
    } else if (strncmp(s, "http://", 7) == 0) {
        s += 7;
        scheme = true;
    } else if (strstr(s, "://")) {
        return s2_fail(err, S2_E_INVALID, "invalid",
                       "endpoint '%s': the scheme must be http or https", text);
    }
    if (strpbrk(s, "?#"))
        return s2_fail(err, S2_E_INVALID, "invalid",
                       "endpoint '%s': a query or fragment is not allowed", text);
    if (strncmp(s, TEMPLATE, strlen(TEMPLATE)) == 0) {
        out->basin_template = true;
        s += strlen(TEMPLATE);
    }
    size_t hostlen = strcspn(s, ":/");
    if (hostlen == 0 || hostlen >= sizeof out->host)
        return s2_fail(err, S2_E_INVALID, "invalid", "endpoint '%s': bad host", text);
    for (size_t i = 0; i < hostlen; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(isalnum(c) || c == '.' || c == '-' || c == '_'))
            return s2_fail(err, S2_E_INVALID, "invalid",
                           "endpoint '%s': bad character in host", text);
    }
    memcpy(out->host, s, hostlen);
    s += hostlen;
    if (!scheme)
        out->https = !(strcmp(out->host, "localhost") == 0 || strcmp(out->host, "127.0.0.1") == 0);
    out->port = out->https ? 443 : 80;
    if (*s == ':') {
        s++;
        char *end;
        long port = strtol(s, &end, 10);
        if (end == s || port < 1 || port > 65535 || (*end && *end != '/'))
            return s2_fail(err, S2_E_INVALID, "invalid", "endpoint '%s': bad port", text);
        out->port = (int)port;
        s = end;
    }
    size_t pathlen = strlen(s);
    while (pathlen > 0 && s[pathlen - 1] == '/') pathlen--; /* no trailing slash */
    if (pathlen == 0) {
        snprintf(out->path, sizeof out->path, "/v1");
    } else {
        if (pathlen >= sizeof out->path)
            return s2_fail(err, S2_E_INVALID, "invalid", "endpoint '%s': path too long", text);
        memcpy(out->path, s, pathlen);
        out->path[pathlen] = 0;
    }
    return 0;
}

bool s2_basin_name_valid(const char *name) {
    size_t n = strlen(name);
    if (n < 8 || n > 48 || name[0] == '-' || name[n - 1] == '-') return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
    }
    return true;
}

bool s2_encryption_key_valid(const char *key) {
    size_t n = strlen(key);
    if (n == 0 || n > S2_MAX_ENCRYPTION_KEY) return false;
    for (size_t i = 0; i < n; i++) {
        char c = key[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/' || c == '='))
            return false;
    }
    return true;
}

int s2_buf_append_urlencoded(s2_buf *b, const uint8_t *s, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            if (s2_buf_append(b, &c, 1) != 0) return -1;
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            if (s2_buf_append(b, e, 3) != 0) return -1;
        }
    }
    return 0;
}

int s2_endpoint_url(const s2_endpoint *ep, const char *basin, const char *suffix, s2_buf *b) {
    char port[16];
    bool default_port = ep->port == (ep->https ? 443 : 80);
    snprintf(port, sizeof port, ":%d", ep->port);
    if (s2_buf_append_str(b, ep->https ? "https://" : "http://") != 0) return -1;
    if (basin && ep->basin_template) {
        if (s2_buf_append_str(b, basin) != 0 || s2_buf_append_str(b, ".") != 0) return -1;
    }
    if (s2_buf_append_str(b, ep->host) != 0) return -1;
    if (!default_port && s2_buf_append_str(b, port) != 0) return -1;
    if (s2_buf_append_str(b, ep->path) != 0) return -1;
    return suffix ? s2_buf_append_str(b, suffix) : 0;
}

int s2_stream_records_path(const char *stream, s2_buf *b) {
    if (s2_buf_append_str(b, "/streams/") != 0 ||
        s2_buf_append_urlencoded(b, (const uint8_t *)stream, strlen(stream)) != 0 ||
        s2_buf_append_str(b, "/records") != 0)
        return -1;
    return 0;
}
