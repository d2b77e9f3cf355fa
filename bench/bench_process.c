/* Family "process": create, start and join a process running an empty
 * target. Floor: raw fork + waitpid, in the same process (same image, same
 * atfork handlers), measured in blocks of 10 that alternate with mproc's so
 * that a change of load on a shared machine hits both sides alike. */
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "mproc.h"

static int empty_target(const void *arg, size_t len) {
  return 0;
}

static uint64_t raw_fork_ns(long n) {
  uint64_t t0 = bench_now_ns();
  for (long i = 0; i < n; i++) {
    pid_t pid = fork();
    if (pid == 0)
      _exit(0);
    waitpid(pid, NULL, 0);
  }
  return bench_now_ns() - t0;
}

static uint64_t mproc_ns(long n, mp_start_method_t m) {
  mp_process_opts_t o = {.start_method = m};
  uint64_t t0 = bench_now_ns();
  for (long i = 0; i < n; i++) {
    mp_process_t *p;
    if (mp_process_create(&p, empty_target, NULL, 0, &o) < 0 ||
        mp_process_start(p) < 0 || mp_process_join(p, MP_FOREVER) < 0) {
      fprintf(stderr, "process failed\n");
      exit(1);
    }
    mp_process_destroy(p);
  }
  return bench_now_ns() - t0;
}

static double mproc_us(long n, mp_start_method_t m) {
  return (double)mproc_ns(n, m) / 1e3 / (double)n;
}

int main(int argc, char **argv) {
  long n = bench_scaled(500);
  if (bench_selected(argc, argv, "process_start_join")) {
    mproc_us(n / 10 + 1, MP_START_FORK); /* warm up */
    uint64_t floor_ns = 0, ours_ns = 0;
    long blocks = (n + 9) / 10;
    for (long b = 0; b < blocks; b++) {
      if (b % 2) {
        ours_ns += mproc_ns(10, MP_START_FORK);
        floor_ns += raw_fork_ns(10);
      } else {
        floor_ns += raw_fork_ns(10);
        ours_ns += mproc_ns(10, MP_START_FORK);
      }
    }
    double per = 1e3 * (double)(blocks * 10);
    bench_emit("process_start_join", "us", (double)ours_ns / per,
               (double)floor_ns / per, false, 10, 0);
  }
  if (bench_selected(argc, argv, "process_start_join_forkserver")) {
    mp_forkserver_start();
    mproc_us(n / 10 + 1, MP_START_FORKSERVER);
    double ours = mproc_us(n, MP_START_FORKSERVER);
    bench_emit("process_start_join_forkserver", "us", ours, -1, false, 0, 0);
    mp_forkserver_stop();
  }
  return 0;
}
