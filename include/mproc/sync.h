/* mproc: process-shared synchronization (Python's Lock, RLock, Semaphore,
 * BoundedSemaphore, Condition, Event, Barrier).
 *
 * Every primitive is a small fixed-size struct with no pointer inside, so it
 * can live in any shared memory: place it in an mp_raw_alloc() block, an
 * mp_shm segment, a struct of your own in a MAP_SHARED mapping, or a global
 * for threads of one process, and call its mp_<thing>_init(). An all-zero
 * struct (static storage, fresh mp_raw_alloc memory) is already a free Lock,
 * RLock, Condition, unset Event, or Semaphore of value 0. Children forked
 * afterwards use it as is. The fields are private (mp__ names): touch
 * them only through these functions.
 *
 * For use by name from unrelated processes, mp_<thing>_create() puts a new
 * primitive in a named segment of its own (random "/mp-..." name, O_EXCL,
 * mode 0600) and mp_<thing>_open() maps it from any process of the same user.
 * The segment is removed when the creating process exits, also after SIGKILL,
 * unless opts->keep is set. mp_<thing>_destroy() unmaps a created or opened
 * handle (and removes the name if this process created it without `keep`);
 * never call it on an init'ed struct.
 *
 * Waits take `timeout_ms`: MP_FOREVER blocks, 0 only tries, a positive value
 * waits at most that long (CLOCK_MONOTONIC). A timed-out wait returns
 * MP_ETIMEDOUT. Waits spin briefly, then sleep on a shared futex: a waiting
 * process uses no CPU. Signals do not interrupt a wait, and do not stretch
 * it: deadlines are absolute.
 *
 * Robustness: Lock and RLock record their holder (pid, RLock: thread id,
 * with its start time, in one word). A waiter whose holder process (RLock:
 * holder thread) has died takes the lock over and gets MP_EOWNERDEAD with
 * the lock held; the data it guards may be half updated. The lock stays
 * marked until mp_lock_consistent() (mp_rlock_consistent()): every acquire
 * until then returns MP_EOWNERDEAD, so a holder that itself cannot repair
 * the data just releases and the next one is told again. A new caller sees
 * a dead holder at once; a sleeping waiter looks again at least every 20 ms
 * (sooner at first), so it notices within that time, whatever signals do. A
 * live holder is never taken over, however long it holds the lock or stays
 * stopped. Dead means gone, a zombie (killed, not yet reaped), or a pid now
 * used by another process (the start time differs), including the caller's
 * own process. All processes sharing a primitive must be in one pid
 * namespace. Every sleep is bounded the same way, so a waker killed between
 * publishing (a permit, a flag, a notification) and waking delays sleepers
 * by at most 20 ms instead of stranding them. What a dead process means for
 * the other primitives is told at each. */
#ifndef MPROC_SYNC_H
#define MPROC_SYNC_H

#include <stdbool.h>

#include "common.h"
#include "error.h"

MP_BEGIN_DECLS

/* ---- types (fixed size, no pointers; fields private) ------------------- */

typedef struct mp_lock {
  uint64_t mp__word;  /* holder id | owner-dead | waiters | start time */
  uint32_t mp__count; /* RLock recursion depth */
  uint32_t mp__pad;
} mp_lock_t;

typedef struct mp_rlock {
  mp_lock_t mp__l;
} mp_rlock_t;

typedef struct mp_semaphore {
  uint32_t mp__value;
  uint32_t mp__waiters;
  uint32_t mp__max; /* 0: unbounded */
  uint32_t mp__pad;
} mp_semaphore_t;

typedef struct mp_cond {
  mp_rlock_t mp__lock;
  uint32_t mp__tokens;  /* notifications granted, not yet taken */
  uint32_t mp__waiters; /* waiters registered, not yet notified */
} mp_cond_t;

typedef struct mp_event {
  uint32_t mp__flag;
  uint32_t mp__waiters;
} mp_event_t;

typedef struct mp_barrier {
  mp_lock_t mp__mu;
  uint32_t mp__seq;
  uint32_t mp__parties;
  uint32_t mp__count;
  uint32_t mp__gen;
  uint32_t mp__state;      /* broken flag (bit 31) | resets (bits 0..30) */
  int32_t mp__timeout_ms;  /* default for MP_BARRIER_DEFAULT */
  uint64_t mp__gen_broken; /* bit g % 64: generation g was broken */
} mp_barrier_t;

/* Options for the named (create) forms. NULL gives the defaults. */
typedef struct mp_sync_opts {
  /* Segment name "/name" (a leading '/' is added if missing; no other '/').
   * NULL: a random "/mp-<16 hex>" name. */
  const char *name;
  /* true: the name outlives this process (Python's track=False); remove it
   * with mp_sync_unlink(). */
  bool keep;
} mp_sync_opts_t;

/* Remove a kept name. Returns 0, MP_ENOENT, MP_EINVAL (NULL or bad name).
 * Processes that have it open keep working. */
MP_EXTERN int mp_sync_unlink(const char *name);

/* ---- Lock ----------------------------------------------------------------
 * A non-recursive lock that any process or thread may release (Python's
 * Lock). The uncontended acquire is one compare-and-swap. */

/* Initialize *l unlocked. Returns 0 or MP_EINVAL (NULL). Must not be called
 * while anyone uses the lock. */
MP_EXTERN int mp_lock_init(mp_lock_t *l);

/* Acquire, waiting at most timeout_ms. Returns 0; MP_EOWNERDEAD (acquired:
 * the previous holder process died holding it, or a later holder released it
 * without mp_lock_consistent); MP_ETIMEDOUT; MP_EINVAL (NULL, bad timeout).
 * A thread acquiring a lock its own process holds waits (no deadlock check),
 * as in Python. */
MP_EXTERN int mp_lock_acquire(mp_lock_t *l, int timeout_ms);

/* Release. Any process may release (Python semantics). Returns 0, MP_EPERM
 * (not locked: Python's RuntimeError), MP_EINVAL (NULL). */
MP_EXTERN int mp_lock_release(mp_lock_t *l);

/* Mark the data guarded by an MP_EOWNERDEAD lock repaired. Returns 0,
 * MP_EPERM (this process does not hold it), MP_EINVAL (NULL). */
MP_EXTERN int mp_lock_consistent(mp_lock_t *l);

/* 1 if held by anyone, 0 if not, MP_EINVAL if NULL (Python's locked()). */
MP_EXTERN int mp_lock_locked(const mp_lock_t *l);

/* Named form: see the top of this file. create returns 0, MP_EINVAL,
 * MP_EEXIST (name taken), MP_ENOSPC (/dev/shm full), MP_ENOMEM, or a
 * -errno from shm_open. open returns 0, MP_ENOENT (no such name), MP_EINVAL
 * (NULL, bad name, or the segment holds another kind of object), MP_EACCES
 * (owned by another user, or group/other permission bits set). destroy returns 0 (also for
 * NULL) or MP_EINVAL (not a handle from create/open). name returns the
 * segment name (owned by the handle) or NULL for an init'ed struct. */
MP_EXTERN int mp_lock_create(mp_lock_t **l, const mp_sync_opts_t *opts);
MP_EXTERN int mp_lock_open(mp_lock_t **l, const char *name);
MP_EXTERN int mp_lock_destroy(mp_lock_t *l);
MP_EXTERN const char *mp_lock_name(const mp_lock_t *l);

/* ---- RLock ---------------------------------------------------------------
 * A recursive lock owned by a thread (Python's RLock): the owner may acquire
 * it again; it is free after as many releases. A dead owner thread (or its
 * whole process) is detected like a Lock's. */

/* Initialize *l free. Returns 0 or MP_EINVAL (NULL). */
MP_EXTERN int mp_rlock_init(mp_rlock_t *l);
/* Acquire, or add one level if the calling thread owns it already. Returns
 * 0, MP_EOWNERDEAD (acquired at depth 1 from a dead owner), MP_ETIMEDOUT,
 * MP_EINVAL (NULL, bad timeout), MP_EOVERFLOW (depth would pass 2^32-1). */
MP_EXTERN int mp_rlock_acquire(mp_rlock_t *l, int timeout_ms);
/* Remove one level; the lock is free when the depth reaches 0. Returns 0,
 * MP_EPERM (calling thread is not the owner: Python's RuntimeError),
 * MP_EINVAL. */
MP_EXTERN int mp_rlock_release(mp_rlock_t *l);
/* Mark the data repaired after MP_EOWNERDEAD. Returns 0, MP_EPERM (not the
 * owner), MP_EINVAL. */
MP_EXTERN int mp_rlock_consistent(mp_rlock_t *l);
/* 1 if the calling thread owns it, 0 if not, MP_EINVAL if NULL. */
MP_EXTERN int mp_rlock_is_owned(const mp_rlock_t *l);
/* Named form (see the top of this file; errors as mp_lock_create/open/
 * destroy/name). */
MP_EXTERN int mp_rlock_create(mp_rlock_t **l, const mp_sync_opts_t *opts);
MP_EXTERN int mp_rlock_open(mp_rlock_t **l, const char *name);
MP_EXTERN int mp_rlock_destroy(mp_rlock_t *l);
MP_EXTERN const char *mp_rlock_name(const mp_rlock_t *l);

/* ---- Semaphore, BoundedSemaphore -----------------------------------------
 * A counter of permits. A process that dies holding permits does not give
 * them back (a semaphore has no owner): use timeouts where that matters. */

/* Initialize with `value` permits (<= MP_SEM_VALUE_MAX). Returns 0 or
 * MP_EINVAL. The bounded form refuses releases past `value`. */
#define MP_SEM_VALUE_MAX 0x7fffffffu
MP_EXTERN int mp_semaphore_init(mp_semaphore_t *s, unsigned value);
MP_EXTERN int mp_bounded_semaphore_init(mp_semaphore_t *s, unsigned value);
/* Take a permit. Returns 0, MP_ETIMEDOUT, MP_EINVAL. */
MP_EXTERN int mp_semaphore_acquire(mp_semaphore_t *s, int timeout_ms);
/* Give a permit back. Returns 0, MP_EINVAL (NULL; bounded and already at
 * its initial value: Python's ValueError), MP_EOVERFLOW (at
 * MP_SEM_VALUE_MAX). */
MP_EXTERN int mp_semaphore_release(mp_semaphore_t *s);
/* The current number of permits (>= 0), or MP_EINVAL if NULL. */
MP_EXTERN int mp_semaphore_value(const mp_semaphore_t *s);
/* Named forms (see the top of this file; errors as mp_lock_create/open/
 * destroy/name, plus MP_EINVAL for value > MP_SEM_VALUE_MAX). */
MP_EXTERN int mp_semaphore_create(mp_semaphore_t **s, unsigned value,
                                  const mp_sync_opts_t *opts);
MP_EXTERN int mp_bounded_semaphore_create(mp_semaphore_t **s, unsigned value,
                                          const mp_sync_opts_t *opts);
MP_EXTERN int mp_semaphore_open(mp_semaphore_t **s, const char *name);
MP_EXTERN int mp_semaphore_destroy(mp_semaphore_t *s);
MP_EXTERN const char *mp_semaphore_name(const mp_semaphore_t *s);

/* ---- Condition -------------------------------------------------------------
 * A condition variable with its own RLock (Python's Condition() default).
 * wait/notify need the lock held by the calling thread. A process that dies
 * while sleeping in wait leaves nothing behind; one that dies holding the
 * lock (also just after being woken) makes the next acquirer, or the
 * waiter re-taking the lock, get MP_EOWNERDEAD. notify(n) hands out at most
 * n notifications, one per waiter registered before it; a waiter that
 * takes one returns 0. A notifier killed after notify but before its
 * waiters woke: they find the notification at their next look (within
 * 20 ms). A waiter killed while waiting may keep counting as a waiter, so a
 * later notify may hand it a notification that then goes to the next
 * waiter to come: re-check the predicate (or use wait_for), as with
 * pthread_cond_t. Signal handlers end no wait. */

/* Initialize *c with its lock free. Returns 0 or MP_EINVAL (NULL). */
MP_EXTERN int mp_cond_init(mp_cond_t *c);
/* Acquire/release the condition's lock: as mp_rlock_acquire/release. */
MP_EXTERN int mp_cond_acquire(mp_cond_t *c, int timeout_ms);
MP_EXTERN int mp_cond_release(mp_cond_t *c);
/* Mark the lock consistent after MP_EOWNERDEAD (as mp_rlock_consistent). */
MP_EXTERN int mp_cond_consistent(mp_cond_t *c);
/* The condition's lock, e.g. for mp_rlock_is_owned. NULL if c is NULL. */
MP_EXTERN mp_rlock_t *mp_cond_lock(mp_cond_t *c);
/* Release the lock (whatever its depth), sleep until notified or timed
 * out, take the lock back at the same depth. Signal handlers that run
 * meanwhile do not end the wait. Returns 0 (notified),
 * MP_ETIMEDOUT (lock held again), MP_EOWNERDEAD (notified or not, lock held
 * again from a dead holder), MP_EPERM (lock not held by caller), MP_EINVAL. */
MP_EXTERN int mp_cond_wait(mp_cond_t *c, int timeout_ms);
/* Wait until pred(arg) returns true, at most timeout_ms overall (Python's
 * wait_for). pred runs with the lock held. Returns 0 (pred true),
 * MP_ETIMEDOUT (still false), MP_EOWNERDEAD (pred not evaluated after the
 * takeover: call again after repairing), MP_EPERM, MP_EINVAL. */
MP_EXTERN int mp_cond_wait_for(mp_cond_t *c, bool (*pred)(void *arg), void *arg,
                               int timeout_ms);
/* Wake up to n waiters (n >= 0) / all waiters. Returns 0, MP_EPERM (lock not
 * held by caller), MP_EINVAL. */
MP_EXTERN int mp_cond_notify(mp_cond_t *c, int n);
MP_EXTERN int mp_cond_notify_all(mp_cond_t *c);
/* Named form (see the top of this file; errors as mp_lock_create/open/
 * destroy/name). */
MP_EXTERN int mp_cond_create(mp_cond_t **c, const mp_sync_opts_t *opts);
MP_EXTERN int mp_cond_open(mp_cond_t **c, const char *name);
MP_EXTERN int mp_cond_destroy(mp_cond_t *c);
MP_EXTERN const char *mp_cond_name(const mp_cond_t *c);

/* ---- Event -----------------------------------------------------------------
 * A flag processes wait for. A process that dies before setting it leaves
 * waiters waiting: use a timeout where a setter may die. A setter killed
 * after storing the flag but before waking: the waiters see the flag at
 * their next look (within 20 ms). */

/* Initialize *e unset. Returns 0 or MP_EINVAL (NULL). */
MP_EXTERN int mp_event_init(mp_event_t *e);
/* Set the flag and wake every waiter. Returns 0 or MP_EINVAL. */
MP_EXTERN int mp_event_set(mp_event_t *e);
/* Reset the flag. Returns 0 or MP_EINVAL. */
MP_EXTERN int mp_event_clear(mp_event_t *e);
/* 1 if set, 0 if not, MP_EINVAL if NULL. */
MP_EXTERN int mp_event_is_set(const mp_event_t *e);
/* Wait until set. Returns 0 (set), MP_ETIMEDOUT, MP_EINVAL. */
MP_EXTERN int mp_event_wait(mp_event_t *e, int timeout_ms);
/* Named form (see the top of this file; errors as mp_lock_create/open/
 * destroy/name). */
MP_EXTERN int mp_event_create(mp_event_t **e, const mp_sync_opts_t *opts);
MP_EXTERN int mp_event_open(mp_event_t **e, const char *name);
MP_EXTERN int mp_event_destroy(mp_event_t *e);
MP_EXTERN const char *mp_event_name(const mp_event_t *e);

/* ---- Barrier ---------------------------------------------------------------
 * `parties` processes or threads meet (Python's Barrier, without `action`:
 * run it in the party that gets index 0, then wait once more). A broken barrier
 * returns MP_ECANCELED (Python's BrokenBarrierError) from every wait until
 * mp_barrier_reset. It breaks on mp_barrier_abort, on mp_barrier_reset while
 * parties wait, when a wait times out (that waiter gets MP_ETIMEDOUT, the
 * others MP_ECANCELED), and when a process dies inside a barrier call. A party
 * that dies before arriving makes the others wait: give them a timeout, which
 * breaks the barrier for all. */

/* parties >= 1 (<= INT32_MAX). The default timeout is MP_FOREVER. Returns 0
 * or MP_EINVAL. */
MP_EXTERN int mp_barrier_init(mp_barrier_t *b, unsigned parties);
/* Python's Barrier(timeout=...): the timeout a wait uses when it is given
 * MP_BARRIER_DEFAULT. Stored in the barrier, so every process sharing it
 * sees it. timeout_ms is MP_FOREVER (the initial value) or >= 0. Returns 0
 * or MP_EINVAL (NULL, bad timeout). */
#define MP_BARRIER_DEFAULT (-2)
MP_EXTERN int mp_barrier_set_timeout(mp_barrier_t *b, int timeout_ms);
/* The default timeout (MP_FOREVER or >= 0), or MP_EINVAL if NULL. */
MP_EXTERN int mp_barrier_timeout(const mp_barrier_t *b);
/* Wait for all parties, at most timeout_ms (MP_BARRIER_DEFAULT: the
 * barrier's default timeout). Returns the arrival index 0..parties-1 (>= 0;
 * the last to arrive gets parties-1), MP_ECANCELED (broken), MP_ETIMEDOUT,
 * MP_EINVAL. A party that sleeps through more than 64 generations, one of
 * them ended by a reset, gets MP_ECANCELED even if its own generation had
 * completed. */
MP_EXTERN int mp_barrier_wait(mp_barrier_t *b, int timeout_ms);
/* Break the barrier: current and later waits return MP_ECANCELED. */
MP_EXTERN int mp_barrier_abort(mp_barrier_t *b);
/* Back to the initial state; parties waiting now get MP_ECANCELED. */
MP_EXTERN int mp_barrier_reset(mp_barrier_t *b);
/* 1 if broken, 0 if not, MP_EINVAL if NULL. */
MP_EXTERN int mp_barrier_broken(mp_barrier_t *b);
/* parties (> 0) / parties waiting now (>= 0), or MP_EINVAL. */
MP_EXTERN int mp_barrier_parties(const mp_barrier_t *b);
MP_EXTERN int mp_barrier_n_waiting(mp_barrier_t *b);
/* Named form (see the top of this file; errors as mp_lock_create/open/
 * destroy/name, plus MP_EINVAL for parties 0). */
MP_EXTERN int mp_barrier_create(mp_barrier_t **b, unsigned parties,
                                const mp_sync_opts_t *opts);
MP_EXTERN int mp_barrier_open(mp_barrier_t **b, const char *name);
MP_EXTERN int mp_barrier_destroy(mp_barrier_t *b);
MP_EXTERN const char *mp_barrier_name(const mp_barrier_t *b);

MP_END_DECLS

#endif
