/* Python tutorial example: "Process pool": Pool(3) runs ten tasks, each printing its
 * message and its process number; close() then join() wait for all of them.
 *
 *   po = Pool(3)
 *   for i in range(0, 10): po.apply_async(worker, (i,))
 *   po.close(); po.join() */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include <mproc.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The task: its argument is the message number. */
static int worker(const void *arg, size_t len, mp_buf_t *result, void *ctx) {
  int msg = *(const int *)arg;
  double t_start = now_s();
  printf("%d Start execution, The process number is:%d\n", msg, (int)getpid());
  double t_stop = now_s();
  printf("%d It takes time to execute%0.2f\n", msg, t_stop - t_start);
  return 0;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0); /* workers print line by line */
  mp_pool_t *po;
  mp_pool_opts_t opts = {.workers = 3}; /* at most 3 processes */
  int e = mp_pool_create(&po, &opts);
  if (e) {
    fprintf(stderr, "pool: %s\n", mp_strerror(e));
    return 1;
  }
  for (int i = 0; i < 10; i++)
    mp_pool_apply_async(po, worker, &i, sizeof i, NULL, NULL);
  mp_pool_close(po);            /* no new tasks */
  mp_pool_join(po, MP_FOREVER); /* wait for all of them; after close */
  mp_pool_destroy(po);
  return 0;
}
