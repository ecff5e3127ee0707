/* s2_sse_parse.h — the pure parsing half of the HTTP/1.1 read fallback (s2_sse_parse.c):
 * server-sent event framing and S2's JSON ReadBatch / ping events. No I/O, no locks, so the
 * fuzz harness (fuzz/fuzz_sse.c) runs it alone; the worker in s2_sse.c drives it. */
#ifndef S2_SSE_PARSE_H
#define S2_SSE_PARSE_H

#include "s2_internal.h"

/* The largest event (and line) taken. A read batch holds at most 1 MiB of metered bytes and
 * 1000 records, which is at most ~4.2 MiB of JSON (an empty header is 2 metered bytes and 8
 * of JSON); anything far beyond that is not S2 and must not grow memory without bound. */
#define S2_SSE_EVENT_MAX (16u * 1024u * 1024u)

/* Event framing (WHATWG server-sent events): lines end in LF, CRLF or a lone CR; a blank
 * line dispatches the event built from `event:`, `id:` and `data:` fields (data lines joined
 * with LF); `:` lines are comments; other fields are ignored. An event that is cut off by the
 * end of the body is never dispatched. */
typedef struct s2_sse_parser {
    s2_buf line;   /* the current line, without its terminator */
    s2_buf data;   /* data of the current event */
    bool has_data; /* a data field was seen (an empty `data:` still makes an event) */
    bool cr;       /* the last byte was CR: an LF right after it ends nothing more */
    char event[32];
    bool event_long; /* the event name did not fit: it matches no known event */
    char id[96];
    bool id_long;
} s2_sse_parser;

/* One complete event: name ("" if none), id ("" if none; truncated ids are reported as
 * id_long), data (NUL-terminated, len bytes). Returns 0 to go on, nonzero to stop. */
typedef int (*s2_sse_event_cb)(void *ud, const s2_sse_parser *p, const uint8_t *data,
                               size_t len);

void s2_sse_parser_init(s2_sse_parser *p);
void s2_sse_parser_reset(s2_sse_parser *p); /* a new response: forget any partial event */
void s2_sse_parser_free(s2_sse_parser *p);
/* Feeds n bytes. Returns 0 when all were taken, 1 when cb asked to stop (*used: the bytes
 * taken, up to and including the line that ended the event), -1 (err) when out of memory or
 * a line or event is over S2_SSE_EVENT_MAX. */
int s2_sse_feed(s2_sse_parser *p, const uint8_t *in, size_t n, s2_sse_event_cb cb, void *ud,
                size_t *used, s2_error *err);

/* A `batch` event's data: a JSON ReadBatch with base64 bodies and headers, decoded into a
 * queue entry whose records point into its own payload. Strict where a lenient reading would
 * have to guess: a member given twice, a record without seq_num or timestamp, a header that is
 * not two strings are a protocol error (S2 never sends them; its own serde-based decoders
 * reject duplicate fields). NULL with err on failure. */
s2_rbatch *s2_sse_parse_batch(const uint8_t *json, size_t len, s2_error *err);
void s2_sse_rbatch_free(s2_rbatch *b);

/* A `ping` event's data ({"timestamp":T,"tail":{...}}): 1 with *tail when it carries a tail,
 * 0 without one, -1 when malformed. */
int s2_sse_parse_ping(const uint8_t *json, size_t len, s2_position *tail);

/* A batch event's id, "seq_num,count,bytes" (decimal, each fits in u64). 0, or -1 when it
 * is anything else. It goes back to the server as Last-Event-ID, so nothing else may pass. */
int s2_sse_parse_id(const char *id, uint64_t *seq_num, uint64_t *count, uint64_t *bytes);

#endif /* S2_SSE_PARSE_H */
