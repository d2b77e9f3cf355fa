/* Python tutorial example: Pool(4) runs five tasks (apply_async), then the original's
 * coroutine section: an event loop awaits results as they complete. Each
 * result offers a pollable fd (mp_result_waitable) usable with mp_wait,
 * poll, epoll or libuv; mp_pool_fd gives one fd for the whole pool.
 *
 *   p = Pool(4)
 *   for i in range(5): p.apply_async(task, args=(i,))
 *   print("all process end") */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include <mproc.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int task(const void *arg, size_t len, mp_buf_t *result, void *ctx) {
  int name = *(const int *)arg;
  printf("run task %d,(%d)\n", name, (int)getpid());
  double start = now_s();
  usleep((useconds_t)(50000 * (5 - name))); /* later tasks finish first */
  double end = now_s();
  printf("process %d run %0.2fseconds\n", name, end - start);
  int sq = name * name;
  return mp_buf_set(result, &sq, sizeof sq);
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("Parent process %d,\n", (int)getpid());
  mp_pool_t *p;
  mp_pool_opts_t opts = {.workers = 4};
  if (mp_pool_create(&p, &opts))
    return 1;
  enum { N = 5 };
  mp_result_t *rs[N];
  for (int i = 0; i < N; i++)
    if (mp_pool_apply_async(p, task, &i, sizeof i, NULL, &rs[i]))
      return 1;

  /* The event loop: wait for whichever results complete, in any order. */
  mp_waitable_t w[N];
  int left = N;
  int done[N] = {0};
  while (left > 0) {
    for (int i = 0; i < N; i++)
      w[i] = mp_result_waitable(rs[i]);
    /* Completed results stay ready; watch only the others. */
    mp_waitable_t pending[N];
    int map[N], n = 0;
    for (int i = 0; i < N; i++)
      if (!done[i]) {
        pending[n] = w[i];
        map[n++] = i;
      }
    if (mp_wait(pending, (size_t)n, MP_FOREVER) < 0)
      return 1;
    for (int k = 0; k < n; k++) {
      if (!pending[k].ready)
        continue;
      const void *data;
      if (mp_result_get(rs[map[k]], 0, &data, NULL) == 0)
        printf("awaited task %d: %d\n", map[k], *(const int *)data);
      done[map[k]] = 1;
      left--;
    }
  }
  printf("all process end\n");
  for (int i = 0; i < N; i++)
    mp_result_destroy(rs[i]);
  mp_pool_close(p);
  mp_pool_join(p, MP_FOREVER);
  mp_pool_destroy(p);
  return 0;
}
