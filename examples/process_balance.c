/* Python tutorial example: 's balance demo with processes: a global is copied into each
 * process, so the balance must live in shared memory, a Value with its
 * lock:
 *
 *   balance = multiprocessing.Value('l', 0)
 *   def run_proc(m):
 *       for i in range(200000):
 *           with balance.get_lock():
 *               balance.value += m
 *               balance.value -= m
 *   p1 = Process(target=run_proc, args=(3,)); p2 = ... args=(5,)
 *   ...; print(balance.value)
 */
#include <stdio.h>
#include <string.h>

#include "mproc.h"

static mp_value_t *balance;

static int run_proc(const void *arg, size_t len) {
  long m;
  mp_rlock_t *lock;
  memcpy(&m, arg, sizeof m);
  mp_value_get_lock(balance, &lock);
  long *value = mp_value_ptr(balance);
  for (int i = 0; i < 200000; i++) {
    mp_rlock_acquire(lock, MP_FOREVER);
    *value += m;
    *value -= m;
    mp_rlock_release(lock);
  }
  return 0;
}

int main(void) {
  mp_process_t *p1, *p2;
  long three = 3, five = 5;
  int64_t result = -1;
  if (mp_value_create(&balance, MP_TYPE_I64, NULL, NULL) != 0)
    return 1;
  mp_process_create(&p1, run_proc, &three, sizeof three, NULL);
  mp_process_create(&p2, run_proc, &five, sizeof five, NULL);
  mp_process_start(p1);
  mp_process_start(p2);
  mp_process_join(p1, MP_FOREVER);
  mp_process_join(p2, MP_FOREVER);
  mp_value_get_i64(balance, &result);
  printf("%lld\n", (long long)result);
  mp_process_destroy(p1);
  mp_process_destroy(p2);
  mp_value_destroy(balance);
  return 0;
}
