/* mproc: manager, a shared dict and list (Python's Manager().dict() and
 * .list()).
 *
 * A manager is one shared arena (a /dev/shm segment) holding any number of
 * dicts and lists. Unlike Python's manager there is no server process: every
 * operation runs in the caller, under the structure's robust lock, directly
 * on shared memory.
 *
 * Sharing. Handles (mp_manager_t, mp_dict_t, mp_list_t) are process-local
 * and valid in children forked after they were made, and may be used by any
 * number of threads at once. An unrelated process opens the manager by name
 * (mp_manager_name, mp_manager_open) and then a dict or list by the name it
 * was created with or by its id (mp_dict_id): that pair (manager name, id)
 * is what to put in a pool task's argument bytes.
 *
 * Atomicity and crashes. Each call is atomic: other processes and threads
 * see the structure before or after it, never midway (update and extend
 * included). A process killed (even with SIGKILL) in the middle of a call
 * leaves the structure as it was before the call, and nobody hangs: waiters
 * notice the dead owner within about 50 ms and take over. A killed process
 * may leak the arena space of its one interrupted call.
 *
 * Values. mp_val_t is a tagged value: nil, bool, int64, double, string,
 * bytes. Values passed in are copied; the library never keeps the caller's
 * pointers. Values copied out (get, pop, items...) own their string or bytes
 * data (malloc'd, NUL-terminated for convenience, len excludes the NUL):
 * release them with mp_val_free / mp_vals_free. Dict keys are int, string
 * or bytes (a string and the same bytes are different keys, as in Python 3);
 * equality is by type and content (1 and 1.0 are different values).
 *
 * Errors common to every call: MP_EINVAL for NULL handles or out-pointers, or
 * a malformed value (unknown type, NULL data with a non-zero length);
 * MP_ENOMEM when the manager's arena is full (or local memory runs out): the
 * call then changed nothing. */
#ifndef MPROC_MANAGER_H
#define MPROC_MANAGER_H

#include <stdbool.h>
#include <string.h>

#include "common.h"
#include "error.h"

MP_BEGIN_DECLS

typedef struct mp_manager mp_manager_t;
typedef struct mp_dict mp_dict_t;
typedef struct mp_list mp_list_t;

typedef enum {
  MP_NIL = 0,    /* None */
  MP_BOOL = 1,   /* True / False: u.b */
  MP_INT = 2,    /* int (64-bit): u.i */
  MP_DOUBLE = 3, /* float: u.d */
  MP_STR = 4,    /* str (UTF-8 text): u.s, len bytes */
  MP_BYTES = 5   /* bytes: u.p, len bytes */
} mp_val_type_t;

typedef struct {
  mp_val_type_t type;
  size_t len; /* MP_STR and MP_BYTES: length in bytes */
  union {
    bool b;
    int64_t i;
    double d;
    const char *s;
    const void *p;
  } u;
} mp_val_t;

/* Value constructors (they copy nothing: the pointer is read by the call the
 * value is passed to). mp_val_str takes a NUL-terminated string (NULL: the
 * empty string); the others take explicit lengths. */
static inline mp_val_t mp_val_nil(void) {
  mp_val_t v;
  memset(&v, 0, sizeof v);
  return v;
}
static inline mp_val_t mp_val_bool(bool b) {
  mp_val_t v = mp_val_nil();
  v.type = MP_BOOL;
  v.u.b = b;
  return v;
}
static inline mp_val_t mp_val_int(int64_t i) {
  mp_val_t v = mp_val_nil();
  v.type = MP_INT;
  v.u.i = i;
  return v;
}
static inline mp_val_t mp_val_double(double d) {
  mp_val_t v = mp_val_nil();
  v.type = MP_DOUBLE;
  v.u.d = d;
  return v;
}
static inline mp_val_t mp_val_strn(const char *s, size_t len) {
  mp_val_t v = mp_val_nil();
  v.type = MP_STR;
  v.u.s = s;
  v.len = len;
  return v;
}
static inline mp_val_t mp_val_str(const char *s) {
  return mp_val_strn(s, s ? strlen(s) : 0);
}
static inline mp_val_t mp_val_bytes(const void *p, size_t len) {
  mp_val_t v = mp_val_nil();
  v.type = MP_BYTES;
  v.u.p = p;
  v.len = len;
  return v;
}

/* Release the string/bytes data of a value the library copied out, and make
 * it nil. Harmless on scalars and on NULL. Never call it on a value whose
 * pointer the caller owns. Returns 0. */
MP_EXTERN int mp_val_free(mp_val_t *v);
/* mp_val_free on n values, then free(vals) (arrays from keys, values,
 * items). NULL is fine. Returns 0. */
MP_EXTERN int mp_vals_free(mp_val_t *vals, size_t n);
/* Python's repr of a value into a malloc'd string *out (caller frees):
 * None, True, 12, 2.5, 'it''s' quoted as Python does, b'\x00'.
 * MP_EINVAL, MP_ENOMEM. */
MP_EXTERN int mp_val_repr(const mp_val_t *v, char **out);

/* ---- manager ------------------------------------------------------------ */

typedef struct {
  /* Address space reserved for the manager's arena: the most its dicts and
   * lists may hold in total. The segment grows as values are stored, every
   * page it grows by allocated at once (a full /dev/shm is MP_ENOMEM, never
   * a SIGBUS). 0: the default, 64 GiB, or the environment's
   * MP_MANAGER_RESERVE (bytes, optional K/M/G suffix) when set. At least
   * 1 MiB, at most 16 TiB. */
  size_t reserve;
  /* Segment name ("/name"), NULL for an unpredictable "/mp-..." name. */
  const char *name;
} mp_manager_opts_t;

#define MP_MANAGER_DEFAULT_RESERVE ((size_t)64 << 30)

/* Create a manager: a new shared segment (O_EXCL, mode 0600) that is removed
 * when the creating process exits, however it exits (also after SIGKILL), or
 * at mp_manager_destroy. opts may be NULL.
 * MP_EINVAL (bad reserve or name), MP_EEXIST (name taken), MP_ENOMEM, or a
 * system error from creating the segment. */
MP_EXTERN int mp_manager_create(mp_manager_t **m,
                                const mp_manager_opts_t *opts);
/* Open an existing manager by name, from any process of the same user.
 * Only a segment owned by the effective uid with no group or other
 * permission bits is opened (else MP_EACCES), and its header is checked
 * (sizes and offsets inside the segment, else MP_EPROTO). MP_ENOENT (no
 * such manager), MP_EINVAL (bad name or not a manager), MP_EACCES,
 * MP_EPROTO, MP_ENOMEM. */
MP_EXTERN int mp_manager_open(mp_manager_t **m, const char *name);
/* The manager's segment name in *name (valid while m is). MP_EINVAL. */
MP_EXTERN int mp_manager_name(const mp_manager_t *m, const char **name);
/* Release the handle. Called by the process that created the manager (not a
 * forked child), it also removes the name; processes that still have it
 * open keep working. Every dict and list handle of m must be closed first.
 * MP_EINVAL for NULL. */
MP_EXTERN int mp_manager_destroy(mp_manager_t *m);

/* ---- dict ---------------------------------------------------------------- */

typedef struct {
  /* Name to find it by (mp_dict_open), at most 47 bytes, unique among the
   * manager's dicts and lists; NULL: reachable by id only. */
  const char *name;
} mp_dict_opts_t;

/* Create an empty dict in m. opts may be NULL. The dict lives as long as the
 * manager; *d is a handle to close with mp_dict_close.
 * MP_EINVAL, MP_ENAMETOOLONG, MP_EEXIST (name taken), MP_ENOMEM (arena full
 * or the manager's 16384 objects used). */
MP_EXTERN int mp_dict_create(mp_dict_t **d, mp_manager_t *m,
                             const mp_dict_opts_t *opts);
/* A new handle on the dict created with this name. MP_ENOENT, MP_EINVAL
 * (also when the name is a list's). */
MP_EXTERN int mp_dict_open(mp_dict_t **d, mp_manager_t *m, const char *name);
/* A new handle on the dict with this id. MP_ENOENT, MP_EINVAL. */
MP_EXTERN int mp_dict_open_id(mp_dict_t **d, mp_manager_t *m, uint32_t id);
/* The dict's id within its manager (stable, same in every process). */
MP_EXTERN int mp_dict_id(const mp_dict_t *d, uint32_t *id);
/* Free the handle (the dict itself stays in the manager). MP_EINVAL. */
MP_EXTERN int mp_dict_close(mp_dict_t *d);

/* d[key] = val. MP_EINVAL (bad key type or value), MP_ENOMEM. */
MP_EXTERN int mp_dict_set(mp_dict_t *d, const mp_val_t *key,
                          const mp_val_t *val);
/* *out = d[key], copied out (free with mp_val_free). MP_ENOENT when the
 * key is missing (KeyError). */
MP_EXTERN int mp_dict_get(mp_dict_t *d, const mp_val_t *key, mp_val_t *out);
/* d.get(key, def): like mp_dict_get, but a missing key copies *def into *out
 * (strings duplicated: *out is always the caller's to free). def NULL: nil. */
MP_EXTERN int mp_dict_get_default(mp_dict_t *d, const mp_val_t *key,
                                  const mp_val_t *def, mp_val_t *out);
/* *found = key in d. */
MP_EXTERN int mp_dict_contains(mp_dict_t *d, const mp_val_t *key, bool *found);
/* d.pop(key): remove key; its value is copied into *out unless out is NULL.
 * MP_ENOENT if missing. */
MP_EXTERN int mp_dict_pop(mp_dict_t *d, const mp_val_t *key, mp_val_t *out);
/* del d[key]. MP_ENOENT if missing. */
MP_EXTERN int mp_dict_del(mp_dict_t *d, const mp_val_t *key);
/* *n = len(d). */
MP_EXTERN int mp_dict_len(mp_dict_t *d, size_t *n);
/* Remove every item. */
MP_EXTERN int mp_dict_clear(mp_dict_t *d);
/* d.update(src): every item of src (a snapshot of it) set in d, as one
 * atomic operation. src may be a dict of another manager. MP_ENOMEM: d is
 * unchanged. */
MP_EXTERN int mp_dict_update(mp_dict_t *d, mp_dict_t *src);
/* Consistent snapshots in insertion order: *keys and/or *vals (either may be
 * NULL) get malloc'd arrays of *n copied values (NULL when empty), freed
 * with mp_vals_free. */
MP_EXTERN int mp_dict_items(mp_dict_t *d, mp_val_t **keys, mp_val_t **vals,
                            size_t *n);
MP_EXTERN int mp_dict_keys(mp_dict_t *d, mp_val_t **keys, size_t *n);
MP_EXTERN int mp_dict_values(mp_dict_t *d, mp_val_t **vals, size_t *n);
/* Atomic d[key] += delta on an integer value (a missing key counts as 0 and
 * is created). *result (may be NULL) gets the new value. MP_EINVAL if the
 * present value is not an int; MP_ERANGE on int64 overflow (unchanged). */
MP_EXTERN int mp_dict_add(mp_dict_t *d, const mp_val_t *key, int64_t delta,
                          int64_t *result);
/* Atomic compare-and-set: if d[key] equals *expected (same type and
 * content), or expected is NULL and key is absent, set d[key] = *desired and
 * *swapped = true; otherwise *swapped = false and nothing changes. */
MP_EXTERN int mp_dict_cas(mp_dict_t *d, const mp_val_t *key,
                          const mp_val_t *expected, const mp_val_t *desired,
                          bool *swapped);
/* Python's repr of the dict, e.g. {1234: 1234, 'a': 2.5}, into a malloc'd
 * string *out (caller frees). A consistent snapshot. */
MP_EXTERN int mp_dict_repr(mp_dict_t *d, char **out);

/* ---- list ---------------------------------------------------------------- */

typedef struct {
  const char *name; /* as mp_dict_opts_t.name */
} mp_list_opts_t;

/* Create an empty list in m. opts may be NULL. The list lives as long as
 * the manager; *l is a handle to close with mp_list_close.
 * MP_EINVAL, MP_ENAMETOOLONG, MP_EEXIST (name taken by a dict or list),
 * MP_ENOMEM (arena full or the manager's 16384 objects used). */
MP_EXTERN int mp_list_create(mp_list_t **l, mp_manager_t *m,
                             const mp_list_opts_t *opts);
/* A new handle on the list created with this name. MP_ENOENT, MP_EINVAL
 * (also when the name is a dict's). */
MP_EXTERN int mp_list_open(mp_list_t **l, mp_manager_t *m, const char *name);
/* A new handle on the list with this id. MP_ENOENT, MP_EINVAL. */
MP_EXTERN int mp_list_open_id(mp_list_t **l, mp_manager_t *m, uint32_t id);
/* The list's id within its manager (stable, same in every process). */
MP_EXTERN int mp_list_id(const mp_list_t *l, uint32_t *id);
/* Free the handle (the list itself stays in the manager). MP_EINVAL. */
MP_EXTERN int mp_list_close(mp_list_t *l);

/* Indexes are Python's: negative counts from the end; out of range is
 * MP_ERANGE (IndexError). */

/* l.append(v). */
MP_EXTERN int mp_list_append(mp_list_t *l, const mp_val_t *v);
/* l.extend(vals[0..n)), atomically. n 0 is a no-op; vals NULL with n > 0:
 * MP_EINVAL. */
MP_EXTERN int mp_list_extend(mp_list_t *l, const mp_val_t *vals, size_t n);
/* *out = l[i], copied out. MP_ERANGE. */
MP_EXTERN int mp_list_get(mp_list_t *l, int64_t i, mp_val_t *out);
/* l[i] = v. MP_ERANGE. */
MP_EXTERN int mp_list_set(mp_list_t *l, int64_t i, const mp_val_t *v);
/* l.insert(i, v): like Python, i is clamped to [0, len] (never an error). */
MP_EXTERN int mp_list_insert(mp_list_t *l, int64_t i, const mp_val_t *v);
/* l.pop(i) (i = -1 for the last): removes it, copied into *out unless out
 * is NULL. MP_ERANGE (also for an empty list). */
MP_EXTERN int mp_list_pop(mp_list_t *l, int64_t i, mp_val_t *out);
/* l.remove(v): removes the first item equal to v. MP_ENOENT if there is
 * none (Python's ValueError). */
MP_EXTERN int mp_list_remove(mp_list_t *l, const mp_val_t *v);
/* *n = len(l). */
MP_EXTERN int mp_list_len(mp_list_t *l, size_t *n);
/* l.clear(). */
MP_EXTERN int mp_list_clear(mp_list_t *l);
/* Snapshot: *vals gets a malloc'd array of *n copied values (NULL when
 * empty), freed with mp_vals_free. */
MP_EXTERN int mp_list_items(mp_list_t *l, mp_val_t **vals, size_t *n);
/* Python's repr, e.g. [1, 'a', None], malloc'd into *out. */
MP_EXTERN int mp_list_repr(mp_list_t *l, char **out);

MP_END_DECLS

#endif
