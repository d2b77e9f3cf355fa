/* Python tutorial example: "Use the Process class": two workers start, work for a while and
 * exit; the parent starts both, then joins both.
 *
 *   def worker(name):
 *       print(f"Worker {name} is starting."); time.sleep(2)
 *       print(f"Worker {name} is exiting.")
 *   p1 = Process(target=worker, args=("A",)); p2 = ...("B",)
 *   p1.start(); p2.start(); p1.join(); p2.join() */
#include <stdio.h>
#include <unistd.h>

#include <mproc.h>

static int worker(const void *arg, size_t len) {
  const char *name = arg; /* the copied argument bytes, NUL included */
  printf("Worker %s is starting.\n", name);
  fflush(stdout);
  sleep(1); /* the original sleeps 2 s */
  printf("Worker %s is exiting.\n", name);
  return 0;
}

int main(void) {
  mp_process_t *p1, *p2;
  int r;
  if ((r = mp_process_create(&p1, worker, "A", 2, NULL)) < 0 ||
      (r = mp_process_create(&p2, worker, "B", 2, NULL)) < 0) {
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
