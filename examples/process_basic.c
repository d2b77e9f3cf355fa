/* Python tutorial example: "basic use of multiple processes": the child prints its parent's
 * pid and its own, sleeps, and the parent joins it. */
#include <stdio.h>
#include <unistd.h>

#include <mproc.h>

static int run(const void *arg, size_t len) {
  printf("parent: %d, child: %d\n", (int)mp_parent_pid(),
         (int)mp_current_pid());
  sleep(2);
  return 0;
}

int main(void) {
  mp_process_t *p;
  int r;
  if ((r = mp_process_create(&p, run, NULL, 0, NULL)) < 0 ||
      (r = mp_process_start(p)) < 0 ||
      (r = mp_process_join(p, MP_FOREVER)) < 0) {
    fprintf(stderr, "process: %s\n", mp_strerror(r));
    return 1;
  }
  mp_process_destroy(p);
  return 0;
}
