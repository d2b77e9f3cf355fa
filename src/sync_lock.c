/* Lock and RLock: futex mutexes whose word holds the holder's id, so a
 * waiter can tell when the holder is gone.
 *
 * Word: holder id (pid for Lock, tid for RLock; 0 = free) | WAITERS (someone
 * may sleep: the releaser must wake one) | DEAD (a holder died and nobody
 * called consistent yet). The kernel's robust-futex list would do the
 * detection for us, but glibc owns it for every thread, so waiters poll
 * instead: a sleeping waiter wakes every POLL_MS and looks the holder up in
 * /proc. The holder's start time is kept beside the word (ident) so that a
 * pid reused by a new process does not pass for the dead holder. */
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "sync_internal.h"

#define SPIN_ROUNDS 100

/* What a holder records beside the word: id and the low 32 bits of its
 * start time (thread ids are only used by RLock). */
static uint64_t self_ident(uint32_t me, bool thread_level) {
  uint32_t start =
      (uint32_t)(thread_level ? mp__self_tid_start() : mp__self_pid_start());
  return (uint64_t)start << 32 | me;
}

/* True when the holder recorded in word w (with ident) is certainly gone:
 * no such process/thread, a zombie, or its pid now belongs to a process
 * started at another time. Anything uncertain counts as alive. */
static bool holder_dead(const mp_lock_t *l, uint32_t w, bool thread_level) {
  uint32_t id = w & MP__LK_ID;
  uint64_t ident = __atomic_load_n(&l->mp__ident, __ATOMIC_ACQUIRE);
  uint64_t start = 0;
  int r = mp__owner_probe(id, thread_level, &start);
  if (r != MP__OWNER_EXISTS)
    return r == MP__OWNER_GONE;
  /* ident is written just after the word: only trust it when it names this
   * holder and the word has not moved meanwhile. */
  if ((uint32_t)ident != id || (ident >> 32) == 0)
    return false;
  if ((uint32_t)(ident >> 32) == (uint32_t)start)
    return false;
  return __atomic_load_n(&l->mp__word, __ATOMIC_ACQUIRE) == w &&
         __atomic_load_n(&l->mp__ident, __ATOMIC_ACQUIRE) == ident;
}

void mp__poll_deadline(mp__deadline_t *out, const mp__deadline_t *dl) {
  mp__deadline_init(out, MP__POLL_MS);
  if (!dl->forever &&
      (dl->ts.tv_sec < out->ts.tv_sec ||
       (dl->ts.tv_sec == out->ts.tv_sec && dl->ts.tv_nsec < out->ts.tv_nsec)))
    *out = *dl;
}

int mp__lock_acquire_as(mp_lock_t *l, uint32_t me, bool thread_level,
                        int timeout_ms) {
  _Atomic uint32_t *wp = (_Atomic uint32_t *)&l->mp__word;
  uint32_t w = 0;
  if (MP__LIKELY(atomic_compare_exchange_strong_explicit(
          wp, &w, me, memory_order_acquire, memory_order_relaxed))) {
    __atomic_store_n(&l->mp__ident, self_ident(me, thread_level),
                     __ATOMIC_RELEASE);
    return 0;
  }
  mp__deadline_t dl;
  mp__deadline_init(&dl, timeout_ms);
  int spins = SPIN_ROUNDS;
  bool slept = false, check = false;
  for (;;) {
    w = atomic_load_explicit(wp, memory_order_relaxed);
    if (!(w & MP__LK_ID)) {
      /* Free. After sleeping, others may sleep too: keep WAITERS set. */
      uint32_t nw = me | (w & MP__LK_DEAD) | (slept ? MP__LK_WAITERS : 0);
      if (atomic_compare_exchange_weak_explicit(
              wp, &w, nw, memory_order_acquire, memory_order_relaxed)) {
        __atomic_store_n(&l->mp__ident, self_ident(me, thread_level),
                         __ATOMIC_RELEASE);
        return (w & MP__LK_DEAD) ? MP_EOWNERDEAD : 0;
      }
      continue;
    }
    if (spins > 0 && timeout_ms != 0) {
      spins--;
      mp__cpu_relax();
      continue;
    }
    uint32_t holder = w & MP__LK_ID;
    /* A Lock held by our own process has a live holder: no need to look. */
    bool foreign = thread_level ? holder != me : holder != mp__self_pid();
    bool expired = timeout_ms == 0 || mp__deadline_passed(&dl);
    if (expired || check) {
      check = false;
      if (foreign && holder_dead(l, w, thread_level)) {
        uint32_t nw = me | MP__LK_DEAD | MP__LK_WAITERS;
        if (atomic_compare_exchange_strong_explicit(
                wp, &w, nw, memory_order_acquire, memory_order_relaxed)) {
          __atomic_store_n(&l->mp__ident, self_ident(me, thread_level),
                           __ATOMIC_RELEASE);
          return MP_EOWNERDEAD;
        }
        continue;
      }
      if (expired) {
        /* A wake-up meant for the sleepers may have come to us while a
         * barger took the lock: set WAITERS so its release passes it on. */
        if (slept && !(w & MP__LK_WAITERS))
          atomic_compare_exchange_strong_explicit(wp, &w, w | MP__LK_WAITERS,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed);
        return MP_ETIMEDOUT;
      }
    }
    if (!(w & MP__LK_WAITERS)) {
      if (!atomic_compare_exchange_weak_explicit(wp, &w, w | MP__LK_WAITERS,
                                                 memory_order_relaxed,
                                                 memory_order_relaxed))
        continue;
      w |= MP__LK_WAITERS;
    }
    /* Wake now and then even for a live holder: a wake-up taken by a
     * waiter that was killed, or that timed out, is not lost for long. */
    mp__deadline_t sleep_dl;
    mp__poll_deadline(&sleep_dl, &dl);
    int r = mp__futex_wait(wp, w, &sleep_dl);
    slept = true;
    /* Only a poll timeout asks for a holder check next round. */
    check = r == MP_ETIMEDOUT;
  }
}

void mp__lock_unlock(mp_lock_t *l) {
  _Atomic uint32_t *wp = (_Atomic uint32_t *)&l->mp__word;
  uint32_t w = atomic_load_explicit(wp, memory_order_relaxed);
  while (!atomic_compare_exchange_weak_explicit(
      wp, &w, w & MP__LK_DEAD, memory_order_release, memory_order_relaxed)) {
  }
  if (w & MP__LK_WAITERS)
    mp__futex_wake(wp, 1);
}

/* ---- Lock ---------------------------------------------------------------- */

int mp_lock_init(mp_lock_t *l) {
  if (!l)
    return MP_EINVAL;
  memset(l, 0, sizeof *l);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  return 0;
}

int mp_lock_acquire(mp_lock_t *l, int timeout_ms) {
  if (MP__UNLIKELY(!l || mp__check_timeout(timeout_ms) < 0))
    return MP_EINVAL;
  return mp__lock_acquire_as(l, mp__self_pid(), false, timeout_ms);
}

int mp_lock_release(mp_lock_t *l) {
  if (!l)
    return MP_EINVAL;
  _Atomic uint32_t *wp = (_Atomic uint32_t *)&l->mp__word;
  uint32_t w = atomic_load_explicit(wp, memory_order_relaxed);
  do {
    if (!(w & MP__LK_ID))
      return MP_EPERM;
  } while (!atomic_compare_exchange_weak_explicit(
      wp, &w, w & MP__LK_DEAD, memory_order_release, memory_order_relaxed));
  if (w & MP__LK_WAITERS)
    mp__futex_wake(wp, 1);
  return 0;
}

static int lock_consistent_as(mp_lock_t *l, uint32_t me) {
  _Atomic uint32_t *wp = (_Atomic uint32_t *)&l->mp__word;
  if ((atomic_load_explicit(wp, memory_order_relaxed) & MP__LK_ID) != me)
    return MP_EPERM;
  atomic_fetch_and_explicit(wp, ~MP__LK_DEAD, memory_order_relaxed);
  return 0;
}

int mp_lock_consistent(mp_lock_t *l) {
  return l ? lock_consistent_as(l, mp__self_pid()) : MP_EINVAL;
}

int mp_lock_locked(const mp_lock_t *l) {
  if (!l)
    return MP_EINVAL;
  return (__atomic_load_n(&l->mp__word, __ATOMIC_ACQUIRE) & MP__LK_ID) != 0;
}

/* ---- RLock --------------------------------------------------------------- */

int mp_rlock_init(mp_rlock_t *l) {
  return l ? mp_lock_init(&l->mp__l) : MP_EINVAL;
}

int mp_rlock_acquire(mp_rlock_t *l, int timeout_ms) {
  if (MP__UNLIKELY(!l || mp__check_timeout(timeout_ms) < 0))
    return MP_EINVAL;
  uint32_t me = mp__self_tid();
  mp_lock_t *k = &l->mp__l;
  /* Only the owner can see its own id here: no race on count. */
  if ((__atomic_load_n(&k->mp__word, __ATOMIC_RELAXED) & MP__LK_ID) == me) {
    if (k->mp__count == UINT32_MAX)
      return MP_EOVERFLOW;
    k->mp__count++;
    return 0;
  }
  int r = mp__lock_acquire_as(k, me, true, timeout_ms);
  if (r == 0 || r == MP_EOWNERDEAD)
    k->mp__count = 1;
  return r;
}

int mp_rlock_release(mp_rlock_t *l) {
  if (!l)
    return MP_EINVAL;
  mp_lock_t *k = &l->mp__l;
  if ((__atomic_load_n(&k->mp__word, __ATOMIC_RELAXED) & MP__LK_ID) !=
      mp__self_tid())
    return MP_EPERM;
  if (--k->mp__count > 0)
    return 0;
  mp__lock_unlock(k);
  return 0;
}

int mp_rlock_consistent(mp_rlock_t *l) {
  return l ? lock_consistent_as(&l->mp__l, mp__self_tid()) : MP_EINVAL;
}

int mp_rlock_is_owned(const mp_rlock_t *l) {
  if (!l)
    return MP_EINVAL;
  return (__atomic_load_n(&l->mp__l.mp__word, __ATOMIC_RELAXED) & MP__LK_ID) ==
         mp__self_tid();
}
