/* fuzz_error.c — libFuzzer harness for server error bodies (csrc/s2_error.c).
 *
 * The first 4 bytes are the HTTP status (int32, big-endian: any value, negative included;
 * when the top byte is 0 the status is folded into 100..599, the realistic range), the rest
 * is the body. s2_error_from_response must never fail; the result must be a well-formed
 * s2_error: kind SERVER, status kept, code and message NUL-terminated and non-empty,
 * expected_fencing_token NUL-terminated, the 412/416 codes consistent with their fields,
 * and retryable/no_side_effects what s2_error_classify says for that code and status.
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 4) return 0;
    uint32_t u = (uint32_t)data[0] << 24 | (uint32_t)data[1] << 16 | (uint32_t)data[2] << 8 | data[3];
    int status = data[0] == 0 ? (int)(100 + u % 500) : (int)u;
    size_t n = size - 4;
    uint8_t *body = malloc(n ? n : 1); /* exact size: ASan sees any overread */
    if (!body) return 0;
    if (n) memcpy(body, data + 4, n);

    s2_error err;
    memset(&err, 0xA5, sizeof err); /* garbage in: everything must be (re)set */
    s2_error_from_response(&err, status, n ? body : NULL, n);
    CHECK(err.kind == S2_E_SERVER);
    CHECK(err.status == status);
    CHECK(memchr(err.code, 0, sizeof err.code) != NULL);
    CHECK(memchr(err.message, 0, sizeof err.message) != NULL);
    CHECK(err.code[0] != 0);
    CHECK(err.message[0] != 0);
    if (err.has_expected_fencing_token)
        CHECK(memchr(err.expected_fencing_token, 0, sizeof err.expected_fencing_token) != NULL);
    if (err.has_expected_seq_num) CHECK(strcmp(err.code, "seq_num_mismatch") == 0);
    else if (err.has_expected_fencing_token) CHECK(strcmp(err.code, "fencing_token_mismatch") == 0);
    else if (status == 416) CHECK(strcmp(err.code, "range_not_satisfiable") == 0);
    bool retryable = err.retryable, nse = err.no_side_effects;
    s2_error again = err;
    s2_error_classify(&again);
    CHECK(again.retryable == retryable && again.no_side_effects == nse);
    /* Deterministic: the same input gives the same error. */
    s2_error twice;
    s2_error_from_response(&twice, status, n ? body : NULL, n);
    CHECK(strcmp(twice.code, err.code) == 0 && strcmp(twice.message, err.message) == 0);
    CHECK(twice.has_tail == err.has_tail && twice.has_expected_seq_num == err.has_expected_seq_num);
    free(body);
    return 0;
}
