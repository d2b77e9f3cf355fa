/* Benchmarks of the lock family: contended and uncontended Lock, and an
 * Event ping-pong between two processes. The floor for the lock workloads
 * is a process-shared pthread mutex doing the same work. */
#include <linux/futex.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <stdatomic.h>

#include "bench.h"
#include "mproc.h"

typedef struct {
  mp_lock_t lock;
  pthread_mutex_t mu;
  long counter;
  mp_event_t ping, pong;
  _Atomic uint32_t turn; /* raw futex ping-pong: the floor */
} shared_t;

static shared_t *sh;

static void reap(pid_t pid) {
  int st;
  while (waitpid(pid, &st, 0) < 0) {
  }
}

static void contended_loop(long n, bool pthread) {
  for (long i = 0; i < n; i++) {
    if (pthread) {
      pthread_mutex_lock(&sh->mu);
      sh->counter++;
      pthread_mutex_unlock(&sh->mu);
    } else {
      mp_lock_acquire(&sh->lock, MP_FOREVER);
      sh->counter++;
      mp_lock_release(&sh->lock);
    }
  }
}

/* Two processes, n increments each; returns increments per second. */
static double contended(long n, bool pthread) {
  sh->counter = 0;
  pid_t pids[2];
  uint64_t t0 = bench_now_ns();
  for (int i = 0; i < 2; i++)
    if ((pids[i] = fork()) == 0) {
      contended_loop(n, pthread);
      _exit(0);
    }
  for (int i = 0; i < 2; i++)
    reap(pids[i]);
  double s = (double)(bench_now_ns() - t0) / 1e9;
  if (sh->counter != 2 * n) {
    fprintf(stderr, "lock_contended: lost increments\n");
    exit(1);
  }
  return (double)(2 * n) / s;
}

static double uncontended_ns(long n, bool pthread) {
  uint64_t t0 = bench_now_ns();
  for (long i = 0; i < n; i++) {
    if (pthread) {
      pthread_mutex_lock(&sh->mu);
      pthread_mutex_unlock(&sh->mu);
    } else {
      mp_lock_acquire(&sh->lock, MP_FOREVER);
      mp_lock_release(&sh->lock);
    }
  }
  return (double)(bench_now_ns() - t0) / (double)n;
}

static double pingpong_us(long n) {
  mp_event_init(&sh->ping);
  mp_event_init(&sh->pong);
  pid_t pid = fork();
  if (pid == 0) {
    for (long i = 0; i < n; i++) {
      mp_event_wait(&sh->ping, MP_FOREVER);
      mp_event_clear(&sh->ping);
      mp_event_set(&sh->pong);
    }
    _exit(0);
  }
  uint64_t t0 = bench_now_ns();
  for (long i = 0; i < n; i++) {
    mp_event_set(&sh->ping);
    mp_event_wait(&sh->pong, MP_FOREVER);
    mp_event_clear(&sh->pong);
  }
  double us = (double)(bench_now_ns() - t0) / 1e3 / (double)n;
  reap(pid);
  return us;
}

static void futex_wait_ne(_Atomic uint32_t *w, uint32_t want) {
  uint32_t v;
  while ((v = atomic_load(w)) != want)
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT, v, NULL, NULL, 0);
}

static void futex_set(_Atomic uint32_t *w, uint32_t v) {
  atomic_store(w, v);
  syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE, 1, NULL, NULL, 0);
}

/* Two processes handing a futex word back and forth. */
static double futex_pingpong_us(long n) {
  atomic_store(&sh->turn, 0);
  pid_t pid = fork();
  if (pid == 0) {
    for (long i = 0; i < n; i++) {
      futex_wait_ne(&sh->turn, 1);
      futex_set(&sh->turn, 0);
    }
    _exit(0);
  }
  uint64_t t0 = bench_now_ns();
  for (long i = 0; i < n; i++) {
    futex_set(&sh->turn, 1);
    futex_wait_ne(&sh->turn, 0);
  }
  double us = (double)(bench_now_ns() - t0) / 1e3 / (double)n;
  reap(pid);
  return us;
}

int main(int argc, char **argv) {
  if (mp_raw_alloc((void **)&sh, sizeof *sh) != 0)
    return 1;
  mp_lock_init(&sh->lock);
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  pthread_mutex_init(&sh->mu, &a);
  if (bench_selected(argc, argv, "lock_contended")) {
    long n = bench_scaled(1000000);
    double floor = contended(n, true);
    bench_emit("lock_contended", "incr/s", contended(n, false), floor, true, 5,
               0);
  }
  if (bench_selected(argc, argv, "lock_uncontended")) {
    long n = bench_scaled(10000000);
    double floor = uncontended_ns(n, true);
    bench_emit("lock_uncontended", "ns", uncontended_ns(n, false), floor, false,
               0, 3);
  }
  if (bench_selected(argc, argv, "event_pingpong")) {
    long n = bench_scaled(100000);
    double floor = futex_pingpong_us(n);
    bench_emit("event_pingpong", "us", pingpong_us(n), floor, false, 0, 0);
  }
  mp_raw_free(sh);
  return 0;
}
