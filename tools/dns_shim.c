/*
 * dns_shim — an LD_PRELOAD library for specs: a name lookup that is slow and answers with
 * chosen addresses, without a DNS server.
 *
 *   S2_TEST_DNS_NAME=s2.test S2_TEST_DNS_DELAY_MS=3000 S2_TEST_DNS_ADDRS=::1,127.0.0.1 \
 *     LD_PRELOAD=build/dns-shim.so lua5.4 script.lua
 *
 * getaddrinfo() for S2_TEST_DNS_NAME sleeps S2_TEST_DNS_DELAY_MS, then answers with the
 * numeric addresses of S2_TEST_DNS_ADDRS, in that order (each resolved with AI_NUMERICHOST
 * by the real getaddrinfo and chained, so the real freeaddrinfo frees the list). Every other
 * name goes to the real getaddrinfo. Test tool only; not part of the module.
 *
 * Build: cc -shared -fPIC -O2 -o build/dns-shim.so tools/dns_shim.c -ldl
 */
#include <dlfcn.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

static gai_fn real_gai(void) {
    static gai_fn fn;
    if (!fn) fn = (gai_fn)dlsym(RTLD_NEXT, "getaddrinfo");
    return fn;
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res) {
    const char *name = getenv("S2_TEST_DNS_NAME");
    if (!node || !name || strcmp(node, name) != 0) return real_gai()(node, service, hints, res);
    if (hints && (hints->ai_flags & AI_NUMERICHOST)) return EAI_NONAME; /* a name, not a number */
    const char *delay = getenv("S2_TEST_DNS_DELAY_MS");
    long ms = delay ? strtol(delay, NULL, 10) : 0;
    if (ms > 0) {
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    const char *addrs = getenv("S2_TEST_DNS_ADDRS");
    char list[512];
    snprintf(list, sizeof list, "%s", addrs ? addrs : "127.0.0.1");
    struct addrinfo *head = NULL, **tail = &head;
    struct addrinfo h = {.ai_socktype = hints ? hints->ai_socktype : SOCK_STREAM,
                         .ai_flags = AI_NUMERICHOST};
    for (char *save = NULL, *a = strtok_r(list, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
        struct addrinfo *one = NULL;
        if (real_gai()(a, service, &h, &one) != 0) continue;
        *tail = one;
        while (*tail) tail = &(*tail)->ai_next;
    }
    if (!head) return EAI_NONAME;
    *res = head;
    return 0;
}
