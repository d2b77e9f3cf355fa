/* Python tutorial example: two loops running at the same time, one in a child process.
 * The Python original loops forever; here each loop runs 3 rounds. */
#include <stdio.h>
#include <unistd.h>

#include <mproc.h>

#define ROUNDS 3

static int run_proc(const void *arg, size_t len) {
  for (int i = 0; i < ROUNDS; i++) {
    printf("......2......\n");
    fflush(stdout);
    usleep(500 * 1000);
  }
  return 0;
}

int main(void) {
  mp_process_t *p;
  int r;
  if ((r = mp_process_create(&p, run_proc, NULL, 0, NULL)) < 0 ||
      (r = mp_process_start(p)) < 0) {
    fprintf(stderr, "process: %s\n", mp_strerror(r));
    return 1;
  }
  for (int i = 0; i < ROUNDS; i++) {
    printf("......1......\n");
    fflush(stdout);
    usleep(500 * 1000);
  }
  mp_process_join(p, MP_FOREVER);
  mp_process_destroy(p);
  return 0;
}
