/* s2_buf.c — growable byte buffer. */
#include <stdlib.h>
#include <string.h>

#include "s2.h"

void s2_buf_init(s2_buf *b) {
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void s2_buf_free(s2_buf *b) {
    free(b->data);
    s2_buf_init(b);
}

s2_buf s2_buf_take(s2_buf *b) {
    s2_buf out = *b;
    s2_buf_init(b);
    return out;
}

bool s2_buf_keep(s2_buf *spare, s2_buf *from, size_t max) {
    if (spare->data || !from->data || from->cap > max) return false;
    *spare = s2_buf_take(from);
    spare->len = 0;
    return true;
}

int s2_buf_reserve(s2_buf *b, size_t extra) {
    if (extra > SIZE_MAX - b->len - 1) return -1;
    size_t need = b->len + extra + 1; /* +1 keeps room for a NUL terminator */
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p) return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int s2_buf_append(s2_buf *b, const void *p, size_t n) {
    if (s2_buf_reserve(b, n) != 0) return -1;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

int s2_buf_append_str(s2_buf *b, const char *s) {
    return s2_buf_append(b, s, strlen(s));
}

void s2_wipe(void *p, size_t n) {
    volatile uint8_t *v = p; /* volatile: the stores are not dropped before a free */
    while (n--) *v++ = 0;
}

void s2_free_secret(char *s) {
    if (!s) return;
    s2_wipe(s, strlen(s));
    free(s);
}
