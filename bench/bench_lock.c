/* Benchmarks of the lock family: contended and uncontended Lock, an Event
 * ping-pong between two processes, and takeover after a holder's SIGKILL.
 * The floor for the lock workloads is a process-shared pthread mutex doing
 * the same work; for takeover, a process-shared robust pthread mutex (the
 * kernel marks it when the holder dies), and the robust mutex also runs the
 * contended and uncontended loops as a peer row. */
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
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
  pthread_mutex_t rmu; /* robust */
  _Atomic int held;
  _Atomic uint64_t taken_ns;
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

enum { K_MP, K_PTHREAD, K_ROBUST };

static void contended_loop(long n, int kind) {
  for (long i = 0; i < n; i++) {
    if (kind != K_MP) {
      pthread_mutex_t *m = kind == K_ROBUST ? &sh->rmu : &sh->mu;
      pthread_mutex_lock(m);
      sh->counter++;
      pthread_mutex_unlock(m);
    } else {
      mp_lock_acquire(&sh->lock, MP_FOREVER);
      sh->counter++;
      mp_lock_release(&sh->lock);
    }
  }
}

/* Two processes, n increments each; returns increments per second. */
static double contended(long n, int kind) {
  sh->counter = 0;
  pid_t pids[2];
  uint64_t t0 = bench_now_ns();
  for (int i = 0; i < 2; i++)
    if ((pids[i] = fork()) == 0) {
      contended_loop(n, kind);
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

static double uncontended_ns(long n, int kind) {
  uint64_t t0 = bench_now_ns();
  pthread_mutex_t *m = kind == K_ROBUST ? &sh->rmu : &sh->mu;
  for (long i = 0; i < n; i++) {
    if (kind != K_MP) {
      pthread_mutex_lock(m);
      pthread_mutex_unlock(m);
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

/* ---- takeover ------------------------------------------------------------ */

static int take(bool robust) {
  if (!robust)
    return mp_lock_acquire(&sh->lock, MP_FOREVER);
  int r = pthread_mutex_lock(&sh->rmu);
  return r == EOWNERDEAD ? MP_EOWNERDEAD : -r;
}

static void repair_release(bool robust) {
  if (robust) {
    pthread_mutex_consistent(&sh->rmu);
    pthread_mutex_unlock(&sh->rmu);
  } else {
    mp_lock_consistent(&sh->lock);
    mp_lock_release(&sh->lock);
  }
}

/* A holder process that takes the lock, says so, and waits to be killed. */
static pid_t start_holder(bool robust) {
  atomic_store(&sh->held, 0);
  pid_t pid = fork();
  if (pid == 0) {
    take(robust);
    atomic_store(&sh->held, 1);
    for (;;)
      pause();
  }
  while (!atomic_load(&sh->held))
    usleep(100);
  return pid;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return v[n / 2];
}

/* From the holder's SIGKILL to MP_EOWNERDEAD in a caller that arrives just
 * after the kill (new caller), or in one that was already asleep on the
 * lock (sleeper). Median over rounds, in microseconds. */
static double takeover_us(int rounds, bool robust, bool sleeper) {
  double v[64];
  if (rounds > 64)
    rounds = 64;
  for (int i = 0; i < rounds; i++) {
    pid_t holder = start_holder(robust);
    pid_t waiter = 0;
    if (sleeper) {
      waiter = fork();
      if (waiter == 0) {
        int r = take(robust);
        atomic_store(&sh->taken_ns, bench_now_ns());
        if (r == MP_EOWNERDEAD)
          repair_release(robust);
        _exit(r == MP_EOWNERDEAD ? 0 : 1);
      }
      usleep(60000); /* long asleep: its looks are at the slowest pace */
    }
    uint64_t t0 = bench_now_ns();
    kill(holder, SIGKILL);
    if (sleeper) {
      reap(waiter);
    } else {
      int r = take(robust);
      atomic_store(&sh->taken_ns, bench_now_ns());
      if (r != MP_EOWNERDEAD) {
        fprintf(stderr, "lock_takeover: no takeover (%d)\n", r);
        exit(1);
      }
      repair_release(robust);
    }
    v[i] = (double)(atomic_load(&sh->taken_ns) - t0) / 1e3;
    reap(holder);
  }
  return median(v, rounds);
}

int main(int argc, char **argv) {
  if (mp_raw_alloc((void **)&sh, sizeof *sh) != 0)
    return 1;
  mp_lock_init(&sh->lock);
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  pthread_mutex_init(&sh->mu, &a);
  pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(&sh->rmu, &a);
  if (bench_selected(argc, argv, "lock_contended")) {
    long n = bench_scaled(1000000);
    double floor = contended(n, K_PTHREAD);
    bench_emit("lock_contended", "incr/s", contended(n, K_MP), floor, true, 5,
               0);
    bench_emit_peer("lock_contended", "robust pthread mutex",
                    contended(n, K_ROBUST));
  }
  if (bench_selected(argc, argv, "lock_uncontended")) {
    long n = bench_scaled(10000000);
    double floor = uncontended_ns(n, K_PTHREAD);
    bench_emit("lock_uncontended", "ns", uncontended_ns(n, K_MP), floor, false,
               0, 3);
    bench_emit_peer("lock_uncontended", "robust pthread mutex",
                    uncontended_ns(n, K_ROBUST));
  }
  if (bench_selected(argc, argv, "event_pingpong")) {
    long n = bench_scaled(100000);
    double floor = futex_pingpong_us(n);
    bench_emit("event_pingpong", "us", pingpong_us(n), floor, false, 0, 0);
  }
  if (bench_selected(argc, argv, "lock_takeover_new_caller")) {
    int rounds = (int)bench_scaled(31);
    double floor = takeover_us(rounds, true, false);
    bench_emit("lock_takeover_new_caller", "us", takeover_us(rounds, false, false),
               floor, false, 0, 0);
  }
  if (bench_selected(argc, argv, "lock_takeover_sleeper")) {
    int rounds = (int)bench_scaled(15);
    double floor = takeover_us(rounds, true, true);
    bench_emit("lock_takeover_sleeper", "us", takeover_us(rounds, false, true),
               floor, false, 0, 0);
  }
  mp_raw_free(sh);
  return 0;
}
