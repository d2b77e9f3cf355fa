/* Porting from Python: behaviour a porter relies on across parts (names with
 * or without a leading '/', ...). */
#include <sys/wait.h>
#include <unistd.h>

#include "runner.h"

/* A unique bare name (no leading '/') for this test process. */
static void bare_name(char *buf, size_t cap, const char *what) {
  snprintf(buf, cap, "mpt-port-%s-%ld", what, (long)getpid());
}

/* Every named object takes "x" and "/x" as the same name, as Python's
 * SharedMemory does; the name it reports has the '/'. */
TEST(names_with_or_without_slash) {
  char bare[64], slash[72];

  bare_name(bare, sizeof bare, "q");
  snprintf(slash, sizeof slash, "/%s", bare);
  mp_queue_t *q, *q2;
  ASSERT_OK(mp_queue_create(&q, &(mp_queue_opts_t){.name = bare}));
  ASSERT_STR_EQ(mp_queue_name(q), slash);
  ASSERT_OK(mp_queue_open(&q2, bare));
  ASSERT_OK(mp_queue_put(q2, "x", 1, 0));
  ASSERT_OK(mp_queue_destroy(q2));
  ASSERT_OK(mp_queue_open(&q2, slash));
  ASSERT_OK(mp_queue_destroy(q2));
  mp_queue_t *q3;
  ASSERT_ERR(mp_queue_create(&q3, &(mp_queue_opts_t){.name = slash}), MP_EEXIST);
  ASSERT_OK(mp_queue_destroy(q));

  bare_name(bare, sizeof bare, "m");
  snprintf(slash, sizeof slash, "/%s", bare);
  mp_manager_t *m, *m2;
  const char *mname;
  ASSERT_OK(mp_manager_create(&m, &(mp_manager_opts_t){.name = bare}));
  ASSERT_OK(mp_manager_name(m, &mname));
  ASSERT_STR_EQ(mname, slash);
  ASSERT_OK(mp_manager_open(&m2, bare));
  ASSERT_OK(mp_manager_destroy(m2));
  ASSERT_OK(mp_manager_open(&m2, slash));
  ASSERT_OK(mp_manager_destroy(m2));
  ASSERT_OK(mp_manager_destroy(m));

  bare_name(bare, sizeof bare, "l");
  snprintf(slash, sizeof slash, "/%s", bare);
  mp_lock_t *l, *l2;
  ASSERT_OK(mp_lock_create(&l, &(mp_sync_opts_t){.name = bare}));
  ASSERT_OK(mp_lock_open(&l2, slash));
  ASSERT_OK(mp_lock_destroy(l2));
  ASSERT_OK(mp_lock_destroy(l));

  bare_name(bare, sizeof bare, "s");
  snprintf(slash, sizeof slash, "/%s", bare);
  mp_shm_t *s, *s2;
  ASSERT_OK(mp_shm_create(&s, 4096, &(mp_shm_opts_t){.name = slash}));
  ASSERT_STR_EQ(mp_shm_name(s), slash);
  ASSERT_OK(mp_shm_open(&s2, bare));
  ASSERT_OK(mp_shm_close(s2));
  ASSERT_OK(mp_shm_destroy(s));

  /* Still rejected: empty, "/" alone, a '/' inside. */
  ASSERT_ERR(mp_queue_open(&q2, ""), MP_EINVAL);
  ASSERT_ERR(mp_queue_open(&q2, "/"), MP_EINVAL);
  ASSERT_ERR(mp_queue_open(&q2, "a/b"), MP_EINVAL);
  ASSERT_ERR(mp_manager_open(&m2, "/a/b"), MP_EINVAL);
  ASSERT_ERR(mp_manager_open(&m2, ""), MP_EINVAL);
}

/* The seeds' folder copier checks its source before it creates
 * "<folder>[copy]": a typo leaves nothing behind. */
TEST(copy_folder_missing_source_creates_nothing) {
  char dir[] = "/tmp/mpt-port-XXXXXX";
  ASSERT(mkdtemp(dir));
  char cmd[512], copy[128];
  snprintf(cmd, sizeof cmd, "%s/examples/pool_copy_folder '%s/missing' 2>&1",
           mpt_build_dir(), dir);
  int st;
  char *out = mpt_run_cmd(cmd, &st);
  ASSERT(st != 0);
  ASSERT(strstr(out, "missing"));
  free(out);
  snprintf(copy, sizeof copy, "%s/missing[copy]", dir);
  ASSERT(access(copy, F_OK) != 0);
  ASSERT_OK(rmdir(dir));
}

/* The imap loop of docs/python-to-c.md: failed items are not results, and
 * the loop ends. 2 * (0 + ... + 999) minus the multiples of 100. */
TEST(imap_idiom_example) {
  char *out = mpt_run_example("pool_imap", 0);
  int64_t want = 0;
  for (int64_t x = 0; x < 1000; x++)
    if (x % 100)
      want += 2 * x;
  char line[128];
  snprintf(line, sizeof line, "results: 990, failed items: 10, total: %lld\n",
           (long long)want);
  ASSERT_STR_EQ(out, line);
  free(out);
}

static int64_t input_next;
/* Lazy input that fails at its 8th item (index 7). */
static int failing_input(void *item, void *user) {
  if (input_next == 7)
    return MP_EIO;
  *(int64_t *)item = input_next++;
  return 1;
}

static int identity(const void *item, void *result, void *ctx) {
  *(int64_t *)result = *(const int64_t *)item;
  return 0;
}

/* An input that fails at item 7: the 7 items read before it are all
 * returned, then the input's error, then the end (Python loses the failing
 * chunk's neighbours instead). */
TEST(imap_input_error_returns_items_before_it) {
  mp_pool_t *pool;
  ASSERT_OK(mp_pool_create(&pool, &(mp_pool_opts_t){.workers = 2,
                                                    .backend = MP_POOL_THREADS}));
  mp_imap_t *it;
  input_next = 0;
  ASSERT_OK(mp_pool_imap(pool, identity, NULL, 0, sizeof(int64_t),
                         sizeof(int64_t),
                         &(mp_imap_opts_t){.chunksize = 2, .input = failing_input},
                         &it));
  int64_t y;
  size_t idx;
  for (int64_t i = 0; i < 7; i++) {
    ASSERT_OK(mp_imap_next(it, &y, &idx, MP_FOREVER));
    ASSERT_EQ(y, i);
    ASSERT_EQ(idx, (size_t)i);
  }
  ASSERT_ERR(mp_imap_next(it, &y, &idx, MP_FOREVER), MP_EIO);
  ASSERT_ERR(mp_imap_next(it, &y, &idx, MP_FOREVER), MP_ECLOSED);
  ASSERT_OK(mp_imap_destroy(it));
  ASSERT_OK(mp_pool_destroy(pool));
}

/* Python raises for Pool(processes=-1) and for a negative maxtasksperchild;
 * a -1 stored in the unsigned field must not turn into "4294967295 tasks". */
TEST(pool_rejects_nonsense_sizes) {
  mp_pool_t *pool;
  ASSERT_ERR(mp_pool_create(&pool, &(mp_pool_opts_t){.workers = -1}), MP_EINVAL);
  ASSERT_ERR(mp_pool_create(&pool, &(mp_pool_opts_t){.workers = 4097}), MP_EINVAL);
  int minus_one = -1;
  ASSERT_ERR(mp_pool_create(&pool, &(mp_pool_opts_t){
                                       .workers = 1,
                                       .maxtasksperchild = (unsigned)minus_one}),
             MP_EINVAL);
  /* 0 means the default (zeroed options): CPUs usable, no task limit. */
  ASSERT_OK(mp_pool_create(&pool, &(mp_pool_opts_t){.workers = 0,
                                                    .backend = MP_POOL_THREADS}));
  ASSERT_EQ(mp_pool_size(pool), mp_cpu_count());
  ASSERT_OK(mp_pool_destroy(pool));
}

/* ---- manager: the list and dict methods Python programs use ------------- */

/* The manager of the list and dict tests below: a Redis one when
 * test_port_redis.c runs them again. */
static void port_manager(mp_manager_t **m) {
#ifdef MPT_MANAGER_REDIS
  mp_manager_opts_t o = {.address = mpt_redis.addr};
  ASSERT_OK(mp_manager_create(m, &o));
#else
  ASSERT_OK(mp_manager_create(m, NULL));
#endif
}

static void list_fill(mp_list_t *l, const int64_t *xs, size_t n) {
  ASSERT_OK(mp_list_clear(l));
  for (size_t i = 0; i < n; i++)
    ASSERT_OK(mp_list_append(l, &(mp_val_t){.type = MP_INT, .u.i = xs[i]}));
}

#define ASSERT_REPR(l, want)                                                   \
  do {                                                                         \
    char *s_;                                                                  \
    ASSERT_OK(mp_list_repr((l), &s_));                                         \
    ASSERT_STR_EQ(s_, (want));                                                 \
    free(s_);                                                                  \
  } while (0)

static void slice_repr(mp_list_t *l, int64_t a, int64_t b, int64_t c,
                       const char *want) {
  mp_val_t *vs;
  size_t n;
  ASSERT_OK(mp_list_get_slice(l, a, b, c, &vs, &n));
  char buf[256] = "[";
  for (size_t i = 0; i < n; i++) {
    char *s;
    ASSERT_OK(mp_val_repr(&vs[i], &s));
    snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%s", i ? ", " : "", s);
    free(s);
  }
  strcat(buf, "]");
  mp_vals_free(vs, n);
  ASSERT_STR_EQ(buf, want);
}

/* Expected values are Python's, from the same operations on [3, 1, 2, 3, 5]. */
TEST(manager_list_python_methods) {
  static const int64_t xs[] = {3, 1, 2, 3, 5};
  mp_manager_t *m;
  mp_list_t *l;
  port_manager(&m);
  ASSERT_OK(mp_list_create(&l, m, NULL));
  list_fill(l, xs, 5);
  mp_val_t three = mp_val_int(3), four = mp_val_int(4);
  size_t n, i;
  ASSERT_OK(mp_list_count(l, &three, &n));
  ASSERT_EQ(n, 2u);
  ASSERT_OK(mp_list_count(l, &four, &n));
  ASSERT_EQ(n, 0u);
  ASSERT_OK(mp_list_index(l, &three, 0, INT64_MAX, &i));
  ASSERT_EQ(i, 0u);
  ASSERT_OK(mp_list_index(l, &three, 1, INT64_MAX, &i));
  ASSERT_EQ(i, 3u);
  ASSERT_OK(mp_list_index(l, &three, -2, INT64_MAX, &i));
  ASSERT_EQ(i, 3u);
  ASSERT_ERR(mp_list_index(l, &three, 1, 3, &i), MP_ENOENT);
  ASSERT_ERR(mp_list_index(l, &four, 0, INT64_MAX, &i), MP_ENOENT);

  ASSERT_OK(mp_list_sort(l, false));
  ASSERT_REPR(l, "[1, 2, 3, 3, 5]");
  ASSERT_OK(mp_list_sort(l, true));
  ASSERT_REPR(l, "[5, 3, 3, 2, 1]");
  list_fill(l, xs, 5);
  ASSERT_OK(mp_list_reverse(l));
  ASSERT_REPR(l, "[5, 3, 2, 1, 3]");

  list_fill(l, xs, 5);
  slice_repr(l, INT64_MAX, INT64_MIN, -1, "[5, 3, 2, 1, 3]");
  slice_repr(l, 1, 4, 1, "[1, 2, 3]");
  slice_repr(l, INT64_MIN, INT64_MAX, 2, "[3, 2, 5]");
  slice_repr(l, -2, INT64_MAX, 1, "[3, 5]");
  slice_repr(l, 4, 1, -2, "[5, 2]");
  slice_repr(l, 4, 1, 1, "[]");

  mp_val_t nines[3] = {mp_val_int(9), mp_val_int(9), mp_val_int(9)};
  ASSERT_OK(mp_list_set_slice(l, 1, 3, 1, nines, 3));
  ASSERT_REPR(l, "[3, 9, 9, 9, 3, 5]");
  list_fill(l, xs, 5);
  mp_val_t seven[3] = {mp_val_int(7), mp_val_int(8), mp_val_int(9)};
  ASSERT_OK(mp_list_set_slice(l, INT64_MIN, INT64_MAX, 2, seven, 3));
  ASSERT_REPR(l, "[7, 1, 8, 3, 9]");
  ASSERT_ERR(mp_list_set_slice(l, INT64_MIN, INT64_MAX, 2, seven, 2), MP_EINVAL);
  ASSERT_REPR(l, "[7, 1, 8, 3, 9]");
  list_fill(l, xs, 5);
  ASSERT_OK(mp_list_del_slice(l, INT64_MIN, INT64_MAX, 2));
  ASSERT_REPR(l, "[1, 3]");
  list_fill(l, xs, 5);
  ASSERT_OK(mp_list_del_slice(l, 1, -1, 1));
  ASSERT_REPR(l, "[3, 5]");
  list_fill(l, xs, 5);
  mp_val_t zero = mp_val_int(0);
  ASSERT_OK(mp_list_set_slice(l, 5, 2, 1, &zero, 1));
  ASSERT_REPR(l, "[3, 1, 2, 3, 5, 0]");
  ASSERT_OK(mp_list_set_slice(l, 0, 5, 1, NULL, 0)); /* l[0:5] = [] */
  ASSERT_REPR(l, "[0]");

  /* l *= 3 with a string: every copy is its own value. */
  ASSERT_OK(mp_list_clear(l));
  mp_val_t one = mp_val_int(1), x = mp_val_str("x");
  ASSERT_OK(mp_list_append(l, &one));
  ASSERT_OK(mp_list_append(l, &x));
  ASSERT_OK(mp_list_repeat(l, 3));
  ASSERT_REPR(l, "[1, 'x', 1, 'x', 1, 'x']");
  ASSERT_OK(mp_list_pop(l, 1, NULL));
  ASSERT_REPR(l, "[1, 1, 'x', 1, 'x']");
  ASSERT_OK(mp_list_repeat(l, 0));
  ASSERT_REPR(l, "[]");

  /* Numbers of every kind sort together; strings by code points. */
  mp_val_t mixed[4] = {mp_val_bool(true), mp_val_double(2.5), mp_val_int(1),
                       mp_val_int(-1)};
  ASSERT_OK(mp_list_extend(l, mixed, 4));
  ASSERT_OK(mp_list_sort(l, false));
  ASSERT_REPR(l, "[-1, True, 1, 2.5]");
  ASSERT_OK(mp_list_clear(l));
  mp_val_t strs[3] = {mp_val_str("b"), mp_val_str("a"), mp_val_str("ab")};
  ASSERT_OK(mp_list_extend(l, strs, 3));
  ASSERT_OK(mp_list_sort(l, false));
  ASSERT_REPR(l, "['a', 'ab', 'b']");

  /* Errors: TypeError cases leave the list unchanged; bad arguments. */
  ASSERT_OK(mp_list_append(l, &one));
  ASSERT_ERR(mp_list_sort(l, false), MP_EINVAL);
  ASSERT_REPR(l, "['a', 'ab', 'b', 1]");
  mp_val_t *vs;
  ASSERT_ERR(mp_list_get_slice(l, 0, 1, 0, &vs, &n), MP_EINVAL);
  ASSERT_ERR(mp_list_get_slice(l, 0, 1, 1, NULL, &n), MP_EINVAL);
  ASSERT_ERR(mp_list_del_slice(l, 0, 1, 0), MP_EINVAL);
  ASSERT_ERR(mp_list_set_slice(l, 0, 1, 1, NULL, 2), MP_EINVAL);
  ASSERT_ERR(mp_list_count(NULL, &one, &n), MP_EINVAL);
  ASSERT_ERR(mp_list_count(l, &one, NULL), MP_EINVAL);
  ASSERT_ERR(mp_list_index(l, NULL, 0, 1, &i), MP_EINVAL);
  ASSERT_ERR(mp_list_sort(NULL, false), MP_EINVAL);
  ASSERT_ERR(mp_list_reverse(NULL), MP_EINVAL);
  ASSERT_ERR(mp_list_repeat(NULL, 2), MP_EINVAL);
  ASSERT_OK(mp_list_close(l));
  ASSERT_OK(mp_manager_destroy(m));
}

TEST(manager_dict_python_methods) {
  mp_manager_t *m;
  mp_dict_t *d;
  port_manager(&m);
  ASSERT_OK(mp_dict_create(&d, m, NULL));
  mp_val_t k, v;
  ASSERT_ERR(mp_dict_popitem(d, &k, &v), MP_ENOENT);
  for (int i = 0; i < 5; i++) {
    char key[8];
    snprintf(key, sizeof key, "k%d", i);
    ASSERT_OK(mp_dict_set(d, &(mp_val_t){.type = MP_STR, .u.s = key, .len = 2},
                          &(mp_val_t){.type = MP_INT, .u.i = i}));
  }
  mp_val_t k1 = mp_val_str("k1");
  ASSERT_OK(mp_dict_del(d, &k1));
  /* popitem is LIFO. */
  ASSERT_OK(mp_dict_popitem(d, &k, &v));
  ASSERT_STR_EQ(k.u.s, "k4");
  ASSERT_EQ(v.u.i, 4);
  mp_val_free(&k);
  /* setdefault: present keeps, absent inserts. */
  mp_val_t k0 = mp_val_str("k0"), def = mp_val_str("new"), out;
  ASSERT_OK(mp_dict_setdefault(d, &k0, &def, &out));
  ASSERT_EQ(out.type, MP_INT);
  ASSERT_EQ(out.u.i, 0);
  ASSERT_OK(mp_dict_setdefault(d, &k1, &def, &out));
  ASSERT_STR_EQ(out.u.s, "new");
  mp_val_free(&out);
  ASSERT_OK(mp_dict_setdefault(d, &(mp_val_t){.type = MP_INT, .u.i = 9}, NULL, &out));
  ASSERT_EQ(out.type, MP_NIL);
  char *s;
  ASSERT_OK(mp_dict_repr(d, &s));
  ASSERT_STR_EQ(s, "{'k0': 0, 'k2': 2, 'k3': 3, 'k1': 'new', 9: None}");
  free(s);
  /* Iteration one item at a time, in insertion order. */
  size_t pos = 0, seen = 0;
  int r;
  char order[64] = "";
  while ((r = mp_dict_next(d, &pos, &k, NULL)) == 1) {
    char *ks;
    ASSERT_OK(mp_val_repr(&k, &ks));
    strcat(order, ks);
    free(ks);
    mp_val_free(&k);
    seen++;
  }
  ASSERT_EQ(r, 0);
  ASSERT_EQ(seen, 5u);
  ASSERT_STR_EQ(order, "'k0''k2''k3''k1'9");
  ASSERT_EQ(mp_dict_next(d, &pos, NULL, &v), 0); /* stays at the end */
  /* Errors. */
  ASSERT_ERR(mp_dict_popitem(NULL, &k, &v), MP_EINVAL);
  ASSERT_ERR(mp_dict_popitem(d, NULL, &v), MP_EINVAL);
  ASSERT_ERR(mp_dict_setdefault(d, &k0, &def, NULL), MP_EINVAL);
  ASSERT_ERR(mp_dict_setdefault(d, &(mp_val_t){.type = MP_DOUBLE}, &def, &out), MP_EINVAL);
  ASSERT_ERR(mp_dict_next(d, NULL, &k, &v), MP_EINVAL);
  ASSERT_ERR(mp_dict_next(d, &pos, NULL, NULL), MP_EINVAL);
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_manager_destroy(m));
}

/* The new calls work across fork like the others: a child sorts and pops,
 * the parent sees it. */
TEST(manager_methods_across_fork) {
  mp_manager_t *m;
  mp_list_t *l;
  mp_dict_t *d;
  port_manager(&m);
  ASSERT_OK(mp_list_create(&l, m, NULL));
  ASSERT_OK(mp_dict_create(&d, m, NULL));
  static const int64_t xs[] = {3, 1, 2};
  list_fill(l, xs, 3);
  mp_val_t a = mp_val_str("a");
  ASSERT_OK(mp_dict_set(d, &a, &a));
  pid_t pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0) {
    mp_val_t k, v;
    int ok = mp_list_sort(l, false) == 0 && mp_dict_popitem(d, &k, &v) == 0;
    _exit(ok ? 0 : 1);
  }
  mpt_wait_ok(pid);
  ASSERT_REPR(l, "[1, 2, 3]");
  size_t n;
  ASSERT_OK(mp_dict_len(d, &n));
  ASSERT_EQ(n, 0u);
  ASSERT_OK(mp_list_close(l));
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_manager_destroy(m));
}

/* ---- named Value / Array: reachable from a fork-server child ------------ */

static int bump_named(const void *arg, size_t len) {
  char name[80];
  if (len >= sizeof name)
    return 2;
  memcpy(name, arg, len);
  name[len] = '\0';
  mp_value_t *v;
  mp_array_t *a;
  char aname[90];
  snprintf(aname, sizeof aname, "%s-arr", name);
  if (mp_value_open(&v, name) < 0 || mp_array_open(&a, aname) < 0)
    return 3;
  mp_rlock_t *lk;
  int64_t x;
  if (mp_value_get_lock(v, &lk) < 0 || mp_rlock_acquire(lk, MP_FOREVER) < 0)
    return 4;
  mp_value_get_i64(v, &x);
  mp_value_set_i64(v, x + 5);
  mp_rlock_release(lk);
  mp_array_set_i64(a, 2, 7);
  mp_value_destroy(v); /* not the creator: the name stays */
  mp_array_destroy(a);
  return 0;
}

TEST(named_value_array_from_forkserver_child) {
  ASSERT_OK(mp_forkserver_start());
  char name[64], aname[80];
  bare_name(name, sizeof name, "val");
  snprintf(aname, sizeof aname, "%s-arr", name);
  mp_value_t *v;
  mp_array_t *a;
  int32_t init = 42;
  ASSERT_OK(mp_value_create(&v, MP_TYPE_I32, &init, &(mp_value_opts_t){.name = name}));
  ASSERT_OK(mp_array_create(&a, MP_TYPE_I64, 3, NULL, &(mp_array_opts_t){.name = aname}));
  ASSERT(mp_value_name(v) && mp_value_name(v)[0] == '/');
  ASSERT_STR_EQ(mp_value_name(v) + 1, name);
  mp_process_t *p;
  ASSERT_OK(mp_process_create(&p, bump_named, name, strlen(name),
                              &(mp_process_opts_t){.start_method = MP_START_FORKSERVER}));
  ASSERT_OK(mp_process_start(p));
  mpt_join_ok(p);
  ASSERT_OK(mp_process_destroy(p));
  int64_t x;
  ASSERT_OK(mp_value_get_i64(v, &x));
  ASSERT_EQ(x, 47);
  ASSERT_OK(mp_array_get_i64(a, 2, &x));
  ASSERT_EQ(x, 7);

  /* Errors. */
  mp_value_t *v2;
  mp_array_t *a2;
  ASSERT_ERR(mp_value_create(&v2, MP_TYPE_I32, NULL, &(mp_value_opts_t){.name = name}),
             MP_EEXIST);
  ASSERT_ERR(mp_value_open(&v2, aname), MP_EINVAL); /* 3 elements */
  ASSERT_ERR(mp_value_open(NULL, name), MP_EINVAL);
  ASSERT_ERR(mp_array_open(&a2, NULL), MP_EINVAL);
  mp_queue_t *q;
  ASSERT_OK(mp_queue_create(&q, NULL));
  ASSERT_ERR(mp_array_open(&a2, mp_queue_name(q)), MP_EINVAL); /* not an array */
  ASSERT_OK(mp_queue_destroy(q));
  mp_value_t *anon;
  ASSERT_OK(mp_value_create(&anon, MP_TYPE_F64, NULL, NULL));
  ASSERT(mp_value_name(anon) == NULL);
  ASSERT_OK(mp_value_destroy(anon));
  /* The creator's destroy removes the names. */
  ASSERT_OK(mp_value_destroy(v));
  ASSERT_OK(mp_array_destroy(a));
  ASSERT_ERR(mp_value_open(&v2, name), MP_ENOENT);
  ASSERT_ERR(mp_array_open(&a2, aname), MP_ENOENT);
  ASSERT_OK(mp_forkserver_stop());
}

/* The README's example, as printed there. */
TEST(readme_example_runs) {
  char *out = mpt_run_example("readme_queue", 0);
  ASSERT_STR_EQ(out, "got: hello 0\ngot: hello 1\ngot: hello 2\n");
  free(out);
}
