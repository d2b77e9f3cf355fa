/* Python tutorial example: "进程池中的Queue": tasks of a pool talk through a queue made
 * after the pool started. Python needs Manager().Queue() for this; here the
 * task gets the queue's name and opens it through a helper that caches the
 * handle, so each worker opens it once.
 *
 *   q = Manager().Queue(); po = Pool()
 *   po.apply_async(writer, (q,)); time.sleep(1)
 *   po.apply_async(reader, (q,)); po.close(); po.join() */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mproc.h>

/* The queue named `name`, opened on first use in this worker and kept. */
static mp_queue_t *queue_by_name(const char *name) {
  static char cached_name[MP_QUEUE_NAME_MAX + 2];
  static mp_queue_t *cached;
  if (cached && strcmp(cached_name, name) == 0)
    return cached;
  mp_queue_t *q;
  if (mp_queue_open(&q, name) != 0)
    return NULL;
  if (cached)
    mp_queue_destroy(cached);
  cached = q;
  snprintf(cached_name, sizeof cached_name, "%s", name);
  return q;
}

static int writer(const void *arg, size_t len, mp_buf_t *result, void *ctx) {
  mp_queue_t *q = queue_by_name(arg);
  if (!q)
    return mp_task_error(result, 1, "cannot open %s", (const char *)arg);
  printf("writer启动(%d),父进程为(%d)\n", (int)getpid(), (int)getppid());
  for (const char *c = "itcast"; *c; c++)
    mp_queue_put(q, c, 1, MP_FOREVER);
  return 0;
}

static int reader(const void *arg, size_t len, mp_buf_t *result, void *ctx) {
  mp_queue_t *q = queue_by_name(arg);
  if (!q)
    return mp_task_error(result, 1, "cannot open %s", (const char *)arg);
  printf("reader启动(%d),父进程为(%d)\n", (int)getpid(), (int)getppid());
  size_t n = 0;
  mp_queue_qsize(q, &n);
  for (size_t i = 0; i < n; i++) {
    char c;
    size_t got;
    if (mp_queue_get_into(q, &c, 1, &got, MP_FOREVER) == 0)
      printf("reader从Queue获取到消息:%c\n", c);
  }
  return 0;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("(%d) start\n", (int)getpid());
  mp_pool_t *po;
  if (mp_pool_create(&po, NULL))
    return 1;
  mp_queue_t *q; /* made after the workers started */
  if (mp_queue_create(&q, NULL))
    return 1;
  const char *name = mp_queue_name(q);
  mp_result_t *w;
  mp_pool_apply_async(po, writer, name, strlen(name) + 1, NULL, &w);
  /* The Python original sleeps 1 s so the writer goes first; waiting for it is exact. */
  mp_result_wait(w, MP_FOREVER);
  mp_result_destroy(w);
  mp_pool_apply_async(po, reader, name, strlen(name) + 1, NULL, NULL);
  mp_pool_close(po);
  mp_pool_join(po, MP_FOREVER);
  printf("(%d) End\n", (int)getpid());
  mp_pool_destroy(po);
  mp_queue_destroy(q);
  return 0;
}
