/* Python tutorial example: the parent's and the child's pids. As in Python, the parent
 * does not join: a non-daemon child is joined when the parent exits. */
#include <stdio.h>

#include <mproc.h>

static int run_proc(const void *arg, size_t len) {
  printf("child running, pid=%d...\n", (int)mp_current_pid());
  printf("child about to end...\n");
  return 0;
}

int main(void) {
  printf("parent pid: %d\n", (int)mp_current_pid());
  mp_process_t *p;
  int r;
  if ((r = mp_process_create(&p, run_proc, NULL, 0, NULL)) < 0 ||
      (r = mp_process_start(p)) < 0) {
    fprintf(stderr, "process: %s\n", mp_strerror(r));
    return 1;
  }
  return 0; /* the exit handler joins p */
}
