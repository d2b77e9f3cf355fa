/* Family "process": create, start and join a process running an empty
 * target. Floor: raw fork + waitpid. */
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "mproc.h"

static int empty_target(const void *arg, size_t len) {
  return 0;
}

static double raw_fork_us(long n) {
  uint64_t t0 = bench_now_ns();
  for (long i = 0; i < n; i++) {
    pid_t pid = fork();
    if (pid == 0)
      _exit(0);
    waitpid(pid, NULL, 0);
  }
  return (double)(bench_now_ns() - t0) / 1e3 / (double)n;
}

static double mproc_us(long n, mp_start_method_t m) {
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
  return (double)(bench_now_ns() - t0) / 1e3 / (double)n;
}

int main(int argc, char **argv) {
  long n = bench_scaled(500);
  if (bench_selected(argc, argv, "process_start_join")) {
    mproc_us(n / 10 + 1, MP_START_FORK); /* warm up */
    double floor = raw_fork_us(n);
    double ours = mproc_us(n, MP_START_FORK);
    bench_emit("process_start_join", "us", ours, floor, false, 10, 0);
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
