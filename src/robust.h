/* The robust core: every "lock word with an owner" and every "sleep until
 * this changes or its owner dies" in the library goes through here
 * (src/robust.c). Sync, queue and manager keep no liveness logic of their
 * own.
 *
 * Owner word (64 bits, in shared memory):
 *   bits  0..29  owner id: a pid, or a thread id for thread-owned locks
 *                (0 = free)
 *   bit  30      DEAD: a holder died and the data was not declared
 *                repaired (only locks acquired with MP__RB_STICKY keep it)
 *   bit  31      WAITERS: someone may sleep on the word; a release wakes
 *   bits 32..63  the low 32 bits of the owner's start time (clock ticks
 *                since boot, /proc/<id>/stat field 22); 0 = unknown
 * One compare-and-swap publishes the owner and its start time together, so
 * the identity is complete before anybody can see the lock held, and a
 * release clears both. The low half is the futex word sleepers wait on.
 *
 * Invariants (tests/test_robust.c):
 * - a live owner is never taken over: death is decided from what the
 *   kernel says about the id (gone, zombie, or a start time that differs
 *   from the one in the word), never from how long anything took;
 * - a dead owner (gone, zombie, or its id reused by another process or by
 *   the caller itself) is taken over by the next acquirer at once, and by
 *   a sleeper within MP__RB_CHECK_MS: sleepers keep absolute deadlines and
 *   re-check on that schedule whatever signals do;
 * - no sleeper depends on a single wake-up: every sleep is bounded by the
 *   same schedule, so a waker killed between publishing and waking delays
 *   its sleepers by at most MP__RB_CHECK_MS. */
#ifndef MPROC_ROBUST_H
#define MPROC_ROBUST_H

#include <stdbool.h>
#include <stdint.h>

#include "internal.h"

#define MP__RB_ID 0x3fffffffu
#define MP__RB_DEAD 0x40000000u
#define MP__RB_WAITERS 0x80000000u

/* Longest a sleeper sleeps before looking again (owner liveness, a lost
 * wake-up). Re-checks start at once and back off to this bound. */
#define MP__RB_CHECK_MS 20

/* Acquire flags. */
enum {
  MP__RB_THREAD = 1, /* owned by the calling thread (tid), not its process */
  MP__RB_STICKY = 2  /* a takeover sets DEAD until mp__rb_consistent */
};

/* The futex word inside an owner word (its low half). */
static inline _Atomic uint32_t *mp__rb_futex(_Atomic uint64_t *w) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  return (_Atomic uint32_t *)(void *)w;
#else
  return (_Atomic uint32_t *)(void *)w + 1;
#endif
}

/* The caller's identity as an owner word (id | start << 32). */
uint64_t mp__rb_self(unsigned flags);

/* True when word w names the caller (same id and start time). */
static inline bool mp__rb_is_self(uint64_t w, unsigned flags) {
  return ((w & MP__RB_ID) | (w & 0xffffffff00000000ull)) == mp__rb_self(flags);
}

/* Acquire *w, waiting at most timeout_ms (MP_FOREVER, 0: only try).
 * spin: rounds of busy waiting before sleeping. Returns 0; MP_EOWNERDEAD
 * (acquired: the previous owner died holding it, or DEAD was set);
 * MP_ETIMEDOUT. Signal handlers neither end nor stretch the wait. */
int mp__rb_acquire(_Atomic uint64_t *w, unsigned flags, int spin,
                   int timeout_ms);

/* Release whoever holds it (DEAD is kept). Returns the old word. */
uint64_t mp__rb_release(_Atomic uint64_t *w);

/* Clear DEAD if the caller holds *w. Returns 0 or MP_EPERM. */
int mp__rb_consistent(_Atomic uint64_t *w, unsigned flags);

/* True when the owner named by word w (held: id != 0) is certainly gone:
 * no such process or thread, a zombie, or the id now belongs to another
 * process or thread (start time differs; the caller's own id included).
 * Anything uncertain counts as alive. */
bool mp__rb_owner_dead(uint64_t w, unsigned flags);

/* Sleep while *addr == val: until woken, the deadline dl (NULL: none) or
 * MP__RB_CHECK_MS, whichever comes first. The caller re-checks its
 * condition, and its deadline, after every return. */
void mp__rb_sleep(_Atomic uint32_t *addr, uint32_t val,
                  const mp__deadline_t *dl);

#endif
