/* Python tutorial example: "进程池Pool": Pool(3) runs ten tasks that sleep a random time;
 * a new task starts only when one of the three processes is free.
 *
 *   po = Pool(3)
 *   for i in range(0, 10): po.apply_async(worker, (i,))
 *   print("……start……"); po.close(); po.join(); print("……end……")
 *
 * The Python original sleeps random()*2 s; this one random()*0.2 s. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <mproc.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int worker(const void *arg, size_t len, mp_buf_t *result, void *ctx) {
  int msg = *(const int *)arg;
  double t_start = now_s();
  printf("%d 开始执行,进程号为%d\n", msg, (int)getpid());
  /* Forked workers share the parent's random state: mix in the pid. */
  srand((unsigned)getpid() ^ (unsigned)msg);
  usleep((useconds_t)(rand() % 200000));
  double t_stop = now_s();
  printf("%d 执行完毕,耗时%0.2f\n", msg, t_stop - t_start);
  return 0;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  mp_pool_t *po;
  mp_pool_opts_t opts = {.workers = 3};
  if (mp_pool_create(&po, &opts))
    return 1;
  for (int i = 0; i < 10; i++)
    mp_pool_apply_async(po, worker, &i, sizeof i, NULL, NULL);
  printf("……start……\n");
  mp_pool_close(po);
  mp_pool_join(po, MP_FOREVER);
  printf("……end……\n");
  mp_pool_destroy(po);
  return 0;
}
