/* s2_error.c — error values: server error bodies and S2's retry classification.
 *
 * Error bodies are small JSON objects. A tiny bounds-checked scanner reads just the keys we
 * need, so the core has no JSON dependency (management bodies are parsed in Lua by cjson). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "s2_internal.h"

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

static int error_member(s2_json *s, const char *key, void *ud) {
    s2_error *err = ud;
    if (strcmp(key, "code") == 0 && s->p < s->end && *s->p == '"')
        return s2_json_string(s, err->code, sizeof err->code) == 0 ? 1 : -1;
    if (strcmp(key, "message") == 0 && s->p < s->end && *s->p == '"')
        return s2_json_string(s, err->message, sizeof err->message) == 0 ? 1 : -1;
    if (strcmp(key, "seq_num_mismatch") == 0) {
        if (s2_json_u64(s, &err->expected_seq_num) != 0) return -1;
        err->has_expected_seq_num = true;
        return 1;
    }
    if (strcmp(key, "fencing_token_mismatch") == 0 && s->p < s->end && *s->p == '"') {
        if (s2_json_string(s, err->expected_fencing_token, sizeof err->expected_fencing_token) != 0) return -1;
        err->has_expected_fencing_token = true;
        return 1;
    }
    if (strcmp(key, "tail") == 0 && s->p < s->end && *s->p == '{') {
        if (s2_json_position(s, &err->tail) != 0) return -1;
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
    if (!body) { /* an empty answer: no pointer arithmetic on NULL below */
        body = (const uint8_t *)"";
        len = 0;
    }
    memset(err, 0, sizeof *err);
    err->kind = S2_E_SERVER;
    err->status = status;
    s2_json s = {body, body + len, 0};
    bool parsed = len > 0 && s2_json_object(&s, error_member, err) == 0;
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
    if (!err->code[0] && status == 501) snprintf(err->code, sizeof err->code, "not_implemented");
    if (!err->code[0]) snprintf(err->code, sizeof err->code, "http_%d", status);
    if (!err->message[0]) snprintf(err->message, sizeof err->message, "HTTP status %d", status);
    s2_error_classify(err);
}
