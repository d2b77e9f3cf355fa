/* Process and thread identity for lock words: who am I, and is the owner
 * recorded in a word still there. Shared by the sync locks, the manager's
 * lock and the queue's locks. */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "internal.h"

int mp__proc_stat(uint32_t id, char *state, long *threads, uint64_t *start) {
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
  char st = *p;
  long nthreads = 0;
  unsigned long flags = 0;
  /* The state is field 3, flags 9, num_threads 20, starttime 22. */
  for (int field = 3; field < 22; field++) {
    p = strchr(p, ' ');
    if (!p)
      return MP_EIO;
    p++;
    if (field + 1 == 9)
      flags = strtoul(p, NULL, 10);
    if (field + 1 == 20)
      nthreads = strtol(p, NULL, 10);
  }
  /* PF_EXITING: the thread is inside exit ('E', read like a zombie).
   * PF_SIGNALED (0x400): set on the way from a fatal signal's dequeue to
   * exit, before PF_EXITING and never on a thread that lives on; without
   * it, a reader between the dequeue and PF_EXITING saw a live thread. */
  if ((flags & (0x4 | 0x400)) && st != 'Z' && st != 'X')
    st = 'E';
  uint64_t t = strtoull(p, NULL, 10);
  /* Field 31: the thread's pending signals. A fatal signal (SIGKILL, or any
   * signal without a handler whose default is to end the process) puts
   * SIGKILL there for every thread at once: from then on the process runs
   * no more user code, even before it becomes a zombie, so it counts as
   * dead ('K'), whatever its thread count. */
  for (int field = 22; field < 31 && p; field++) {
    p = strchr(p, ' ');
    if (p)
      p++;
  }
  if (p && (strtoull(p, NULL, 10) & (1ull << (SIGKILL - 1))))
    st = 'K';
  *state = st;
  *threads = nthreads;
  *start = t;
  return 0;
}

int mp__pid_start_time(uint32_t id, uint64_t *start) {
  char st;
  long threads;
  uint64_t t = 0;
  int r = mp__proc_stat(id, &st, &threads, &t);
  *start = r < 0 ? 0 : t;
  return r;
}

static uint32_t self_pid;
static uint64_t self_pid_start;
static _Thread_local uint32_t self_tid;
static _Thread_local uint64_t self_tid_start;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* Owner words of the robust core: start time (low 32 bits) << 32 | id. */
static uint64_t self_pid_ident;
static _Thread_local uint64_t self_tid_ident;

static void self_atfork_child(void) {
  /* Only the forking thread exists in the child: its cache is the one to
   * reset; new threads start with empty caches. */
  self_pid = 0;
  self_pid_start = 0;
  self_tid = 0;
  self_tid_start = 0;
  __atomic_store_n(&self_pid_ident, 0, __ATOMIC_RELAXED);
  self_tid_ident = 0;
}

static void self_install_atfork(void) {
  pthread_atfork(NULL, NULL, self_atfork_child);
}

uint32_t mp__self_pid(void) {
  /* Threads may fill the cache at once: they store the same values. start
   * is stored first, so a reader that sees the pid sees its start. */
  uint32_t pid = __atomic_load_n(&self_pid, __ATOMIC_ACQUIRE);
  if (MP__UNLIKELY(pid == 0)) {
    pthread_once(&atfork_once, self_install_atfork);
    pid = (uint32_t)getpid();
    uint64_t start;
    mp__pid_start_time(pid, &start);
    __atomic_store_n(&self_pid_start, start, __ATOMIC_RELAXED);
    __atomic_store_n(&self_pid, pid, __ATOMIC_RELEASE);
  }
  return pid;
}

uint64_t mp__self_pid_start(void) {
  if (MP__UNLIKELY(__atomic_load_n(&self_pid, __ATOMIC_ACQUIRE) == 0))
    mp__self_pid();
  return __atomic_load_n(&self_pid_start, __ATOMIC_RELAXED);
}

uint32_t mp__self_tid(void) {
  if (MP__UNLIKELY(self_tid == 0)) {
    pthread_once(&atfork_once, self_install_atfork);
    uint32_t tid = (uint32_t)gettid();
    mp__pid_start_time(tid, &self_tid_start);
    self_tid = tid;
  }
  return self_tid;
}

uint64_t mp__self_tid_start(void) {
  if (MP__UNLIKELY(self_tid == 0))
    mp__self_tid();
  return self_tid_start;
}

uint64_t mp__self_ident(bool thread_level) {
  if (thread_level) {
    if (MP__UNLIKELY(self_tid_ident == 0))
      self_tid_ident =
          (uint64_t)(uint32_t)mp__self_tid_start() << 32 | mp__self_tid();
    return self_tid_ident;
  }
  uint64_t v = __atomic_load_n(&self_pid_ident, __ATOMIC_RELAXED);
  if (MP__UNLIKELY(v == 0)) {
    /* Threads may fill it at once: they store the same value. */
    v = (uint64_t)(uint32_t)mp__self_pid_start() << 32 | mp__self_pid();
    __atomic_store_n(&self_pid_ident, v, __ATOMIC_RELAXED);
  }
  return v;
}

/* One read of /proc/<id>/stat is not one instant: the kernel reads the
 * flags before the pending signals, so a thread that dequeues its SIGKILL
 * between the two shows neither. Death is for good, so a read that says
 * "alive" is taken again once: by then the dying thread has PF_SIGNALED
 * set, or is exiting. */
static int owner_stat(uint32_t id, char *st, long *threads, uint64_t *t) {
  int r = mp__proc_stat(id, st, threads, t);
  if (r == 0 && *st != 'X' && *st != 'K' && *st != 'Z' && *st != 'E')
    r = mp__proc_stat(id, st, threads, t);
  return r;
}

int mp__owner_probe(uint32_t id, bool thread_level, uint64_t *start) {
  char st = 0;
  long threads = 0;
  uint64_t t = 0;
  int r = owner_stat(id, &st, &threads, &t);
  if (r == MP_ENOENT) {
    /* Without /proc every lookup fails, and a pid reused between the
     * lookup and now is alive: kill() has the last word. */
    if (kill((pid_t)id, 0) < 0 && errno == ESRCH)
      return MP__OWNER_GONE;
    return MP_ENOENT;
  }
  if (r < 0)
    return r;
  /* A zombie is dead, except a process whose main thread ended while
   * others run: its leader shows 'Z' with more than one thread. That
   * process is alive, but as a thread its main thread is gone. */
  if (st == 'X' || st == 'K' ||
      ((st == 'Z' || st == 'E') && (thread_level || threads <= 1)))
    return MP__OWNER_GONE;
  *start = t;
  return MP__OWNER_EXISTS;
}
