/* A shared arena: variable-size allocations inside one shared-memory
 * segment, addressed by offsets from the segment's start, so the same offset
 * is valid in every process whatever address its mapping sits at.
 *
 * Every process maps the whole reservation up front; the shm object itself is
 * only grown (never shrunk) as the bump pointer passes its end, so the
 * address space is reserved at once while memory is used only as pages are
 * touched. Growth is monotonic (fallocate of the last page, which never
 * shrinks), so concurrent growers cannot undo each other, and a process that
 * reads an offset another process published is always inside the object.
 *
 * Allocation is lock-free and crash-safe: a bump pointer advanced by CAS, and
 * one free list per size class kept as a Treiber stack whose head carries a
 * generation tag (against ABA). A process killed at any point can leak at
 * most the block it was allocating or freeing; it cannot corrupt the arena.
 *
 * The arena header is followed by a fixed "root" area of a size chosen at
 * creation, zero-filled, for the user of the arena (its own header). */
#ifndef MPROC_ARENA_H
#define MPROC_ARENA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"

/* Offsets are 16-byte aligned; 0 is never a valid allocation. */
#define MP__ARENA_ALIGN 16
/* Largest reservation: offsets are packed in 40 bits of 16-byte units in the
 * tagged free-list heads. */
#define MP__ARENA_MAX_RESERVE (1ull << 44)

typedef struct {
  mp__seg_t seg;
  struct mp__arena_hdr *hdr;
} mp__arena_t;

/* Create a new arena: name NULL for a random "/mp-..." name; `reserve` bytes
 * of address space (the most the arena may ever hold); `root_size` bytes of
 * zeroed root area. track: unlink the name when this process exits.
 * MP_EINVAL (bad sizes), or the segment's errors. */
int mp__arena_create(mp__arena_t *a, const char *name, size_t reserve,
                     size_t root_size, bool track);
/* Map an existing arena by name (its whole reservation). MP_ENOENT if
 * missing, MP_EACCES (another user's, or group/other permission bits),
 * MP_EINVAL if it is not an arena, MP_EPROTO if its header is corrupt (a
 * size, offset or free-list head outside the object). */
int mp__arena_open(mp__arena_t *a, const char *name);
/* Check an arena header at base: obj_size bytes of object backed, mapped
 * bytes of address space. 0, MP_EINVAL (no arena magic), MP_EPROTO. */
int mp__arena_validate(const void *base, size_t obj_size, size_t mapped);
/* True when [off, off+len) lies inside the allocated part of the arena (at
 * or past the root area, below the bump pointer, inside the object): what
 * every offset read from shared memory must pass before it is used. */
bool mp__arena_span_ok(mp__arena_t *a, uint64_t off, uint64_t len);
/* Unmap (the name stays). */
void mp__arena_close(mp__arena_t *a);

/* Allocate `size` bytes (> 0), 16-byte aligned, contents undefined. On
 * success *off is the block's offset. MP_ENOMEM when the reservation is
 * exhausted (or the system refuses to grow the object), MP_EINVAL for size 0
 * or absurd sizes, MP_EPROTO when a free list holds an offset outside the
 * arena (written by a corrupt peer). */
int mp__arena_alloc(mp__arena_t *a, size_t size, uint64_t *off);
/* Return a block to its size class. off 0 is ignored. */
void mp__arena_free(mp__arena_t *a, uint64_t off);
/* Usable bytes of an allocated block (>= the size asked for). */
size_t mp__arena_usable(mp__arena_t *a, uint64_t off);

/* Back [off, off+len) with memory now, in one system call, instead of one
 * page fault per page as it is first written: for large blocks that are
 * about to be filled. Best effort (older kernels: nothing happens). */
void mp__arena_prefault(mp__arena_t *a, uint64_t off, size_t len);

/* Offset of the root area, and bytes handed out so far (bump pointer, for
 * tests and statistics), and the reservation. */
uint64_t mp__arena_root(const mp__arena_t *a);
uint64_t mp__arena_used(const mp__arena_t *a);
uint64_t mp__arena_reserve(const mp__arena_t *a);

static inline void *mp__arena_ptr(const mp__arena_t *a, uint64_t off) {
  return (char *)a->seg.base + off;
}

#endif
