/* Tests of the shm part: raw blocks, values and arrays, named segments. */
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runner.h"

TEST(raw_shared_with_children) {
  long *p;
  ASSERT_OK(mp_raw_alloc((void **)&p, 1000 * sizeof *p));
  ASSERT_EQ((uintptr_t)p % 64, 0);
  for (int i = 0; i < 1000; i++)
    ASSERT_EQ(p[i], 0);
  pid_t pid = fork();
  if (pid == 0) {
    for (int i = 0; i < 1000; i++)
      p[i] = i * 3;
    _exit(0);
  }
  ASSERT_EQ(mpt_wait_exit(pid), 0);
  for (int i = 0; i < 1000; i++)
    ASSERT_EQ(p[i], i * 3);
  ASSERT_OK(mp_raw_free(p));
  ASSERT_OK(mp_raw_free(NULL));
}

TEST(raw_errors) {
  void *p;
  char local[128];
  ASSERT_ERR(mp_raw_alloc(NULL, 8), MP_EINVAL);
  ASSERT_ERR(mp_raw_alloc(&p, 0), MP_EINVAL);
  ASSERT_ERR(mp_raw_alloc(&p, SIZE_MAX), MP_EINVAL);
  ASSERT_ERR(mp_raw_free(local + 1), MP_EINVAL);
  ASSERT_OK(mp_raw_alloc(&p, 10));
  ASSERT_ERR(mp_raw_free((char *)p + 8), MP_EINVAL);
  ASSERT_OK(mp_raw_free(p));
}

TEST(value_locked_counter_processes) {
  int64_t zero = 0;
  mp_value_t *v;
  ASSERT_OK(mp_value_create(&v, MP_TYPE_I64, &zero, NULL));
  mp_rlock_t *lock;
  ASSERT_OK(mp_value_get_lock(v, &lock));
  pid_t pids[4];
  for (int i = 0; i < 4; i++)
    if ((pids[i] = fork()) == 0) {
      for (int k = 0; k < 5000; k++) {
        mp_rlock_acquire(lock, MP_FOREVER);
        int64_t x;
        mp_value_get_i64(v, &x); /* the RLock lets get/set nest */
        mp_value_set_i64(v, x + 1);
        mp_rlock_release(lock);
      }
      _exit(0);
    }
  for (int i = 0; i < 4; i++)
    ASSERT_EQ(mpt_wait_exit(pids[i]), 0);
  int64_t x = 0;
  ASSERT_OK(mp_value_get_i64(v, &x));
  ASSERT_EQ(x, 20000);
  ASSERT_EQ(*(int64_t *)mp_value_ptr(v), 20000);
  ASSERT_OK(mp_value_destroy(v));
}

TEST(value_types_and_errors) {
  mp_value_t *v;
  double d = 2.5;
  ASSERT_OK(mp_value_create(&v, MP_TYPE_F64, &d, NULL));
  double out = 0;
  ASSERT_OK(mp_value_get_f64(v, &out));
  ASSERT(out == 2.5);
  ASSERT_OK(mp_value_set_f64(v, -1.25));
  int64_t i = 0;
  ASSERT_OK(mp_value_get_i64(v, &i));
  ASSERT_EQ(i, -1);
  ASSERT_OK(mp_value_get_f64(v, &out));
  ASSERT(out == -1.25);
  ASSERT_OK(mp_value_destroy(v));
  mp_value_opts_t raw = {.raw = true};
  ASSERT_OK(mp_value_create(&v, MP_TYPE_U8, NULL, &raw));
  mp_rlock_t *lock;
  ASSERT_ERR(mp_value_get_lock(v, &lock), MP_ENOTSUP);
  ASSERT_OK(mp_value_set_i64(v, 300)); /* wraps like a C cast */
  ASSERT_OK(mp_value_get_i64(v, &i));
  ASSERT_EQ(i, 300 & 255);
  ASSERT_OK(mp_value_destroy(v));
  ASSERT_ERR(mp_value_create(NULL, MP_TYPE_I32, NULL, NULL), MP_EINVAL);
  ASSERT_ERR(mp_value_create(&v, (mp_type_t)42, NULL, NULL), MP_EINVAL);
  ASSERT_ERR(mp_value_get_i64(NULL, &i), MP_EINVAL);
  ASSERT_ERR(mp_value_set_i64(NULL, 1), MP_EINVAL);
  ASSERT_ERR(mp_value_get_f64(NULL, &out), MP_EINVAL);
  ASSERT_ERR(mp_value_set_f64(NULL, 1), MP_EINVAL);
  ASSERT_ERR(mp_value_get_lock(NULL, &lock), MP_EINVAL);
  ASSERT(mp_value_ptr(NULL) == NULL);
  ASSERT_OK(mp_value_destroy(NULL));
  long local[16] = {0};
  ASSERT_ERR(mp_value_destroy((mp_value_t *)(void *)local), MP_EINVAL);
}

TEST(array_basic) {
  int32_t init[5] = {1, 2, 3, 4, 5};
  mp_array_t *a;
  ASSERT_OK(mp_array_create(&a, MP_TYPE_I32, 5, init, NULL));
  ASSERT_EQ(mp_array_len(a), 5);
  int32_t *data = mp_array_data(a);
  ASSERT_EQ((uintptr_t)data % 64, 0);
  pid_t pid = fork();
  if (pid == 0) {
    for (size_t i = 0; i < 5; i++)
      mp_array_set_i64(a, i, -(int64_t)i);
    _exit(0);
  }
  ASSERT_EQ(mpt_wait_exit(pid), 0);
  for (int i = 0; i < 5; i++)
    ASSERT_EQ(data[i], -i);
  int64_t x;
  double d;
  ASSERT_ERR(mp_array_get_i64(a, 5, &x), MP_ERANGE);
  ASSERT_ERR(mp_array_set_i64(a, 5, 1), MP_ERANGE);
  ASSERT_ERR(mp_array_get_f64(a, 99, &d), MP_ERANGE);
  ASSERT_ERR(mp_array_set_f64(a, 99, 1), MP_ERANGE);
  ASSERT_ERR(mp_array_get_i64(a, 0, NULL), MP_EINVAL);
  ASSERT_OK(mp_array_set_f64(a, 1, 7.9));
  ASSERT_OK(mp_array_get_f64(a, 1, &d));
  ASSERT(d == 7.0);
  mp_rlock_t *lock;
  ASSERT_OK(mp_array_get_lock(a, &lock));
  ASSERT_ERR(mp_array_get_lock(a, NULL), MP_EINVAL);
  ASSERT_OK(mp_array_destroy(a));
  ASSERT_ERR(mp_array_create(&a, MP_TYPE_I32, 0, NULL, NULL), MP_EINVAL);
  ASSERT_ERR(mp_array_create(&a, MP_TYPE_I64, SIZE_MAX / 4, NULL, NULL),
             MP_EINVAL);
  ASSERT(mp_array_data(NULL) == NULL);
  ASSERT_EQ(mp_array_len(NULL), 0);
  ASSERT_OK(mp_array_destroy(NULL));
}

/* A process killed holding a Value's lock: the next get reports it. */
TEST(value_lock_owner_dead) {
  mp_value_t *v;
  ASSERT_OK(mp_value_create(&v, MP_TYPE_I32, NULL, NULL));
  mp_rlock_t *lock;
  ASSERT_OK(mp_value_get_lock(v, &lock));
  pid_t pid = fork();
  if (pid == 0) {
    mp_rlock_acquire(lock, MP_FOREVER);
    mp_value_set_i64(v, 5);
    raise(SIGKILL);
  }
  ASSERT_EQ(mpt_wait_exit(pid), 128 + SIGKILL);
  int64_t x = 0;
  ASSERT_ERR(mp_value_get_i64(v, &x), MP_EOWNERDEAD);
  ASSERT_EQ(x, 5);
  ASSERT_ERR(mp_rlock_acquire(lock, 0), MP_EOWNERDEAD);
  ASSERT_OK(mp_rlock_consistent(lock));
  ASSERT_OK(mp_rlock_release(lock));
  ASSERT_OK(mp_value_get_i64(v, &x));
  ASSERT_OK(mp_value_destroy(v));
}

TEST(shm_create_open_unlink) {
  mp_shm_t *s, *s2;
  ASSERT_OK(mp_shm_create(&s, 10000, NULL));
  const char *name = mp_shm_name(s);
  ASSERT(strncmp(name, "/mp-", 4) == 0);
  ASSERT_EQ(strlen(name), 4 + 16);
  ASSERT_EQ(mp_shm_size(s), 10000);
  char *buf = mp_shm_buf(s);
  for (int i = 0; i < 10000; i++)
    ASSERT_EQ(buf[i], 0);
  memcpy(buf, "hello", 6);
  pid_t pid = fork();
  if (pid == 0) {
    mp_shm_t *c;
    if (mp_shm_open(&c, name) != 0)
      _exit(1);
    if (mp_shm_size(c) != 10000 || strcmp(mp_shm_buf(c), "hello") != 0)
      _exit(2);
    memcpy(mp_shm_buf(c), "world", 6);
    mp_shm_close(c);
    _exit(0);
  }
  ASSERT_EQ(mpt_wait_exit(pid), 0);
  ASSERT_STR_EQ(buf, "world");
  ASSERT_OK(mp_shm_open(&s2, name + 1)); /* without the slash, as Python */
  ASSERT_STR_EQ(mp_shm_buf(s2), "world");
  ASSERT_OK(mp_shm_unlink(s2));
  ASSERT(!mpt_shm_exists(name));
  ASSERT_ERR(mp_shm_unlink(s2), MP_ENOENT);
  /* Mappings outlive the name. */
  ASSERT_STR_EQ(buf, "world");
  ASSERT_OK(mp_shm_close(s2));
  mp_shm_t *s3;
  ASSERT_ERR(mp_shm_open(&s3, name), MP_ENOENT);
  ASSERT_OK(mp_shm_destroy(s));
}

/* A process that did not inherit anything reads the segment by name. */
TEST(shm_unrelated_process) {
  mp_shm_t *s;
  ASSERT_OK(mp_shm_create(&s, 64, NULL));
  memcpy(mp_shm_buf(s), "from-c", 7);
  char cmd[256];
  snprintf(cmd, sizeof cmd,
           "python3 -c \"import sys; sys.stdout.write(open('/dev/shm%s','rb')"
           ".read(6).decode())\"",
           mp_shm_name(s));
  int st = 0;
  char *out = mpt_run_cmd(cmd, &st);
  ASSERT_EQ(st, 0);
  ASSERT_STR_EQ(out, "from-c");
  free(out);
  ASSERT_OK(mp_shm_destroy(s));
}

TEST(shm_errors_excl_mode) {
  char name[64];
  snprintf(name, sizeof name, "/mp-shmtest-%d", (int)getpid());
  mode_t old = umask(0);
  mp_shm_opts_t o = {.name = name};
  mp_shm_t *s, *s2;
  ASSERT_OK(mp_shm_create(&s, 100, &o));
  umask(old);
  struct stat st;
  char path[128];
  snprintf(path, sizeof path, "/dev/shm%s", name);
  ASSERT_EQ(stat(path, &st), 0);
  ASSERT_EQ(st.st_mode & 0777, 0600);
  ASSERT_STR_EQ(mp_shm_name(s), name);
  ASSERT_ERR(mp_shm_create(&s2, 100, &o), MP_EEXIST);
  ASSERT_OK(mp_shm_destroy(s));
  ASSERT(!mpt_shm_exists(name));
  ASSERT_ERR(mp_shm_open(&s2, name), MP_ENOENT);
  ASSERT_ERR(mp_shm_open(&s2, NULL), MP_EINVAL);
  ASSERT_ERR(mp_shm_open(&s2, "a/b"), MP_EINVAL);
  ASSERT_ERR(mp_shm_open(NULL, name), MP_EINVAL);
  ASSERT_ERR(mp_shm_create(&s2, 0, NULL), MP_EINVAL);
  ASSERT_ERR(mp_shm_create(NULL, 10, NULL), MP_EINVAL);
  mp_shm_opts_t bad = {.name = "x/y"};
  ASSERT_ERR(mp_shm_create(&s2, 10, &bad), MP_EINVAL);
  char longname[100];
  memset(longname, 'n', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  mp_shm_opts_t lng = {.name = longname};
  ASSERT_ERR(mp_shm_create(&s2, 10, &lng), MP_ENAMETOOLONG);
  ASSERT_ERR(mp_shm_unlink(NULL), MP_EINVAL);
  ASSERT(mp_shm_buf(NULL) == NULL);
  ASSERT_EQ(mp_shm_size(NULL), 0);
  ASSERT(mp_shm_name(NULL) == NULL);
  ASSERT_OK(mp_shm_close(NULL));
  ASSERT_OK(mp_shm_destroy(NULL));
}

/* The creator is SIGKILLed: its segments disappear, except a kept one. */
TEST(shm_killed_creator_leaves_nothing) {
  for (int round = 0; round < 5; round++) {
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    pid_t pid = fork();
    if (pid == 0) {
      close(p[0]);
      mp_shm_t *a, *b;
      mp_shm_opts_t keep = {.keep = true};
      if (mp_shm_create(&a, 4096, NULL) || mp_shm_create(&b, 4096, &keep))
        _exit(1);
      char names[160];
      snprintf(names, sizeof names, "%s %s\n", mp_shm_name(a), mp_shm_name(b));
      if (write(p[1], names, strlen(names)) < 0)
        _exit(2);
      pause();
      _exit(0);
    }
    close(p[1]);
    char buf[160] = {0};
    ASSERT(read(p[0], buf, sizeof buf - 1) > 0);
    close(p[0]);
    char an[64], bn[64];
    ASSERT_EQ(sscanf(buf, "%63s %63s", an, bn), 2);
    ASSERT_EQ(mpt_kill_reap(pid), 128 + SIGKILL);
    for (int i = 0; i < 500 && mpt_shm_exists(an); i++)
      mpt_sleep_ms(10);
    ASSERT(!mpt_shm_exists(an));
    ASSERT(mpt_shm_exists(bn));
    mp_shm_t *b;
    ASSERT_OK(mp_shm_open(&b, bn));
    ASSERT_OK(mp_shm_unlink(b));
    ASSERT_OK(mp_shm_destroy(b));
    ASSERT(!mpt_shm_exists(bn));
  }
}

/* Sync objects placed inside a named segment work across processes. */
TEST(shm_holds_sync_objects) {
  typedef struct {
    mp_lock_t lock;
    mp_event_t done;
    long n;
  } sh_t;
  mp_shm_t *s;
  ASSERT_OK(mp_shm_create(&s, sizeof(sh_t), NULL));
  sh_t *sh = mp_shm_buf(s);
  mp_lock_init(&sh->lock);
  mp_event_init(&sh->done);
  char name[64];
  snprintf(name, sizeof name, "%s", mp_shm_name(s));
  pid_t pids[2];
  for (int i = 0; i < 2; i++)
    if ((pids[i] = fork()) == 0) {
      mp_shm_t *c;
      if (mp_shm_open(&c, name))
        _exit(1);
      sh_t *x = mp_shm_buf(c);
      for (int k = 0; k < 10000; k++) {
        mp_lock_acquire(&x->lock, MP_FOREVER);
        x->n++;
        mp_lock_release(&x->lock);
      }
      mp_shm_close(c);
      _exit(0);
    }
  for (int i = 0; i < 2; i++)
    ASSERT_EQ(mpt_wait_exit(pids[i]), 0);
  ASSERT_EQ(sh->n, 20000);
  ASSERT_OK(mp_shm_destroy(s));
}

/* A creator that just exits (no destroy) leaves no segment either. */
TEST(shm_creator_exit_removes) {
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    mp_shm_t *s;
    mp_lock_t *l;
    if (mp_shm_create(&s, 100, NULL) || mp_lock_create(&l, NULL))
      _exit(1);
    char names[160];
    snprintf(names, sizeof names, "%s %s\n", mp_shm_name(s), mp_lock_name(l));
    if (write(p[1], names, strlen(names)) < 0)
      _exit(2);
    _exit(0);
  }
  close(p[1]);
  char buf[160] = {0};
  ASSERT(read(p[0], buf, sizeof buf - 1) > 0);
  close(p[0]);
  ASSERT_EQ(mpt_wait_exit(pid), 0);
  char sn[64], ln[64];
  ASSERT_EQ(sscanf(buf, "%63s %63s", sn, ln), 2);
  for (int i = 0; i < 500 && (mpt_shm_exists(sn) || mpt_shm_exists(ln)); i++)
    mpt_sleep_ms(10);
  ASSERT(!mpt_shm_exists(sn));
  ASSERT(!mpt_shm_exists(ln));
}

/* ---- trust boundary: who may open a segment, full /dev/shm ---------------- */

static void path_of(char *path, size_t cap, const char *name) {
  snprintf(path, cap, "/dev/shm%s", name[0] == '/' ? name : "/");
  if (name[0] != '/')
    strncat(path, name, cap - strlen(path) - 1);
}

/* Another user's segment, or one others may write, is refused: the opener
 * could be steered by whoever writes it. */
TEST(shm_open_refuses_foreign_or_shared_mode) {
  mp_shm_t *s, *s2;
  ASSERT_OK(mp_shm_create(&s, 4096, NULL));
  char path[128];
  path_of(path, sizeof path, mp_shm_name(s));
  ASSERT_OK(mp_shm_open(&s2, mp_shm_name(s)));
  ASSERT_OK(mp_shm_close(s2));
  /* Owned by another uid (as root we can hand it over). */
  ASSERT_EQ(chown(path, 65534, (gid_t)-1), 0);
  ASSERT_ERR(mp_shm_open(&s2, mp_shm_name(s)), MP_EACCES);
  ASSERT_EQ(chown(path, geteuid(), (gid_t)-1), 0);
  /* Ours, but group or others may write it. */
  ASSERT_EQ(chmod(path, 0666), 0);
  ASSERT_ERR(mp_shm_open(&s2, mp_shm_name(s)), MP_EACCES);
  ASSERT_EQ(chmod(path, 0640), 0);
  ASSERT_ERR(mp_shm_open(&s2, mp_shm_name(s)), MP_EACCES);
  ASSERT_EQ(chmod(path, 0600), 0);
  ASSERT_OK(mp_shm_open(&s2, mp_shm_name(s)));
  ASSERT_OK(mp_shm_close(s2));
  ASSERT_OK(mp_shm_destroy(s));
}

/* The same check covers every named sync object. */
TEST(named_lock_refuses_foreign_owner) {
  char name[64];
  snprintf(name, sizeof name, "/mp-trustlock-%d", (int)getpid());
  mp_lock_t *l, *l2;
  ASSERT_OK(mp_lock_create(&l, &(mp_sync_opts_t){.name = name}));
  char path[128];
  path_of(path, sizeof path, name);
  ASSERT_EQ(chown(path, 65534, (gid_t)-1), 0);
  ASSERT_ERR(mp_lock_open(&l2, name), MP_EACCES);
  ASSERT_EQ(chown(path, geteuid(), (gid_t)-1), 0);
  ASSERT_EQ(chmod(path, 0606), 0);
  ASSERT_ERR(mp_lock_open(&l2, name), MP_EACCES);
  ASSERT_EQ(chmod(path, 0600), 0);
  ASSERT_OK(mp_lock_open(&l2, name));
  ASSERT_OK(mp_lock_destroy(l2));
  ASSERT_OK(mp_lock_destroy(l));
  ASSERT(!mpt_shm_exists(name));
}

static void shm_bigger_than_dev_shm(void) {
  mp_shm_t *s;
  /* 8 MiB on a 4 MiB /dev/shm: refused now, not a SIGBUS on first touch. */
  int r = mp_shm_create(&s, (size_t)8 << 20, NULL);
  if (r == 0)
    memset(mp_shm_buf(s), 1, mp_shm_size(s));
  ASSERT_ERR(r, MP_ENOSPC);
  /* What fits still works. */
  ASSERT_OK(mp_shm_create(&s, (size_t)1 << 20, NULL));
  memset(mp_shm_buf(s), 1, mp_shm_size(s));
  ASSERT_OK(mp_shm_destroy(s));
}

TEST(shm_full_dev_shm_enospc) {
  int st = mpt_with_small_dev_shm((size_t)4 << 20, shm_bigger_than_dev_shm);
  ASSERT(WIFEXITED(st));
  ASSERT_EQ(WEXITSTATUS(st), 0);
}
