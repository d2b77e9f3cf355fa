/* The manager's robust lock (see manager_impl.h). Kept apart from the sync
 * part's locks: it needs no EOWNERDEAD protocol because every structure it
 * guards repairs itself (undo log) when taken over. */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "manager_impl.h"

#define MLOCK_CHECK_MS 50

/* Cached: getpid() is a system call. Zeroed in forked children. */
static _Atomic pid_t self_pid;
static _Atomic uint64_t self_start;
static pthread_once_t self_once = PTHREAD_ONCE_INIT;

/* Field 3 (state) and field 22 (start time) of /proc/<pid>/stat. Returns
 * false if it cannot be read (the process is gone). */
static bool proc_stat(pid_t pid, char *state, uint64_t *start) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return false;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0)
    return false;
  buf[n] = '\0';
  /* comm may hold spaces and parentheses: fields start after the last ')'. */
  char *p = strrchr(buf, ')');
  if (!p || p[1] != ' ')
    return false;
  p += 2;
  *state = *p;
  for (int field = 3; field < 22; field++) {
    p = strchr(p, ' ');
    if (!p)
      return false;
    p++;
  }
  *start = strtoull(p, NULL, 10);
  return true;
}

static void self_forked(void) {
  atomic_store(&self_pid, 0);
}

static void self_init(void) {
  pthread_atfork(NULL, NULL, self_forked);
}

pid_t mp__mlock_self(void) {
  pid_t p = atomic_load_explicit(&self_pid, memory_order_relaxed);
  if (MP__LIKELY(p != 0))
    return p;
  pthread_once(&self_once, self_init);
  char st;
  uint64_t start = 0;
  p = getpid();
  if (!proc_stat(p, &st, &start))
    start = 0;
  atomic_store(&self_start, start);
  atomic_store(&self_pid, p);
  return p;
}

static void take(mp__mlock_t *l) {
  atomic_store_explicit(&l->owner_start, atomic_load(&self_start),
                        memory_order_relaxed);
}

/* Is the owner recorded in word v gone? Not alive, a zombie (killed, not
 * yet reaped), or a different process under a reused pid. */
static bool owner_dead(mp__mlock_t *l, pid_t owner, uint32_t v,
                       uint32_t *suspect) {
  char state;
  uint64_t start;
  if (kill(owner, 0) < 0 && errno == ESRCH)
    return true;
  if (!proc_stat(owner, &state, &start))
    return true;
  if (state == 'Z' || state == 'X')
    return true;
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
  uint32_t me = (uint32_t)mp__mlock_self();
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
