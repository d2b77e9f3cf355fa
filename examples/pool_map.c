/* Python tutorial example: "using the Pool class": Pool(processes=2).map(worker, ["A", "B"]).
 * map items are fixed-size structs; here a worker name. The Python original sleeps 2 s
 * per worker; this one 0.2 s. */
#include <stdio.h>
#include <unistd.h>

#include <mproc.h>

typedef struct {
  char name[16];
} worker_arg_t;

static int worker(const void *item, void *result, void *ctx) {
  const worker_arg_t *a = item;
  printf("Worker %s is starting.\n", a->name);
  usleep(200 * 1000);
  printf("Worker %s is exiting.\n", a->name);
  return 0;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  mp_pool_t *pool;
  mp_pool_opts_t opts = {.workers = 2};
  if (mp_pool_create(&pool, &opts))
    return 1;
  worker_arg_t names[] = {{"A"}, {"B"}};
  /* No results: result_size 0. */
  int e = mp_pool_map(pool, worker, names, 2, sizeof *names, NULL, 0, 0);
  mp_pool_close(pool);
  mp_pool_join(pool, MP_FOREVER);
  mp_pool_destroy(pool);
  return e ? 1 : 0;
}
