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
 * leaves the structure as it was before the call, and nobody hangs: the next
 * caller notices the dead owner at once, a waiter already asleep within
 * 20 ms, and takes over (a live owner, however slow, never is); signal
 * handlers do not delay it. A killed process
 * may leak the arena space of its one interrupted call.
 *
 * Values. mp_val_t is a tagged value: nil, bool, int64, double, string,
 * bytes, or a reference to a dict, list or namespace of the same manager
 * (nested containers). Values passed in are copied; the library never keeps
 * the caller's pointers. Values copied out (get, pop, items...) own their
 * string or bytes data (malloc'd, NUL-terminated for convenience, len
 * excludes the NUL) or, for a reference, a new handle: release them with
 * mp_val_free / mp_vals_free. Dict keys are int, string or bytes (a string
 * and the same bytes are different keys, as in Python 3); equality is by
 * type and content (1 and 1.0 are different values), and two references
 * are equal when they name the same object.
 *
 * Nested containers. d["a"] = manager.list() is mp_list_create, then
 * mp_dict_set with mp_val_list(l): the dict holds the list's id. A get in
 * any process (forked, or one that opened the manager by name) returns a
 * new handle on that same list, so an append through it is seen by all, as
 * with Python's proxies. Lifetime: a dict, list or namespace lives until its
 * manager is destroyed, whether or not anything refers to it: deleting the
 * key or overwriting the value drops the reference only (the object can
 * still be opened by id, and its contents stay until cleared). A reference
 * read from shared memory is checked before it is followed (its kind, the
 * directory entry, the object's header): a corrupt one is MP_EPROTO.
 *
 * Errors common to every call: MP_EINVAL for NULL handles or out-pointers, or
 * a malformed value (unknown type, NULL data with a non-zero length, a
 * reference whose handle is NULL, of another kind, or of another manager
 * than the container's); MP_ENOMEM when the manager's arena is full (or
 * local memory runs out): the call then changed nothing. MP_EPROTO when the
 * shared structure is corrupt (see docs/manager.md). */
#ifndef MPROC_MANAGER_H
#define MPROC_MANAGER_H

#include <stdbool.h>
#include <string.h>
#include <sys/uio.h>

#include "common.h"
#include "error.h"

MP_BEGIN_DECLS

typedef struct mp_manager mp_manager_t;
typedef struct mp_dict mp_dict_t;
typedef struct mp_list mp_list_t;
typedef struct mp_namespace mp_namespace_t;

typedef enum {
  MP_NIL = 0,    /* None */
  MP_BOOL = 1,   /* True / False: u.b */
  MP_INT = 2,    /* int (64-bit): u.i */
  MP_DOUBLE = 3, /* float: u.d */
  MP_STR = 4,    /* str (UTF-8 text): u.s, len bytes */
  MP_BYTES = 5,  /* bytes: u.p, len bytes */
  /* A reference to a dict, list or namespace of the same manager (a proxy
   * stored in a container, as Python's manager allows): u.dict, u.list,
   * u.ns is a handle. Passed in, the handle is read (the object's id is
   * stored) and stays the caller's; copied out, it is a new handle on the
   * referenced object, closed by mp_val_free. */
  MP_DICT = 6,
  MP_LIST = 7,
  MP_NAMESPACE = 8
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
    mp_dict_t *dict;
    mp_list_t *list;
    mp_namespace_t *ns;
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
/* References (nested containers): d["a"] = l is
 *   mp_val_t v = mp_val_list(l); mp_dict_set(d, &k, &v);
 * The handle must belong to the same manager as the container the value is
 * stored in (another handle on the same manager, opened by name, is fine). */
static inline mp_val_t mp_val_dict(mp_dict_t *d) {
  mp_val_t v = mp_val_nil();
  v.type = MP_DICT;
  v.u.dict = d;
  return v;
}
static inline mp_val_t mp_val_list(mp_list_t *l) {
  mp_val_t v = mp_val_nil();
  v.type = MP_LIST;
  v.u.list = l;
  return v;
}
static inline mp_val_t mp_val_namespace(mp_namespace_t *ns) {
  mp_val_t v = mp_val_nil();
  v.type = MP_NAMESPACE;
  v.u.ns = ns;
  return v;
}

/* Release the string/bytes data of a value the library copied out (or
 * close the handle of a reference it copied out), and make it nil. Harmless on scalars and on NULL. Never call it on a value whose
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
  /* Segment name, "name" or "/name" (the same manager; no other '/'), NULL
   * for an unpredictable "/mp-..." name. mp_manager_name gives "/name". On
   * Redis: "/" and then 1 to 200 of [A-Za-z0-9_.-]. */
  const char *name;
  /* NULL: the local shared-memory manager. Otherwise the Redis server that
   * holds the manager's objects: "redis://[[user]:password@]host[:port][/db]"
   * (port 6379 and db 0 by default) or
   * "unix://[[user]:password@]/path/to/redis.sock[?db=N]"; user and password
   * may be percent-encoded. reserve is then ignored. */
  const char *address;
  /* Redis: milliseconds to connect (0: 2000) and to wait for a reply to a
   * command (0: 10000; blocking calls add their own timeout to it). */
  int connect_timeout_ms;
  int command_timeout_ms;
  unsigned flags; /* MP_MANAGER_* bits */
} mp_manager_opts_t;

/* mp_manager_opts_t.flags */
enum {
  /* Redis: mp_manager_destroy in the creating process leaves the manager's
   * keys in Redis (to be opened again later) instead of deleting them. */
  MP_MANAGER_KEEP = 1 << 0,
};

#define MP_MANAGER_DEFAULT_RESERVE ((size_t)64 << 30)

/* Create a manager: a new shared segment (O_EXCL, mode 0600) that is removed
 * when the creating process exits, however it exits (also after SIGKILL), or
 * at mp_manager_destroy. opts may be NULL.
 * MP_EINVAL (bad reserve or name), MP_EEXIST (name taken), MP_ENOMEM, or a
 * system error from creating the segment.
 * With opts->address, the manager lives in that Redis server instead (see
 * "Redis" below); errors then: MP_EINVAL (malformed address or name),
 * MP_ENOTSUP (built without hiredis), MP_EEXIST (a manager of that name is
 * there), MP_ECONNREFUSED, MP_ENOENT (no such socket or host),
 * MP_ETIMEDOUT, MP_ECONNRESET, MP_EACCES (AUTH failed or needed), MP_EIO
 * (unexpected reply). */
MP_EXTERN int mp_manager_create(mp_manager_t **m,
                                const mp_manager_opts_t *opts);
/* Open an existing manager by name ("name" or "/name"), from any process
 * of the same user.
 * Only a segment owned by the effective uid with no group or other
 * permission bits is opened (else MP_EACCES), and its header is checked
 * (sizes and offsets inside the segment, else MP_EPROTO). MP_ENOENT (no
 * such manager), MP_EINVAL (bad name or not a manager), MP_EACCES,
 * MP_EPROTO, MP_ENOMEM. */
MP_EXTERN int mp_manager_open(mp_manager_t **m, const char *name);
/* Open an existing manager by name with options: opts->address (required
 * for a Redis manager; NULL opts or address: mp_manager_open) and the
 * timeouts; other fields are ignored. On Redis: MP_ENOENT (no manager of that
 * name there), MP_EINVAL (bad name or address, or the key is not a
 * manager's), and the connection errors of mp_manager_create. */
MP_EXTERN int mp_manager_open_opts(mp_manager_t **m, const char *name,
                                   const mp_manager_opts_t *opts);
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
/* d.popitem(): remove the most recently inserted item (LIFO, as Python
 * 3.7+) and copy it into *key and *val (free both with mp_val_free).
 * MP_ENOENT when the dict is empty (KeyError). */
MP_EXTERN int mp_dict_popitem(mp_dict_t *d, mp_val_t *key, mp_val_t *val);
/* d.setdefault(key, def), atomically: *out gets d[key] when present; else
 * d[key] = *def (def NULL: None) and *out a copy of it. *out is always the
 * caller's to free with mp_val_free. MP_EINVAL (bad key or def). */
MP_EXTERN int mp_dict_setdefault(mp_dict_t *d, const mp_val_t *key,
                                 const mp_val_t *def, mp_val_t *out);
/* Iteration without a snapshot of everything: start with *pos = 0; each
 * call copies the next item in insertion order into *key and/or *val (either
 * may be NULL, not both), advances *pos and returns 1; returns 0 at the end.
 * Each call takes the lock briefly, so other processes keep working. An
 * item present from start to end and not moved is seen exactly once; a
 * dict changed meanwhile may show new items or not, and when an insert
 * compacted it (after deletions) some items may be skipped (Python raises
 * RuntimeError there): use mp_dict_items for a consistent snapshot. */
MP_EXTERN int mp_dict_next(mp_dict_t *d, size_t *pos, mp_val_t *key,
                           mp_val_t *val);

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
/* l.count(v): *count = the number of items equal to v (same type and
 * content, as every comparison here). */
MP_EXTERN int mp_list_count(mp_list_t *l, const mp_val_t *v, size_t *count);
/* l.index(v, start, stop): *index = the first position of v within
 * l[start:stop] (Python's bounds: negative from the end, clamped; pass 0 and
 * INT64_MAX for the whole list). MP_ENOENT if absent (ValueError). */
MP_EXTERN int mp_list_index(mp_list_t *l, const mp_val_t *v, int64_t start,
                            int64_t stop, size_t *index);
/* l.sort() / l.sort(reverse=True), stable, by value order: numbers (bool,
 * int, double) compare by value with each other, strings with strings and
 * bytes with bytes by their bytes (code point order for UTF-8). A list that
 * mixes those kinds, or holds None with other items: MP_EINVAL (Python's
 * TypeError), unchanged. No key function: sort a snapshot locally for that. */
MP_EXTERN int mp_list_sort(mp_list_t *l, bool reverse);
/* l.reverse(). */
MP_EXTERN int mp_list_reverse(mp_list_t *l);
/* Slices, with Python's rules for start, stop and step (negative counts
 * from the end, out-of-range bounds clamped; step 0: MP_EINVAL). An omitted
 * bound is INT64_MIN for the low end and INT64_MAX for the high one, so
 * l[::-1] is (INT64_MAX, INT64_MIN, -1) and l[2:] is (2, INT64_MAX, 1).
 * get: *vals gets a malloc'd array of *n copies (NULL when empty), freed
 * with mp_vals_free. set: l[start:stop:step] = vals[0..n); with step 1 the
 * list grows or shrinks, with another step n must equal the slice's length
 * (else MP_EINVAL, Python's ValueError). del: del l[start:stop:step]. */
MP_EXTERN int mp_list_get_slice(mp_list_t *l, int64_t start, int64_t stop,
                                int64_t step, mp_val_t **vals, size_t *n);
MP_EXTERN int mp_list_set_slice(mp_list_t *l, int64_t start, int64_t stop,
                                int64_t step, const mp_val_t *vals, size_t n);
MP_EXTERN int mp_list_del_slice(mp_list_t *l, int64_t start, int64_t stop,
                                int64_t step);
/* l *= times: the items repeated times times, atomically (times <= 0
 * empties the list, as Python). MP_ENOMEM when the result would not fit. */
MP_EXTERN int mp_list_repeat(mp_list_t *l, int64_t times);

/* ---- namespace (Python's manager.Namespace()) ------------------------------
 * Attributes, each a name and a value of any type above (a reference too).
 * Names are non-empty strings not starting with '_' (Python keeps those on
 * the local proxy, never shared: here they are MP_EINVAL). Each call is
 * atomic and crash-safe like the dict's. Not on a Redis manager (MP_ENOTSUP).
 */

typedef struct {
  const char *name; /* as mp_dict_opts_t.name */
} mp_namespace_opts_t;

/* Create an empty namespace in m (opts may be NULL). Lives as long as the
 * manager. MP_EINVAL, MP_ENAMETOOLONG, MP_EEXIST, MP_ENOMEM (as
 * mp_dict_create), MP_ENOTSUP (Redis manager). */
MP_EXTERN int mp_namespace_create(mp_namespace_t **ns, mp_manager_t *m,
                                  const mp_namespace_opts_t *opts);
/* A new handle on the namespace of that name or id. MP_ENOENT, MP_EINVAL
 * (also when the name or id is a dict's or list's), MP_ENOTSUP. */
MP_EXTERN int mp_namespace_open(mp_namespace_t **ns, mp_manager_t *m,
                                const char *name);
MP_EXTERN int mp_namespace_open_id(mp_namespace_t **ns, mp_manager_t *m,
                                   uint32_t id);
/* The namespace's id within its manager. MP_EINVAL. */
MP_EXTERN int mp_namespace_id(const mp_namespace_t *ns, uint32_t *id);
/* Free the handle (the namespace stays). MP_EINVAL. */
MP_EXTERN int mp_namespace_close(mp_namespace_t *ns);
/* ns.<attr> = *val. MP_EINVAL (bad name or value), MP_ENOMEM. */
MP_EXTERN int mp_namespace_set(mp_namespace_t *ns, const char *attr,
                               const mp_val_t *val);
/* *out = ns.<attr>, copied out (free with mp_val_free). MP_ENOENT when there
 * is no such attribute (Python's AttributeError). */
MP_EXTERN int mp_namespace_get(mp_namespace_t *ns, const char *attr,
                               mp_val_t *out);
/* *found = hasattr(ns, attr). */
MP_EXTERN int mp_namespace_has(mp_namespace_t *ns, const char *attr,
                               bool *found);
/* del ns.<attr>. MP_ENOENT when there is no such attribute. */
MP_EXTERN int mp_namespace_del(mp_namespace_t *ns, const char *attr);
/* Python's repr, Namespace(a=1, b='x'): "name=repr(value)" items sorted as
 * Python sorts them, malloc'd into *out (caller frees). */
MP_EXTERN int mp_namespace_repr(mp_namespace_t *ns, char **out);

/* ---- Redis: sharing across machines ----------------------------------------
 * A manager created (or opened) with opts.address keeps its dicts and lists
 * in a Redis server: every mp_dict_* and mp_list_* call above works the same
 * on it (same values, errors and repr), each call one Redis command or one
 * Lua script, so it stays atomic. Keys are "mproc:<name without />:...".
 * Such a manager also offers the queue, lock and event below (they need
 * Redis: on a local manager they return MP_ENOTSUP). Nested containers are
 * local only: a reference value (MP_DICT, MP_LIST, MP_NAMESPACE) passed to
 * a Redis dict or list is MP_EINVAL, and namespaces are MP_ENOTSUP.
 *
 * Connections: one per manager handle and one per queue, lock or event
 * handle, made on first use and again after fork (a child never uses its
 * parent's socket); threads using one manager handle take turns on its
 * connection. A queue, lock or event handle is one consumer or owner: use it
 * from one thread at a time (give each thread its own).
 * Every call on a Redis manager may also fail with MP_ECONNREFUSED,
 * MP_ECONNRESET, MP_ETIMEDOUT (server down, restarted, or too slow), MP_EACCES
 * (authentication), MP_ENOMEM (also Redis' maxmemory), MP_EIO (a reply that
 * is not what mproc wrote: a key changed by something else); the next call
 * connects again. A call that failed with a connection error may or may not
 * have taken effect (the reply was lost), but never partly.
 * docs/manager.md says what survives a Redis restart. */

/* Handle options of the queue, lock and event (zero or NULL: defaults).
 *   name      at most 47 bytes, unique among the manager's objects; NULL:
 *             unnamed (usable through handles inherited by fork only).
 *   maxsize   queue: most messages waiting at once; 0: unbounded.
 *   flags     queue: MP_QUEUE_JOINABLE (include/mproc/queue.h).
 *   lease_ms  queue and lock: how long a consumer or lock holder may go
 *             without a call on its handle before it counts as dead;
 *             0: 30000. Fixed at create (open reads it). */
typedef struct {
  const char *name;
  size_t maxsize;
  unsigned flags;
  int lease_ms;
} mp_mobj_opts_t;

/* ---- queue (Python's manager.Queue() and JoinableQueue()) -----------------
 * Byte messages, FIFO. A message taken by mp_mqueue_get stays in this
 * handle's own processing list in Redis until the handle is done with it:
 * mp_mqueue_task_done (joinable queue) or, on a plain queue, this handle's
 * next get or its destroy. A consumer that dies holding messages (its lease
 * key expired: no call on the handle, nor any wait in this process's queue,
 * lock and event calls, for lease_ms) has them given back to the
 * front of the queue by the next get of any consumer: nothing acknowledged is
 * lost; a message may be delivered twice if its consumer was only slow. */
typedef struct mp_mqueue mp_mqueue_t;

/* Create a queue in Redis manager m. MP_EINVAL, MP_ENAMETOOLONG, MP_EEXIST,
 * MP_ENOTSUP (local manager). */
MP_EXTERN int mp_mqueue_create(mp_mqueue_t **q, mp_manager_t *m,
                               const mp_mobj_opts_t *opts);
/* A new handle (a new consumer) on the queue of that name. MP_ENOENT,
 * MP_EINVAL (also when the name is not a queue's). */
MP_EXTERN int mp_mqueue_open(mp_mqueue_t **q, mp_manager_t *m,
                             const char *name);
/* Append one message (copied). Blocks while the queue holds maxsize
 * messages, at most timeout_ms. Returns 0 once Redis holds it.
 * MP_EFULL, MP_ECLOSED, MP_EINVAL (msg NULL with len > 0, bad timeout),
 * MP_EMSGSIZE (len >= 512 MiB). */
MP_EXTERN int mp_mqueue_put(mp_mqueue_t *q, const void *msg, size_t len,
                            int timeout_ms);
/* Append msgs[0..n) in order with one command (all or none; with maxsize,
 * waits until all fit). Returns n. Errors as mp_mqueue_put. */
MP_EXTERN int mp_mqueue_put_many(mp_mqueue_t *q, const struct iovec *msgs,
                                 size_t n, int timeout_ms);
/* Take the oldest message: *msg malloc'd (caller frees; never NULL; a NUL
 * follows the len bytes for convenience), *len.
 * Blocks while empty, at most timeout_ms. MP_EEMPTY (still empty),
 * MP_ECLOSED (closed and empty), MP_EINVAL, MP_EIO. */
MP_EXTERN int mp_mqueue_get(mp_mqueue_t *q, void **msg, size_t *len,
                            int timeout_ms);
/* Take up to n messages at once (at least one: blocks as get): each
 * msgs[i].iov_base malloc'd (caller frees each). Returns the number taken.
 * Errors as mp_mqueue_get. */
MP_EXTERN int mp_mqueue_get_many(mp_mqueue_t *q, struct iovec *msgs, size_t n,
                                 int timeout_ms);
/* Messages waiting (not counting those taken and not yet done). */
MP_EXTERN int mp_mqueue_qsize(mp_mqueue_t *q, size_t *n);
/* Close for everyone: puts fail with MP_ECLOSED, gets drain what is left
 * and then fail with MP_ECLOSED (blocked gets notice within 100 ms). */
MP_EXTERN int mp_mqueue_close(mp_mqueue_t *q);
/* Joinable queue: the oldest message this handle took is done (removed from
 * its processing list for good). MP_EINVAL (nothing taken and not done: also
 * when this handle was taken for dead and its messages given back),
 * MP_ENOTSUP (not joinable). */
MP_EXTERN int mp_mqueue_task_done(mp_mqueue_t *q);
/* Joinable queue: wait until every message put has been marked done, at most
 * timeout_ms. MP_ETIMEDOUT, MP_ENOTSUP, MP_EINVAL. */
MP_EXTERN int mp_mqueue_join(mp_mqueue_t *q, int timeout_ms);
/* Free the handle; the messages it holds count as done (plain queue) or go
 * back to the queue (joinable queue, not marked done). The queue stays in
 * the manager. MP_EINVAL. */
MP_EXTERN int mp_mqueue_destroy(mp_mqueue_t *q);

/* ---- lock (manager.Lock()) -------------------------------------------------
 * A lease: the holder keeps it by calling into the handle (acquire, renew)
 * within lease_ms, or by waiting in any queue, lock or event call of this
 * process (each wait renews the process's leases); a holder that makes no
 * such call that long (dead, or stuck, or computing) loses it, and the
 * next acquirer gets MP_EOWNERDEAD (acquired; the data it protects may be
 * half-updated), as with the local robust lock. Not recursive. */
typedef struct mp_mlock mp_mlock_t;

/* Create or open a lock (as mp_mqueue_create / mp_mqueue_open). A handle
 * after fork is a different owner from its parent's. */
MP_EXTERN int mp_mlock_create(mp_mlock_t **l, mp_manager_t *m,
                              const mp_mobj_opts_t *opts);
MP_EXTERN int mp_mlock_open(mp_mlock_t **l, mp_manager_t *m, const char *name);
/* Acquire, waiting at most timeout_ms. 0, MP_EOWNERDEAD (acquired after a
 * holder's lease ran out), MP_ETIMEDOUT, MP_EDEADLK (this handle holds it),
 * MP_EINVAL. */
MP_EXTERN int mp_mlock_acquire(mp_mlock_t *l, int timeout_ms);
/* Extend the held lease to lease_ms from now. MP_EPERM (not held: also when
 * the lease ran out and another holder took it). */
MP_EXTERN int mp_mlock_renew(mp_mlock_t *l);
/* Release. MP_EPERM (not held by this handle, or the lease was lost to
 * another holder). */
MP_EXTERN int mp_mlock_release(mp_mlock_t *l);
/* Free the handle (releasing the lock if it holds it). MP_EINVAL. */
MP_EXTERN int mp_mlock_destroy(mp_mlock_t *l);

/* ---- event (manager.Event()) ---------------------------------------------- */
typedef struct mp_mevent mp_mevent_t;

MP_EXTERN int mp_mevent_create(mp_mevent_t **e, mp_manager_t *m,
                               const mp_mobj_opts_t *opts);
MP_EXTERN int mp_mevent_open(mp_mevent_t **e, mp_manager_t *m,
                             const char *name);
/* Set (waking every waiter), clear. */
MP_EXTERN int mp_mevent_set(mp_mevent_t *e);
MP_EXTERN int mp_mevent_clear(mp_mevent_t *e);
/* 1 if set, 0 if not, or a negative error. */
MP_EXTERN int mp_mevent_is_set(mp_mevent_t *e);
/* Wait until set, at most timeout_ms: 0 or MP_ETIMEDOUT. */
MP_EXTERN int mp_mevent_wait(mp_mevent_t *e, int timeout_ms);
MP_EXTERN int mp_mevent_destroy(mp_mevent_t *e);

MP_END_DECLS

#endif
