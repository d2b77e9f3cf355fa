/* Python tutorial example: processes do not share global variables. process1 appends to
 * its copy of nums; process2, started afterwards, still sees [11, 22]. */
#include <stdio.h>
#include <unistd.h>

#include <mproc.h>

static int nums[8] = {11, 22};
static int nnums = 2;

static void print_nums(const char *who) {
  printf("in %s pid=%d ,nums=[", who, (int)mp_current_pid());
  for (int i = 0; i < nnums; i++)
    printf("%s%d", i ? ", " : "", nums[i]);
  printf("]\n");
  fflush(stdout);
}

static int work1(const void *arg, size_t len) {
  print_nums("process1");
  for (int i = 0; i < 3; i++) {
    nums[nnums++] = i;
    usleep(200 * 1000); /* the original sleeps 1 s */
    print_nums("process1");
  }
  return 0;
}

static int work2(const void *arg, size_t len) {
  print_nums("process2");
  return 0;
}

int main(void) {
  mp_process_t *p1, *p2;
  int r;
  if ((r = mp_process_create(&p1, work1, NULL, 0, NULL)) < 0 ||
      (r = mp_process_start(p1)) < 0 ||
      (r = mp_process_join(p1, MP_FOREVER)) < 0 ||
      (r = mp_process_create(&p2, work2, NULL, 0, NULL)) < 0 ||
      (r = mp_process_start(p2)) < 0 ||
      (r = mp_process_join(p2, MP_FOREVER)) < 0) {
    fprintf(stderr, "process: %s\n", mp_strerror(r));
    return 1;
  }
  mp_process_destroy(p1);
  mp_process_destroy(p2);
  return 0;
}
