/* Python tutorial example: 's thread-local demo (threading.local) with C11 _Thread_local:
 *
 *   NAME = threading.local()
 *   def process_student():
 *       stn = NAME.st
 *       print("%s %s" % (stn, threading.current_thread().name))
 *   def process_thread(ne):
 *       NAME.st = ne
 *       process_student()
 *   t1 = threading.Thread(target=process_thread, args=('ghkghkfgh',),
 *                         name='kdkgk')
 *   t2 = threading.Thread(target=process_thread, args=('dfgdfg',),
 *                         name='fghfgh')
 *   t1.start(); t2.start(); t1.join(); t2.join()
 */
#include <stdio.h>

#include "mproc.h"

/* Each thread has its own copy: no lock needed. */
static _Thread_local const char *st;

static void process_student(void) {
  printf("%s %s\n", st, mp_current_thread_name());
}

static int process_thread(const void *arg, size_t len) {
  st = arg; /* the thread's own copy of the argument bytes */
  process_student();
  return 0;
}

int main(void) {
  mp_thread_t *t1, *t2;
  mp_thread_opts_t o1 = {.name = "kdkgk"}, o2 = {.name = "fghfgh"};
  mp_thread_create(&t1, process_thread, "ghkghkfgh", sizeof "ghkghkfgh", &o1);
  mp_thread_create(&t2, process_thread, "dfgdfg", sizeof "dfgdfg", &o2);
  mp_thread_start(t1);
  mp_thread_join(t1, MP_FOREVER);
  mp_thread_start(t2);
  mp_thread_join(t2, MP_FOREVER);
  mp_thread_destroy(t1);
  mp_thread_destroy(t2);
  return 0;
}
