/* Internal interface between the sync and shm sources. */
#ifndef MPROC_SYNC_INTERNAL_H
#define MPROC_SYNC_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"
#include "mproc/sync.h"

#include "robust.h"

/* The owner word of a Lock (an RLock's is owned by a thread). */
static inline _Atomic uint64_t *mp__lock_word(mp_lock_t *l) {
  return (_Atomic uint64_t *)&l->mp__word;
}

/* Canonical segment name: "/name" from "name" or "/name". */
int mp__sync_canon_name(char *buf, size_t cap, const char *name);

/* mp__seg_create with a name in either form (NULL: random), tracked unless
 * keep. */
int mp__sync_seg_create(mp__seg_t *seg, const char *name, size_t size,
                        bool keep);

/* Named objects: a segment holding a small header and one object. */
enum {
  MP__KIND_LOCK = 1,
  MP__KIND_RLOCK,
  MP__KIND_SEM,
  MP__KIND_COND,
  MP__KIND_EVENT,
  MP__KIND_BARRIER
};
/* Create a segment for an object of `size` bytes (zeroed) in *obj. The
 * caller initializes it, then calls mp__named_publish. */
int mp__named_create(void **obj, uint32_t kind, size_t size,
                     const mp_sync_opts_t *opts);
void mp__named_publish(void *obj);
/* Undo a create whose object could not be initialized. */
void mp__named_abort(void *obj);
int mp__named_open(void **obj, uint32_t kind, size_t size, const char *name);
int mp__named_destroy(const void *obj);
const char *mp__named_name(const void *obj);

#endif
