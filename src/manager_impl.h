/* Manager internals shared by manager*.c: the robust lock, the undo-logged
 * operation context, shared values, the directory of named objects.
 *
 * Crash consistency. Every dict and list has one robust lock and an undo
 * log. A mutation runs under the lock; every word it changes in reachable
 * shared memory goes through mp__mop_w(), which first appends (offset, old
 * value) to the log and publishes the new log length, then writes. New nodes,
 * arrays and blobs are prepared in freshly allocated (unreachable) arena
 * space without logging. Commit is one store (log length = 0); blocks the
 * operation replaced are only freed after it. Whoever takes the lock and
 * finds a non-empty log (its last owner died mid-operation) rolls it back in
 * reverse order, which is idempotent, so a crash during recovery is
 * recovered again. A killed process therefore leaks at most the blocks of
 * its one operation; the structure is always the state before or after it. */
#ifndef MPROC_MANAGER_IMPL_H
#define MPROC_MANAGER_IMPL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "arena.h"
#include "mproc/manager.h"

/* ---- robust lock --------------------------------------------------------
 * An owner word of the robust core (src/robust.h): the owner's pid and
 * start time in one word. A dead owner's lock is taken over at once by the
 * next caller, within MP__RB_CHECK_MS by a sleeper; a live one never is.
 * mp__mlock_lock returns true when it took the lock over from a dead owner
 * (the undo log says what to roll back either way). */
typedef struct {
  _Atomic uint64_t word;
  uint64_t pad;
} mp__mlock_t;

bool mp__mlock_lock(mp__mlock_t *l);
void mp__mlock_unlock(mp__mlock_t *l);

/* ---- shared layout ------------------------------------------------------ */
/* A namespace is stored as a dict (same layout and code) of its own kind,
 * so a reference or an open by id knows which it is. */
enum { MGR_KIND_DICT = 1, MGR_KIND_LIST = 2, MGR_KIND_NS = 3 };
#define MGR_NAME_MAX 48
#define MGR_MAX_OBJ 16384
#define MGR_MAGIC 0x6d702d6d616e6772ull /* "mp-mangr" */

/* Common head of every shared dict and list. */
typedef struct {
  mp__mlock_t lock;
  _Atomic uint64_t undo_off; /* log block: [0] capacity, then pairs */
  _Atomic uint64_t undo_n;   /* pairs in use; 0: consistent */
  uint32_t kind;
  uint32_t id;
} mgr_obj_t;

typedef struct {
  uint64_t off; /* the object's mgr_obj_t */
  uint32_t kind;
  uint32_t pad;
  char name[MGR_NAME_MAX];
} mgr_dirent_t;

typedef struct {
  uint64_t magic;
  uint64_t hash_seed;
  mp__mlock_t dir_lock;
  _Atomic uint64_t nobj; /* dir[0..nobj) are published and immutable */
  uint64_t pad[3];
  mgr_dirent_t dir[MGR_MAX_OBJ];
} mgr_root_t;

/* A value in shared memory: tl = type | len << 8; pay = the scalar, the
 * bytes themselves when len <= 8, else the offset of a blob. */
typedef struct {
  uint64_t tl;
  uint64_t pay;
} sval_t;
#define SVAL_DELETED 0xffu /* dict entry tombstone type */

struct mp__rmgr; /* manager_redis.h */

struct mp_manager {
  mp__arena_t a;
  mgr_root_t *root;
  pid_t creator; /* pid that created it (unlinks at destroy), 0 if opened */
  struct mp__rmgr *redis; /* non-NULL: the objects live in Redis */
};

/* Redis dispatch: the first line of every public dict/list call (the kind is
 * checked before h.m is followed, as the handle checks do). Handles of a
 * Redis manager carry no arena offset: unhooked calls refuse them. */
#define MGR_REDIS(obj)                                                         \
  ((obj) &&                                                                    \
   ((obj)->h.kind == MGR_KIND_DICT || (obj)->h.kind == MGR_KIND_LIST) &&       \
   (obj)->h.m && (obj)->h.m->redis)
#define MGR_REDIS_CALL(obj, call)                                              \
  do {                                                                         \
    if (MGR_REDIS(obj))                                                        \
      return (call);                                                           \
  } while (0)

/* Handle of a dict or list (process-local). */
typedef struct {
  mp_manager_t *m;
  uint64_t off;
  uint32_t id;
  uint32_t kind;
} mgr_handle_t;

struct mp_dict {
  mgr_handle_t h;
};
struct mp_list {
  mgr_handle_t h;
};
struct mp_namespace {
  mgr_handle_t h;
};

/* ---- operation context --------------------------------------------------- */
typedef struct {
  uint64_t *v;
  size_t n, cap;
} u64vec_t;

typedef struct {
  mp__arena_t *a;
  mgr_obj_t *o;
  uint64_t *log; /* local pointer to the log block, NULL until needed */
  uint64_t n;    /* pairs written */
  u64vec_t allocs, frees;
} mop_t;

static inline void *mgr_ptr(mp__arena_t *a, uint64_t off) {
  return mp__arena_ptr(a, off);
}

/* Lock o (recovering a dead owner's half-done operation) and start an op.
 * The object's arrays are checked to lie inside the arena: MP_EPROTO (and
 * nothing held) when they do not. */
int mp__mop_begin(mop_t *op, mp_manager_t *m, uint64_t obj_off);
/* Structure checks of a dict or list under its lock: sizes consistent,
 * arrays inside the arena. 0 or MP_EPROTO. */
int mp__dict_shm_check(mop_t *op);
int mp__list_shm_check(mop_t *op);
/* Bytes of the shared object of a kind (for directory checks). */
size_t mp__mgr_obj_size(uint32_t kind);
/* Make room in the log for k more writes. MP_ENOMEM. */
int mp__mop_reserve(mop_t *op, size_t k);
/* Logged write of a reachable word (room reserved beforehand). */
void mp__mop_w(mop_t *op, uint64_t *addr, uint64_t val);
/* Allocate arena space for this op (freed again if it aborts). */
int mp__mop_alloc(mop_t *op, size_t size, uint64_t *off);
/* Free off once the op has committed. MP_ENOMEM (local memory). */
int mp__mop_defer_free(mop_t *op, uint64_t off);
/* Commit and unlock; returns r for convenience. */
int mp__mop_commit(mop_t *op, int r);
/* Roll back everything, free this op's allocations, unlock; returns r. */
int mp__mop_abort(mop_t *op, int r);
/* Finish: commit if r >= 0, else abort. */
int mp__mop_end(mop_t *op, int r);

/* Test hook: called after every logged write when set. */
extern void (*mp__manager_write_hook)(void);

/* ---- values ---------------------------------------------------------------
 * A reference (MP_DICT, MP_LIST, MP_NAMESPACE) is stored as its type and the
 * object's id (sval pay); a view of one (mp__sval_view) has no handle: u.p
 * is NULL and len holds the id. */
/* A value the Redis backend can store: a reference is MP_ENOTSUP there. */
int mp__mval_check(const mp_val_t *v);
/* A value a container of manager m can store: references must name an
 * object of m itself (m NULL: none can). MP_EINVAL. */
int mp__mval_check_in(const mp_manager_t *m, const mp_val_t *v);
/* mp__mval_check_in for a value stored in container handle c (may be
 * NULL). */
#define MVAL_CHECK(c, v) mp__mval_check_in((c) ? (c)->h.m : NULL, (v))
int mp__mval_check_key(const mp_val_t *v);
/* The object kind a reference type names, 0 for other types. */
uint32_t mp__ref_kind(uint32_t type);
/* Two manager handles on the same manager. */
bool mp__mgr_same(const mp_manager_t *a, const mp_manager_t *b);
/* Bytes of a dict's shared object (a namespace is one). */
size_t mp__dict_shm_size(void);
/* Store v: a blob is allocated through op when needed. */
int mp__sval_make(mop_t *op, const mp_val_t *v, sval_t *out);
/* Defer freeing the blob of s, if any. */
int mp__sval_release(mop_t *op, const sval_t *s);
int mp__sval_blob(const sval_t *s); /* has a blob */
/* A view of s without copying: strings and bytes point into the arena
 * (valid while the object's lock is held). */
void mp__sval_view(mp__arena_t *a, const sval_t *s, mp_val_t *v);
/* Its blob, if any, lies inside the arena. */
bool mp__sval_ok(mp__arena_t *a, const sval_t *s);
/* Copy out (strings/bytes malloc'd and NUL-terminated). MP_ENOMEM. */
int mp__sval_load(mp__arena_t *a, const sval_t *s, mp_val_t *out);
bool mp__sval_eq(mp__arena_t *a, const sval_t *s, const mp_val_t *v);
uint64_t mp__mval_hash(uint64_t seed, const mp_val_t *v);
bool mp__mval_eq(const mp_val_t *x, const mp_val_t *y);
/* Deep copy (strings/bytes malloc'd). MP_ENOMEM. */
int mp__mval_copy(const mp_val_t *in, mp_val_t *out);
/* Pointer/length of a string or bytes sval. */
const char *mp__sval_bytes(mp__arena_t *a, const sval_t *s, size_t *len);

/* Growable text for repr. */
typedef struct {
  char *p;
  size_t n, cap;
  int err;
} sbuf_t;
void mp__sb_put(sbuf_t *b, const char *s, size_t n);
void mp__sb_puts(sbuf_t *b, const char *s);
void mp__sb_repr_sval(sbuf_t *b, mp__arena_t *a, const sval_t *s);
int mp__sb_finish(sbuf_t *b, char **out);

/* ---- objects ----------------------------------------------------------- */
/* Allocate an object of `size` bytes (zeroed, head filled; its arrays are
 * allocated by its first mutation), publish it in the directory. */
int mp__mgr_obj_create(mp_manager_t *m, uint32_t kind, size_t size,
                       const char *name, uint64_t *off, uint32_t *id);
int mp__mgr_obj_find(mp_manager_t *m, uint32_t kind, const char *name,
                     bool by_id, uint32_t id, uint64_t *off, uint32_t *out_id);
/* The object of id, checked as every offset read from shared memory is (the
 * directory entry inside the arena, of that kind, and the object's header
 * saying the same kind and id). MP_ENOENT (no such id), MP_EINVAL (another
 * kind), MP_EPROTO. */
int mp__mgr_obj_at(mp_manager_t *m, uint32_t kind, uint32_t id,
                   uint64_t *off);

/* An object name: NULL (none) or 1 to MGR_NAME_MAX - 1 bytes. MP_EINVAL,
 * MP_ENAMETOOLONG. */
int mp__mgr_check_name(const char *name);

enum { MGR_CREATE = 0, MGR_BY_NAME = 1, MGR_BY_ID = 2 };
/* A new handle on a new (how MGR_CREATE, name optional) or existing object
 * (found by name or id). */
int mp__mgr_handle_make(mp_manager_t *m, uint32_t kind, size_t size,
                        const char *name, int how, uint32_t id,
                        mgr_handle_t **out);

int mp__u64vec_push(u64vec_t *v, uint64_t x);

#endif
