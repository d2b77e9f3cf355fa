/* Python tutorial example: positional and keyword arguments for the target. Python's
 * args=('test', 18), kwargs={"m": 20} become one struct, copied into the
 * child. The parent terminates the child after 1 s. */
#include <stdio.h>
#include <unistd.h>

#include <mproc.h>

struct proc_args {
  char name[16];
  int age;
  int m; /* the keyword argument */
};

static int run_proc(const void *arg, size_t len) {
  const struct proc_args *a = arg;
  for (int i = 0; i < 10; i++) {
    printf("child running, name= %s,age=%d ,pid=%d...\n", a->name, a->age,
           (int)mp_current_pid());
    printf("{'m': %d}\n", a->m);
    fflush(stdout);
    usleep(200 * 1000);
  }
  return 0;
}

int main(void) {
  struct proc_args a = {.name = "test", .age = 18, .m = 20};
  mp_process_t *p;
  int r, code;
  if ((r = mp_process_create(&p, run_proc, &a, sizeof a, NULL)) < 0 ||
      (r = mp_process_start(p)) < 0) {
    fprintf(stderr, "process: %s\n", mp_strerror(r));
    return 1;
  }
  sleep(1); /* then end the child at once */
  mp_process_terminate(p);
  mp_process_join(p, MP_FOREVER);
  if (mp_process_exitcode(p, &code) == 0)
    printf("exitcode: %d\n", code);
  mp_process_destroy(p);
  return 0;
}
