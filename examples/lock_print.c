/* Python tutorial example: "Process Lock": ten processes print under one Lock.
 *
 *   def f(l, i):
 *       l.acquire(); print("hello world", i); l.release()
 *   lock = multiprocessing.Lock()
 *   for num in range(10):
 *       multiprocessing.Process(target=f, args=(lock, num)).start()
 *
 * The lock lives in shared memory from mp_raw_alloc, so every child forked
 * afterwards shares it. */
#include <stdio.h>
#include <string.h>

#include "mproc.h"

static mp_lock_t *lock;

static int f(const void *arg, size_t len) {
  int i;
  memcpy(&i, arg, sizeof i);
  mp_lock_acquire(lock, MP_FOREVER);
  printf("hello world %d\n", i);
  fflush(stdout);
  mp_lock_release(lock);
  return 0;
}

int main(void) {
  mp_process_t *p[10];
  if (mp_raw_alloc((void **)&lock, sizeof *lock) != 0)
    return 1;
  mp_lock_init(lock);
  for (int num = 0; num < 10; num++) {
    mp_process_create(&p[num], f, &num, sizeof num, NULL);
    mp_process_start(p[num]);
  }
  for (int num = 0; num < 10; num++) {
    mp_process_join(p[num], MP_FOREVER);
    mp_process_destroy(p[num]);
  }
  mp_raw_free(lock);
  return 0;
}
