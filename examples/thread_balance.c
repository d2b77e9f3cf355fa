/* Python tutorial example: the balance demo with threads and a lock:
 *
 *   balance = 0
 *   lock = threading.Lock()
 *   def change(m):
 *       global balance
 *       balance = balance + m
 *       balance = balance - m
 *   def run_thread(m):
 *       for i in range(2000000):
 *           lock.acquire()
 *           try: change(m)
 *           finally: lock.release()
 *   t1 = threading.Thread(target=run_thread, args=(3,))
 *   t2 = threading.Thread(target=run_thread, args=(5,))
 *   t1.start(); t2.start(); t1.join(); t2.join()
 *   print(balance)
 *
 * Without the lock the two threads' updates interleave and the balance
 * drifts from 0; with it, it prints 0. */
#include <stdio.h>
#include <string.h>

#include "mproc.h"

static long balance = 0;
static mp_lock_t lock;

static void change(long m) {
  balance = balance + m;
  balance = balance - m;
}

static int run_thread(const void *arg, size_t len) {
  long m;
  memcpy(&m, arg, sizeof m);
  for (int i = 0; i < 2000000; i++) {
    mp_lock_acquire(&lock, MP_FOREVER);
    change(m);
    mp_lock_release(&lock);
  }
  return 0;
}

int main(void) {
  mp_thread_t *t1, *t2;
  long three = 3, five = 5;
  mp_lock_init(&lock);
  mp_thread_create(&t1, run_thread, &three, sizeof three, NULL);
  mp_thread_create(&t2, run_thread, &five, sizeof five, NULL);
  mp_thread_start(t1);
  mp_thread_start(t2);
  mp_thread_join(t1, MP_FOREVER);
  mp_thread_join(t2, MP_FOREVER);
  printf("%ld\n", balance);
  mp_thread_destroy(t1);
  mp_thread_destroy(t2);
  return 0;
}
