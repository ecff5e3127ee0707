/* lua_s2.h — what the files of the Lua binding (lua_s2*.c) share: the class names, the one
 * way classes are built, and what each file offers the others. Not part of the core's API:
 * nothing outside the binding includes it (nor lua.h). Names start with s2l_. */
#ifndef LUA_S2_H
#define LUA_S2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "compat.h"
#include "s2.h"

/* Metatable names (the registry keys of the classes). */
#define CLIENT_MT "s2.core.client"
#define SESSION_MT "s2.core.append_session"
#define PRODUCER_MT "s2.core.producer"
#define READER_MT "s2.core.read_session"
#define TICKET_MT "s2.core.ticket"
#define CALL_MT "s2.core.call"

/* ---- lua_s2.c: the module -------------------------------------------------------------- */

/* Registers class `name`: methods in __index (the error metatable at stack index emt as
 * upvalue 1), gc as __gc; __close calls close(obj) when the class has one (never with the
 * error unwinding the scope), else gc. */
void s2l_register_class(lua_State *L, const char *name, const luaL_Reg *methods, int emt,
                        lua_CFunction gc);

/* Each class file registers its class. */
void s2l_open_client(lua_State *L, int emt);
void s2l_open_session(lua_State *L, int emt);
void s2l_open_producer(lua_State *L, int emt);
void s2l_open_ticket(lua_State *L, int emt);
void s2l_open_reader(lua_State *L, int emt);
void s2l_open_call(lua_State *L, int emt);

/* ---- lua_s2_conv.c: conversions and argument checks ------------------------------------- */

/* Errors. Both need the error metatable as upvalue 1 of the running C function. */
void s2l_push_error(lua_State *L, const s2_error *err);
int s2l_fail(lua_State *L, const s2_error *err); /* pushes nil, err; returns 2 */

/* Sets field k of the table on top to v. */
void s2l_set_int(lua_State *L, const char *k, uint64_t v);

/* Optional fields of the table at idx; misuse raises, naming the field (ctx prefixes it). */
bool s2l_opt_u64(lua_State *L, int idx, const char *k, const char *ctx, uint64_t *out);
double s2l_opt_number(lua_State *L, int idx, const char *k, double dflt);
const char *s2l_opt_string(lua_State *L, int idx, const char *k, size_t *len);
size_t s2l_opt_size(lua_State *L, int idx, const char *k, size_t dflt);
/* Field encryption_key (NULL when absent): raises, without echoing it, unless it is 1 to
 * S2_MAX_ENCRYPTION_KEY base64 characters. The string stays anchored by the table. */
const char *s2l_opt_encryption_key(lua_State *L, int idx);
/* Field compression: "none" (or absent), "zstd" or "gzip"; raises otherwise. */
s2_compression s2l_opt_compression(lua_State *L, int idx);
/* opts.retry of a session opener (checked and completed by lua/s2/client.lua
 * _session_retry) into *o; absent: zero (the client's). max_attempts = math.huge:
 * S2_RETRY_FOREVER. (lua_s2_session.c) */
void s2l_opt_retry(lua_State *L, int idx, s2_retry_options *o);

/* A notice just armed (id 0: none could be) pushed as what waitables' notice() return:
 * the id as 16 hex digits and the runtime's notice socket path, or nil, err. */
int s2l_push_notice(lua_State *L, s2_runtime *rt, uint64_t id);

/* A timeout argument in seconds: -1 (forever) for nil or anything over a year. */
double s2l_opt_timeout(lua_State *L, int idx);
/* A basin name argument (S2's naming rule). */
const char *s2l_check_basin(lua_State *L, int idx);
/* Raises unless s was made by this process (not inherited through a fork). */
void s2l_check_owned(lua_State *L, bool owned); /* raises for the parent's object */
/* The results of a submit that did not take: false (nowait, no room), raise (misuse), or
 * nil, err. */
int s2l_submit_failed(lua_State *L, const s2_error *err, bool nowait);

/* The options of a read (client:read, client:read_session). */
typedef struct s2l_read_opts {
    const char *start_key; /* "seq_num", "timestamp" or "tail_offset" */
    uint64_t start;
    bool has_count, has_bytes, has_until, clamp;
    uint64_t count, bytes, until;
    double wait; /* < 0: not given */
} s2l_read_opts;
void s2l_check_read_opts(lua_State *L, int idx, s2l_read_opts *o, bool unary);

/* Records, Lua -> core: the record on top of the stack (i: its place in a batch, 0 for a
 * lone record, for error messages). scan_record counts its headers; fill_record fills r,
 * its headers into hdrs (room for that count). */
size_t s2l_scan_record(lua_State *L, size_t i);
void s2l_fill_record(lua_State *L, size_t i, s2_record *r, s2_header *hdrs);
/* The records table at idx and the append options at opt_idx (0: none) into *in; scratch
 * memory is left on the stack. Raises on misuse and over the batch limits. Returns the
 * batch's metered size. */
size_t s2l_check_append_input(lua_State *L, int idx, int opt_idx, s2_append_input *in);

/* Core -> Lua. */
void s2l_push_position(lua_State *L, const s2_position *pos);
void s2l_push_headers(lua_State *L, const s2_header *h, size_t n);
void s2l_push_ack(lua_State *L, const s2_append_ack *ack);
void s2l_push_record(lua_State *L, const s2_sequenced_record *r);
/* Bulk record tables: s2l_push_record_keys pushes the 4 keys; s2l_push_record_k pushes one
 * record table using the keys at index keys (absolute). */
void s2l_push_record_keys(lua_State *L);
void s2l_push_record_k(lua_State *L, int keys, const s2_sequenced_record *r);
void s2l_push_read_batch(lua_State *L, const s2_read_batch *b);

/* ---- lua_s2_codec.c: module functions ----------------------------------------------------- */

int s2l_metered_bytes(lua_State *L);
int s2l_encode_append_input(lua_State *L);
int s2l_decode_append_input(lua_State *L);
int s2l_encode_append_ack(lua_State *L);
int s2l_decode_append_ack(lua_State *L);
int s2l_encode_read_batch(lua_State *L);
int s2l_decode_read_batch(lua_State *L);
int s2l_error_from_response(lua_State *L);
int s2l_encode_frame(lua_State *L);
int s2l_decode_frames(lua_State *L);
int s2l_parse_endpoint(lua_State *L);
int s2l_backoff_delay(lua_State *L);
int s2l_now(lua_State *L);
int s2l_random_token(lua_State *L);
int s2l_new_encryption_key(lua_State *L);

/* ---- lua_s2_client.c ------------------------------------------------------------------------ */

typedef struct s2l_client s2l_client;

int s2l_client_new(lua_State *L); /* core.client{...} */
/* The client at stack index 1; raises when closed. After a fork, it starts afresh. */
s2l_client *s2l_check_client(lua_State *L);
/* The client's runtime (its I/O thread), made on first use; NULL, *err on failure. */
s2_runtime *s2l_client_runtime(s2l_client *c, s2_error *err);

/* ---- the session classes: lua_s2_session.c, lua_s2_producer.c, lua_s2_reader.c ---------- */

/* The userdata of an append session, a producer and a read session: NULL once closed. */
typedef struct s2l_session_ud {
    s2_append_session *s;
} s2l_session_ud;

typedef struct s2l_producer_ud {
    s2_producer *s;
    /* The core ticket of the batch the last submit went into, whose batch ticket (holding a
     * reference on it) is user value 2: record tickets of that batch share it. */
    s2_ticket *batch;
} s2l_producer_ud;

typedef struct s2l_reader_ud {
    s2_read_session *s;
} s2l_reader_ud;

/* Their constructors: methods of the client. */
int s2l_client_append_session(lua_State *L);
int s2l_client_producer(lua_State *L);
int s2l_client_read_session(lua_State *L);

/* close([timeout]) of an append session of class mt; the stats table of a session or a
 * producer. */
int s2l_close_session_of(lua_State *L, const char *mt);
int s2l_push_session_stats(lua_State *L, const s2_session_stats *st);

/* ---- lua_s2_ticket.c ------------------------------------------------------------------------ */

/* Pushes a batch ticket for t (taking its reference) that keeps the object at stack index 1
 * alive. */
void s2l_push_ticket(lua_State *L, s2_ticket *t);
/* Pushes the holder of a new batch ticket for t: what record tickets point to (the batch
 * ticket itself; on Lua 5.1 a table holding it). */
void s2l_push_ticket_holder(lua_State *L, s2_ticket *t);
/* Pushes a producer's record ticket: the record at index of the batch whose holder is at
 * stack index holder (no C struct, no finalizer of its own). */
void s2l_push_record_ticket(lua_State *L, int holder, uint32_t index);

/* ---- lua_s2_call.c ---------------------------------------------------------------------- */

typedef enum s2l_call_kind { S2L_CALL_APPEND, S2L_CALL_READ, S2L_CALL_REQUEST } s2l_call_kind;
/* Pushes a call object for c (taking its handle) that keeps the client at index 1 alive. */
void s2l_push_call(lua_State *L, s2_call *c, s2l_call_kind kind, size_t num_records);

/* ---- lua_s2_session.c ---- */
/* session:finished() of an append session of class mt. */
int s2l_session_finished_of(lua_State *L, const char *mt);

#endif
