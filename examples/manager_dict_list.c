/* Seed 001, "Data sharing between processes: Manager": five processes each
 * write their pid into a shared dict and a shared list and print them.
 *
 *   def func(d, l):
 *       d[os.getpid()] = os.getpid()
 *       print(d)
 *       l.append(os.getpid())
 *       print(l)
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mproc.h>

static int func(mp_dict_t *d, mp_list_t *l) {
  mp_val_t pid = mp_val_int(getpid());
  char *s;
  int r;
  if ((r = mp_dict_set(d, &pid, &pid)) < 0 || (r = mp_dict_repr(d, &s)) < 0)
    return r;
  printf("%s\n", s);
  fflush(stdout);
  free(s);
  if ((r = mp_list_append(l, &pid)) < 0 || (r = mp_list_repr(l, &s)) < 0)
    return r;
  printf("%s\n", s);
  fflush(stdout);
  free(s);
  return 0;
}

int main(void) {
  mp_manager_t *manager;
  mp_dict_t *d;
  mp_list_t *l;
  int r;
  if ((r = mp_manager_create(&manager, NULL)) < 0 ||
      (r = mp_dict_create(&d, manager, NULL)) < 0 ||
      (r = mp_list_create(&l, manager, NULL)) < 0) {
    fprintf(stderr, "manager: %s\n", mp_strerror(r));
    return 1;
  }
  pid_t p_list[5];
  for (int i = 0; i < 5; i++) {
    p_list[i] = fork();
    if (p_list[i] < 0) {
      perror("fork");
      return 1;
    }
    if (p_list[i] == 0) {
      r = func(d, l);
      if (r < 0)
        fprintf(stderr, "func: %s\n", mp_strerror(r));
      _exit(r < 0 ? 1 : 0);
    }
  }
  int failed = 0;
  for (int i = 0; i < 5; i++) {
    int st;
    waitpid(p_list[i], &st, 0);
    failed |= !WIFEXITED(st) || WEXITSTATUS(st) != 0;
  }
  mp_dict_close(d);
  mp_list_close(l);
  mp_manager_destroy(manager);
  return failed;
}
