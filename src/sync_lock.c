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
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sync_internal.h"

#define SPIN_ROUNDS 100

static uint32_t self_pid, self_pid_start;
static _Thread_local uint32_t self_tid, self_tid_start;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void ident_atfork_child(void) {
  /* Only the forking thread exists in the child: its cache is the one to
   * reset; new threads start with empty caches. */
  self_pid = 0;
  self_pid_start = 0;
  self_tid = 0;
  self_tid_start = 0;
}

static void ident_install_atfork(void) {
  pthread_atfork(NULL, NULL, ident_atfork_child);
}

/* Reads the state letter, thread count and start time (clock ticks since
 * boot) of /proc/<id>/stat. Returns 0, MP_ENOENT (no such process or
 * thread), or another code when /proc cannot tell. */
static int proc_stat(uint32_t id, char *state, long *threads, uint64_t *start) {
  char path[48], buf[512];
  snprintf(path, sizeof path, "/proc/%u/stat", id);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT || errno == ESRCH ? MP_ENOENT : -errno;
  ssize_t n;
  do {
    n = read(fd, buf, sizeof buf - 1);
  } while (n < 0 && errno == EINTR);
  mp__close(fd);
  if (n <= 0)
    return n < 0 && errno == ESRCH ? MP_ENOENT : MP_EIO;
  buf[n] = '\0';
  /* The command name may hold spaces and parentheses: fields restart after
   * the last ')'. */
  char *p = strrchr(buf, ')');
  if (!p || p[1] != ' ')
    return MP_EIO;
  p += 2;
  *state = *p;
  /* The state is field 3, num_threads 20, starttime 22. */
  for (int field = 3; field < 22; field++) {
    p = strchr(p, ' ');
    if (!p)
      return MP_EIO;
    p++;
    if (field + 1 == 20)
      *threads = strtol(p, NULL, 10);
  }
  *start = strtoull(p, NULL, 10);
  return 0;
}

static uint32_t start_of(uint32_t id) {
  char st;
  long threads;
  uint64_t start = 0;
  if (proc_stat(id, &st, &threads, &start) < 0)
    return 0;
  return (uint32_t)start;
}

uint32_t mp__self_pid(void) {
  /* Threads may fill the cache at once: they store the same values. start
   * is stored first, so a reader that sees the pid sees its start. */
  uint32_t pid = __atomic_load_n(&self_pid, __ATOMIC_ACQUIRE);
  if (MP__UNLIKELY(pid == 0)) {
    pthread_once(&atfork_once, ident_install_atfork);
    pid = (uint32_t)getpid();
    __atomic_store_n(&self_pid_start, start_of(pid), __ATOMIC_RELAXED);
    __atomic_store_n(&self_pid, pid, __ATOMIC_RELEASE);
  }
  return pid;
}

uint32_t mp__self_tid(void) {
  if (MP__UNLIKELY(self_tid == 0)) {
    pthread_once(&atfork_once, ident_install_atfork);
    self_tid = (uint32_t)gettid();
    self_tid_start = start_of(self_tid);
  }
  return self_tid;
}

/* What a holder records beside the word: id and start time. Thread ids are
 * only used by RLock; Lock keeps to process-wide statics, which are cheaper
 * to reach than thread-locals in position-independent code. */
static uint64_t self_ident(uint32_t me, bool thread_level) {
  uint32_t start = thread_level
                       ? self_tid_start
                       : __atomic_load_n(&self_pid_start, __ATOMIC_RELAXED);
  return (uint64_t)start << 32 | me;
}

/* True when the holder recorded in word w (with ident) is certainly gone:
 * no such process/thread, a zombie, or its pid now belongs to a process
 * started at another time. Anything uncertain counts as alive. */
static bool holder_dead(const mp_lock_t *l, uint32_t w, bool thread_level) {
  uint32_t id = w & MP__LK_ID;
  uint64_t ident = __atomic_load_n(&l->mp__ident, __ATOMIC_ACQUIRE);
  char st = 0;
  long threads = 0;
  uint64_t start = 0;
  int r = proc_stat(id, &st, &threads, &start);
  if (r == MP_ENOENT) {
    /* Without /proc every lookup fails: ask kill() instead. */
    if (__atomic_load_n(&self_pid_start, __ATOMIC_RELAXED) == 0 &&
        self_tid_start == 0)
      return kill((pid_t)id, 0) < 0 && errno == ESRCH;
    return true;
  }
  if (r < 0)
    return false;
  /* A zombie is dead, except a process whose main thread ended while
   * others run: its leader shows 'Z' with more than one thread. That
   * process still holds a Lock, but a main thread holding an RLock is
   * gone. */
  if (st == 'X' || (st == 'Z' && (thread_level || threads <= 1)))
    return true;
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
