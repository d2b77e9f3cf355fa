/* The Pool on MPI ranks: the seeds' "sum of squares with Pool.map", run with
 *
 *   mpirun -n 3 ./mpi_pool_map          (one host: 1 root + 2 worker ranks)
 *   mpirun -n 64 --hostfile hosts ./mpi_pool_map   (a cluster)
 *
 * Every rank runs main and calls mp_pool_create. Rank 0 gets the pool and
 * runs the rest of main; the other ranks run its tasks inside
 * mp_pool_create, which returns MP_EWORKERRANK once rank 0 destroyed the
 * pool (mpi4py's MPICommExecutor has the same shape). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <mproc.h>

static int square(const void *item, void *result, void *ctx) {
  int64_t x;
  memcpy(&x, item, sizeof x);
  x *= x;
  memcpy(result, &x, sizeof x);
  return 0;
}

/* apply: a task that says where it ran. */
static int where(const void *arg, size_t len, mp_buf_t *result, void *ctx) {
  char host[64] = "?";
  gethostname(host, sizeof host - 1);
  return mp_buf_printf(result, "worker %d (pid %d on %s) got \"%.*s\"",
                       mp_pool_worker_index(), (int)getpid(), host, (int)len,
                       (const char *)arg);
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  mp_pool_t *pool;
  mp_pool_opts_t opts = {.backend = MP_POOL_MPI};
  int r = mp_pool_create(&pool, &opts);
  if (r == MP_EWORKERRANK)
    return 0; /* this rank served as a worker; the root is done with it */
  if (r) {
    fprintf(stderr, "mp_pool_create: %s\n", mp_strerror(r));
    return 1;
  }
  printf("root: %d worker ranks\n", mp_pool_size(pool));

  enum { N = 100000 };
  static int64_t items[N], squares[N];
  for (int i = 0; i < N; i++)
    items[i] = i;
  r = mp_pool_map(pool, square, items, N, sizeof *items, squares,
                  sizeof *squares, 0);
  if (r) {
    fprintf(stderr, "map: %s\n", mp_strerror(r));
    return 1;
  }
  int64_t sum = 0;
  for (int i = 0; i < N; i++)
    sum += squares[i];
  printf("sum of squares below %d: %lld\n", N, (long long)sum);

  mp_buf_t out = MP_BUF_INIT;
  if (mp_pool_apply(pool, where, "hello", 5, &out, NULL) == 0)
    printf("%s\n", (const char *)out.data);
  mp_buf_free(&out);

  mp_pool_close(pool);
  mp_pool_join(pool, MP_FOREVER);
  mp_pool_destroy(pool);
  return 0;
}
