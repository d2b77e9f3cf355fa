/* Benchmark family `mpi`: the pool on MPI ranks (run under
 * `mpirun -n 3 bench_mpi mpi`: 1 root + 2 worker ranks), and the same
 * workloads on the local process pool with 2 workers (`bench_mpi local`).
 * bench/mpi.py runs both and mpi4py.futures (bench/python/mpi_peer.py) and
 * prints the rows. Each workload prints the best of 3 rounds. */
#include <mproc.h>

#include "bench.h"

static int task_echo(const void *arg, size_t len, mp_buf_t *res, void *ctx) {
  return mp_buf_set(res, arg, len);
}

static int map_square(const void *item, void *result, void *ctx) {
  int64_t x = *(const int64_t *)item;
  *(int64_t *)result = x * x;
  return 0;
}

static int map_noop(const void *item, void *result, void *ctx) {
  return 0;
}

static void check(int e, const char *what) {
  if (e) {
    fprintf(stderr, "%s: %s\n", what, mp_strerror(e));
    exit(1);
  }
}

static void emit(const char *mode, const char *workload, const char *unit,
                 double v) {
  printf("{\"mode\": \"%s\", \"workload\": \"%s\", \"unit\": \"%s\", "
         "\"value\": %.6g}\n",
         mode, workload, unit, v);
  fflush(stdout);
}

static void pipelined(mp_pool_t *p, const char *mode) {
  long n = bench_scaled(50000);
  mp_result_t **rs = malloc((size_t)n * sizeof *rs);
  double best = 0;
  for (int rep = 0; rep < 3; rep++) {
    uint64_t t0 = bench_now_ns();
    for (long i = 0; i < n; i++)
      check(mp_pool_apply_async(p, task_echo, &i, sizeof i, NULL, &rs[i]),
            "apply_async");
    for (long i = 0; i < n; i++) {
      check(mp_result_get(rs[i], MP_FOREVER, NULL, NULL), "get");
      mp_result_destroy(rs[i]);
    }
    double rate = (double)n / ((double)(bench_now_ns() - t0) / 1e9);
    if (rate > best)
      best = rate;
  }
  free(rs);
  emit(mode, "mpi_pool_apply_async_pipelined", "tasks/s", best);
}

static void map_1m(mp_pool_t *p, const char *mode) {
  long n = bench_scaled(1000000);
  int64_t *in = malloc((size_t)n * sizeof *in);
  int64_t *out = malloc((size_t)n * sizeof *out);
  for (long i = 0; i < n; i++)
    in[i] = i;
  double best = 0;
  for (int rep = 0; rep < 3; rep++) {
    uint64_t t0 = bench_now_ns();
    check(mp_pool_map(p, map_square, in, (size_t)n, sizeof *in, out,
                      sizeof *out, 0),
          "map");
    double rate = (double)n / ((double)(bench_now_ns() - t0) / 1e9);
    if (rate > best)
      best = rate;
  }
  for (long i = 0; i < n; i++)
    if (out[i] != in[i] * in[i])
      check(MP_EIO, "map result");
  free(in);
  free(out);
  emit(mode, "mpi_pool_map_1M", "items/s", best);
}

/* The root's dispatch ceiling: tasks that do nothing (a map with chunksize
 * 1: one task record per item, out and back), tasks/s. */
static void dispatch(mp_pool_t *p, const char *mode) {
  long n = bench_scaled(200000);
  int32_t *in = calloc((size_t)n, sizeof *in);
  double best = 0;
  for (int rep = 0; rep < 3; rep++) {
    uint64_t t0 = bench_now_ns();
    check(mp_pool_map(p, map_noop, in, (size_t)n, sizeof *in, NULL, 0, 1),
          "map");
    double rate = (double)n / ((double)(bench_now_ns() - t0) / 1e9);
    if (rate > best)
      best = rate;
  }
  free(in);
  emit(mode, "mpi_root_dispatch_tiny_tasks", "tasks/s", best);
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "mpi";
  bool mpi = strcmp(mode, "mpi") == 0;
  mp_pool_opts_t o = {.backend = mpi ? MP_POOL_MPI : MP_POOL_PROCESSES,
                      .workers = mpi ? 0 : 2};
  mp_pool_t *p;
  int e = mp_pool_create(&p, &o);
  if (e == MP_EWORKERRANK)
    return 0;
  check(e, "pool create");
  char *sel[2] = {argv[0], argc > 2 ? argv[2] : NULL};
  int sc = argc > 2 ? 2 : 1;
  if (bench_selected(sc, sel, "mpi_pool_apply_async_pipelined"))
    pipelined(p, mode);
  if (bench_selected(sc, sel, "mpi_pool_map_1M"))
    map_1m(p, mode);
  if (bench_selected(sc, sel, "mpi_root_dispatch_tiny_tasks"))
    dispatch(p, mode);
  mp_pool_destroy(p);
  return 0;
}
