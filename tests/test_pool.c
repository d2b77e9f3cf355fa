/* Pool tests. Every behaviour is checked on both backends: each body takes
 * the backend and has a _proc and a _thread case, and a _fs case for process
 * workers started by the fork server. Crash cases are processes only (a
 * thread that crashes takes its process with it), with a _fs case too.
 * Fork-server workers see the memory of the program as it was when the
 * server started, in the first mp_pool_create: shared counters are mapped
 * and globals set before that. */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "runner.h"

typedef mp_pool_backend_t be_t;

/* Process workers started by the fork server. */
#define BE_FS ((be_t)100)

static void set_backend(mp_pool_opts_t *o, be_t be) {
  o->backend = be == BE_FS ? MP_POOL_PROCESSES : be;
  o->start_method = be == BE_FS ? MP_START_FORKSERVER : MP_START_FORK;
}

/* After a _fs case: the server and its socket must not count as leaks. */
static void fs_done(void) {
  ASSERT_OK(mp_forkserver_stop());
}

static mp_pool_t *make_pool(be_t be, int workers) {
  mp_pool_opts_t o = {0};
  o.workers = workers;
  set_backend(&o, be);
  mp_pool_t *p = NULL;
  ASSERT_OK(mp_pool_create(&p, &o));
  return p;
}

/* Shared counters visible to forked workers and to the test. */
static _Atomic long *shared_counters(size_t n) {
  void *m = mmap(NULL, n * sizeof(long), PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT(m != MAP_FAILED);
  return m;
}

static long worker_id(void) {
  /* A pid for a process worker, a tid for a thread: both change when the
   * worker is replaced. */
  return (long)syscall(SYS_gettid);
}

static int task_square(const void *arg, size_t len, mp_buf_t *res, void *ctx) {
  int64_t x;
  if (len != sizeof x)
    return mp_task_error(res, 7, "bad length %zu", len);
  memcpy(&x, arg, sizeof x);
  x *= x;
  return mp_buf_set(res, &x, sizeof x);
}

/* The pool still serves a task (after a crash case); then it is closed,
 * joined and destroyed. */
static void serves_then_close(mp_pool_t *p) {
  int64_t x = 9;
  mp_buf_t b = MP_BUF_INIT;
  ASSERT_OK(mp_pool_apply(p, task_square, &x, 8, &b, NULL));
  ASSERT_EQ(*(int64_t *)b.data, 81);
  mp_buf_free(&b);
  ASSERT_OK(mp_pool_close(p));
  ASSERT_OK(mp_pool_join(p, MP_FOREVER));
  ASSERT_OK(mp_pool_destroy(p));
}

static int task_fail(const void *arg, size_t len, mp_buf_t *res, void *ctx) {
  return mp_task_error(res, 42, "failed on %.*s", (int)len, (const char *)arg);
}

static int task_sleep(const void *arg, size_t len, mp_buf_t *res, void *ctx) {
  int ms;
  memcpy(&ms, arg, sizeof ms);
  mpt_sleep_ms(ms);
  return mp_buf_set(res, &ms, sizeof ms);
}

static int task_id(const void *arg, size_t len, mp_buf_t *res, void *ctx) {
  long id = worker_id();
  int ms = 0;
  if (len == sizeof ms)
    memcpy(&ms, arg, sizeof ms);
  if (ms)
    mpt_sleep_ms(ms);
  return mp_buf_set(res, &id, sizeof id);
}

static int map_square(const void *item, void *result, void *ctx) {
  int64_t x = *(const int64_t *)item;
  *(int64_t *)result = x * x;
  return 0;
}

static int map_fail_odd(const void *item, void *result, void *ctx) {
  int64_t x = *(const int64_t *)item;
  *(int64_t *)result = -x;
  return (x % 2) ? (int)x : 0;
}

/* ---- errors -------------------------------------------------------------- */

static int noop_map(const void *item, void *result, void *ctx) {
  return 0;
}

static void body_errors(be_t be) {
  mp_pool_t *p = NULL;
  mp_pool_opts_t o = {0};
  set_backend(&o, be);
  ASSERT_ERR(mp_pool_create(NULL, &o), MP_EINVAL);
  o.workers = -1;
  ASSERT_ERR(mp_pool_create(&p, &o), MP_EINVAL);
  o.workers = 1;
  o.backend = (mp_pool_backend_t)7;
  ASSERT_ERR(mp_pool_create(&p, &o), MP_EINVAL);
  set_backend(&o, be);
  o.start_method = (mp_start_method_t)9;
  ASSERT_ERR(mp_pool_create(&p, &o), MP_EINVAL);
  ASSERT(p == NULL);
  /* The thread backend ignores the start method. */
  o.start_method = MP_START_FORKSERVER;
  if (be == MP_POOL_THREADS) {
    ASSERT_OK(mp_pool_create(&p, &o));
    ASSERT_OK(mp_pool_destroy(p));
    p = NULL;
  }

  p = make_pool(be, 2);
  ASSERT_EQ(mp_pool_size(p), 2);
  ASSERT_ERR(mp_pool_size(NULL), MP_EINVAL);
  mp_result_t *r = NULL;
  int64_t x = 3;
  ASSERT_ERR(mp_pool_apply_async(NULL, task_square, &x, 8, NULL, &r),
             MP_EINVAL);
  ASSERT_ERR(mp_pool_apply_async(p, NULL, &x, 8, NULL, &r), MP_EINVAL);
  ASSERT_ERR(mp_pool_apply_async(p, task_square, NULL, 8, NULL, &r), MP_EINVAL);
  ASSERT_ERR(mp_pool_apply(NULL, task_square, &x, 8, NULL, NULL), MP_EINVAL);
  ASSERT_ERR(mp_pool_map(NULL, map_square, &x, 1, 8, &x, 8, 0), MP_EINVAL);
  ASSERT_ERR(mp_pool_map(p, NULL, &x, 1, 8, &x, 8, 0), MP_EINVAL);
  ASSERT_ERR(mp_pool_map(p, map_square, NULL, 1, 8, &x, 8, 0), MP_EINVAL);
  ASSERT_ERR(mp_pool_map(p, map_square, &x, 1, 0, &x, 8, 0), MP_EINVAL);
  ASSERT_ERR(mp_pool_map(p, map_square, &x, 1, 8, NULL, 8, 0), MP_EINVAL);
  ASSERT_ERR(mp_pool_map_async(p, NULL, &x, 1, 8, &x, 8, 0, NULL, &r),
             MP_EINVAL);
  ASSERT_ERR(mp_pool_starmap(p, NULL, &x, 1, 8, &x, 8, 0), MP_EINVAL);
  ASSERT_ERR(
      mp_pool_starmap_async(NULL, map_square, &x, 1, 8, &x, 8, 0, NULL, &r),
      MP_EINVAL);
  mp_imap_t *it = NULL;
  ASSERT_ERR(mp_pool_imap(p, NULL, &x, 1, 8, 8, NULL, &it), MP_EINVAL);
  ASSERT_ERR(mp_pool_imap(p, map_square, &x, 1, 8, 8, NULL, NULL), MP_EINVAL);
  ASSERT_ERR(mp_pool_imap_unordered(NULL, map_square, &x, 1, 8, 8, NULL, &it),
             MP_EINVAL);
  ASSERT_ERR(mp_pool_imap(p, map_square, &x, 1, 0, 8, NULL, &it), MP_EINVAL);
  ASSERT_ERR(mp_pool_imap(p, map_square, NULL, 1, 8, 8, NULL, &it), MP_EINVAL);
  ASSERT_ERR(
      mp_pool_imap(p, map_square, &x, 1, MP_POOL_MAX_ARG + 1, 8, NULL, &it),
      MP_EMSGSIZE);
  ASSERT_ERR(mp_pool_map(p, map_square, &x, 1, MP_POOL_MAX_ARG + 1, &x, 8, 0),
             MP_EMSGSIZE);
  ASSERT_ERR(mp_pool_map(p, map_square, &x, 1, 8, &x, MP_POOL_MAX_ARG, 0),
             MP_EMSGSIZE);
  ASSERT_ERR(mp_imap_next(NULL, NULL, NULL, 0), MP_EINVAL);
  ASSERT_ERR(mp_imap_destroy(NULL), MP_EINVAL);
  ASSERT_ERR(mp_result_get(NULL, 0, NULL, NULL), MP_EINVAL);
  ASSERT_ERR(mp_result_wait(NULL, 0), MP_EINVAL);
  ASSERT_ERR(mp_result_ready(NULL), MP_EINVAL);
  ASSERT_ERR(mp_result_successful(NULL), MP_EINVAL);
  ASSERT_ERR(mp_result_task_error(NULL, NULL, NULL), MP_EINVAL);
  ASSERT_ERR(mp_result_destroy(NULL), MP_EINVAL);
  ASSERT_EQ(mp_result_waitable(NULL).fd, -1);
  ASSERT_ERR(mp_pool_fd(NULL), MP_EINVAL);
  ASSERT_ERR(mp_pool_close(NULL), MP_EINVAL);
  ASSERT_ERR(mp_pool_terminate(NULL), MP_EINVAL);
  ASSERT_ERR(mp_pool_join(NULL, 0), MP_EINVAL);
  ASSERT_ERR(mp_pool_destroy(NULL), MP_EINVAL);
  ASSERT_ERR(mp_pool_join(p, MP_FOREVER), MP_EINVAL); /* not closed */
  ASSERT_OK(mp_pool_apply_async(p, task_square, &x, 8, NULL, &r));
  ASSERT_ERR(mp_result_get(r, -5, NULL, NULL), MP_EINVAL);
  ASSERT_OK(mp_result_get(r, MP_FOREVER, NULL, NULL));
  ASSERT_ERR(mp_result_task_error(r, NULL, NULL), MP_EINVAL); /* succeeded */
  ASSERT_OK(mp_result_destroy(r));
  ASSERT_ERR(mp_pool_join(p, -3), MP_EINVAL);
  ASSERT_OK(mp_pool_close(p));
  ASSERT_OK(mp_pool_close(p));
  ASSERT_ERR(mp_pool_apply_async(p, task_square, &x, 8, NULL, &r), MP_ECLOSED);
  ASSERT_ERR(mp_pool_apply(p, task_square, &x, 8, NULL, NULL), MP_ECLOSED);
  ASSERT_ERR(mp_pool_map(p, map_square, &x, 1, 8, &x, 8, 0), MP_ECLOSED);
  ASSERT_ERR(mp_pool_imap(p, map_square, &x, 1, 8, 8, NULL, &it), MP_ECLOSED);
  ASSERT_OK(mp_pool_join(p, MP_FOREVER));
  ASSERT_OK(mp_pool_join(p, MP_FOREVER));
  ASSERT_OK(mp_pool_destroy(p));

  mp_buf_t b = MP_BUF_INIT;
  ASSERT_ERR(mp_buf_set(NULL, "a", 1), MP_EINVAL);
  ASSERT_ERR(mp_buf_set(&b, NULL, 1), MP_EINVAL);
  ASSERT_ERR(mp_buf_append(&b, NULL, 1), MP_EINVAL);
  ASSERT_ERR(mp_buf_reserve(&b, 1, NULL), MP_EINVAL);
  ASSERT_ERR(mp_buf_commit(&b, 1), MP_EINVAL);
  ASSERT_ERR(mp_buf_printf(NULL, "x"), MP_EINVAL);
  ASSERT_ERR(mp_buf_free(NULL), MP_EINVAL);
  ASSERT_ERR(mp_pool_worker_index(), MP_EINVAL);
  (void)noop_map;
}
TEST(errors_proc) {
  body_errors(MP_POOL_PROCESSES);
}
TEST(errors_thread) {
  body_errors(MP_POOL_THREADS);
}
TEST(errors_fs) {
  body_errors(BE_FS);
  fs_done();
}

TEST(buf_helpers) {
  mp_buf_t b = MP_BUF_INIT;
  ASSERT_OK(mp_buf_set(&b, "abc", 3));
  ASSERT_OK(mp_buf_append(&b, "def", 3));
  ASSERT_EQ(b.len, 6);
  ASSERT(memcmp(b.data, "abcdef", 6) == 0);
  void *w;
  ASSERT_OK(mp_buf_reserve(&b, 100, &w));
  memset(w, 'x', 100);
  ASSERT_OK(mp_buf_commit(&b, 100));
  ASSERT_EQ(b.len, 106);
  ASSERT_OK(mp_buf_printf(&b, "n=%d", 5));
  ASSERT_STR_EQ(b.data, "n=5");
  ASSERT_EQ(b.len, 4);
  ASSERT_EQ(mp_task_error(&b, 0, "zero"), -1);
  ASSERT_STR_EQ(b.data, "zero");
  ASSERT_EQ(mp_task_error(NULL, 3, "x"), 3);
  ASSERT_OK(mp_buf_free(&b));
  ASSERT(b.data == NULL && b.len == 0);
}

/* ---- apply ----------------------------------------------------------------
 */

static void body_apply(be_t be) {
  mp_pool_t *p = make_pool(be, 2);
  mp_buf_t out = MP_BUF_INIT;
  int64_t x = 12;
  ASSERT_OK(mp_pool_apply(p, task_square, &x, sizeof x, &out, NULL));
  ASSERT_EQ(out.len, 8);
  ASSERT_EQ(*(int64_t *)out.data, 144);
  ASSERT_OK(mp_pool_apply(p, task_square, &x, sizeof x, NULL, NULL));
  int code = 0;
  ASSERT_ERR(mp_pool_apply(p, task_fail, "abc", 3, &out, &code), MP_ETASK);
  ASSERT_EQ(code, 42);
  ASSERT_STR_EQ(out.data, "failed on abc");
  ASSERT_ERR(mp_pool_apply(p, task_square, "abc", 3, &out, &code), MP_ETASK);
  ASSERT_EQ(code, 7);
  ASSERT_STR_EQ(out.data, "bad length 3");
  mp_buf_free(&out);
  ASSERT_OK(mp_pool_destroy(p));
}
TEST(apply_proc) {
  body_apply(MP_POOL_PROCESSES);
}
TEST(apply_thread) {
  body_apply(MP_POOL_THREADS);
}
TEST(apply_fs) {
  body_apply(BE_FS);
  fs_done();
}

static int task_big(const void *arg, size_t len, mp_buf_t *res, void *ctx) {
  size_t n;
  memcpy(&n, arg, sizeof n);
  void *w;
  int e = mp_buf_reserve(res, n, &w);
  if (e)
    return e;
  for (size_t i = 0; i < n; i++)
    ((uint8_t *)w)[i] = (uint8_t)(i * 7);
  return mp_buf_commit(res, n);
}

static void body_big_result(be_t be) {
  mp_pool_t *p = make_pool(be, 2);
  size_t sizes[] = {0, 1, 63, 64, 65, 512 * 1024, 3 * 1024 * 1024 + 5};
  for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
    mp_buf_t out = MP_BUF_INIT;
    ASSERT_OK(
        mp_pool_apply(p, task_big, &sizes[k], sizeof sizes[k], &out, NULL));
    ASSERT_EQ(out.len, sizes[k]);
    for (size_t i = 0; i < sizes[k]; i++)
      if (((uint8_t *)out.data)[i] != (uint8_t)(i * 7))
        ASSERT(0);
    mp_buf_free(&out);
  }
  /* Arguments above the record limit are refused, not truncated. */
  void *huge = calloc(1, 1 << 20);
  ASSERT_ERR(mp_pool_apply(p, task_big, huge, 1 << 20, NULL, NULL),
             MP_EMSGSIZE);
  free(huge);
  ASSERT_OK(mp_pool_destroy(p));
}
TEST(big_result_proc) {
  body_big_result(MP_POOL_PROCESSES);
}
TEST(big_result_thread) {
  body_big_result(MP_POOL_THREADS);
}
TEST(big_result_fs) {
  body_big_result(BE_FS);
  fs_done();
}

typedef struct {
  _Atomic int ok, err, last_err, last_code;
  _Atomic long sum;
  char msg[64];
} cbstate_t;

static void on_done(const void *data, size_t len, void *user) {
  cbstate_t *s = user;
  int64_t v = 0;
  if (len == sizeof v)
    memcpy(&v, data, sizeof v);
  s->sum += v;
  s->ok++;
}

static void on_error(int err, int code, const char *msg, void *user) {
  cbstate_t *s = user;
  s->last_err = err;
  s->last_code = code;
  snprintf(s->msg, sizeof s->msg, "%s", msg);
  s->err++;
}

static void body_apply_async(be_t be) {
  mp_pool_t *p = make_pool(be, 3);
  enum { N = 2000 };
  static mp_result_t *rs[N];
  cbstate_t st = {0};
  mp_async_opts_t cb = {on_done, on_error, &st};
  for (int64_t i = 0; i < N; i++)
    ASSERT_OK(mp_pool_apply_async(p, task_square, &i, sizeof i, &cb, &rs[i]));
  /* Results without a handle are freed by the pool. */
  for (int64_t i = 0; i < 100; i++)
    ASSERT_OK(mp_pool_apply_async(p, task_square, &i, sizeof i, &cb, NULL));
  ASSERT_OK(mp_pool_apply_async(p, task_fail, "zz", 2, &cb, NULL));
  long want = 0;
  for (int64_t i = 0; i < N; i++) {
    const void *d;
    size_t len;
    ASSERT_OK(mp_result_get(rs[i], MP_FOREVER, &d, &len));
    ASSERT_EQ(len, 8);
    ASSERT_EQ(*(const int64_t *)d, i * i);
    ASSERT_EQ(mp_result_ready(rs[i]), 1);
    ASSERT_EQ(mp_result_successful(rs[i]), 1);
    want += i * i;
    ASSERT_OK(mp_result_destroy(rs[i]));
  }
  for (int64_t i = 0; i < 100; i++)
    want += i * i;
  ASSERT_OK(mp_pool_close(p));
  ASSERT_OK(mp_pool_join(p, MP_FOREVER));
  /* join waits for the callbacks: each ran exactly once. */
  ASSERT_EQ(st.ok, N + 100);
  ASSERT_EQ(st.err, 1);
  ASSERT_EQ(st.sum, want);
  ASSERT_EQ(st.last_err, MP_ETASK);
  ASSERT_EQ(st.last_code, 42);
  ASSERT_STR_EQ(st.msg, "failed on zz");
  ASSERT_OK(mp_pool_destroy(p));
}
TEST(apply_async_proc) {
  body_apply_async(MP_POOL_PROCESSES);
}
TEST(apply_async_thread) {
  body_apply_async(MP_POOL_THREADS);
}
TEST(apply_async_fs) {
  body_apply_async(BE_FS);
  fs_done();
}

static void body_result_states(be_t be) {
  mp_pool_t *p = make_pool(be, 2);
  mp_result_t *r;
  int ms = 1000;
  ASSERT_OK(mp_pool_apply_async(p, task_sleep, &ms, sizeof ms, NULL, &r));
  ASSERT_EQ(mp_result_ready(r), 0);
  ASSERT_ERR(mp_result_successful(r), MP_EINVAL);
  ASSERT_ERR(mp_result_get(r, 0, NULL, NULL), MP_ETIMEDOUT);
  uint64_t t0 = mpt_now_ms();
  ASSERT_ERR(mp_result_wait(r, 50), MP_ETIMEDOUT);
  ASSERT(mpt_now_ms() - t0 >= 50);
  mp_waitable_t wt = mp_result_waitable(r);
  ASSERT(wt.fd >= 0);
  struct pollfd pf = {wt.fd, POLLIN, 0};
  ASSERT_EQ(poll(&pf, 1, 0), 0);
  ASSERT_EQ(poll(&pf, 1, 10000), 1);
  ASSERT_OK(mp_result_wait(r, MP_FOREVER));
  ASSERT_EQ(mp_result_successful(r), 1);
  ASSERT_EQ(mp_result_waitable(r).fd, wt.fd);
  ASSERT_OK(mp_result_destroy(r));

  /* The pool fd counts completions. */
  int pfd = mp_pool_fd(p);
  ASSERT(pfd >= 0);
  ASSERT_EQ(mp_pool_fd(p), pfd);
  int64_t x = 2;
  ASSERT_OK(mp_pool_apply_async(p, task_square, &x, sizeof x, NULL, &r));
  /* An event loop: wait for the fd, reset it, check its results. */
  struct pollfd pp = {pfd, POLLIN, 0};
  for (int rounds = 0; mp_result_ready(r) != 1; rounds++) {
    ASSERT(rounds < 100);
    ASSERT_EQ(poll(&pp, 1, 10000), 1);
    uint64_t v;
    ASSERT_EQ(read(pfd, &v, sizeof v), 8);
  }
  ASSERT_OK(mp_result_destroy(r));

  /* A failed task. */
  ASSERT_OK(mp_pool_apply_async(p, task_fail, "q", 1, NULL, &r));
  ASSERT_ERR(mp_result_get(r, MP_FOREVER, NULL, NULL), MP_ETASK);
  ASSERT_EQ(mp_result_successful(r), 0);
  int code;
  const char *msg;
  ASSERT_OK(mp_result_task_error(r, &code, &msg));
  ASSERT_EQ(code, 42);
  ASSERT_STR_EQ(msg, "failed on q");
  /* A result outlives its pool. */
  ASSERT_OK(mp_pool_destroy(p));
  ASSERT_ERR(mp_result_get(r, 0, NULL, NULL), MP_ETASK);
  ASSERT_OK(mp_result_destroy(r));
}
TEST(result_states_proc) {
  body_result_states(MP_POOL_PROCESSES);
}
TEST(result_states_thread) {
  body_result_states(MP_POOL_THREADS);
}
TEST(result_states_fs) {
  body_result_states(BE_FS);
  fs_done();
}

/* ---- map -------------------------------------------------------------- */

static void check_map(mp_pool_t *p, size_t n, size_t chunk) {
  int64_t *in = malloc((n + 1) * sizeof *in);
  int64_t *out = malloc((n + 1) * sizeof *out);
  for (size_t i = 0; i < n; i++)
    in[i] = (int64_t)i - 5;
  memset(out, 0xff, (n + 1) * sizeof *out);
  ASSERT_OK(mp_pool_map(p, map_square, in, n, 8, out, 8, chunk));
  for (size_t i = 0; i < n; i++)
    ASSERT_EQ(out[i], in[i] * in[i]);
  ASSERT_EQ(out[n], -1); /* nothing past the end */
  free(in);
  free(out);
}

static void body_map(be_t be) {
  mp_pool_t *p = make_pool(be, 3);
  size_t ns[] = {0, 1, 2, 3, 5, 100, 1000, 100003};
  size_t chunks[] = {0, 1, 2, 7, 1000000};
  for (size_t a = 0; a < sizeof ns / sizeof *ns; a++)
    for (size_t b = 0; b < sizeof chunks / sizeof *chunks; b++)
      if (ns[a] < 5000 || chunks[b] != 1)
        check_map(p, ns[a], chunks[b]);
  /* Errors: the first failing item's code; every other result written. */
  int64_t in[10], out[10];
  for (int i = 0; i < 10; i++)
    in[i] = i;
  ASSERT_ERR(mp_pool_map(p, map_fail_odd, in, 10, 8, out, 8, 3), MP_ETASK);
  for (int i = 0; i < 10; i++)
    ASSERT_EQ(out[i], -i);
  mp_result_t *r;
  ASSERT_OK(mp_pool_map_async(p, map_fail_odd, in, 10, 8, out, 8, 2, NULL, &r));
  ASSERT_ERR(mp_result_get(r, MP_FOREVER, NULL, NULL), MP_ETASK);
  int code;
  ASSERT_OK(mp_result_task_error(r, &code, NULL));
  ASSERT_EQ(code, 1);
  mp_result_destroy(r);
  /* map_async with a callback and no handle; result_size 0. */
  cbstate_t st = {0};
  mp_async_opts_t cb = {on_done, on_error, &st};
  ASSERT_OK(mp_pool_map_async(p, map_square, in, 10, 8, out, 8, 0, &cb, NULL));
  ASSERT_OK(mp_pool_map_async(p, map_square, in, 0, 8, out, 8, 0, &cb, NULL));
  ASSERT_OK(mp_pool_map(p, noop_map, in, 10, 8, NULL, 0, 0));
  ASSERT_OK(mp_pool_close(p));
  ASSERT_OK(mp_pool_join(p, MP_FOREVER));
  ASSERT_EQ(st.ok, 2);
  ASSERT_EQ(st.err, 0);
  ASSERT_OK(mp_pool_destroy(p));
}
TEST(map_proc) {
  body_map(MP_POOL_PROCESSES);
}
TEST(map_thread) {
  body_map(MP_POOL_THREADS);
}
TEST(map_fs) {
  body_map(BE_FS);
  fs_done();
}

typedef struct {
  int32_t a, b;
  char op;
} star_args_t;

static int star_fn(const void *item, void *result, void *ctx) {
  const star_args_t *s = item;
  *(int32_t *)result = s->op == '+' ? s->a + s->b : s->a * s->b;
  return 0;
}

static void body_starmap(be_t be) {
  mp_pool_t *p = make_pool(be, 2);
  star_args_t args[50];
  int32_t out[50];
  for (int i = 0; i < 50; i++)
    args[i] = (star_args_t){i, 3, (i % 2) ? '+' : '*'};
  ASSERT_OK(
      mp_pool_starmap(p, star_fn, args, 50, sizeof *args, out, sizeof *out, 0));
  for (int i = 0; i < 50; i++)
    ASSERT_EQ(out[i], (i % 2) ? i + 3 : i * 3);
  mp_result_t *r;
  memset(out, 0, sizeof out);
  ASSERT_OK(mp_pool_starmap_async(p, star_fn, args, 50, sizeof *args, out,
                                  sizeof *out, 4, NULL, &r));
  ASSERT_OK(mp_result_get(r, MP_FOREVER, NULL, NULL));
  ASSERT_EQ(out[49], 52);
  mp_result_destroy(r);
  ASSERT_OK(mp_pool_destroy(p));
}
TEST(starmap_proc) {
  body_starmap(MP_POOL_PROCESSES);
}
TEST(starmap_thread) {
  body_starmap(MP_POOL_THREADS);
}
TEST(starmap_fs) {
  body_starmap(BE_FS);
  fs_done();
}

/* ---- imap -----------------------------------------------------------------
 */

static int map_slow_first(const void *item, void *result, void *ctx) {
  int64_t x = *(const int64_t *)item;
  if (x == 0)
    mpt_sleep_ms(200);
  *(int64_t *)result = x * x;
  return x == 13 ? 99 : 0;
}

static void body_imap(be_t be) {
  mp_pool_t *p = make_pool(be, 3);
  enum { N = 3000 };
  int64_t *in = malloc(N * sizeof *in);
  for (int i = 0; i < N; i++)
    in[i] = i;
  size_t chunks[] = {0, 1, 3, 5000};
  for (size_t c = 0; c < 4; c++) {
    mp_imap_opts_t o = {0};
    o.chunksize = chunks[c];
    mp_imap_t *it;
    ASSERT_OK(mp_pool_imap(p, map_slow_first, in, N, 8, 8, &o, &it));
    for (size_t i = 0; i < N; i++) {
      int64_t v = -1;
      size_t idx = 99999;
      int e = mp_imap_next(it, &v, &idx, MP_FOREVER);
      ASSERT_EQ(idx, i);
      if (i == 13) {
        ASSERT_ERR(e, MP_ETASK);
      } else {
        ASSERT_OK(e);
        ASSERT_EQ(v, (int64_t)(i * i));
      }
    }
    ASSERT_ERR(mp_imap_next(it, NULL, NULL, MP_FOREVER), MP_ECLOSED);
    ASSERT_ERR(mp_imap_next(it, NULL, NULL, 0), MP_ECLOSED);
    ASSERT_OK(mp_imap_destroy(it));

    ASSERT_OK(mp_pool_imap_unordered(p, map_slow_first, in, N, 8, 8, &o, &it));
    char *seen = calloc(N, 1);
    size_t first = 99999;
    for (size_t i = 0; i < N; i++) {
      int64_t v = -1;
      size_t idx = 99999;
      int e = mp_imap_next(it, &v, &idx, MP_FOREVER);
      ASSERT(idx < N && !seen[idx]);
      if (i == 0)
        first = idx;
      seen[idx] = 1;
      if (idx == 13)
        ASSERT_ERR(e, MP_ETASK);
      else
        ASSERT_EQ(v, (int64_t)(idx * idx));
    }
    /* The slow item 0 does not come first when chunks are small. */
    if (chunks[c] == 1)
      ASSERT(first != 0);
    ASSERT_ERR(mp_imap_next(it, NULL, NULL, MP_FOREVER), MP_ECLOSED);
    free(seen);
    ASSERT_OK(mp_imap_destroy(it));
  }
  /* Empty input. */
  mp_imap_t *it;
  ASSERT_OK(mp_pool_imap(p, map_square, in, 0, 8, 8, NULL, &it));
  ASSERT_ERR(mp_imap_next(it, NULL, NULL, MP_FOREVER), MP_ECLOSED);
  ASSERT_OK(mp_imap_destroy(it));
  /* A timeout while the first item is slow. */
  ASSERT_OK(mp_pool_imap(p, map_slow_first, in, 4, 8, 8, NULL, &it));
  uint64_t t0 = mpt_now_ms();
  ASSERT_ERR(mp_imap_next(it, NULL, NULL, 50), MP_ETIMEDOUT);
  ASSERT(mpt_now_ms() - t0 >= 50);
  ASSERT_ERR(mp_imap_next(it, NULL, NULL, -4), MP_EINVAL);
  /* Destroyed with items in flight. */
  ASSERT_OK(mp_imap_destroy(it));
  free(in);
  ASSERT_OK(mp_pool_destroy(p));
}
TEST(imap_proc) {
  body_imap(MP_POOL_PROCESSES);
}
TEST(imap_thread) {
  body_imap(MP_POOL_THREADS);
}
TEST(imap_fs) {
  body_imap(BE_FS);
  fs_done();
}

typedef struct {
  int64_t next;
  int64_t max_read_ahead;
  int64_t returned;
  int64_t stop_at;
} endless_t;

static int endless_input(void *item, void *user) {
  endless_t *e = user;
  if (e->stop_at >= 0 && e->next == e->stop_at)
    return MP_EIO;
  *(int64_t *)item = e->next++;
  if (e->next - e->returned > e->max_read_ahead)
    e->max_read_ahead = e->next - e->returned;
  return 1;
}

static void body_imap_lazy(be_t be) {
  mp_pool_t *p = make_pool(be, 2);
  endless_t e = {0, 0, 0, -1};
  mp_imap_opts_t o = {0};
  o.chunksize = 4;
  o.max_inflight = 32;
  o.input = endless_input;
  o.input_user = &e;
  mp_imap_t *it;
  ASSERT_OK(mp_pool_imap(p, map_square, NULL, 0, 8, 8, &o, &it));
  for (int64_t i = 0; i < 5000; i++) {
    int64_t v;
    ASSERT_OK(mp_imap_next(it, &v, NULL, MP_FOREVER));
    ASSERT_EQ(v, i * i);
    e.returned++;
  }
  ASSERT(e.max_read_ahead <= 33);
  ASSERT_OK(mp_imap_destroy(it));
  /* An input error ends the iteration with that code, then MP_ECLOSED. */
  endless_t e2 = {0, 0, 0, 10};
  o.input_user = &e2;
  ASSERT_OK(mp_pool_imap_unordered(p, map_square, NULL, 0, 8, 8, &o, &it));
  int got = 0, err = 0;
  for (;;) {
    int r = mp_imap_next(it, NULL, NULL, MP_FOREVER);
    if (r == 0) {
      got++;
      continue;
    }
    if (r == MP_EIO) {
      err++;
      continue;
    }
    ASSERT_ERR(r, MP_ECLOSED);
    break;
  }
  ASSERT_EQ(got, 10);
  ASSERT_EQ(err, 1);
  ASSERT_OK(mp_imap_destroy(it));
  ASSERT_OK(mp_pool_destroy(p));
}
TEST(imap_lazy_proc) {
  body_imap_lazy(MP_POOL_PROCESSES);
}
TEST(imap_lazy_thread) {
  body_imap_lazy(MP_POOL_THREADS);
}
TEST(imap_lazy_fs) {
  body_imap_lazy(BE_FS);
  fs_done();
}

/* ---- workers --------------------------------------------------------------
 */

static _Atomic long *g_init_count;

static void count_init(void *arg) {
  (*g_init_count)++;
  ASSERT(arg == (void *)&g_init_count);
  ASSERT(mp_pool_worker_index() >= 0);
}

static int task_index(const void *arg, size_t len, mp_buf_t *res, void *ctx) {
  int i = mp_pool_worker_index();
  ASSERT(ctx == (void *)&g_init_count);
  return mp_buf_set(res, &i, sizeof i);
}

static void body_initializer(be_t be) {
  g_init_count = shared_counters(1);
  mp_pool_opts_t o = {0};
  o.workers = 3;
  set_backend(&o, be);
  o.initializer = count_init;
  o.initarg = &g_init_count;
  o.ctx = &g_init_count;
  mp_pool_t *p;
  ASSERT_OK(mp_pool_create(&p, &o));
  for (int i = 0; i < 200; i++) {
    mp_buf_t b = MP_BUF_INIT;
    ASSERT_OK(mp_pool_apply(p, task_index, NULL, 0, &b, NULL));
    int idx = *(int *)b.data;
    ASSERT(idx >= 0 && idx < 3);
    mp_buf_free(&b);
  }
  ASSERT_OK(mp_pool_close(p));
  ASSERT_OK(mp_pool_join(p, MP_FOREVER));
  ASSERT_EQ(*g_init_count, 3);
  ASSERT_OK(mp_pool_destroy(p));
  munmap((void *)g_init_count, sizeof(long));
}
TEST(initializer_proc) {
  body_initializer(MP_POOL_PROCESSES);
}
TEST(initializer_thread) {
  body_initializer(MP_POOL_THREADS);
}
TEST(initializer_fs) {
  body_initializer(BE_FS);
  fs_done();
}

/* Map squares over 0..n-1 (n <= 64) and check them. */
static void map_squares(mp_pool_t *p, int n, size_t chunksize) {
  int64_t in[64], out[64];
  ASSERT(n <= 64);
  for (int i = 0; i < n; i++)
    in[i] = i;
  ASSERT_OK(mp_pool_map(p, map_square, in, (size_t)n, 8, out, 8, chunksize));
  for (int i = 0; i < n; i++)
    ASSERT_EQ(out[i], (int64_t)i * i);
}

static void body_maxtasks(be_t be) {
  g_init_count = shared_counters(1);
  mp_pool_opts_t o = {0};
  o.workers = 2;
  set_backend(&o, be);
  o.maxtasksperchild = 3;
  o.initializer = count_init;
  o.initarg = &g_init_count;
  mp_pool_t *p;
  ASSERT_OK(mp_pool_create(&p, &o));
  enum { N = 60 };
  mp_result_t *rs[N];
  for (int i = 0; i < N; i++)
    ASSERT_OK(mp_pool_apply_async(p, task_id, NULL, 0, NULL, &rs[i]));
  long ids[N];
  for (int i = 0; i < N; i++) {
    const void *d;
    ASSERT_OK(mp_result_get(rs[i], MP_FOREVER, &d, NULL));
    ids[i] = *(const long *)d;
    mp_result_destroy(rs[i]);
  }
  /* No worker ran more than 3 tasks. */
  for (int i = 0; i < N; i++) {
    int same = 0;
    for (int k = 0; k < N; k++)
      same += ids[k] == ids[i];
    ASSERT(same <= 3);
  }
  /* A map chunk counts as one task. */
  map_squares(p, 40, 10);
  ASSERT_OK(mp_pool_close(p));
  ASSERT_OK(mp_pool_join(p, MP_FOREVER));
  ASSERT(*g_init_count >= N / 3);
  ASSERT_OK(mp_pool_destroy(p));
  munmap((void *)g_init_count, sizeof(long));
}
TEST(maxtasks_proc) {
  body_maxtasks(MP_POOL_PROCESSES);
}
TEST(maxtasks_thread) {
  body_maxtasks(MP_POOL_THREADS);
}
TEST(maxtasks_fs) {
  body_maxtasks(BE_FS);
  fs_done();
}

/* ---- callbacks ------------------------------------------------------------
 */

static _Atomic int g_release;

/* A callback that blocks until the test lets it go. */
static void slow_cb(const void *data, size_t len, void *user) {
  for (int i = 0; i < 20000 && !g_release; i++)
    mpt_sleep_ms(1);
  (*(_Atomic int *)user)++;
}

static void body_slow_callback(be_t be) {
  mp_pool_t *p = make_pool(be, 2);
  _Atomic int calls = 0;
  g_release = 0;
  mp_async_opts_t cb = {slow_cb, NULL, (void *)&calls};
  int64_t x = 5;
  mp_result_t *slow;
  ASSERT_OK(mp_pool_apply_async(p, task_square, &x, 8, &cb, &slow));
  /* While the callback is stuck, all other work completes. */
  for (int i = 0; i < 2000; i++) {
    mp_buf_t b = MP_BUF_INIT;
    ASSERT_OK(mp_pool_apply(p, task_square, &x, 8, &b, NULL));
    mp_buf_free(&b);
  }
  int64_t in[1000], out[1000];
  for (int i = 0; i < 1000; i++)
    in[i] = i;
  ASSERT_OK(mp_pool_map(p, map_square, in, 1000, 8, out, 8, 1));
  mp_imap_t *it;
  ASSERT_OK(mp_pool_imap(p, map_square, in, 1000, 8, 8, NULL, &it));
  for (int i = 0; i < 1000; i++)
    ASSERT_OK(mp_imap_next(it, NULL, NULL, MP_FOREVER));
  mp_imap_destroy(it);
  ASSERT_EQ(calls, 0);
  ASSERT_EQ(mp_result_ready(slow), 0); /* ready only after its callback */
  g_release = 1;
  ASSERT_OK(mp_result_wait(slow, MP_FOREVER));
  ASSERT_EQ(calls, 1);
  mp_result_destroy(slow);
  ASSERT_OK(mp_pool_destroy(p));
}
TEST(slow_callback_proc) {
  body_slow_callback(MP_POOL_PROCESSES);
}
TEST(slow_callback_thread) {
  body_slow_callback(MP_POOL_THREADS);
}
TEST(slow_callback_fs) {
  body_slow_callback(BE_FS);
  fs_done();
}

static mp_pool_t *g_cb_pool;
static _Atomic int g_cb_rc;

static void cb_calls_join(const void *data, size_t len, void *user) {
  g_cb_rc = mp_pool_join(g_cb_pool, 0) == MP_EINVAL &&
                    mp_pool_destroy(g_cb_pool) == MP_EINVAL
                ? 1
                : 2;
}

static void body_callback_reentry(be_t be) {
  g_cb_pool = make_pool(be, 1);
  mp_async_opts_t cb = {cb_calls_join, NULL, NULL};
  int64_t x = 1;
  mp_result_t *r;
  ASSERT_OK(mp_pool_apply_async(g_cb_pool, task_square, &x, 8, &cb, &r));
  ASSERT_OK(mp_result_wait(r, MP_FOREVER));
  ASSERT_EQ(g_cb_rc, 1);
  mp_result_destroy(r);
  ASSERT_OK(mp_pool_destroy(g_cb_pool));
}
TEST(callback_reentry_proc) {
  body_callback_reentry(MP_POOL_PROCESSES);
}
TEST(callback_reentry_thread) {
  body_callback_reentry(MP_POOL_THREADS);
}
TEST(callback_reentry_fs) {
  body_callback_reentry(BE_FS);
  fs_done();
}

/* ---- terminate and join ---------------------------------------------------
 */

static void body_terminate(be_t be) {
  mp_pool_t *p = make_pool(be, 2);
  enum { N = 40 };
  mp_result_t *rs[N];
  cbstate_t st = {0};
  mp_async_opts_t cb = {on_done, on_error, &st};
  int ms = 1000;
  for (int i = 0; i < N; i++)
    ASSERT_OK(mp_pool_apply_async(p, task_sleep, &ms, sizeof ms, &cb, &rs[i]));
  int64_t in[100], out[100];
  mp_result_t *mr;
  ASSERT_OK(mp_pool_map_async(p, map_square, in, 100, 8, out, 8, 1, NULL, &mr));
  mpt_sleep_ms(50);
  ASSERT_OK(mp_pool_terminate(p));
  ASSERT_OK(mp_pool_terminate(p));
  for (int i = 0; i < N; i++) {
    int e = mp_result_get(rs[i], 5000, NULL, NULL);
    ASSERT(e == MP_ECLOSED || e == 0);
    ASSERT_EQ(mp_result_ready(rs[i]), 1);
    mp_result_destroy(rs[i]);
  }
  int e = mp_result_get(mr, 5000, NULL, NULL);
  ASSERT(e == MP_ECLOSED || e == 0);
  mp_result_destroy(mr);
  ASSERT_ERR(mp_pool_apply_async(p, task_sleep, &ms, sizeof ms, NULL, NULL),
             MP_ECLOSED);
  ASSERT_OK(mp_pool_join(p, MP_FOREVER));
  ASSERT_EQ(st.ok + st.err, N);
  ASSERT(st.err >= N - 4);
  ASSERT_EQ(st.last_err, MP_ECLOSED);
  ASSERT_OK(mp_pool_destroy(p));
}
TEST(terminate_proc) {
  body_terminate(MP_POOL_PROCESSES);
}
TEST(terminate_thread) {
  body_terminate(MP_POOL_THREADS);
}
TEST(terminate_fs) {
  body_terminate(BE_FS);
  fs_done();
}

static void body_join(be_t be) {
  mp_pool_t *p = make_pool(be, 2);
  int ms = 1000;
  mp_result_t *r;
  ASSERT_OK(mp_pool_apply_async(p, task_sleep, &ms, sizeof ms, NULL, &r));
  ASSERT_OK(mp_pool_close(p));
  uint64_t t0 = mpt_now_ms();
  ASSERT_ERR(mp_pool_join(p, 50), MP_ETIMEDOUT);
  ASSERT(mpt_now_ms() - t0 >= 50);
  ASSERT_OK(mp_pool_join(p, MP_FOREVER));
  /* join after close lets submitted work finish. */
  ASSERT_EQ(mp_result_ready(r), 1);
  ASSERT_OK(mp_result_get(r, 0, NULL, NULL));
  mp_result_destroy(r);
  ASSERT_OK(mp_pool_destroy(p));
  /* destroy of a busy pool terminates it. */
  p = make_pool(be, 2);
  ASSERT_OK(mp_pool_apply_async(p, task_sleep, &ms, sizeof ms, NULL, &r));
  ASSERT_OK(mp_pool_destroy(p));
  int e = mp_result_get(r, 0, NULL, NULL);
  ASSERT(e == MP_ECLOSED || e == 0);
  mp_result_destroy(r);
}
TEST(join_proc) {
  body_join(MP_POOL_PROCESSES);
}
TEST(join_thread) {
  body_join(MP_POOL_THREADS);
}
TEST(join_fs) {
  body_join(BE_FS);
  fs_done();
}

/* ---- crashes (processes) --------------------------------------------------
 */

static int task_crash(const void *arg, size_t len, mp_buf_t *res, void *ctx) {
  int how;
  memcpy(&how, arg, sizeof how);
  switch (how) {
  case 1:
    raise(SIGKILL);
    break;
  case 2:
    _exit(3);
  case 3: {
    /* A real fault; no handler survives SIGSEGV with default action. */
    signal(SIGSEGV, SIG_DFL);
    raise(SIGSEGV);
    break;
  }
  default:
    break;
  }
  return mp_buf_set(res, &how, sizeof how);
}

static void body_worker_crash_kinds(be_t be) {
  mp_pool_t *p = make_pool(be, 2);
  for (int how = 1; how <= 3; how++) {
    cbstate_t st = {0};
    mp_async_opts_t cb = {on_done, on_error, &st};
    mp_result_t *bad, *good[20];
    for (int i = 0; i < 10; i++) {
      int zero = 0;
      ASSERT_OK(mp_pool_apply_async(p, task_crash, &zero, sizeof zero, NULL,
                                    &good[i]));
    }
    ASSERT_OK(mp_pool_apply_async(p, task_crash, &how, sizeof how, &cb, &bad));
    for (int i = 10; i < 20; i++) {
      int zero = 0;
      ASSERT_OK(mp_pool_apply_async(p, task_crash, &zero, sizeof zero, NULL,
                                    &good[i]));
    }
    ASSERT_ERR(mp_result_get(bad, 10000, NULL, NULL), MP_EWORKERDIED);
    ASSERT_EQ(st.err, 1);
    ASSERT_EQ(st.last_err, MP_EWORKERDIED);
    for (int i = 0; i < 20; i++) {
      ASSERT_OK(mp_result_get(good[i], 10000, NULL, NULL));
      mp_result_destroy(good[i]);
    }
    mp_result_destroy(bad);
  }
  serves_then_close(p); /* still usable */
}
TEST(worker_crash_kinds) {
  body_worker_crash_kinds(MP_POOL_PROCESSES);
}
TEST(worker_crash_kinds_fs) {
  body_worker_crash_kinds(BE_FS);
  fs_done();
}

static int task_report_pid(const void *arg, size_t len, mp_buf_t *res,
                           void *ctx) {
  _Atomic long *slots = *(_Atomic long *const *)arg;
  int i = mp_pool_worker_index();
  slots[i] = getpid();
  mpt_sleep_ms(20);
  pid_t pid = getpid();
  return mp_buf_set(res, &pid, sizeof pid);
}

static void body_worker_sigkill_rounds(be_t be) {
  /* Mapped before the workers fork, so they see it. */
  _Atomic long *slots = shared_counters(2);
  mp_pool_t *p = make_pool(be, 2);
  int died = 0, ok = 0;
  for (int round = 0; round < 30; round++) {
    enum { N = 8 };
    mp_result_t *rs[N];
    slots[0] = slots[1] = 0;
    for (int i = 0; i < N; i++)
      ASSERT_OK(mp_pool_apply_async(p, task_report_pid, &slots, sizeof slots,
                                    NULL, &rs[i]));
    /* Kill a worker while it runs a task (or between tasks). */
    mpt_sleep_ms(5 + round % 20);
    long victim = slots[round % 2];
    if (victim)
      kill((pid_t)victim, SIGKILL);
    for (int i = 0; i < N; i++) {
      int e = mp_result_get(rs[i], 10000, NULL, NULL);
      if (e == MP_EWORKERDIED)
        died++;
      else {
        ASSERT_OK(e);
        ok++;
      }
      mp_result_destroy(rs[i]);
    }
  }
  /* Each kill loses at most the task that worker was running. */
  ASSERT(died <= 30);
  ASSERT(ok >= 30 * 8 - 30);
  ASSERT(died > 0);
  int64_t x = 3;
  ASSERT_OK(mp_pool_apply(p, task_square, &x, 8, NULL, NULL));
  ASSERT_OK(mp_pool_destroy(p));
  munmap((void *)slots, 2 * sizeof(long));
}
TEST(worker_sigkill_rounds) {
  body_worker_sigkill_rounds(MP_POOL_PROCESSES);
}
TEST(worker_sigkill_rounds_fs) {
  body_worker_sigkill_rounds(BE_FS);
  fs_done();
}

static int map_crash_at(const void *item, void *result, void *ctx) {
  int64_t x = *(const int64_t *)item;
  if (x == 17 && *(_Atomic long *)ctx == 0) {
    *(_Atomic long *)ctx = 1;
    raise(SIGKILL);
  }
  *(int64_t *)result = x * 2;
  return 0;
}

static void body_map_worker_dies(be_t be) {
  _Atomic long *flag = shared_counters(1);
  mp_pool_opts_t o = {0};
  set_backend(&o, be);
  o.workers = 2;
  o.ctx = (void *)flag;
  mp_pool_t *p;
  ASSERT_OK(mp_pool_create(&p, &o));
  int64_t in[100], out[100];
  for (int i = 0; i < 100; i++)
    in[i] = i;
  ASSERT_ERR(mp_pool_map(p, map_crash_at, in, 100, 8, out, 8, 10),
             MP_EWORKERDIED);
  ASSERT_EQ(out[99], 198);
  ASSERT_OK(mp_pool_map(p, map_crash_at, in, 100, 8, out, 8, 10));
  /* imap: the dead chunk's items fail, the others arrive. */
  *flag = 0;
  mp_imap_opts_t io = {0};
  io.chunksize = 5;
  mp_imap_t *it;
  ASSERT_OK(mp_pool_imap(p, map_crash_at, in, 100, 8, 8, &io, &it));
  int dead = 0;
  for (int i = 0; i < 100; i++) {
    int64_t v;
    size_t idx;
    int e = mp_imap_next(it, &v, &idx, MP_FOREVER);
    ASSERT_EQ(idx, i);
    if (e == MP_EWORKERDIED) {
      dead++;
      ASSERT(i >= 15 && i < 20);
    } else {
      ASSERT_OK(e);
      ASSERT_EQ(v, 2 * i);
    }
  }
  ASSERT_EQ(dead, 5);
  ASSERT_OK(mp_imap_destroy(it));
  ASSERT_OK(mp_pool_destroy(p));
  munmap((void *)flag, sizeof(long));
}
TEST(map_worker_dies) {
  body_map_worker_dies(MP_POOL_PROCESSES);
}
TEST(map_worker_dies_fs) {
  body_map_worker_dies(BE_FS);
  fs_done();
}

static int task_pids(const void *arg, size_t len, mp_buf_t *res, void *ctx) {
  pid_t pid = getpid();
  mpt_sleep_ms(100);
  return mp_buf_set(res, &pid, sizeof pid);
}

/* Fork a child with a pipe to us: returns the child's pid with *fd the read
 * end, or 0 in the child with *fd the write end. */
static pid_t fork_piped(int *fd) {
  int fds[2];
  ASSERT_OK(pipe2(fds, O_CLOEXEC) ? -errno : 0);
  pid_t child = fork();
  ASSERT(child >= 0);
  close(fds[child == 0 ? 0 : 1]);
  *fd = fds[child == 0 ? 1 : 0];
  return child;
}

/* In a child: run n task_pids and send the pids of the workers to fd. */
static void send_worker_pids(mp_pool_t *p, int n, int fd) {
  mp_result_t *rs[8];
  for (int i = 0; i < n; i++)
    if (mp_pool_apply_async(p, task_pids, NULL, 0, NULL, &rs[i]))
      _exit(1);
  for (int i = 0; i < n; i++) {
    const void *d;
    if (mp_result_get(rs[i], MP_FOREVER, &d, NULL) ||
        write(fd, d, sizeof(pid_t)) != sizeof(pid_t))
      _exit(1);
    mp_result_destroy(rs[i]);
  }
}

/* Read n worker pids from fd and open their pidfds (-1 for a worker already
 * gone, allowed only when may_be_gone). */
static void recv_worker_pidfds(int fd, int n, int *pfds, bool may_be_gone) {
  pid_t pids[8];
  ASSERT_EQ(mp__read_full(fd, pids, (size_t)n * sizeof(pid_t)), 0);
  close(fd);
  for (int i = 0; i < n; i++) {
    pfds[i] = (int)syscall(SYS_pidfd_open, pids[i], 0);
    if (pfds[i] < 0)
      ASSERT(may_be_gone && errno == ESRCH);
  }
}

/* Every worker exits. */
static void await_pidfds(const int *pfds, int n) {
  for (int i = 0; i < n; i++) {
    if (pfds[i] < 0)
      continue;
    struct pollfd pf = {pfds[i], POLLIN, 0};
    ASSERT_EQ(poll(&pf, 1, 10000), 1);
    close(pfds[i]);
  }
}

static void body_parent_killed_workers_exit(be_t be) {
  int fd;
  pid_t child = fork_piped(&fd);
  if (child == 0) {
    mp_pool_t *p;
    mp_pool_opts_t o = {0};
    set_backend(&o, be);
    o.workers = 3;
    if (mp_pool_create(&p, &o))
      _exit(1);
    send_worker_pids(p, 3, fd);
    for (;;)
      pause();
  }
  int pfds[3];
  recv_worker_pidfds(fd, 3, pfds, false);
  mpt_kill_reap(child);
  await_pidfds(pfds, 3);
}
TEST(parent_killed_workers_exit) {
  body_parent_killed_workers_exit(MP_POOL_PROCESSES);
}
TEST(parent_killed_workers_exit_fs) {
  body_parent_killed_workers_exit(BE_FS);
  fs_done();
}

static _Atomic long *g_spawns;

static void init_crash_first(void *arg) {
  /* The first five workers die in their initializer. */
  if ((*g_spawns)++ < 5)
    _exit(1);
}

static void body_initializer_crash_backoff(be_t be) {
  g_spawns = shared_counters(1);
  mp_pool_opts_t o = {0};
  set_backend(&o, be);
  o.workers = 1;
  o.initializer = init_crash_first;
  mp_pool_t *p;
  ASSERT_OK(mp_pool_create(&p, &o));
  int64_t x = 4;
  mp_buf_t b = MP_BUF_INIT;
  /* The task waits for a worker that survives its initializer. */
  ASSERT_OK(mp_pool_apply(p, task_square, &x, 8, &b, NULL));
  ASSERT_EQ(*(int64_t *)b.data, 16);
  mp_buf_free(&b);
  ASSERT_EQ(*g_spawns, 6);
  ASSERT_OK(mp_pool_destroy(p));
  munmap((void *)g_spawns, sizeof(long));
}
TEST(initializer_crash_backoff) {
  body_initializer_crash_backoff(MP_POOL_PROCESSES);
}
TEST(initializer_crash_backoff_fs) {
  body_initializer_crash_backoff(BE_FS);
  fs_done();
}

/* ---- more semantics -------------------------------------------------------
 */

static _Atomic long g_cb_tids[64];
static _Atomic int g_cb_n;

static void record_tid(const void *data, size_t len, void *user) {
  int i = g_cb_n++;
  if (i < 64)
    g_cb_tids[i] = worker_id();
}

static void body_callback_thread(be_t be) {
  mp_pool_t *p = make_pool(be, 2);
  mp_async_opts_t cb = {record_tid, NULL, NULL};
  int64_t x = 1;
  for (int i = 0; i < 64; i++)
    ASSERT_OK(mp_pool_apply_async(p, task_square, &x, 8, &cb, NULL));
  ASSERT_OK(mp_pool_close(p));
  ASSERT_OK(mp_pool_join(p, MP_FOREVER));
  ASSERT_EQ(g_cb_n, 64);
  /* One callback thread of the parent, not the caller's thread. */
  for (int i = 1; i < 64; i++)
    ASSERT_EQ(g_cb_tids[i], g_cb_tids[0]);
  ASSERT(g_cb_tids[0] != worker_id());
  ASSERT_OK(mp_pool_destroy(p));
}
TEST(callback_thread_proc) {
  body_callback_thread(MP_POOL_PROCESSES);
}
TEST(callback_thread_thread) {
  body_callback_thread(MP_POOL_THREADS);
}
TEST(callback_thread_fs) {
  body_callback_thread(BE_FS);
  fs_done();
}

static void body_map_async_copies(be_t be) {
  mp_pool_t *p = make_pool(be, 2);
  enum { N = 200000 };
  int64_t *in = malloc(N * sizeof *in), *out = malloc(N * sizeof *out);
  for (int i = 0; i < N; i++)
    in[i] = i;
  mp_result_t *r;
  ASSERT_OK(mp_pool_map_async(p, map_square, in, N, 8, out, 8, 0, NULL, &r));
  /* The items were copied: changing them now changes nothing. */
  memset(in, 0, N * sizeof *in);
  ASSERT_OK(mp_result_get(r, MP_FOREVER, NULL, NULL));
  for (int i = 0; i < N; i++)
    ASSERT_EQ(out[i], (int64_t)i * i);
  mp_result_destroy(r);
  free(in);
  free(out);
  ASSERT_OK(mp_pool_destroy(p));
}
TEST(map_async_copies_proc) {
  body_map_async_copies(MP_POOL_PROCESSES);
}
TEST(map_async_copies_thread) {
  body_map_async_copies(MP_POOL_THREADS);
}
TEST(map_async_copies_fs) {
  body_map_async_copies(BE_FS);
  fs_done();
}

typedef struct {
  mp_pool_t *p;
  int base;
  int fails;
} submitter_t;

static void *submit_many(void *arg) {
  submitter_t *s = arg;
  for (int64_t i = 0; i < 500; i++) {
    int64_t x = s->base + i;
    mp_buf_t b = MP_BUF_INIT;
    if (i % 2) {
      if (mp_pool_apply(s->p, task_square, &x, 8, &b, NULL) != 0 ||
          *(int64_t *)b.data != x * x)
        s->fails++;
    } else {
      int64_t y;
      if (mp_pool_map(s->p, map_square, &x, 1, 8, &y, 8, 0) != 0 || y != x * x)
        s->fails++;
    }
    mp_buf_free(&b);
  }
  return NULL;
}

static void body_many_submitters(be_t be) {
  mp_pool_t *p = make_pool(be, 2);
  pthread_t th[4];
  submitter_t s[4];
  for (int i = 0; i < 4; i++) {
    s[i] = (submitter_t){p, i * 1000, 0};
    ASSERT_EQ(pthread_create(&th[i], NULL, submit_many, &s[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    ASSERT_EQ(s[i].fails, 0);
  }
  ASSERT_OK(mp_pool_destroy(p));
}
TEST(many_submitters_proc) {
  body_many_submitters(MP_POOL_PROCESSES);
}
TEST(many_submitters_thread) {
  body_many_submitters(MP_POOL_THREADS);
}
TEST(many_submitters_fs) {
  body_many_submitters(BE_FS);
  fs_done();
}

static _Atomic long *g_big_pids;

static int task_big_pid(const void *arg, size_t len, mp_buf_t *res, void *ctx) {
  g_big_pids[mp_pool_worker_index()] = getpid();
  return task_big(arg, len, res, ctx);
}

static void body_worker_killed_during_big_result(be_t be) {
  g_big_pids = shared_counters(3); /* before the workers fork */
  mp_pool_t *p = make_pool(be, 2);
  size_t big = 3 * 1024 * 1024 + 11;
  int died = 0;
  for (int round = 0; round < 20; round++) {
    mp_result_t *rs[4];
    g_big_pids[0] = g_big_pids[1] = 0;
    g_big_pids[2] = round;
    for (int i = 0; i < 4; i++)
      ASSERT_OK(
          mp_pool_apply_async(p, task_big_pid, &big, sizeof big, NULL, &rs[i]));
    /* Kill a worker while it produces or sends its multi-part result. */
    uint64_t t0 = mpt_now_ms();
    while (!g_big_pids[round % 2] && mpt_now_ms() - t0 < 5000)
      mpt_sleep_ms(1);
    mpt_sleep_ms(round % 5);
    if (g_big_pids[round % 2])
      kill((pid_t)g_big_pids[round % 2], SIGKILL);
    for (int i = 0; i < 4; i++) {
      const void *d;
      size_t len;
      int e = mp_result_get(rs[i], 20000, &d, &len);
      if (e == 0) {
        ASSERT_EQ(len, big);
        const uint8_t *u = d;
        for (size_t k = 0; k < len; k += 4093)
          ASSERT_EQ(u[k], (uint8_t)(k * 7));
      } else {
        ASSERT_ERR(e, MP_EWORKERDIED);
        died++;
      }
      mp_result_destroy(rs[i]);
    }
  }
  ASSERT(died > 0 && died <= 20);
  int64_t x = 5;
  ASSERT_OK(mp_pool_apply(p, task_square, &x, 8, NULL, NULL));
  ASSERT_OK(mp_pool_destroy(p));
  munmap((void *)g_big_pids, 3 * sizeof(long));
}
TEST(worker_killed_during_big_result) {
  body_worker_killed_during_big_result(MP_POOL_PROCESSES);
}
TEST(worker_killed_during_big_result_fs) {
  body_worker_killed_during_big_result(BE_FS);
  fs_done();
}

static void body_mp_wait_epoll(be_t be) {
  mp_pool_t *p = make_pool(be, 2);
  int ms[3] = {300, 10, 150};
  mp_result_t *rs[3];
  for (int i = 0; i < 3; i++)
    ASSERT_OK(
        mp_pool_apply_async(p, task_sleep, &ms[i], sizeof ms[i], NULL, &rs[i]));
  mp_waitable_t w[3];
  for (int i = 0; i < 3; i++)
    w[i] = mp_result_waitable(rs[i]);
  /* mp_wait returns once one is ready: the 10 ms task. */
  ASSERT(mp_wait(w, 3, 10000) >= 1);
  ASSERT(w[1].ready);
  ASSERT_EQ(mp_result_ready(rs[1]), 1);
  /* epoll on the same fds. */
  int ep = epoll_create1(EPOLL_CLOEXEC);
  ASSERT(ep >= 0);
  for (int i = 0; i < 3; i++) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    ASSERT_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, w[i].fd, &ev), 0);
  }
  int seen = 0;
  while (seen != 7) {
    struct epoll_event evs[3];
    int n = epoll_wait(ep, evs, 3, 10000);
    ASSERT(n > 0);
    for (int k = 0; k < n; k++) {
      ASSERT_EQ(mp_result_ready(rs[evs[k].data.u32]), 1);
      seen |= 1 << evs[k].data.u32;
    }
  }
  close(ep);
  for (int i = 0; i < 3; i++)
    mp_result_destroy(rs[i]);
  ASSERT_OK(mp_pool_destroy(p));
}
TEST(mp_wait_epoll_proc) {
  body_mp_wait_epoll(MP_POOL_PROCESSES);
}
TEST(mp_wait_epoll_thread) {
  body_mp_wait_epoll(MP_POOL_THREADS);
}
TEST(mp_wait_epoll_fs) {
  body_mp_wait_epoll(BE_FS);
  fs_done();
}

static _Atomic long *g_storm_pids;

static int storm_task(const void *arg, size_t len, mp_buf_t *res, void *ctx) {
  g_storm_pids[mp_pool_worker_index()] = getpid();
  int64_t x;
  memcpy(&x, arg, sizeof x);
  mpt_sleep_ms(1 + (int)(x % 3));
  x *= 3;
  return mp_buf_set(res, &x, sizeof x);
}

static int storm_map(const void *item, void *result, void *ctx) {
  g_storm_pids[mp_pool_worker_index()] = getpid();
  int64_t x = *(const int64_t *)item;
  if (x % 50 == 0)
    mpt_sleep_ms(1);
  *(int64_t *)result = x + 1;
  return 0;
}

/* A CPU hog, and a SIGALRM every millisecond (no SA_RESTART) in this
 * process. */
static pid_t hog_and_storm_start(void) {
  pid_t hog = mpt_hog_start();
  mpt_storm_start(1000, false);
  return hog;
}

static void hog_and_storm_stop(pid_t hog) {
  mpt_storm_stop();
  mpt_hog_stop(hog);
}

extern _Atomic int mp__test_pool_fork_failures; /* src/pool.c, test-only */

/* Applies, a map and an imap in flight together while workers are killed:
 * every result is right or MP_EWORKERDIED, nothing hangs, and the pool is
 * still usable afterwards. With `stress`: beside a CPU hog, under a 1 ms
 * signal storm, and with fork failing for a while after each kill (the
 * killed worker's queued tasks run on the others meanwhile). */
static void body_mixed_work_under_kills(be_t be, bool stress) {
  pid_t hog = stress ? hog_and_storm_start() : 0;
  g_storm_pids = shared_counters(3);
  mp_pool_t *p = make_pool(be, 3);
  enum { A = 20, M = 300, I = 120 };
  int64_t in[M], out[M];
  for (int i = 0; i < M; i++)
    in[i] = i;
  int kills = 0, died_apply = 0, died_imap = 0, died_map = 0;
  for (int round = 0; round < 10; round++) {
    mp_result_t *rs[A], *mr;
    for (int64_t i = 0; i < A; i++)
      ASSERT_OK(mp_pool_apply_async(p, storm_task, &i, sizeof i, NULL, &rs[i]));
    memset(out, 0, sizeof out);
    ASSERT_OK(mp_pool_map_async(p, storm_map, in, M, 8, out, 8, 7, NULL, &mr));
    mp_imap_opts_t io = {.chunksize = 3};
    mp_imap_t *it;
    ASSERT_OK(mp_pool_imap_unordered(p, storm_map, in, I, 8, 8, &io, &it));
    mpt_sleep_ms(3 + round % 4);
    long victim = g_storm_pids[round % 3];
    if (stress)
      atomic_store(&mp__test_pool_fork_failures, 20 + 10 * (round % 3));
    if (victim && kill((pid_t)victim, SIGKILL) == 0)
      kills++;
    char seen[I] = {0};
    for (int k = 0; k < I; k++) {
      int64_t v;
      size_t idx = 0;
      int e = mp_imap_next(it, &v, &idx, 20000);
      ASSERT(idx < I && !seen[idx]);
      seen[idx] = 1;
      if (e == MP_EWORKERDIED) {
        died_imap++;
      } else {
        ASSERT_OK(e);
        ASSERT_EQ(v, (int64_t)idx + 1);
      }
    }
    ASSERT_ERR(mp_imap_next(it, NULL, NULL, 20000), MP_ECLOSED);
    mp_imap_destroy(it);
    for (int64_t i = 0; i < A; i++) {
      const void *d;
      int e = mp_result_get(rs[i], 20000, &d, NULL);
      if (e == MP_EWORKERDIED) {
        died_apply++;
      } else {
        ASSERT_OK(e);
        ASSERT_EQ(*(const int64_t *)d, 3 * i);
      }
      mp_result_destroy(rs[i]);
    }
    int e = mp_result_get(mr, 20000, NULL, NULL);
    if (e == MP_EWORKERDIED)
      died_map++;
    else
      ASSERT_OK(e);
    for (int i = 0; i < M; i++)
      if (out[i] != 0)
        ASSERT_EQ(out[i], i + 1);
    if (e == 0)
      ASSERT_EQ(out[M - 1], M);
    mp_result_destroy(mr);
  }
  /* A kill costs at most the one task (an apply, a map chunk or an imap
   * chunk of 3 items) that the worker was running. */
  ASSERT(died_apply + died_map + (died_imap + 2) / 3 <= kills);
  int64_t x = 7;
  mp_buf_t b = MP_BUF_INIT;
  ASSERT_OK(mp_pool_apply(p, storm_task, &x, sizeof x, &b, NULL));
  ASSERT_EQ(*(int64_t *)b.data, 21);
  mp_buf_free(&b);
  ASSERT_OK(mp_pool_destroy(p));
  munmap((void *)g_storm_pids, 3 * sizeof(long));
  if (stress) {
    atomic_store(&mp__test_pool_fork_failures, 0);
    hog_and_storm_stop(hog);
  }
}
TEST(mixed_work_under_kills) {
  body_mixed_work_under_kills(MP_POOL_PROCESSES, false);
}
TEST(mixed_work_under_kills_fs) {
  body_mixed_work_under_kills(BE_FS, false);
  fs_done();
}
TEST(mixed_work_under_kills_storm_fork_failing) {
  body_mixed_work_under_kills(MP_POOL_PROCESSES, true);
}

/* ---- fork server from a program with threads ------------------------------
 * The server starts before the threads, so its workers never inherit a lock
 * that another thread held when a fork was made. The threads hold g_busy_mu
 * most of the time and allocate all the time. */
static pthread_mutex_t g_busy_mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int g_busy_stop;

static void *busy_thread(void *arg) {
  while (!atomic_load(&g_busy_stop)) {
    pthread_mutex_lock(&g_busy_mu);
    for (int i = 0; i < 100; i++)
      free(malloc((size_t)(16 + i * 64)));
    pthread_mutex_unlock(&g_busy_mu);
  }
  return NULL;
}

static int task_trylock(const void *arg, size_t len, mp_buf_t *res, void *ctx) {
  int ok = pthread_mutex_trylock(&g_busy_mu) == 0;
  if (ok)
    pthread_mutex_unlock(&g_busy_mu);
  free(malloc(1000)); /* malloc's locks are free too */
  return mp_buf_set(res, &ok, sizeof ok);
}

static int task_ppid(const void *arg, size_t len, mp_buf_t *res, void *ctx) {
  pid_t pp = getppid();
  return mp_buf_set(res, &pp, sizeof pp);
}

/* 1 when none of the descriptors in arg is open in the worker. */
static int task_fds_closed(const void *arg, size_t len, mp_buf_t *res,
                           void *ctx) {
  int closed = 1;
  for (size_t i = 0; i < len / sizeof(int); i++) {
    int fd;
    memcpy(&fd, (const char *)arg + i * sizeof fd, sizeof fd);
    if (fcntl(fd, F_GETFD) >= 0)
      closed = 0;
  }
  return mp_buf_set(res, &closed, sizeof closed);
}

TEST(forkserver_with_threads) {
  ASSERT_OK(mp_forkserver_start());
  /* Opened after the server started: no worker has them, close-on-exec or
   * not (fork workers would inherit both). */
  int fds[4];
  ASSERT_OK(pipe2(fds, O_CLOEXEC) ? -errno : 0);
  ASSERT_OK(pipe(fds + 2) ? -errno : 0);
  pthread_t th[3];
  for (int i = 0; i < 3; i++)
    ASSERT_EQ(pthread_create(&th[i], NULL, busy_thread, NULL), 0);
  mpt_sleep_ms(20);
  mp_pool_opts_t o = {0};
  set_backend(&o, BE_FS);
  o.workers = 2;
  o.maxtasksperchild = 5; /* replacements are made while the threads run */
  for (int round = 0; round < 3; round++) {
    mp_pool_t *p;
    ASSERT_OK(mp_pool_create(&p, &o));
    /* Workers are the server's children, not ours. */
    mp_buf_t pb = MP_BUF_INIT;
    ASSERT_OK(mp_pool_apply(p, task_ppid, NULL, 0, &pb, NULL));
    ASSERT(*(pid_t *)pb.data != getpid());
    ASSERT_OK(mp_pool_apply(p, task_fds_closed, fds, sizeof fds, &pb, NULL));
    ASSERT_EQ(*(int *)pb.data, 1);
    mp_buf_free(&pb);
    for (int i = 0; i < 30; i++) {
      mp_buf_t b = MP_BUF_INIT;
      ASSERT_OK(mp_pool_apply(p, task_trylock, NULL, 0, &b, NULL));
      ASSERT_EQ(*(int *)b.data, 1);
      mp_buf_free(&b);
    }
    map_squares(p, 64, 4);
    ASSERT_OK(mp_pool_close(p));
    ASSERT_OK(mp_pool_join(p, MP_FOREVER));
    ASSERT_OK(mp_pool_destroy(p));
  }
  atomic_store(&g_busy_stop, 1);
  for (int i = 0; i < 3; i++)
    pthread_join(th[i], NULL);
  for (int i = 0; i < 4; i++)
    close(fds[i]);
  fs_done();
}

/* A program that exits without destroying its fork-server pool: the exit
 * handlers stop the workers and the pool's collector leaves their handles
 * to them; the exit completes and no worker is left. */
static mp_pool_t *g_exit_pool; /* reachable at exit: not a leak */

TEST(forkserver_exit_without_destroy) {
  for (int round = 0; round < 6; round++) {
    int fd;
    pid_t child = fork_piped(&fd);
    if (child == 0) {
      mp_pool_opts_t o = {0};
      set_backend(&o, BE_FS);
      o.workers = 2;
      /* With replacements around the exit, and without. */
      o.maxtasksperchild = (unsigned)(round % 3);
      if (mp_pool_create(&g_exit_pool, &o))
        _exit(1);
      send_worker_pids(g_exit_pool, 2, fd);
      int64_t x = 2;
      mp_pool_apply_async(g_exit_pool, task_square, &x, 8, NULL, NULL);
      exit(0);
    }
    int pfds[2];
    recv_worker_pidfds(fd, 2, pfds, true);
    mpt_wait_ok(child);
    await_pidfds(pfds, 2);
  }
}

/* The fork server killed under a running pool: its workers die with it
 * (running tasks get MP_EWORKERDIED), the next worker starts a new server,
 * and the pool goes on. */
/* Marks *flag (shared memory mapped before the fork server started), then
 * sleeps for good. */
static int task_mark_then_block(const void *arg, size_t len, mp_buf_t *res,
                                void *ctx) {
  _Atomic long *flag = *(_Atomic long *const *)arg;
  atomic_store(flag, 1);
  for (;;)
    pause();
  return 0;
}

TEST(forkserver_killed_under_pool) {
  _Atomic long *started = shared_counters(1);
  mp_pool_opts_t o = {0};
  set_backend(&o, BE_FS);
  o.workers = 2;
  mp_pool_t *p;
  ASSERT_OK(mp_pool_create(&p, &o));
  for (int round = 0; round < 3; round++) {
    mp_buf_t b = MP_BUF_INIT;
    ASSERT_OK(mp_pool_apply(p, task_ppid, NULL, 0, &b, NULL));
    pid_t server = *(pid_t *)b.data;
    mp_buf_free(&b);
    ASSERT(server > 1 && server != getpid());
    /* Killed while its task runs (not before it started). */
    atomic_store(started, 0);
    mp_result_t *slow;
    ASSERT_OK(mp_pool_apply_async(p, task_mark_then_block, &started,
                                  sizeof started, NULL, &slow));
    while (!atomic_load(started))
      mpt_sleep_ms(1);
    ASSERT_EQ(kill(server, SIGKILL), 0);
    ASSERT_ERR(mp_result_get(slow, MP_FOREVER, NULL, NULL), MP_EWORKERDIED);
    mp_result_destroy(slow);
    ASSERT_OK(mp_pool_apply(p, task_ppid, NULL, 0, &b, NULL));
    ASSERT(*(pid_t *)b.data != server);
    mp_buf_free(&b);
    map_squares(p, 64, 1);
  }
  ASSERT_OK(mp_pool_destroy(p));
  fs_done();
  munmap((void *)started, sizeof(long));
}

/* ---- untrusted result rings -----------------------------------------------
 * A task that scribbles a record into its worker's result ring, publishes
 * it and dies: the parent must neither loop on it (size 0), nor follow its
 * job id as a pointer, nor copy past a job's results. It refuses the record,
 * treats the worker as crashed, and the pool goes on. */
#include "pool_internal.h"

typedef struct {
  mp_pool_t *pool; /* same address in a forked worker */
  uint32_t size, kind;
  uint64_t id;
  uint32_t count, len;
  uint64_t start;
} scribble_t;

static int task_scribble(const void *arg, size_t len, mp_buf_t *res,
                         void *ctx) {
  scribble_t sc;
  ASSERT_EQ(len, sizeof sc);
  memcpy(&sc, arg, sizeof sc);
  int w = mp_pool_worker_index();
  mp__wshm_t *ws = mp__pool_wshm(sc.pool, w);
  uint8_t *ring = mp__pool_rring(sc.pool, w);
  uint64_t head = atomic_load(&ws->r_head);
  mp__rrec_t *r = (mp__rrec_t *)(void *)(ring + (head & MP__POOL_RMASK));
  memset(r, 0, MP__POOL_REC);
  r->size = sc.size;
  r->kind = sc.kind;
  r->id = sc.id;
  r->count = sc.count;
  r->start = sc.start;
  r->len = sc.len;
  atomic_store(&ws->r_head, head + MP__POOL_REC);
  raise(SIGKILL);
  return 0;
}

static void scribble_case(scribble_t sc, bool map_job) {
  mp_pool_t *p = make_pool(MP_POOL_PROCESSES, 1);
  sc.pool = p;
  mp_buf_t out = {0};
  ASSERT_ERR(mp_pool_apply(p, task_scribble, &sc, sizeof sc, &out, NULL),
             MP_EWORKERDIED);
  (void)map_job;
  mp_buf_free(&out);
  serves_then_close(p); /* the replacement serves as usual */
}

TEST(result_ring_zero_size_record) {
  scribble_case((scribble_t){.size = 0, .kind = MP__K_RESULT}, false);
}

TEST(result_ring_bogus_job_id) {
  scribble_case((scribble_t){.size = MP__POOL_REC,
                             .kind = MP__K_RESULT,
                             .id = (uint64_t)0xdead0000beef0ull,
                             .count = 1},
                false);
}

TEST(result_ring_size_past_head) {
  scribble_case((scribble_t){.size = 1u << 20, .kind = MP__K_RESULT}, false);
}

/* Parser checks on their own, as the fuzz target drives them. */
TEST(result_ring_parse_bounds) {
  static _Alignas(64) uint8_t ring[MP__POOL_RING];
  const mp__rrec_t *rr;
  mp__rrec_t *r = (mp__rrec_t *)(void *)ring;
  r->size = MP__POOL_REC;
  r->kind = MP__K_RESULT;
  r->len = 0;
  ASSERT_OK(mp__pool_rrec_parse(ring, 0, MP__POOL_REC, &rr));
  ASSERT(rr == r);
  ASSERT_ERR(mp__pool_rrec_parse(ring, 0, 0, &rr), MP_EPROTO);
  ASSERT_ERR(mp__pool_rrec_parse(ring, MP__POOL_REC, 0, &rr), MP_EPROTO);
  r->len = 1;
  ASSERT_ERR(mp__pool_rrec_parse(ring, 0, MP__POOL_REC, &rr), MP_EPROTO);
  r->len = 0;
  r->size = 0;
  ASSERT_ERR(mp__pool_rrec_parse(ring, 0, MP__POOL_REC, &rr), MP_EPROTO);
  r->size = 2 * MP__POOL_REC; /* past the published head */
  ASSERT_ERR(mp__pool_rrec_parse(ring, 0, MP__POOL_REC, &rr), MP_EPROTO);
  /* A record may not run past the ring's end. */
  mp__rrec_t *last =
      (mp__rrec_t *)(void *)(ring + MP__POOL_RING - MP__POOL_REC);
  last->size = 2 * MP__POOL_REC;
  last->kind = MP__K_SKIP;
  uint64_t t = MP__POOL_RING - MP__POOL_REC;
  ASSERT_ERR(mp__pool_rrec_parse(ring, t, t + 2 * MP__POOL_REC, &rr),
             MP_EPROTO);
  /* Map results: items inside the job, payload holding them. */
  mp__rrec_t m = {.size = 128, .kind = MP__K_RESULT, .start = 8, .count = 4,
                  .len = 32};
  ASSERT_OK(mp__pool_rrec_fits(&m, J_MAP, 12, 4, 8));
  ASSERT_ERR(mp__pool_rrec_fits(&m, J_MAP, 11, 4, 8), MP_EPROTO);
  ASSERT_ERR(mp__pool_rrec_fits(&m, J_MAP, 12, 3, 8), MP_EPROTO);
  ASSERT_ERR(mp__pool_rrec_fits(&m, J_MAP, 12, 4, 16), MP_EPROTO);
  ASSERT_ERR(mp__pool_rrec_fits(&m, J_IMAP, 12, 0, 8), MP_EPROTO);
  m.start = UINT64_MAX - 1;
  ASSERT_ERR(mp__pool_rrec_fits(&m, J_MAP, 12, 4, 8), MP_EPROTO);
}

/* A worker dies while fork fails for longer than a second: the tasks run on
 * the other worker meanwhile, and the pool keeps trying until fork works
 * again: then a new worker serves. */
static int task_pid(const void *arg, size_t len, mp_buf_t *res, void *ctx) {
  pid_t pid = getpid();
  return mp_buf_set(res, &pid, sizeof pid);
}

TEST(worker_replaced_after_fork_fails_a_while) {
  _Atomic long *slots = shared_counters(2);
  mp_pool_t *p = make_pool(MP_POOL_PROCESSES, 2);
  mp_result_t *rs[2];
  for (int i = 0; i < 2; i++)
    ASSERT_OK(mp_pool_apply_async(p, task_report_pid, &slots, sizeof slots,
                                  NULL, &rs[i]));
  for (int i = 0; i < 2; i++) {
    ASSERT_OK(mp_result_get(rs[i], MP_FOREVER, NULL, NULL));
    mp_result_destroy(rs[i]);
  }
  pid_t victim = (pid_t)slots[0], other = (pid_t)slots[1];
  ASSERT(victim > 0 && other > 0);
  atomic_store(&mp__test_pool_fork_failures, 110);
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  enum { N = 20 };
  mp_result_t *res[N];
  for (int i = 0; i < N; i++) {
    int64_t x = i;
    ASSERT_OK(mp_pool_apply_async(p, task_square, &x, 8, NULL, &res[i]));
  }
  for (int i = 0; i < N; i++) {
    const void *data;
    size_t len;
    ASSERT_OK(mp_result_get(res[i], MP_FOREVER, &data, &len));
    ASSERT_EQ(*(const int64_t *)data, (int64_t)i * i);
    mp_result_destroy(res[i]);
  }
  /* The pool tries until fork works (every failure used up), and then a
   * worker other than the survivor serves. */
  while (atomic_load(&mp__test_pool_fork_failures) > 0)
    mpt_sleep_ms(10);
  for (;;) {
    mp_buf_t b = MP_BUF_INIT;
    ASSERT_OK(mp_pool_apply(p, task_pid, NULL, 0, &b, NULL));
    pid_t got = *(pid_t *)b.data;
    mp_buf_free(&b);
    ASSERT(got != victim);
    if (got != other)
      break;
    mpt_sleep_ms(10);
  }
  ASSERT_OK(mp_pool_close(p));
  ASSERT_OK(mp_pool_join(p, MP_FOREVER));
  ASSERT_OK(mp_pool_destroy(p));
  munmap((void *)slots, 2 * sizeof(long));
}

/* ---- untrusted task rings -------------------------------------------------
 * A task that scribbles over its own worker's task ring (the ring the parent
 * writes tasks into) once three more tasks are queued behind it, then dies or
 * blocks for good. The parent must notice: the running task fails with
 * MP_EWORKERDIED, the tasks queued behind it fail the same way or run
 * elsewhere, every other task runs, nothing waits forever and the pool goes
 * on. Each `how` is a different lie: records of size 0, a tail no worker
 * could have written, queued tasks turned into skip records, the running
 * task's job id changed, and size-0 records followed by a worker that never
 * returns (found while it is alive). */
enum { TS_ZERO, TS_TAIL, TS_SKIP, TS_ID, TS_ZERO_BLOCK };

typedef struct {
  mp_pool_t *pool; /* same address in a forked worker */
  int how, queued;
} tscribble_t;

static int task_tscribble(const void *arg, size_t len, mp_buf_t *res,
                          void *ctx) {
  tscribble_t sc;
  ASSERT_EQ(len, sizeof sc);
  memcpy(&sc, arg, sizeof sc);
  int w = mp_pool_worker_index();
  mp__wshm_t *ws = mp__pool_slot_words(sc.pool, w);
  uint8_t *ring = mp__pool_slot_tring(sc.pool, w);
  uint64_t tail = atomic_load(&ws->t_tail); /* our own record */
  mp__trec_t *own = (mp__trec_t *)(void *)(ring + (tail & MP__POOL_RMASK));
  uint64_t want = tail + own->size + (uint64_t)sc.queued * 2 * MP__POOL_REC;
  while (atomic_load(&ws->t_head) < want)
    mpt_sleep_ms(1);
  uint64_t head = atomic_load(&ws->t_head);
  switch (sc.how) {
  case TS_ZERO:
  case TS_ZERO_BLOCK:
    for (uint64_t at = tail; at < head; at += MP__POOL_REC)
      ((mp__trec_t *)(void *)(ring + (at & MP__POOL_RMASK)))->size = 0;
    break;
  case TS_TAIL:
    atomic_store(&ws->t_tail, head + 5 * MP__POOL_REC);
    break;
  case TS_SKIP:
    for (uint64_t at = tail + own->size; at < head;) {
      mp__trec_t *t = (mp__trec_t *)(void *)(ring + (at & MP__POOL_RMASK));
      t->kind = MP__K_SKIP;
      at += t->size;
    }
    break;
  case TS_ID:
    own->id ^= 0x5a5a0000ull;
    break;
  }
  if (sc.how == TS_ZERO_BLOCK)
    for (;;)
      pause();
  raise(SIGKILL);
  return 0;
}

static void task_ring_case(int how) {
  mp_pool_t *p = make_pool(MP_POOL_PROCESSES, 1);
  /* One worker: the scribbler and the next three tasks fill its ring (four
   * unanswered tasks per worker before any ran), the rest wait in the
   * parent. */
  tscribble_t sc = {p, how, 3};
  mp_result_t *s;
  ASSERT_OK(mp_pool_apply_async(p, task_tscribble, &sc, sizeof sc, NULL, &s));
  enum { N = 8 };
  mp_result_t *rs[N];
  for (int64_t i = 0; i < N; i++)
    ASSERT_OK(mp_pool_apply_async(p, task_square, &i, sizeof i, NULL, &rs[i]));
  int64_t in[16], out[16];
  for (int i = 0; i < 16; i++)
    in[i] = i;
  mp_result_t *mr;
  ASSERT_OK(mp_pool_map_async(p, map_square, in, 16, 8, out, 8, 4, NULL, &mr));
  ASSERT_ERR(mp_result_get(s, MP_FOREVER, NULL, NULL), MP_EWORKERDIED);
  mp_result_destroy(s);
  int died = 0;
  for (int64_t i = 0; i < N; i++) {
    const void *d;
    int e = mp_result_get(rs[i], MP_FOREVER, &d, NULL);
    if (e == MP_EWORKERDIED) {
      died++;
    } else {
      ASSERT_OK(e);
      ASSERT_EQ(*(const int64_t *)d, i * i);
    }
    mp_result_destroy(rs[i]);
  }
  /* Only the three queued in the ring can have gone with the worker. */
  ASSERT(died <= 3);
  ASSERT_OK(mp_result_get(mr, MP_FOREVER, NULL, NULL));
  for (int i = 0; i < 16; i++)
    ASSERT_EQ(out[i], (int64_t)i * i);
  mp_result_destroy(mr);
  serves_then_close(p); /* the replacement serves as usual */
}

TEST(task_ring_zero_size_records) {
  task_ring_case(TS_ZERO);
}
TEST(task_ring_bogus_tail) {
  task_ring_case(TS_TAIL);
}
TEST(task_ring_queued_turned_to_skips) {
  task_ring_case(TS_SKIP);
}
TEST(task_ring_running_id_changed) {
  task_ring_case(TS_ID);
}
TEST(task_ring_scribbled_then_blocks) {
  task_ring_case(TS_ZERO_BLOCK);
}

/* ---- a dead slot while fork fails -----------------------------------------
 * Both workers busy (one blocks for good, one waits for a gate), three tasks
 * queued behind each. The blocked worker is killed while fork fails for as
 * long as the test runs: the tasks queued in its slot must move back and
 * run on the other worker, the collector must go on collecting (join, not a
 * waiting get, collects here), and join must end without a replacement. */
static int task_block(const void *arg, size_t len, mp_buf_t *res, void *ctx) {
  _Atomic long *sh = *(_Atomic long *const *)arg;
  atomic_store(&sh[0], getpid());
  for (;;)
    pause();
  return 0;
}

static int task_gate(const void *arg, size_t len, mp_buf_t *res, void *ctx) {
  _Atomic long *sh = *(_Atomic long *const *)arg;
  atomic_store(&sh[1], getpid());
  while (!atomic_load(&sh[2]))
    mpt_sleep_ms(1);
  return mp_buf_set(res, "g", 1);
}

TEST(dead_slot_tasks_move_while_fork_fails) {
  _Atomic long *sh = shared_counters(3);
  mp_pool_t *p = make_pool(MP_POOL_PROCESSES, 2);
  mp_result_t *blk, *gate;
  ASSERT_OK(mp_pool_apply_async(p, task_block, &sh, sizeof sh, NULL, &blk));
  ASSERT_OK(mp_pool_apply_async(p, task_gate, &sh, sizeof sh, NULL, &gate));
  while (!atomic_load(&sh[0]) || !atomic_load(&sh[1]))
    mpt_sleep_ms(1);
  enum { N = 6 };
  mp_result_t *rs[N];
  for (int64_t i = 0; i < N; i++)
    ASSERT_OK(mp_pool_apply_async(p, task_square, &i, sizeof i, NULL, &rs[i]));
  atomic_store(&mp__test_pool_fork_failures, 1 << 30);
  ASSERT_EQ(kill((pid_t)atomic_load(&sh[0]), SIGKILL), 0);
  atomic_store(&sh[2], 1);
  ASSERT_OK(mp_pool_close(p));
  ASSERT_OK(mp_pool_join(p, MP_FOREVER));
  ASSERT_ERR(mp_result_get(blk, 0, NULL, NULL), MP_EWORKERDIED);
  ASSERT_OK(mp_result_get(gate, 0, NULL, NULL));
  for (int64_t i = 0; i < N; i++) {
    const void *d;
    ASSERT_OK(mp_result_get(rs[i], 0, &d, NULL));
    ASSERT_EQ(*(const int64_t *)d, i * i);
    mp_result_destroy(rs[i]);
  }
  mp_result_destroy(blk);
  mp_result_destroy(gate);
  atomic_store(&mp__test_pool_fork_failures, 0);
  ASSERT_OK(mp_pool_destroy(p));
  munmap((void *)sh, 3 * sizeof(long));
}

/* ---- destroy while other threads wait ------------------------------------
 * Threads blocked on results (mp_result_wait, mp_result_get) and on an imap
 * iterator while another thread destroys the pool: their results complete
 * with MP_ECLOSED as by terminate, every waiting call returns, and nothing
 * touches freed memory (ASan/TSan builds check that); the results and the
 * iterator are still destroyed afterwards. Waiters enter at different
 * moments, some just as the pool goes. */
typedef struct {
  mp_result_t *r;
  mp_imap_t *it;
  int delay_us;
  _Atomic int *entered;
  int got;
} dwait_t;

/* The tasks run until every waiter returned (thread workers cannot be
 * killed: destroy waits for their tasks; process workers are killed). */
enum { DW_T = 4 };
static _Atomic int g_dw_left;

static int task_until_waiters_left(const void *arg, size_t len, mp_buf_t *res,
                                   void *ctx) {
  while (atomic_load(&g_dw_left) < DW_T)
    mpt_sleep_ms(1);
  return 0;
}

static int map_until_waiters_left(const void *item, void *result, void *ctx) {
  return task_until_waiters_left(NULL, 0, NULL, ctx);
}

static void *dwait_main(void *arg) {
  dwait_t *a = arg;
  atomic_fetch_add(a->entered, 1);
  if (a->delay_us)
    usleep((useconds_t)a->delay_us);
  if (a->it)
    a->got = mp_imap_next(a->it, NULL, NULL, MP_FOREVER);
  else if (a->delay_us % 2)
    a->got = mp_result_wait(a->r, MP_FOREVER) ?: mp_result_get(a->r, 0, NULL,
                                                                NULL);
  else
    a->got = mp_result_get(a->r, MP_FOREVER, NULL, NULL);
  atomic_fetch_add(&g_dw_left, 1);
  return NULL;
}

static void body_destroy_with_waiters(be_t be, int rounds) {
  for (int round = 0; round < rounds; round++) {
    atomic_store(&g_dw_left, 0);
    mp_pool_t *p = make_pool(be, 2);
    mp_result_t *r;
    ASSERT_OK(mp_pool_apply_async(p, task_until_waiters_left, NULL, 0, NULL,
                                  &r));
    mp_imap_t *it;
    int64_t one = 1;
    ASSERT_OK(mp_pool_imap(p, map_until_waiters_left, &one, 1, sizeof one, 0,
                           NULL, &it));
    enum { T = DW_T };
    _Atomic int entered = 0;
    dwait_t a[T];
    pthread_t th[T];
    for (int i = 0; i < T; i++) {
      /* 0, 1, 2: on the result, entering at staggered moments; 3: on the
       * iterator. */
      a[i] = (dwait_t){r, i == T - 1 ? it : NULL, (round % 4) * 251 * i,
                       &entered, 1};
      ASSERT_EQ(pthread_create(&th[i], NULL, dwait_main, &a[i]), 0);
    }
    while (atomic_load(&entered) < T)
      mpt_sleep_ms(1);
    if (round % 2)
      mpt_sleep_ms(1);
    ASSERT_OK(mp_pool_destroy(p));
    for (int i = 0; i < T; i++) {
      pthread_join(th[i], NULL);
      ASSERT_EQ(a[i].got, MP_ECLOSED);
    }
    ASSERT_ERR(mp_result_get(r, 0, NULL, NULL), MP_ECLOSED);
    ASSERT_OK(mp_result_destroy(r));
    /* An iterator whose pool is gone reports it, and is still destroyed. */
    ASSERT_ERR(mp_imap_next(it, NULL, NULL, MP_FOREVER), MP_ECLOSED);
    ASSERT_OK(mp_imap_destroy(it));
  }
}
TEST(destroy_with_waiters_proc) {
  body_destroy_with_waiters(MP_POOL_PROCESSES, 12);
}
TEST(destroy_with_waiters_storm) {
  pid_t hog = hog_and_storm_start();
  body_destroy_with_waiters(MP_POOL_PROCESSES, 6);
  hog_and_storm_stop(hog);
}
TEST(destroy_with_waiters_thread) {
  body_destroy_with_waiters(MP_POOL_THREADS, 12);
}

/* ---- imap input vs other jobs' callbacks ---------------------------------
 * mp_imap_next reads input (the user's function) while it tops the iterator
 * up. Meanwhile another job's result must be collected and its callback run
 * at once: here the input function blocks until that callback ran. The
 * collector thread also wakes once a second to look for results nobody
 * collected (a safety net); the test-only counter
 * mp__test_pool_late_collects counts results found that way, and must stay
 * 0: the callback ran because it was woken, not because of the net. */
extern _Atomic long mp__test_pool_late_collects; /* src/pool.c, test-only */

static _Atomic int g_cb_ran;
static _Atomic int g_inputs;

static void cb_mark(const void *data, size_t len, void *user) {
  atomic_store(&g_cb_ran, 1);
}

typedef struct {
  mp_pool_t *p;
  mp_result_t *r;
} slow_in_t;

static int input_waits_for_callback(void *item, void *user) {
  slow_in_t *s = user;
  int n = atomic_fetch_add(&g_inputs, 1);
  if (n == 300) {
    /* Another job finishes while we read: its callback must run now. */
    int64_t x = 3;
    mp_async_opts_t cb = {cb_mark, NULL, NULL};
    ASSERT_OK(mp_pool_apply_async(s->p, task_square, &x, 8, &cb, &s->r));
    while (!atomic_load(&g_cb_ran))
      mpt_sleep_ms(1);
  }
  if (n >= 400)
    return 0;
  *(int64_t *)item = n;
  return 1;
}

static void body_imap_input_does_not_delay_callbacks(be_t be) {
  mp_pool_t *p = make_pool(be, 2);
  atomic_store(&g_cb_ran, 0);
  atomic_store(&g_inputs, 0);
  atomic_store(&mp__test_pool_late_collects, 0);
  slow_in_t s = {p, NULL};
  mp_imap_opts_t io = {.input = input_waits_for_callback, .input_user = &s,
                       .max_inflight = 256};
  mp_imap_t *it;
  ASSERT_OK(mp_pool_imap(p, map_square, NULL, 0, 8, 8, &io, &it));
  int64_t v;
  size_t idx, n = 0;
  int e;
  while ((e = mp_imap_next(it, &v, &idx, MP_FOREVER)) == 0) {
    ASSERT_EQ(idx, n);
    ASSERT_EQ(v, (int64_t)(n * n));
    n++;
  }
  ASSERT_EQ(e, MP_ECLOSED);
  ASSERT_EQ(n, 400);
  ASSERT_OK(mp_imap_destroy(it));
  ASSERT_EQ(atomic_load(&g_cb_ran), 1);
  ASSERT_EQ(atomic_load(&mp__test_pool_late_collects), 0);
  ASSERT_OK(mp_result_wait(s.r, MP_FOREVER));
  mp_result_destroy(s.r);
  ASSERT_OK(mp_pool_destroy(p));
}
TEST(imap_input_does_not_delay_callbacks_proc) {
  body_imap_input_does_not_delay_callbacks(MP_POOL_PROCESSES);
}
TEST(imap_input_does_not_delay_callbacks_thread) {
  body_imap_input_does_not_delay_callbacks(MP_POOL_THREADS);
}

/* Tasks with big arguments keep a worker's task ring full: the parent
 * writes new tasks into room the worker has just left, possibly before it
 * read their results. None of that is taken for a corrupt ring: every task
 * gives its right answer. */
static int task_sum_bytes(const void *arg, size_t len, mp_buf_t *res,
                          void *ctx) {
  uint64_t sum = 0;
  for (size_t i = 0; i < len; i++)
    sum += ((const uint8_t *)arg)[i];
  return mp_buf_set(res, &sum, sizeof sum);
}

TEST(big_args_keep_the_ring_full) {
  mp_pool_t *p = make_pool(MP_POOL_PROCESSES, 1);
  enum { N = 120, LEN = 300 << 10 };
  uint8_t *arg = malloc(LEN);
  ASSERT(arg != NULL);
  mp_result_t *rs[N];
  for (int i = 0; i < N; i++) {
    memset(arg, i, LEN);
    ASSERT_OK(mp_pool_apply_async(p, task_sum_bytes, arg, LEN, NULL, &rs[i]));
  }
  for (int i = 0; i < N; i++) {
    const void *d;
    ASSERT_OK(mp_result_get(rs[i], MP_FOREVER, &d, NULL));
    ASSERT_EQ(*(const uint64_t *)d, (uint64_t)i * LEN);
    mp_result_destroy(rs[i]);
  }
  free(arg);
  serves_then_close(p);
}
