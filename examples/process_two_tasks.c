/* Python tutorial example: "First demo": two tasks, test1 and test2, each in its own
 * process, run at the same time. The Python original loops forever; here each task runs
 * 3 rounds and main joins both.
 *
 *   p1 = multiprocessing.Process(target=test1)
 *   p2 = multiprocessing.Process(target=test2)
 *   p1.start(); p2.start() */
#include <stdio.h>
#include <unistd.h>

#include <mproc.h>

static int task(const void *arg, size_t len) {
  for (int i = 0; i < 3; i++) {
    printf("%s\n", (const char *)arg);
    fflush(stdout);
    usleep(300 * 1000);
  }
  return 0;
}

int main(void) {
  mp_process_t *p1, *p2;
  int r;
  if ((r = mp_process_create(&p1, task, "1111", 5, NULL)) < 0 ||
      (r = mp_process_create(&p2, task, "2222", 5, NULL)) < 0) {
    fprintf(stderr, "%s\n", mp_strerror(r));
    return 1;
  }
  mp_process_start(p1);
  mp_process_start(p2);
  mp_process_join(p1, MP_FOREVER);
  mp_process_join(p2, MP_FOREVER);
  mp_process_destroy(p1);
  mp_process_destroy(p2);
  return 0;
}
