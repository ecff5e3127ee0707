/* s2_unary.h — one unary HTTP attempt on a curl easy handle (s2_http.c), and the I/O
 * thread's driver of unary calls (s2_call.c). Internal. */
#ifndef S2_UNARY_H
#define S2_UNARY_H

#include <curl/curl.h>

#include "s2.h"

/* What one attempt's callbacks fill (headers, body, resend guard). Lives as long as the
 * transfer: the easy handle points into it. */
typedef struct s2_http_attempt {
    s2_response *resp;
    uint64_t retry_after_ms;
    bool too_big;
    bool append;
    /* Appends only: the body, how much of it curl has taken, how many times curl was about
     * to send the request, whether a resend was refused, and whether curl had said why the
     * connection failed by then (else the error buffer holds only the refusal). */
    const uint8_t *body;
    size_t body_len, taken;
    unsigned sends;
    bool resend_refused, cause_known;
    char errbuf[CURL_ERROR_SIZE];
    struct curl_slist *headers;
    s2_buf url; /* kept between attempts (init it once, free with _cleanup) */
} s2_http_attempt;

int s2_http_global_init(s2_error *err); /* curl_global_init, once per process */
/* Configures c for one attempt of req (resp gets the answer). */
int s2_http_attempt_setup(CURL *c, const s2_config *cfg, const s2_request *req,
                          s2_http_attempt *a, s2_response *resp, s2_error *err);
/* After the transfer ended with cr: 0 for a 2xx answer, else -1 with err classified. */
int s2_http_attempt_finish(CURL *c, s2_http_attempt *a, CURLcode cr, s2_error *err);
void s2_http_attempt_cleanup(CURL *c, s2_http_attempt *a);
/* curl_slist_free_all with every line zeroed first: header lines may hold the encryption
 * key (or the access token). */
void s2_http_free_headers(struct curl_slist *list);
/* Whether attempt number `attempts` (1-based) failing with err is tried again. */
bool s2_http_should_retry(const s2_config *cfg, const s2_request *req, unsigned attempts,
                          const s2_error *err);

#endif /* S2_UNARY_H */
