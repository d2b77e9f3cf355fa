/* Python tutorial example: section 6: how a Queue(3) behaves when full: put with a timeout
 * raises Full after the wait, put_nowait at once; then the messages are
 * read back with get_nowait.
 *
 * Python's `put(item, True, 2)` is mp_queue_put(q, msg, len, 2000) and
 * `put_nowait` is a timeout of 0; queue.Full is MP_EFULL, queue.Empty
 * MP_EEMPTY. */
#include <stdio.h>
#include <string.h>

#include <mproc.h>

static void put_str(mp_queue_t *q, const char *s) {
  mp_queue_put(q, s, strlen(s), MP_FOREVER);
}

static const char *yes(int b) {
  return b == 1 ? "True" : "False";
}

int main(void) {
  mp_queue_t *q;
  /* At most 3 messages at once. */
  mp_queue_opts_t opts = {.maxsize = 3};
  int r = mp_queue_create(&q, &opts);
  if (r != 0) {
    fprintf(stderr, "mp_queue_create: %s\n", mp_strerror(r));
    return 1;
  }
  put_str(q, "消息1");
  put_str(q, "消息2");
  printf("%s\n", yes(mp_queue_full(q))); /* False */
  put_str(q, "消息3");
  printf("%s\n", yes(mp_queue_full(q))); /* True */

  size_t n;
  /* The queue is full: the first put waits 2 s and fails, the second fails
   * at once. */
  if (mp_queue_put(q, "消息4", strlen("消息4"), 2000) == MP_EFULL) {
    mp_queue_qsize(q, &n);
    printf("消息队列已满,现有消息数量:%zu\n", n);
  }
  if (mp_queue_put(q, "消息4", strlen("消息4"), 0) == MP_EFULL) {
    mp_queue_qsize(q, &n);
    printf("消息队列已满,现有消息数量:%zu\n", n);
  }

  /* The recommended way: check for messages first, then read. */
  if (mp_queue_empty(q) == 0) {
    mp_queue_qsize(q, &n);
    for (size_t i = 0; i < n; i++) {
      char buf[64];
      size_t len;
      if (mp_queue_get_into(q, buf, sizeof buf, &len, 0) == 0)
        printf("%.*s\n", (int)len, buf);
    }
  }
  mp_queue_destroy(q);
  return 0;
}
