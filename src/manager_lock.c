/* The manager's robust lock (see manager_impl.h). Kept apart from the sync
 * part's locks: it needs no EOWNERDEAD protocol because every structure it
 * guards repairs itself (undo log) when taken over. */
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include "manager_impl.h"

#define MLOCK_CHECK_MS 50

static void take(mp__mlock_t *l) {
  atomic_store_explicit(&l->owner_start, mp__self_pid_start(),
                        memory_order_relaxed);
}

/* Is the owner recorded in word v gone? Not alive, a zombie (killed, not
 * yet reaped), or a different process under a reused pid. */
static bool owner_dead(mp__mlock_t *l, pid_t owner, uint32_t v,
                       uint32_t *suspect) {
  uint64_t start = 0;
  int r = mp__owner_probe((uint32_t)owner, false, &start);
  if (r != MP__OWNER_EXISTS)
    return r == MP__OWNER_GONE;
  uint64_t rec = atomic_load_explicit(&l->owner_start, memory_order_relaxed);
  /* One mismatch may be an owner that has not yet stored its start time:
   * only the same word seen mismatched twice counts. */
  if (rec && start && rec != start) {
    bool again = *suspect == v;
    *suspect = v;
    return again;
  }
  *suspect = 0;
  return false;
}

void mp__mlock_lock(mp__mlock_t *l) {
  uint32_t me = mp__self_pid();
  uint32_t v = 0;
  if (MP__LIKELY(atomic_compare_exchange_strong_explicit(
          &l->word, &v, me, memory_order_acquire, memory_order_relaxed))) {
    take(l);
    return;
  }
  for (int i = 0; i < 100; i++) {
    mp__cpu_relax();
    v = 0;
    if (atomic_load_explicit(&l->word, memory_order_relaxed) == 0 &&
        atomic_compare_exchange_strong_explicit(
            &l->word, &v, me, memory_order_acquire, memory_order_relaxed)) {
      take(l);
      return;
    }
  }
  uint32_t suspect = 0; /* a word seen with a mismatched start time */
  int wait_ms = 1;
  bool quick_checked = false;
  for (;;) {
    v = atomic_load_explicit(&l->word, memory_order_relaxed);
    if (v == 0) {
      /* Keep the waiters bit: others may still sleep. */
      if (atomic_compare_exchange_strong_explicit(
              &l->word, &v, me | MP__MLOCK_WAITERS, memory_order_acquire,
              memory_order_relaxed))
        break;
      continue;
    }
    if (!(v & MP__MLOCK_WAITERS)) {
      if (!atomic_compare_exchange_strong_explicit(
              &l->word, &v, v | MP__MLOCK_WAITERS, memory_order_relaxed,
              memory_order_relaxed))
        continue;
      v |= MP__MLOCK_WAITERS;
    }
    pid_t owner = (pid_t)(v & ~MP__MLOCK_WAITERS);
    bool dead = false;
    if (!quick_checked) {
      /* An owner already gone and reaped is the common crash case: take
       * it over at once instead of after a first sleep. */
      quick_checked = true;
      dead = (uint32_t)owner != me && kill(owner, 0) < 0 && errno == ESRCH;
    } else {
      mp__deadline_t dl;
      mp__deadline_init(&dl, wait_ms);
      if (mp__futex_wait(&l->word, v, &dl) != MP_ETIMEDOUT)
        continue;
      /* Back off the liveness checks to one per MLOCK_CHECK_MS. */
      wait_ms = wait_ms * 2 > MLOCK_CHECK_MS ? MLOCK_CHECK_MS : wait_ms * 2;
      dead = (uint32_t)owner != me && owner_dead(l, owner, v, &suspect);
    }
    if (dead && atomic_compare_exchange_strong_explicit(
                    &l->word, &v, me | MP__MLOCK_WAITERS, memory_order_acquire,
                    memory_order_relaxed))
      break;
  }
  take(l);
}

void mp__mlock_unlock(mp__mlock_t *l) {
  uint32_t old = atomic_exchange_explicit(&l->word, 0, memory_order_release);
  if (old & MP__MLOCK_WAITERS)
    mp__futex_wake(&l->word, 1);
}
