/* Python tutorial example: one child writes 'a', 'b', 'c' into a Queue, another reads them.
 *
 * The original's reader loops forever on a blocking get and is terminated by the
 * parent. Here the parent closes the queue once the writer is done: the
 * reader takes what is left and its get then returns MP_ECLOSED, so it ends
 * by itself. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <mproc.h>

static int write_proc(const void *arg, size_t len) {
  mp_queue_t *q;
  if (mp_queue_open(&q, arg) != 0)
    return 1;
  printf("start to write %d\n", (int)getpid());
  const char *items[] = {"a", "b", "c"};
  for (int i = 0; i < 3; i++) {
    printf("put %s into queue\n", items[i]);
    fflush(stdout);
    mp_queue_put(q, items[i], 1, MP_FOREVER);
  }
  mp_queue_destroy(q);
  return 0;
}

static int read_proc(const void *arg, size_t len) {
  mp_queue_t *q;
  if (mp_queue_open(&q, arg) != 0)
    return 1;
  printf("start to read: %d\n", (int)getpid());
  fflush(stdout);
  for (;;) {
    char a[8];
    size_t n;
    if (mp_queue_get_into(q, a, sizeof a, &n, MP_FOREVER) != 0)
      break; /* MP_ECLOSED: closed and drained */
    printf("get %.*s from queue\n", (int)n, a);
    fflush(stdout);
  }
  mp_queue_destroy(q);
  return 0;
}

int main(void) {
  mp_queue_t *q;
  if (mp_queue_create(&q, NULL) != 0)
    return 1;
  const char *name = mp_queue_name(q);
  mp_process_t *pw, *pr;
  mp_process_create(&pw, write_proc, name, strlen(name) + 1, NULL);
  mp_process_create(&pr, read_proc, name, strlen(name) + 1, NULL);
  mp_process_start(pw);
  mp_process_start(pr);
  mp_process_join(pw, MP_FOREVER);
  mp_queue_close(q); /* the original terminates the reader instead */
  mp_process_join(pr, MP_FOREVER);
  mp_process_destroy(pw);
  mp_process_destroy(pr);
  mp_queue_destroy(q);
  return 0;
}
