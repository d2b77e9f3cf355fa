/* The manager's Redis backend (manager_redis*.c): the second implementation
 * of the dict and list storage beside the shared arena, and the queue, lock
 * and event that only exist there. manager*.c reach it through one hook at
 * the top of each public call (MGR_REDIS_CALL in manager_impl.h).
 *
 * Values are stored in a compact tagged form: an int as its decimal text
 * (so HINCRBY adds to it exactly), anything else as one tag byte and the
 * payload: "n" nil, "T"/"F" bool, "d" + 8 bytes double, "s" + UTF-8 text,
 * "b" + bytes. Every reply is untrusted and decoded with bounds checks. */
#ifndef MPROC_MANAGER_REDIS_H
#define MPROC_MANAGER_REDIS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "manager_impl.h"

#ifdef MP_HAVE_HIREDIS
#include <hiredis/hiredis.h>

/* Where and how to connect (parsed from the address). */
typedef struct {
  char *host; /* TCP, or NULL */
  int port;
  char *path; /* unix socket, or NULL */
  char *user, *pass;
  int db;
  int connect_ms, command_ms;
} mp__rcfg_t;

/* One connection, used by one thread at a time; made again after fork. */
typedef struct {
  pthread_mutex_t mu;
  redisContext *c;
  _Atomic pid_t pid; /* process that owns c (0: none yet) */
  const mp__rcfg_t *cfg;
} mp__rconn_t;

typedef struct mp__rmgr {
  mp__rcfg_t cfg;
  mp__rconn_t conn;
  char name[208];   /* "/name" */
  char prefix[224]; /* "mproc:name:" */
  pid_t creator;    /* deletes the keys at destroy unless keep */
  bool keep;
} mp__rmgr_t;

/* Encoding: an upper bound of v's encoded size (0: not a value), and the
 * encoding written at dst (room for that bound), returning its length. */
size_t mp__renc_size(const mp_val_t *v);
size_t mp__renc_to(char *dst, const mp_val_t *v);
/* Decode untrusted bytes. MP_EIO (malformed), MP_ENOMEM. */
int mp__rdec(const char *p, size_t n, mp_val_t *out);

/* Scripts, by number (manager_redis.c holds their text). */
enum {
  RS_OBJ_CREATE,
  RS_DSET,
  RS_DSET_MANY,
  RS_DPOP,
  RS_DITEMS,
  RS_DADD,
  RS_DCAS,
  RS_DPOPITEM,
  RS_DSETDEF,
  RS_DNEXT,
  RS_LINSERT,
  RS_LPOP,
  RS_LCOUNT,
  RS_LINDEX,
  RS_LREMOVE,
  RS_LREVERSE,
  RS_LSORT,
  RS_LSLICE,
  RS_LSPLICE,
  RS_LREPEAT,
  RS_QPUT,
  RS_QGET,
  RS_QREAP,
  RS_QDONE,
  RS_QBYE,
  RS_LOCK_TRY,
  RS_LOCK_RENEW,
  RS_LOCK_RELEASE,
  RS_EV_SET,
  RS_COUNT
};

int mp__rconn_init(mp__rconn_t *cn, const mp__rcfg_t *cfg);
void mp__rconn_fini(mp__rconn_t *cn);
/* One command. *out: the reply (freeReplyObject), never an error reply:
 * those become codes (MP_EIO unless mapped). extra_ms is added to the
 * command timeout (blocking commands). */
int mp__rcmd(mp__rconn_t *cn, redisReply **out, int extra_ms, int argc,
             const char **argv, const size_t *lens);
/* EVALSHA script with nkeys keys then args (argv holds keys then args),
 * falling back to EVAL on NOSCRIPT. */
int mp__reval(mp__rconn_t *cn, redisReply **out, int script, int nkeys,
              int nargs, const char **argv, const size_t *lens);
/* The same with argv[0..3) free for the call's own words: argc counts
 * them, and nothing is copied. */
int mp__reval_slots(mp__rconn_t *cn, redisReply **out, int script,
                    int nkeys, int argc, const char **argv, size_t *lens);
/* The reply's error text matched against a prefix (for callers mapping a
 * script's own errors); set by mp__rcmd for MP_EIO replies, per thread. */
const char *mp__rlast_error(void);

/* key = prefix + suffix into buf (size RKEY_MAX). */
#define RKEY_MAX 320
void mp__rkey(const mp__rmgr_t *r, char *buf, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Objects: the directory. */
enum { MGR_KIND_QUEUE = 3, MGR_KIND_LOCK = 4, MGR_KIND_EVENT = 5 };
/* A new object of that kind (name optional); meta: field/value pairs of its
 * settings hash "<prefix>o:<id>:m", written in the same step. */
int mp__robj_create(mp__rmgr_t *r, uint32_t kind, const char *name,
                    const char *const *meta, int nmeta, uint32_t *id);
int mp__robj_find(mp__rmgr_t *r, uint32_t kind, const char *name, bool by_id,
                  uint32_t id, uint32_t *out_id);
#endif

/* ---- hooks called by manager*.c (stubs returning MP_ENOTSUP without
 * hiredis) ---- */
int mp__rmgr_create(mp_manager_t *m, const mp_manager_opts_t *opts);
int mp__rmgr_open(mp_manager_t *m, const char *name,
                  const mp_manager_opts_t *opts);
void mp__rmgr_destroy(mp_manager_t *m);
const char *mp__rmgr_name(const mp_manager_t *m);
int mp__rhandle_make(mp_manager_t *m, uint32_t kind, const char *name, int how,
                     uint32_t id, mgr_handle_t **out);

int mp__rdict_set(mp_dict_t *d, const mp_val_t *key, const mp_val_t *val);
int mp__rdict_get(mp_dict_t *d, const mp_val_t *key, bool use_def,
                  const mp_val_t *def, mp_val_t *out);
int mp__rdict_contains(mp_dict_t *d, const mp_val_t *key, bool *found);
int mp__rdict_pop(mp_dict_t *d, const mp_val_t *key, mp_val_t *out);
int mp__rdict_len(mp_dict_t *d, size_t *n);
int mp__rdict_clear(mp_dict_t *d);
int mp__rdict_items(mp_dict_t *d, mp_val_t **keys, mp_val_t **vals,
                    size_t *n);
int mp__rdict_update(mp_dict_t *d, mp_dict_t *src);
int mp__rdict_add(mp_dict_t *d, const mp_val_t *key, int64_t delta,
                  int64_t *result);
int mp__rdict_cas(mp_dict_t *d, const mp_val_t *key, const mp_val_t *expected,
                  const mp_val_t *desired, bool *swapped);
int mp__rdict_repr(mp_dict_t *d, char **out);

int mp__rlist_append(mp_list_t *l, const mp_val_t *vals, size_t n);
int mp__rlist_get(mp_list_t *l, int64_t i, mp_val_t *out);
int mp__rlist_set(mp_list_t *l, int64_t i, const mp_val_t *v);
int mp__rlist_insert(mp_list_t *l, int64_t i, const mp_val_t *v);
int mp__rlist_pop(mp_list_t *l, int64_t i, mp_val_t *out);
int mp__rlist_remove(mp_list_t *l, const mp_val_t *v);
int mp__rlist_len(mp_list_t *l, size_t *n);
int mp__rlist_clear(mp_list_t *l);
int mp__rlist_items(mp_list_t *l, mp_val_t **vals, size_t *n);
int mp__rlist_repr(mp_list_t *l, char **out);
int mp__rdict_popitem(mp_dict_t *d, mp_val_t *key, mp_val_t *val);
int mp__rdict_setdefault(mp_dict_t *d, const mp_val_t *key,
                         const mp_val_t *def, mp_val_t *out);
int mp__rdict_next(mp_dict_t *d, size_t *pos, mp_val_t *key, mp_val_t *val);
int mp__rlist_count(mp_list_t *l, const mp_val_t *v, size_t *count);
int mp__rlist_index(mp_list_t *l, const mp_val_t *v, int64_t start,
                    int64_t stop, size_t *index);
int mp__rlist_reverse(mp_list_t *l);
int mp__rlist_sort(mp_list_t *l, bool reverse);
int mp__rlist_get_slice(mp_list_t *l, int64_t start, int64_t stop,
                        int64_t step, mp_val_t **vals, size_t *n);
/* l[start:stop:step] = vals[0..n), or del l[start:stop:step] (vals
 * NULL). */
int mp__rlist_splice(mp_list_t *l, int64_t start, int64_t stop, int64_t step,
                     const mp_val_t *vals, size_t n);
int mp__rlist_repeat(mp_list_t *l, int64_t times);

/* repr of values already copied out (manager.c). */
void mp__sb_repr_val(sbuf_t *b, const mp_val_t *v);

#endif
