/* The README's example: a child process puts messages on a shared-memory
 * queue; the parent reads them. The child gets the queue's name in its
 * argument bytes and opens it, which works for every start method (Python
 * passes the queue in args= the same way, by pickling its handle). */
#include <mproc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int producer(const void *arg, size_t len) {
  mp_queue_t *q;
  int rc = mp_queue_open(&q, arg); /* arg: the name, NUL included */
  if (rc < 0)
    return 1;
  for (int i = 0; i < 3 && rc == 0; i++) {
    char msg[32];
    int n = snprintf(msg, sizeof msg, "hello %d", i);
    rc = mp_queue_put(q, msg, (size_t)n, MP_FOREVER);
  }
  mp_queue_destroy(q); /* this handle only: the queue stays */
  return rc == 0 ? 0 : 1;
}

static int fail(const char *what, int rc) {
  fprintf(stderr, "%s: %s\n", what, mp_strerror(rc));
  return 1;
}

int main(void) {
  mp_queue_t *q;
  mp_process_t *p;
  int rc;
  if ((rc = mp_queue_create(&q, NULL)) < 0)
    return fail("queue", rc);
  const char *name = mp_queue_name(q);
  if ((rc = mp_process_create(&p, producer, name, strlen(name) + 1, NULL)) < 0 ||
      (rc = mp_process_start(p)) < 0)
    return fail("process", rc);
  for (int i = 0; i < 3; i++) {
    void *msg;
    size_t len;
    if ((rc = mp_queue_get(q, &msg, &len, 5000)) < 0) /* MP_EEMPTY after 5 s */
      return fail("get", rc);
    printf("got: %.*s\n", (int)len, (char *)msg);
    free(msg);
  }
  int code;
  if ((rc = mp_process_join(p, MP_FOREVER)) < 0 ||
      (rc = mp_process_exitcode(p, &code)) < 0)
    return fail("join", rc);
  mp_process_destroy(p);
  mp_queue_destroy(q);
  return code;
}
