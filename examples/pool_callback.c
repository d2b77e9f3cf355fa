/* Python tutorial example: "Process pool" with a callback: five workers run ten tasks; each
 * task returns i + 100 and the callback prints it in the parent.
 *
 *   pool = multiprocessing.Pool(5)
 *   for i in range(10):
 *       pool.apply_async(func=foo, args=(i,), callback=bar)
 *   print("end"); pool.close(); pool.join()
 *
 * The Python original sleeps 2 s per task; this one sleeps 0.2 s. */
#include <stdio.h>
#include <unistd.h>

#include <mproc.h>

static int foo(const void *arg, size_t len, mp_buf_t *result, void *ctx) {
  int i = *(const int *)arg;
  usleep(200 * 1000);
  printf("in process %d\n", (int)getpid());
  int ret = i + 100;
  return mp_buf_set(result, &ret, sizeof ret);
}

/* Runs in the parent's callback thread, once per task. */
static void bar(const void *data, size_t len, void *user) {
  printf("==>exec done: %d\n", *(const int *)data);
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  mp_pool_t *pool;
  mp_pool_opts_t opts = {.workers = 5};
  if (mp_pool_create(&pool, &opts))
    return 1;
  mp_async_opts_t cb = {.callback = bar};
  for (int i = 0; i < 10; i++)
    mp_pool_apply_async(pool, foo, &i, sizeof i, &cb, NULL);
  printf("end\n");
  mp_pool_close(pool);
  mp_pool_join(pool, MP_FOREVER); /* also waits for the callbacks */
  mp_pool_destroy(pool);
  return 0;
}
