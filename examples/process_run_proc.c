/* Python tutorial example: run_proc: a named argument for the child, started and joined. */
#include <stdio.h>

#include <mproc.h>

static int run_proc(const void *arg, size_t len) {
  printf("Run child process %.*s (%d)...\n", (int)len, (const char *)arg,
         (int)mp_current_pid());
  return 0;
}

int main(void) {
  printf("Parent process %d.\n", (int)mp_current_pid());
  mp_process_t *p;
  int r;
  if ((r = mp_process_create(&p, run_proc, "test", 4, NULL)) < 0) {
    fprintf(stderr, "process: %s\n", mp_strerror(r));
    return 1;
  }
  printf("Child process will start.\n");
  if ((r = mp_process_start(p)) < 0 ||
      (r = mp_process_join(p, MP_FOREVER)) < 0) {
    fprintf(stderr, "process: %s\n", mp_strerror(r));
    return 1;
  }
  printf("Child process end.\n");
  mp_process_destroy(p);
  return 0;
}
