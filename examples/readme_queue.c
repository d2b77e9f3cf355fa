/* The README's example: a child process puts messages on a shared-memory
 * queue; the parent reads them. */
#include <mproc.h>
#include <stdio.h>
#include <stdlib.h>

static int producer(const void *arg, size_t len) {
  mp_queue_t *q = *(mp_queue_t *const *)arg; /* inherited across fork */
  (void)len;
  for (int i = 0; i < 3; i++) {
    char msg[32];
    int n = snprintf(msg, sizeof msg, "hello %d", i);
    if (mp_queue_put(q, msg, (size_t)n, MP_FOREVER) != 0)
      return 1;
  }
  return 0;
}

int main(void) {
  mp_queue_t *q;
  mp_process_t *p;
  int r, code;
  if ((r = mp_queue_create(&q, NULL)) != 0) {
    fprintf(stderr, "queue: %s\n", mp_strerror(r));
    return 1;
  }
  mp_process_create(&p, producer, &q, sizeof q, NULL);
  mp_process_start(p);
  for (int i = 0; i < 3; i++) {
    void *msg;
    size_t len;
    if (mp_queue_get(q, &msg, &len, 5000) == 0) {
      printf("got: %.*s\n", (int)len, (char *)msg);
      free(msg);
    }
  }
  mp_process_join(p, MP_FOREVER);
  mp_process_exitcode(p, &code);
  printf("%s exited with %d\n", mp_process_name(p), code);
  mp_process_destroy(p);
  mp_queue_destroy(q);
  return 0;
}
