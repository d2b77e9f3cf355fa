/* Python tutorial example: section 2: a downloader process writes data into a Queue and an
 * analysis process reads it back.
 *
 * Python passes the Queue object to each Process; here the child opens the
 * queue by name (which also works with the fork server start method). The
 * messages are ints carried as bytes. */
#include <stdio.h>
#include <string.h>

#include <mproc.h>

static int download_from_web(const void *arg, size_t len) {
  mp_queue_t *q;
  if (mp_queue_open(&q, arg) != 0)
    return 1;
  /* Simulate downloading from a website. */
  int data[] = {11, 22, 33, 44};
  for (size_t i = 0; i < sizeof data / sizeof data[0]; i++)
    if (mp_queue_put(q, &data[i], sizeof data[i], MP_FOREVER) != 0)
      return 1;
  printf("----Downloader has finished downloading and data has been written "
         "to the queue----\n");
  mp_queue_destroy(q);
  return 0;
}

static int analysis_data(const void *arg, size_t len) {
  mp_queue_t *q;
  if (mp_queue_open(&q, arg) != 0)
    return 1;
  int waiting[16];
  size_t n = 0;
  for (;;) {
    int data;
    size_t got;
    if (mp_queue_get_into(q, &data, sizeof data, &got, MP_FOREVER) != 0)
      return 1;
    if (n < 16)
      waiting[n++] = data;
    /* Stop once the queue is empty, as the original does. */
    if (mp_queue_empty(q) == 1)
      break;
  }
  printf("[");
  for (size_t i = 0; i < n; i++)
    printf("%s%d", i ? ", " : "", waiting[i]);
  printf("]\n");
  mp_queue_destroy(q);
  return 0;
}

int main(void) {
  /* 1. A queue without a bound: memory is used as messages arrive. */
  mp_queue_t *q;
  int r = mp_queue_create(&q, NULL);
  if (r != 0) {
    fprintf(stderr, "mp_queue_create: %s\n", mp_strerror(r));
    return 1;
  }
  const char *name = mp_queue_name(q);
  /* 2. Two processes, each given the queue (by name). */
  mp_process_t *p1, *p2;
  mp_process_create(&p1, download_from_web, name, strlen(name) + 1, NULL);
  mp_process_create(&p2, analysis_data, name, strlen(name) + 1, NULL);
  /* The downloader first, so the analysis never sees a half-filled queue
   * and the output is always the same. */
  mp_process_start(p1);
  mp_process_join(p1, MP_FOREVER);
  mp_process_start(p2);
  mp_process_join(p2, MP_FOREVER);
  int c1 = -1, c2 = -1;
  mp_process_exitcode(p1, &c1);
  mp_process_exitcode(p2, &c2);
  mp_process_destroy(p1);
  mp_process_destroy(p2);
  mp_queue_destroy(q);
  return c1 == 0 && c2 == 0 ? 0 : 1;
}
