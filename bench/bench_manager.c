/* Family "manager": shared dict and list operations from a child process
 * (ops/s measured inside the child, as the Python peer does). */
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "mproc.h"

typedef enum { DICT_SET, DICT_GET, LIST_APPEND } work_t;

static double run_child(work_t w, mp_dict_t *d, mp_list_t *l, long n) {
  int fds[2];
  if (pipe(fds) < 0)
    return 0;
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    uint64_t t0 = bench_now_ns();
    for (long i = 0; i < n; i++) {
      mp_val_t k = mp_val_int(i), v;
      int r = 0;
      switch (w) {
      case DICT_SET:
        r = mp_dict_set(d, &k, &k);
        break;
      case DICT_GET:
        r = mp_dict_get(d, &k, &v);
        break;
      case LIST_APPEND:
        r = mp_list_append(l, &k);
        break;
      }
      if (r < 0)
        _exit(1);
    }
    double rate = (double)n * 1e9 / (double)(bench_now_ns() - t0);
    if (write(fds[1], &rate, sizeof rate) != (ssize_t)sizeof rate)
      _exit(1);
    _exit(0);
  }
  close(fds[1]);
  double rate = 0;
  if (read(fds[0], &rate, sizeof rate) != (ssize_t)sizeof rate)
    rate = 0;
  close(fds[0]);
  waitpid(pid, NULL, 0);
  return rate;
}

int main(int argc, char **argv) {
  long n = bench_scaled(200000);
  mp_manager_t *m;
  mp_dict_t *d;
  mp_list_t *l;
  if (mp_manager_create(&m, NULL) < 0 || mp_dict_create(&d, m, NULL) < 0 ||
      mp_list_create(&l, m, NULL) < 0)
    return 1;
  /* The set run also fills the dict the get run reads. */
  double set = run_child(DICT_SET, d, l, n);
  if (bench_selected(argc, argv, "manager_dict_set"))
    bench_emit("manager_dict_set", "ops/s", set, -1, true, 50, 0);
  if (bench_selected(argc, argv, "manager_dict_get"))
    bench_emit("manager_dict_get", "ops/s", run_child(DICT_GET, d, l, n), -1,
               true, 0, 0);
  if (bench_selected(argc, argv, "manager_list_append"))
    bench_emit("manager_list_append", "ops/s", run_child(LIST_APPEND, d, l, n),
               -1, true, 0, 0);
  mp_dict_close(d);
  mp_list_close(l);
  mp_manager_destroy(m);
  return 0;
}
