/* Python tutorial example: section 7: the parent creates a Queue and two children, one
 * writing to it and one reading from it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mproc.h>

static void sleep_random(void) {
  /* time.sleep(random.random()), a tenth as long */
  usleep((useconds_t)(rand() % 100000));
}

static int writer(const void *arg, size_t len) {
  mp_queue_t *q;
  if (mp_queue_open(&q, arg) != 0)
    return 1;
  srand((unsigned)getpid());
  const char *values[] = {"A", "B", "C"};
  for (int i = 0; i < 3; i++) {
    printf("Put %s to queue……\n", values[i]);
    fflush(stdout);
    mp_queue_put(q, values[i], strlen(values[i]), MP_FOREVER);
    sleep_random();
  }
  mp_queue_destroy(q);
  return 0;
}

static int reader(const void *arg, size_t len) {
  mp_queue_t *q;
  if (mp_queue_open(&q, arg) != 0)
    return 1;
  srand((unsigned)getpid());
  for (;;) {
    char value[16];
    size_t n;
    if (mp_queue_empty(q) == 1)
      break;
    if (mp_queue_get_into(q, value, sizeof value, &n, MP_FOREVER) != 0)
      break;
    printf("Get %.*s from queue.\n", (int)n, value);
    fflush(stdout);
    sleep_random();
  }
  mp_queue_destroy(q);
  return 0;
}

int main(void) {
  /* The parent creates the queue and hands it to each child. */
  mp_queue_t *q;
  if (mp_queue_create(&q, NULL) != 0)
    return 1;
  const char *name = mp_queue_name(q);
  mp_process_t *pw, *pr;
  mp_process_create(&pw, writer, name, strlen(name) + 1, NULL);
  mp_process_create(&pr, reader, name, strlen(name) + 1, NULL);
  mp_process_start(pw);            /* start the writer */
  mp_process_join(pw, MP_FOREVER); /* wait for it to end */
  mp_process_start(pr);            /* start the reader */
  mp_process_join(pr, MP_FOREVER);
  printf("\n");
  printf("所有数据都写入并且读完\n");
  mp_process_destroy(pw);
  mp_process_destroy(pr);
  mp_queue_destroy(q);
  return 0;
}
