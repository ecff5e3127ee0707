/* s2_retry.c — the one retry rule of the core: whether a failed attempt may be tried again
 * under the attempt budget and the append retry policy, the final error text when not, and
 * the once-per-60-s rule for planned handovers. Unary calls (s2_http.c, s2_call.c), append
 * sessions, read sessions and SSE reads all decide here. Also the monotonic clock every layer uses.
 * (The backoff formula itself is s2_backoff_with in s2_http.c.) */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <stdint.h>

#include "s2_internal.h"

double s2_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

bool s2_retry_allowed(const s2_config *cfg, unsigned attempts, bool append_at_stake,
                      const s2_error *err) {
    unsigned max = cfg->max_attempts ? cfg->max_attempts : 1;
    bool retry = err->retryable && (max == S2_RETRY_FOREVER || attempts < max);
    if (retry && append_at_stake && cfg->append_retry_policy == S2_RETRY_NO_SIDE_EFFECTS &&
        !err->no_side_effects)
        retry = false; /* a resend could write the same records twice */
    return retry;
}

void s2_error_note_attempts(s2_error *err, unsigned attempts) {
    if (attempts <= 1) return;
    size_t len = strlen(err->message);
    snprintf(err->message + len, sizeof err->message - len, " (after %u attempts)", attempts);
}

bool s2_retry_decide(const s2_config *cfg, unsigned attempts, bool append_at_stake,
                     s2_error *err) {
    if (s2_retry_allowed(cfg, attempts, append_at_stake, err)) return true;
    s2_error_note_attempts(err, attempts);
    return false;
}

void s2_retry_config_for(const s2_config *base, const s2_retry_options *o, s2_config *out) {
    *out = *base;
    if (!o || !o->max_attempts) return;
    out->max_attempts = o->max_attempts;
    out->min_base_delay = o->min_base_delay;
    out->max_base_delay = o->max_base_delay;
    out->append_retry_policy = o->append_retry_policy;
}

uint64_t s2_retry_seed(const void *p) {
    uint64_t x = (uint64_t)(uintptr_t)p ^ (uint64_t)(s2_now() * 1e9);
    return x ? x : 0x9E3779B97F4A7C15ull;
}

bool s2_retry_take_handover(double *last, double now) {
    if (*last && now - *last < 60) return false;
    *last = now;
    return true;
}
