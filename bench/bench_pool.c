/* Benchmark family `pool`: mproc's pool against Python's multiprocessing
 * Pool/ThreadPool (bench/python/pool.py does the same work). 2 workers. */
#include <mproc.h>

#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

/* Timed rounds per invocation, after any warm-up: bench/run.py repeats the
 * invocations, interleaved with the Python peer's, and takes the median. */
#define ROUNDS 1

static int task_echo(const void *arg, size_t len, mp_buf_t *res, void *ctx) {
  return mp_buf_set(res, arg, len);
}

static int map_square(const void *item, void *result, void *ctx) {
  int64_t x = *(const int64_t *)item;
  *(int64_t *)result = x * x;
  return 0;
}

typedef struct {
  uint64_t lo, hi;
} range_t;

/* sum_of_squares_10M: Python sums 10M squares in about a second, C in a
 * few milliseconds, which would measure the pool's overhead rather than its
 * scaling. So the C task goes over its range SQ_PASSES times (the empty asm
 * keeps the compiler from vectorising the loop or replacing it by a closed
 * form), and one worker computes for about as long as Python's does. */
#define SQ_PASSES 128

static int map_sum_squares(const void *item, void *result, void *ctx) {
  const range_t *r = item;
  uint64_t s = 0;
  for (int pass = 0; pass < SQ_PASSES; pass++)
    for (uint64_t i = r->lo; i < r->hi; i++) {
      s += i * i;
      __asm__ volatile("" : "+r"(s));
    }
  *(uint64_t *)result = s;
  return 0;
}

static mp_pool_t *make_pool(int workers, mp_pool_backend_t be) {
  mp_pool_opts_t o = {0};
  o.workers = workers;
  o.backend = be;
  mp_pool_t *p;
  if (mp_pool_create(&p, &o) != 0) {
    fprintf(stderr, "pool create failed\n");
    exit(1);
  }
  return p;
}

static void check(int e, const char *what) {
  if (e) {
    fprintf(stderr, "%s: %s\n", what, mp_strerror(e));
    exit(1);
  }
}

static void bench_pipelined(void) {
  long n = bench_scaled(50000);
  mp_pool_t *p = make_pool(2, MP_POOL_PROCESSES);
  mp_result_t **rs = malloc((size_t)n * sizeof *rs);
  double best = 0;
  for (int rep = 0; rep < ROUNDS; rep++) {
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
  mp_pool_destroy(p);
  bench_emit("pool_apply_async_pipelined", "tasks/s", best, -1, true, 20, 0);
}

/* The floor of a blocking apply: a raw 8-byte socketpair round trip to a
 * forked process, the same number of round trips, measured alternately
 * with ours. */
static double raw_rtt_us(long n) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
    return -1;
  pid_t pid = fork();
  if (pid == 0) {
    long v;
    close(sv[0]);
    while (read(sv[1], &v, sizeof v) == (ssize_t)sizeof v)
      if (write(sv[1], &v, sizeof v) != (ssize_t)sizeof v)
        break;
    _exit(0);
  }
  close(sv[1]);
  uint64_t t0 = bench_now_ns();
  for (long i = 0; i < n; i++) {
    long v = i;
    if (write(sv[0], &v, sizeof v) != (ssize_t)sizeof v ||
        read(sv[0], &v, sizeof v) != (ssize_t)sizeof v)
      break;
  }
  double us = (double)(bench_now_ns() - t0) / 1e3 / (double)n;
  close(sv[0]);
  waitpid(pid, NULL, 0);
  return us;
}

static void bench_rtt(void) {
  long n = bench_scaled(4000);
  double floor_best = 1e99;
  mp_pool_t *p = make_pool(2, MP_POOL_PROCESSES);
  mp_buf_t out = MP_BUF_INIT;
  for (long i = 0; i < 200; i++)
    check(mp_pool_apply(p, task_echo, &i, sizeof i, &out, NULL), "apply");
  double best = 1e99;
  for (int rep = 0; rep < ROUNDS; rep++) {
    uint64_t t0 = bench_now_ns();
    for (long i = 0; i < n; i++)
      check(mp_pool_apply(p, task_echo, &i, sizeof i, &out, NULL), "apply");
    double us = (double)(bench_now_ns() - t0) / 1e3 / (double)n;
    if (us < best)
      best = us;
    double f = raw_rtt_us(n);
    if (f > 0 && f < floor_best)
      floor_best = f;
  }
  mp_buf_free(&out);
  mp_pool_destroy(p);
  bench_emit("pool_apply_sync_rtt", "us", best,
             floor_best < 1e99 ? floor_best : -1, false, 10, 0);
}

static void bench_map(const char *name, mp_pool_backend_t be) {
  long n = bench_scaled(1000000);
  int64_t *in = malloc((size_t)n * sizeof *in);
  int64_t *out = malloc((size_t)n * sizeof *out);
  for (long i = 0; i < n; i++)
    in[i] = i;
  mp_pool_t *p = make_pool(2, be);
  double best = 0;
  for (int rep = 0; rep < ROUNDS; rep++) {
    uint64_t t0 = bench_now_ns();
    check(mp_pool_map(p, map_square, in, (size_t)n, 8, out, 8, 0), "map");
    double rate = (double)n / ((double)(bench_now_ns() - t0) / 1e9);
    if (rate > best)
      best = rate;
  }
  if (out[n - 1] != (int64_t)(n - 1) * (n - 1))
    check(MP_EIO, "map result");
  mp_pool_destroy(p);
  free(in);
  free(out);
  bench_emit(name, "items/s", best, -1, true, 10, 0);
}

static void bench_imap(void) {
  long n = bench_scaled(50000);
  int64_t *in = malloc((size_t)n * sizeof *in);
  for (long i = 0; i < n; i++)
    in[i] = i;
  mp_pool_t *p = make_pool(2, MP_POOL_PROCESSES);
  double best = 0;
  for (int rep = 0; rep < ROUNDS; rep++) {
    mp_imap_opts_t o = {0};
    o.chunksize = 1;
    mp_imap_t *it;
    uint64_t t0 = bench_now_ns();
    check(mp_pool_imap(p, map_square, in, (size_t)n, 8, 8, &o, &it), "imap");
    int64_t v, sum = 0;
    for (long i = 0; i < n; i++) {
      check(mp_imap_next(it, &v, NULL, MP_FOREVER), "imap_next");
      sum += v;
    }
    double rate = (double)n / ((double)(bench_now_ns() - t0) / 1e9);
    if (rate > best)
      best = rate;
    mp_imap_destroy(it);
    (void)sum;
  }
  mp_pool_destroy(p);
  free(in);
  bench_emit("pool_imap_chunksize1", "items/s", best, -1, true, 10, 0);
}

/* One timed map of the 16 parts over `workers` workers (pool started
 * before the clock). */
static double sum_squares_time(int workers, uint64_t n, uint64_t *sum) {
  mp_pool_t *p = make_pool(workers, MP_POOL_PROCESSES);
  enum { PARTS = 16 };
  range_t r[PARTS];
  uint64_t part[PARTS];
  for (int i = 0; i < PARTS; i++)
    r[i] = (range_t){n * (uint64_t)i / PARTS, n * (uint64_t)(i + 1) / PARTS};
  uint64_t t0 = bench_now_ns();
  check(mp_pool_map(p, map_sum_squares, r, PARTS, sizeof *r, part,
                    sizeof *part, 1),
        "map");
  double t = (double)(bench_now_ns() - t0) / 1e9;
  *sum = 0;
  for (int i = 0; i < PARTS; i++)
    *sum += part[i];
  mp_pool_destroy(p);
  return t;
}

/* The floor: the same work split over raw forked processes, no pool: what
 * the cores of this machine give at best. */
static double sum_squares_raw_time(int procs, uint64_t n) {
  pid_t pids[2];
  uint64_t t0 = bench_now_ns();
  for (int w = 0; w < procs; w++) {
    pids[w] = fork();
    if (pids[w] == 0) {
      range_t r = {n * (uint64_t)w / (uint64_t)procs,
                   n * (uint64_t)(w + 1) / (uint64_t)procs};
      uint64_t s;
      map_sum_squares(&r, &s, NULL);
      _exit(s == 1); /* keeps the sum from being optimised away */
    }
  }
  for (int w = 0; w < procs; w++)
    waitpid(pids[w], NULL, 0);
  return (double)(bench_now_ns() - t0) / 1e9;
}

/* Parallel efficiency: speedup of two workers over one, divided by two;
 * the one- and two-worker runs alternate with the floor's. */
static void bench_sum_squares(void) {
  uint64_t n = (uint64_t)bench_scaled(10000000);
  uint64_t s1, s2;
  double t1 = sum_squares_time(1, n, &s1);
  double f1 = sum_squares_raw_time(1, n);
  double t2 = sum_squares_time(2, n, &s2);
  double f2 = sum_squares_raw_time(2, n);
  if (s1 != s2)
    check(MP_EIO, "sum of squares");
  bench_emit("sum_of_squares_10M", "efficiency", t1 / t2 / 2, f1 / f2 / 2, true,
             0, 0);
}

int main(int argc, char **argv) {
  if (bench_selected(argc, argv, "pool_apply_async_pipelined"))
    bench_pipelined();
  if (bench_selected(argc, argv, "pool_apply_sync_rtt"))
    bench_rtt();
  if (bench_selected(argc, argv, "pool_map_1M"))
    bench_map("pool_map_1M", MP_POOL_PROCESSES);
  if (bench_selected(argc, argv, "pool_imap_chunksize1"))
    bench_imap();
  if (bench_selected(argc, argv, "threadpool_map_1M"))
    bench_map("threadpool_map_1M", MP_POOL_THREADS);
  if (bench_selected(argc, argv, "sum_of_squares_10M"))
    bench_sum_squares();
  return 0;
}
