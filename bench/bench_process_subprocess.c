/* Benchmarks for subprocess (family `process`):
 *   subprocess_run_true   mp_run("/bin/true") and wait, us each; floor: raw
 *                         posix_spawn + waitpid, measured interleaved with it
 *   subprocess_cat_64MB   64 MiB through `cat` with communicate, in and out at
 *                         once, MB/s
 * run_true is a median of calls interleaved with the floor's; cat_64MB is
 * the best of several runs, as its Python peer: other load on the shared
 * machine only ever slows a run down. */
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "mproc.h"

extern char **environ;

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, long n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double run_true_once(void) {
  static const char *const argv[] = {"/bin/true", NULL};
  mp_run_result_t res;
  uint64_t t0 = bench_now_ns();
  if (mp_run(argv, NULL, &res) != 0 || res.returncode != 0) {
    fprintf(stderr, "mp_run /bin/true failed\n");
    exit(1);
  }
  return (double)(bench_now_ns() - t0) / 1e3;
}

static double floor_true_once(void) {
  char *const argv[] = {"/bin/true", NULL};
  pid_t pid;
  int st;
  uint64_t t0 = bench_now_ns();
  if (posix_spawn(&pid, "/bin/true", NULL, NULL, argv, environ) != 0 ||
      waitpid(pid, &st, 0) != pid) {
    fprintf(stderr, "posix_spawn failed\n");
    exit(1);
  }
  return (double)(bench_now_ns() - t0) / 1e3;
}

static void bench_run_true(void) {
  long n = bench_scaled(500);
  double *ours = malloc((size_t)n * sizeof *ours);
  double *raw = malloc((size_t)n * sizeof *raw);
  for (int i = 0; i < 20; i++) { /* warm up page cache and allocator */
    run_true_once();
    floor_true_once();
  }
  /* Alternate so that both see the same machine load. */
  for (long i = 0; i < n; i++) {
    if (i % 2) {
      ours[i] = run_true_once();
      raw[i] = floor_true_once();
    } else {
      raw[i] = floor_true_once();
      ours[i] = run_true_once();
    }
  }
  bench_emit("subprocess_run_true", "us", median(ours, n), median(raw, n),
             false, 0, 1.05);
  free(ours);
  free(raw);
}

static void bench_cat(void) {
  size_t size = 64u << 20;
  char *in = malloc(size);
  for (size_t i = 0; i < size; i++)
    in[i] = (char)(i * 131 + (i >> 12));
  static const char *const argv[] = {"cat", NULL};
  mp_run_opts_t o;
  memset(&o, 0, sizeof o);
  o.input = in;
  o.input_len = size;
  o.capture_output = true;
  long n = bench_scaled(9);
  double *mbs = malloc((size_t)n * sizeof *mbs);
  for (long i = 0; i < n; i++) {
    mp_run_result_t res;
    uint64_t t0 = bench_now_ns();
    if (mp_run(argv, &o, &res) != 0 || res.out_len != size) {
      fprintf(stderr, "cat run failed\n");
      exit(1);
    }
    double s = (double)(bench_now_ns() - t0) / 1e9;
    if (memcmp(res.out, in, size) != 0) {
      fprintf(stderr, "cat output differs\n");
      exit(1);
    }
    mp_run_result_free(&res);
    mbs[i] = (double)size / 1e6 / s;
  }
  double best = 0;
  for (long i = 0; i < n; i++)
    best = mbs[i] > best ? mbs[i] : best;
  bench_emit("subprocess_cat_64MB", "MB/s", best, -1, true, 3, 0);
  free(mbs);
  free(in);
}

int main(int argc, char **argv) {
  if (bench_selected(argc, argv, "subprocess_run_true"))
    bench_run_true();
  if (bench_selected(argc, argv, "subprocess_cat_64MB"))
    bench_cat();
  return 0;
}
