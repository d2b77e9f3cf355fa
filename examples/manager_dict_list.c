/* Python tutorial example: "Data sharing between processes: Manager": five processes each
 * write their pid into a shared dict and a shared list and print them.
 *
 *   def func(d, l):
 *       d[os.getpid()] = os.getpid()
 *       print(d)
 *       l.append(os.getpid())
 *       print(l)
 *
 *   manager = multiprocessing.Manager()
 *   d = manager.dict()
 *   l = manager.list()
 *   for i in range(5):
 *       p = multiprocessing.Process(target=func, args=(d, l))
 *       ...
 *
 * Python pickles the proxies into the child; here the child gets the
 * manager's name and the dict's and list's ids as its argument bytes and
 * opens them, which works for every start method (a forked child could also
 * use the parent's handles as they are). */
#include <stdio.h>
#include <stdlib.h>

#include <mproc.h>

typedef struct {
  char manager[64];
  uint32_t dict_id, list_id;
} shared_ref_t;

/* print(x) for a repr just made into *s (r: how making it went). */
static int print_repr(int r, char **s) {
  if (r < 0)
    return r;
  printf("%s\n", *s);
  free(*s);
  return 0;
}

static int func(const void *arg, size_t len) {
  const shared_ref_t *ref = arg;
  mp_manager_t *m;
  mp_dict_t *d;
  mp_list_t *l;
  char *s = NULL;
  int r;
  if (len != sizeof *ref) {
    fprintf(stderr, "func: bad argument\n");
    return 2;
  }
  if ((r = mp_manager_open(&m, ref->manager)) < 0)
    goto out;
  if ((r = mp_dict_open_id(&d, m, ref->dict_id)) == 0) {
    if ((r = mp_list_open_id(&l, m, ref->list_id)) == 0) {
      mp_val_t pid = mp_val_int(mp_current_pid());
      if ((r = mp_dict_set(d, &pid, &pid)) == 0 &&
          (r = print_repr(mp_dict_repr(d, &s), &s)) == 0 &&
          (r = mp_list_append(l, &pid)) == 0)
        r = print_repr(mp_list_repr(l, &s), &s);
      mp_list_close(l);
    }
    mp_dict_close(d);
  }
  mp_manager_destroy(m);
out:
  if (r < 0)
    fprintf(stderr, "func: %s\n", mp_strerror(r));
  return r < 0 ? 1 : 0;
}

int main(void) {
  mp_manager_t *manager;
  mp_dict_t *d;
  mp_list_t *l;
  shared_ref_t ref = {0};
  const char *name;
  int r;
  if ((r = mp_manager_create(&manager, NULL)) < 0 ||
      (r = mp_dict_create(&d, manager, NULL)) < 0 ||
      (r = mp_list_create(&l, manager, NULL)) < 0 ||
      (r = mp_manager_name(manager, &name)) < 0 ||
      (r = mp_dict_id(d, &ref.dict_id)) < 0 ||
      (r = mp_list_id(l, &ref.list_id)) < 0) {
    fprintf(stderr, "manager: %s\n", mp_strerror(r));
    return 1;
  }
  snprintf(ref.manager, sizeof ref.manager, "%s", name);
  mp_process_t *p_list[5];
  int failed = 0;
  for (int i = 0; i < 5; i++) {
    if ((r = mp_process_create(&p_list[i], func, &ref, sizeof ref, NULL)) < 0 ||
        (r = mp_process_start(p_list[i])) < 0) {
      fprintf(stderr, "process: %s\n", mp_strerror(r));
      return 1;
    }
  }
  for (int i = 0; i < 5; i++) {
    int code = -1;
    mp_process_join(p_list[i], MP_FOREVER);
    mp_process_exitcode(p_list[i], &code);
    if (code != 0)
      fprintf(stderr, "process %d: exit code %d\n", i, code);
    failed |= code != 0;
    mp_process_destroy(p_list[i]);
  }
  mp_dict_close(d);
  mp_list_close(l);
  mp_manager_destroy(manager);
  return failed;
}
