/* Python tutorial example: 's first threading demo: a named thread runs a loop while the
 * main thread reports on itself.
 *
 *   def loop():
 *       print("thread %s is running" % threading.current_thread().name)
 *       n = 0
 *       while n < 5:
 *           start = time.time()
 *           n = n + 1
 *           print("kfhgk %s >> %s" % (threading.current_thread().name, n))
 *           end = time.time()
 *           print("to run tihis process the computer have spent %0.2f"
 *                 % (end - start))
 *       print("the process is ending")
 *   print("thread %s is running" % threading.current_thread().name)
 *   t = threading.Thread(target=loop, name="jghdfjfg")
 *   t.start(); t.join()
 *   print("thread %s is ending" % threading.current_thread().name)
 */
#include <stdio.h>
#include <time.h>

#include "mproc.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int loop(const void *arg, size_t len) {
  printf("thread %s is running\n", mp_current_thread_name());
  int n = 0;
  while (n < 5) {
    double start = now();
    n = n + 1;
    printf("kfhgk %s >> %d\n", mp_current_thread_name(), n);
    double end = now();
    printf("to run tihis process the computer have spent %0.2f\n", end - start);
  }
  printf("the process is ending\n");
  return 0;
}

int main(void) {
  mp_thread_t *t;
  mp_thread_opts_t o = {.name = "jghdfjfg"};
  printf("thread %s is running\n", mp_current_thread_name());
  mp_thread_create(&t, loop, NULL, 0, &o);
  mp_thread_start(t);
  mp_thread_join(t, MP_FOREVER);
  printf("thread %s is ending\n", mp_current_thread_name());
  mp_thread_destroy(t);
  return 0;
}
