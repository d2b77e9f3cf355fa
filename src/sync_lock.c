/* Lock and RLock: owner words of the robust core (src/robust.h). A Lock is
 * owned by a process (any process may release it, as in Python), an RLock
 * by a thread. A takeover from a dead owner sets DEAD, which stays until
 * the new holder calls consistent: every acquire until then returns
 * MP_EOWNERDEAD. */
#include <string.h>

#include "sync_internal.h"

#define SPIN_ROUNDS 100
#define LOCK_FLAGS MP__RB_STICKY
#define RLOCK_FLAGS (MP__RB_STICKY | MP__RB_THREAD)

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
  return mp__rb_acquire(mp__lock_word(l), LOCK_FLAGS, SPIN_ROUNDS, timeout_ms);
}

int mp_lock_release(mp_lock_t *l) {
  if (!l)
    return MP_EINVAL;
  _Atomic uint64_t *wp = mp__lock_word(l);
  uint64_t w = atomic_load_explicit(wp, memory_order_relaxed);
  do {
    if (!(w & MP__RB_ID))
      return MP_EPERM;
  } while (!atomic_compare_exchange_weak_explicit(
      wp, &w, w & MP__RB_DEAD, memory_order_release, memory_order_relaxed));
  if (w & MP__RB_WAITERS)
    mp__futex_wake(mp__rb_futex(wp), 1);
  return 0;
}

int mp_lock_consistent(mp_lock_t *l) {
  return l ? mp__rb_consistent(mp__lock_word(l), LOCK_FLAGS) : MP_EINVAL;
}

int mp_lock_locked(const mp_lock_t *l) {
  if (!l)
    return MP_EINVAL;
  return (__atomic_load_n(&l->mp__word, __ATOMIC_ACQUIRE) & MP__RB_ID) != 0;
}

/* ---- RLock --------------------------------------------------------------- */

int mp_rlock_init(mp_rlock_t *l) {
  return l ? mp_lock_init(&l->mp__l) : MP_EINVAL;
}

/* Only the owner can see its own identity in the word: no race on count.
 * The start time is part of the identity, so a thread that reuses the id
 * of a dead owner is not taken for it. */
static bool rlock_mine(const mp_lock_t *k) {
  uint64_t w = __atomic_load_n(&k->mp__word, __ATOMIC_RELAXED);
  return (w & MP__RB_ID) && mp__rb_is_self(w, RLOCK_FLAGS);
}

int mp_rlock_acquire(mp_rlock_t *l, int timeout_ms) {
  if (MP__UNLIKELY(!l || mp__check_timeout(timeout_ms) < 0))
    return MP_EINVAL;
  mp_lock_t *k = &l->mp__l;
  if (rlock_mine(k)) {
    if (k->mp__count == UINT32_MAX)
      return MP_EOVERFLOW;
    k->mp__count++;
    return 0;
  }
  int r = mp__rb_acquire(mp__lock_word(k), RLOCK_FLAGS, SPIN_ROUNDS,
                         timeout_ms);
  if (r == 0 || r == MP_EOWNERDEAD)
    k->mp__count = 1;
  return r;
}

int mp_rlock_release(mp_rlock_t *l) {
  if (!l)
    return MP_EINVAL;
  mp_lock_t *k = &l->mp__l;
  if (!rlock_mine(k))
    return MP_EPERM;
  if (--k->mp__count > 0)
    return 0;
  mp__rb_release(mp__lock_word(k));
  return 0;
}

int mp_rlock_consistent(mp_rlock_t *l) {
  return l ? mp__rb_consistent(mp__lock_word(&l->mp__l), RLOCK_FLAGS)
           : MP_EINVAL;
}

int mp_rlock_is_owned(const mp_rlock_t *l) {
  if (!l)
    return MP_EINVAL;
  return rlock_mine(&l->mp__l);
}
