/* mproc: shared memory (Python's RawValue/RawArray, Value/Array and
 * shared_memory.SharedMemory).
 *
 * Raw blocks and values/arrays are anonymous MAP_SHARED mappings: every
 * child forked after their creation shares them (not processes started
 * otherwise; use a named segment for those). Named segments are POSIX shm
 * objects any process of the same user can open by name. */
#ifndef MPROC_SHM_H
#define MPROC_SHM_H

#include <stdbool.h>

#include "common.h"
#include "error.h"
#include "sync.h"

MP_BEGIN_DECLS

/* ---- raw blocks (RawValue / RawArray) ------------------------------------ */

/* Map `size` zeroed bytes shared with children forked afterwards, aligned
 * to 64 bytes: the place for mp_lock_t and other sync structs, counters,
 * arrays. Returns 0, MP_EINVAL (p NULL or size 0), MP_ENOMEM. The caller
 * owns *p and frees it with mp_raw_free; memory is only backed as touched. */
MP_EXTERN int mp_raw_alloc(void **p, size_t size);

/* Unmap a block in this process (others keep theirs). Returns 0 (also for
 * NULL) or MP_EINVAL (not a block from mp_raw_alloc). */
MP_EXTERN int mp_raw_free(void *p);

/* ---- typed values and arrays (Value / Array) ----------------------------- */

/* Element types, with Python's array typecodes. */
typedef enum {
  MP_TYPE_I8,  /* 'b' */
  MP_TYPE_U8,  /* 'B', 'c' */
  MP_TYPE_I16, /* 'h' */
  MP_TYPE_U16, /* 'H' */
  MP_TYPE_I32, /* 'i' */
  MP_TYPE_U32, /* 'I' */
  MP_TYPE_I64, /* 'l', 'q' */
  MP_TYPE_U64, /* 'L', 'Q' */
  MP_TYPE_F32, /* 'f' */
  MP_TYPE_F64  /* 'd' */
} mp_type_t;

/* A value is an array of one element: both names are kept for the mapping
 * from Python. The object lives in shared memory (inherited by fork). */
typedef struct mp_array mp_array_t;
typedef struct mp_array mp_value_t;

typedef struct mp_array_opts {
  /* true: no lock (Python's lock=False / RawArray with typed helpers).
   * Default: an RLock, taken by each get/set and returned by get_lock. */
  bool raw;
  /* NULL (default): an anonymous mapping, shared with forked children only.
   * A name ("name" or "/name", no other '/', < 63 bytes): the array lives in
   * a named shared-memory segment (O_EXCL, mode 0600) that any process of
   * the same user opens with mp_array_open / mp_value_open, e.g. a child of
   * the fork server, which inherits nothing made after the server started.
   * The name is removed by mp_array_destroy in the creating process, or
   * when that process exits however it exits. */
  const char *name;
} mp_array_opts_t;
typedef mp_array_opts_t mp_value_opts_t;

/* Create a shared array of len elements of type, copied from init (len
 * elements; NULL: zeros). Returns 0, MP_EINVAL (NULL out, bad type, len 0,
 * size overflow), MP_ENOMEM. Free with mp_array_destroy (each process frees
 * its own mapping). */
MP_EXTERN int mp_array_create(mp_array_t **a, mp_type_t type, size_t len,
                              const void *init, const mp_array_opts_t *opts);
/* Unmap in this process (the creator of a named array also removes its
 * name). 0 (also for NULL), MP_EINVAL (not an array). */
MP_EXTERN int mp_array_destroy(mp_array_t *a);
/* Open a named array (created with opts.name, after mp_array_create
 * returned) in this process; the handle shares the creator's elements and
 * lock. Free with mp_array_destroy. Returns 0, MP_ENOENT (no such name),
 * MP_EINVAL (NULL, bad name, or the segment is not a complete mproc array),
 * MP_EACCES, MP_ENOMEM. */
MP_EXTERN int mp_array_open(mp_array_t **a, const char *name);
/* A named array's name ("/name", owned by a), NULL for an anonymous one. */
MP_EXTERN const char *mp_array_name(const mp_array_t *a);
/* The elements (aligned to 64 bytes), NULL if a is NULL. Direct access is
 * not locked: hold the lock for read-modify-write. */
MP_EXTERN void *mp_array_data(mp_array_t *a);
/* Number of elements, 0 if a is NULL. */
MP_EXTERN size_t mp_array_len(const mp_array_t *a);
/* The array's lock (Python's get_lock()). Returns 0, MP_ENOTSUP (created
 * raw), MP_EINVAL. */
MP_EXTERN int mp_array_get_lock(mp_array_t *a, mp_rlock_t **lock);
/* Read/write element i converted from/to int64_t or double, under the lock
 * when there is one. Returns 0, MP_ERANGE (i >= len: Python's IndexError),
 * MP_EINVAL (NULL), MP_EOWNERDEAD (done, the lock was taken over from a
 * dead holder and stays marked: see mp_rlock_consistent). */
MP_EXTERN int mp_array_get_i64(mp_array_t *a, size_t i, int64_t *out);
MP_EXTERN int mp_array_set_i64(mp_array_t *a, size_t i, int64_t v);
MP_EXTERN int mp_array_get_f64(mp_array_t *a, size_t i, double *out);
MP_EXTERN int mp_array_set_f64(mp_array_t *a, size_t i, double v);

/* Value: an array of one element; init points to one element or is NULL. */
MP_EXTERN int mp_value_create(mp_value_t **v, mp_type_t type, const void *init,
                              const mp_value_opts_t *opts);
MP_EXTERN int mp_value_destroy(mp_value_t *v);
/* mp_array_open for a value: MP_EINVAL also when the array there has more
 * than one element. mp_value_name as mp_array_name. */
MP_EXTERN int mp_value_open(mp_value_t **v, const char *name);
MP_EXTERN const char *mp_value_name(const mp_value_t *v);
/* Pointer to the value, NULL if v is NULL. */
MP_EXTERN void *mp_value_ptr(mp_value_t *v);
MP_EXTERN int mp_value_get_lock(mp_value_t *v, mp_rlock_t **lock);
/* Python's v.value: as mp_array_get/set_* at index 0. */
MP_EXTERN int mp_value_get_i64(mp_value_t *v, int64_t *out);
MP_EXTERN int mp_value_set_i64(mp_value_t *v, int64_t x);
MP_EXTERN int mp_value_get_f64(mp_value_t *v, double *out);
MP_EXTERN int mp_value_set_f64(mp_value_t *v, double x);

/* ---- named segments (shared_memory.SharedMemory) ------------------------- */

typedef struct mp_shm mp_shm_t;

typedef struct mp_shm_opts {
  /* "name" or "/name" (no other '/', < 63 bytes). NULL: a random
   * "/mp-<16 hex>" name. */
  const char *name;
  /* true: the segment outlives this process (Python's track=False).
   * Default: removed when this process exits, also after SIGKILL. */
  bool keep;
} mp_shm_opts_t;

/* Create a zeroed segment of size bytes, O_EXCL, mode 0600, and map it.
 * Returns 0, MP_EINVAL (NULL out, size 0, bad name), MP_EEXIST (name
 * taken), MP_ENAMETOOLONG, MP_ENOSPC (/dev/shm has no room: every page is
 * allocated now), MP_ENOMEM, or -errno from shm_open. The handle is
 * process-local: after fork the child may use and close its copy; only the
 * creating process removes the name on destroy. */
MP_EXTERN int mp_shm_create(mp_shm_t **s, size_t size,
                            const mp_shm_opts_t *opts);
/* Open and map an existing segment (its whole current size). Returns 0,
 * MP_ENOENT (no such name), MP_EINVAL (NULL, bad name, empty segment),
 * MP_EACCES (another user's, or group/other permission bits set),
 * MP_ENOMEM. */
MP_EXTERN int mp_shm_open(mp_shm_t **s, const char *name);
/* The mapping, its size, its name ("/name", owned by the handle); NULL / 0
 * if s is NULL. */
MP_EXTERN void *mp_shm_buf(const mp_shm_t *s);
MP_EXTERN size_t mp_shm_size(const mp_shm_t *s);
MP_EXTERN const char *mp_shm_name(const mp_shm_t *s);
/* Unmap and free the handle; the name stays (Python's close()). Returns 0
 * (also for NULL). */
MP_EXTERN int mp_shm_close(mp_shm_t *s);
/* Remove the name (Python's unlink()): mappings stay valid, new opens fail.
 * Returns 0, MP_ENOENT (already removed), MP_EINVAL. */
MP_EXTERN int mp_shm_unlink(mp_shm_t *s);
/* close, after removing the name if this process created the segment
 * without `keep`. Returns 0 (also for NULL). */
MP_EXTERN int mp_shm_destroy(mp_shm_t *s);

MP_END_DECLS

#endif
