/* The robust core: owner words and bounded sleeps (see robust.h). */
#include <signal.h>
#include <time.h>

#include "robust.h"

uint64_t mp__rb_self(unsigned flags) {
  if (flags & MP__RB_THREAD)
    return (uint64_t)(uint32_t)mp__self_tid_start() << 32 | mp__self_tid();
  return (uint64_t)(uint32_t)mp__self_pid_start() << 32 | mp__self_pid();
}

bool mp__rb_owner_dead(uint64_t w, unsigned flags) {
  uint32_t id = (uint32_t)w & MP__RB_ID;
  uint32_t start = (uint32_t)(w >> 32);
  bool thread = flags & MP__RB_THREAD;
  if (id == 0)
    return false;
  /* Our own id: it is us (alive) unless the start time says the owner was
   * an earlier process, or thread, that had the same id. */
  uint64_t self = mp__rb_self(flags);
  if (id == (uint32_t)self)
    return start != 0 && (uint32_t)(self >> 32) != 0 &&
           start != (uint32_t)(self >> 32);
  /* A process already reaped, the common crash case, costs one call. */
  if (!thread && kill((pid_t)id, 0) < 0 && errno == ESRCH)
    return true;
  uint64_t now = 0;
  int r = mp__owner_probe(id, thread, &now);
  if (r == MP__OWNER_GONE)
    return true;
  if (r != MP__OWNER_EXISTS)
    return false;
  return start != 0 && now != 0 && (uint32_t)now != start;
}

/* ---- sleeping ------------------------------------------------------------ */

static void ns_to_deadline(mp__deadline_t *d, uint64_t ns) {
  d->forever = false;
  d->ts.tv_sec = (time_t)(ns / 1000000000ull);
  d->ts.tv_nsec = (long)(ns % 1000000000ull);
}

static uint64_t deadline_ns(const mp__deadline_t *d) {
  return (uint64_t)d->ts.tv_sec * 1000000000ull + (uint64_t)d->ts.tv_nsec;
}

/* Sleep on addr until the earlier of dl and the absolute time until_ns. */
static void sleep_until(_Atomic uint32_t *addr, uint32_t val,
                        const mp__deadline_t *dl, uint64_t until_ns) {
  mp__deadline_t d;
  if (dl && !dl->forever && deadline_ns(dl) < until_ns)
    d = *dl;
  else
    ns_to_deadline(&d, until_ns);
  /* EINTR and time-outs alike: the caller looks again. */
  (void)mp__futex_wait(addr, val, &d);
}

void mp__rb_sleep(_Atomic uint32_t *addr, uint32_t val,
                  const mp__deadline_t *dl) {
  sleep_until(addr, val, dl, mp__now_ns() + MP__RB_CHECK_MS * 1000000ull);
}

/* ---- owner words --------------------------------------------------------- */

#define CAS64(p, e, n)                                                         \
  atomic_compare_exchange_strong_explicit((p), (e), (n), memory_order_acquire, \
                                          memory_order_relaxed)

/* First re-check at once, then after 0.25 ms, doubling to the bound. */
#define FIRST_RECHECK_NS 250000ull

int mp__rb_acquire(_Atomic uint64_t *wp, unsigned flags, int spin,
                   int timeout_ms) {
  uint64_t me = mp__rb_self(flags);
  uint64_t w = 0;
  if (MP__LIKELY(CAS64(wp, &w, me)))
    return 0;
  for (int i = 0; i < spin && timeout_ms != 0; i++) {
    mp__cpu_relax();
    w = atomic_load_explicit(wp, memory_order_relaxed);
    if (!(w & MP__RB_ID) && CAS64(wp, &w, me | (w & MP__RB_DEAD)))
      return (w & MP__RB_DEAD) ? MP_EOWNERDEAD : 0;
  }
  mp__deadline_t dl;
  mp__deadline_init(&dl, timeout_ms);
  uint64_t next_check = 0, step = FIRST_RECHECK_NS;
  bool slept = false;
  for (;;) {
    w = atomic_load_explicit(wp, memory_order_relaxed);
    if (!(w & MP__RB_ID)) {
      /* After sleeping, others may sleep too: keep WAITERS set. */
      uint64_t nw = me | (w & MP__RB_DEAD) | (slept ? MP__RB_WAITERS : 0);
      if (CAS64(wp, &w, nw))
        return (w & MP__RB_DEAD) ? MP_EOWNERDEAD : 0;
      continue;
    }
    uint64_t now = mp__now_ns();
    if (now >= next_check) {
      if (mp__rb_owner_dead(w, flags)) {
        uint64_t nw = me | MP__RB_WAITERS |
                      ((flags & MP__RB_STICKY) ? MP__RB_DEAD : 0);
        if (CAS64(wp, &w, nw))
          return MP_EOWNERDEAD;
        continue;
      }
      next_check = now + step;
      step = step * 2 > MP__RB_CHECK_MS * 1000000ull
                 ? MP__RB_CHECK_MS * 1000000ull
                 : step * 2;
    }
    if (timeout_ms == 0 || mp__deadline_passed(&dl)) {
      /* A wake-up meant for the sleepers may have come to us while a
       * barger took the lock: set WAITERS so its release passes it on. */
      if (slept && !(w & MP__RB_WAITERS))
        CAS64(wp, &w, w | MP__RB_WAITERS);
      return MP_ETIMEDOUT;
    }
    if (!(w & MP__RB_WAITERS)) {
      if (!CAS64(wp, &w, w | MP__RB_WAITERS))
        continue;
      w |= MP__RB_WAITERS;
    }
    sleep_until(mp__rb_futex(wp), (uint32_t)w, &dl, next_check);
    slept = true;
  }
}

uint64_t mp__rb_release(_Atomic uint64_t *wp) {
  uint64_t old = atomic_fetch_and_explicit(wp, (uint64_t)MP__RB_DEAD,
                                           memory_order_release);
  if (old & MP__RB_WAITERS)
    mp__futex_wake(mp__rb_futex(wp), 1);
  return old;
}

int mp__rb_consistent(_Atomic uint64_t *wp, unsigned flags) {
  uint64_t w = atomic_load_explicit(wp, memory_order_relaxed);
  if (!(w & MP__RB_ID) || !mp__rb_is_self(w, flags))
    return MP_EPERM;
  atomic_fetch_and_explicit(wp, ~(uint64_t)MP__RB_DEAD, memory_order_relaxed);
  return 0;
}
