/* A shared counter with a Value (Python's multiprocessing.Value):
 *
 *   def work(counter):
 *       for _ in range(1000):
 *           with counter.get_lock():
 *               counter.value += 1
 *   counter = Value('i', 0)
 *   procs = [Process(target=work, args=(counter,)) for _ in range(4)]
 *   ...
 *   print("counter =", counter.value)
 */
#include <stdio.h>

#include "mproc.h"

static mp_value_t *counter;

static int work(const void *arg, size_t len) {
  mp_rlock_t *lock;
  mp_value_get_lock(counter, &lock);
  for (int i = 0; i < 1000; i++) {
    mp_rlock_acquire(lock, MP_FOREVER);
    int64_t v;
    mp_value_get_i64(counter, &v);
    mp_value_set_i64(counter, v + 1);
    mp_rlock_release(lock);
  }
  return 0;
}

int main(void) {
  mp_process_t *procs[4];
  int64_t v = 0;
  if (mp_value_create(&counter, MP_TYPE_I32, NULL, NULL) != 0)
    return 1;
  for (int i = 0; i < 4; i++) {
    mp_process_create(&procs[i], work, NULL, 0, NULL);
    mp_process_start(procs[i]);
  }
  for (int i = 0; i < 4; i++) {
    mp_process_join(procs[i], MP_FOREVER);
    mp_process_destroy(procs[i]);
  }
  mp_value_get_i64(counter, &v);
  printf("counter = %lld\n", (long long)v);
  mp_value_destroy(counter);
  return 0;
}
