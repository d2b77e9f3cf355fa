/* The pool's behaviour on the MPI backend. Run as
 *   mpirun --oversubscribe -n 3 build/tests/mpi_pool CASE
 * Every rank runs main; the worker ranks serve inside mp_pool_create and
 * leave with MP_EWORKERRANK, the root runs the case and checks it. A failed
 * check ends the root with _exit(1), which makes mpirun end the job. */
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mproc.h>

#define CHECK(c)                                                               \
  do {                                                                         \
    if (!(c)) {                                                                \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);    \
      fflush(stderr);                                                          \
      _exit(1);                                                                \
    }                                                                          \
  } while (0)
#define CHECK_RC(e, want)                                                      \
  do {                                                                         \
    int rc_ = (e);                                                             \
    if (rc_ != (want)) {                                                       \
      fprintf(stderr, "%s:%d: %s gave %s, want %s\n", __FILE__, __LINE__, #e,  \
              mp_err_name(rc_), mp_err_name(want));                            \
      fflush(stderr);                                                          \
      _exit(1);                                                                \
    }                                                                          \
  } while (0)

#ifdef MP_OTHER_BUILD
/* Built into the second binary only, so its build-id differs. */
const char mp_other_build_marker[] = "another build of the test program";
#endif

static int ctx_value = 0;
static int init_calls = 0;

static void init(void *arg) {
  (void)arg;
  init_calls++;
}

/* ---- tasks --------------------------------------------------------------- */

static int echo(const void *arg, size_t len, mp_buf_t *result, void *ctx) {
  return mp_buf_set(result, arg, len);
}

static int fail_task(const void *arg, size_t len, mp_buf_t *result,
                     void *ctx) {
  return mp_task_error(result, 42, "no such thing: %.*s", (int)len,
                       (const char *)arg);
}

/* A result of *arg bytes, byte i = i * 7. */
static int big(const void *arg, size_t len, mp_buf_t *result, void *ctx) {
  uint32_t n;
  memcpy(&n, arg, sizeof n);
  void *p;
  if (mp_buf_reserve(result, n, &p))
    return 1;
  for (uint32_t i = 0; i < n; i++)
    ((uint8_t *)p)[i] = (uint8_t)(i * 7);
  return mp_buf_commit(result, n);
}

typedef struct {
  int32_t index, init_calls, ctx;
  int32_t pid;
} who_t;

static int who(const void *arg, size_t len, mp_buf_t *result, void *ctx) {
  if (len) {
    uint32_t us;
    memcpy(&us, arg, sizeof us);
    usleep(us);
  }
  who_t w = {mp_pool_worker_index(), init_calls, ctx ? *(int *)ctx : -1,
             (int32_t)getpid()};
  return mp_buf_set(result, &w, sizeof w);
}

static int sq(const void *item, void *result, void *ctx) {
  int64_t x;
  memcpy(&x, item, sizeof x);
  if (x % 1000 == 999 && ctx && *(int *)ctx == 1)
    return 7;
  x = x * x;
  memcpy(result, &x, sizeof x);
  return 0;
}

typedef struct {
  int32_t a, b;
  char tag[8];
} pair_t;

static int add(const void *item, void *result, void *ctx) {
  const pair_t *p = item;
  int64_t s = (int64_t)p->a + p->b + (int64_t)strlen(p->tag);
  memcpy(result, &s, sizeof s);
  return 0;
}

/* Item i: sleeps 1 s when i == 0, 5 ms otherwise; returns the worker. */
static int uneven(const void *item, void *result, void *ctx) {
  int32_t i;
  memcpy(&i, item, sizeof i);
  usleep(i == 0 ? 1000000 : 5000);
  int32_t w = mp_pool_worker_index();
  memcpy(result, &w, sizeof w);
  return 0;
}

/* The worker rank that runs item 500 dies by SIGKILL. */
static int killer(const void *item, void *result, void *ctx) {
  int64_t x;
  memcpy(&x, item, sizeof x);
  if (x == 500)
    raise(SIGKILL);
  if (x >= 400 && x < 600)
    usleep(2000);
  memcpy(result, &x, sizeof x);
  return 0;
}

/* ---- cases --------------------------------------------------------------- */

static void case_apply(mp_pool_t *pool) {
  mp_buf_t out = MP_BUF_INIT;
  CHECK_RC(mp_pool_apply(pool, echo, "hello", 5, &out, NULL), 0);
  CHECK(out.len == 5 && memcmp(out.data, "hello", 5) == 0);
  CHECK_RC(mp_pool_apply(pool, echo, NULL, 0, &out, NULL), 0);
  CHECK(out.len == 0);
  int code = 0;
  CHECK_RC(mp_pool_apply(pool, fail_task, "x", 1, &out, &code), MP_ETASK);
  CHECK(code == 42);
  CHECK(strcmp(out.data, "no such thing: x") == 0);
  /* The largest argument, and a result of several pieces. */
  uint8_t *arg = malloc(MP_POOL_MAX_ARG);
  CHECK(arg);
  for (size_t i = 0; i < MP_POOL_MAX_ARG; i++)
    arg[i] = (uint8_t)(i * 13);
  CHECK_RC(mp_pool_apply(pool, echo, arg, MP_POOL_MAX_ARG, &out, NULL), 0);
  CHECK(out.len == MP_POOL_MAX_ARG && memcmp(out.data, arg, out.len) == 0);
  CHECK_RC(mp_pool_apply(pool, echo, arg, MP_POOL_MAX_ARG + 1, &out, NULL),
           MP_EMSGSIZE);
  free(arg);
  uint32_t n = 5u << 20;
  CHECK_RC(mp_pool_apply(pool, big, &n, sizeof n, &out, NULL), 0);
  CHECK(out.len == n);
  for (uint32_t i = 0; i < n; i++)
    CHECK(((uint8_t *)out.data)[i] == (uint8_t)(i * 7));
  mp_buf_free(&out);
  CHECK_RC(mp_pool_apply(NULL, echo, "x", 1, NULL, NULL), MP_EINVAL);
  CHECK_RC(mp_pool_apply(pool, NULL, "x", 1, NULL, NULL), MP_EINVAL);
}

static _Atomic int cb_ok, cb_err, cb_bad;

static void on_done(const void *data, size_t len, void *user) {
  uintptr_t i = (uintptr_t)user;
  uint32_t v;
  if (len != sizeof v) {
    cb_bad++;
    return;
  }
  memcpy(&v, data, sizeof v);
  if (v != i)
    cb_bad++;
  cb_ok++;
}

static void on_error(int err, int task_code, const char *msg, void *user) {
  if (err != MP_ETASK || task_code != 42 || strncmp(msg, "no such", 7) != 0)
    cb_bad++;
  cb_err++;
}

static void case_async(mp_pool_t *pool) {
  enum { N = 2000 };
  mp_result_t *r[N];
  for (uint32_t i = 0; i < N; i++) {
    mp_async_opts_t o = {on_done, on_error, (void *)(uintptr_t)i};
    if (i % 7 == 3)
      CHECK_RC(mp_pool_apply_async(pool, fail_task, "y", 1, &o, &r[i]), 0);
    else
      CHECK_RC(mp_pool_apply_async(pool, echo, &i, sizeof i, &o, &r[i]), 0);
  }
  /* Fire and forget beside them. */
  for (uint32_t i = 0; i < 100; i++)
    CHECK_RC(mp_pool_apply_async(pool, echo, &i, sizeof i, NULL, NULL), 0);
  int failed = 0;
  for (uint32_t i = 0; i < N; i++) {
    const void *d;
    size_t len;
    int e = mp_result_get(r[i], MP_FOREVER, &d, &len);
    CHECK(mp_result_ready(r[i]) == 1);
    if (i % 7 == 3) {
      CHECK_RC(e, MP_ETASK);
      CHECK(mp_result_successful(r[i]) == 0);
      int code;
      const char *msg;
      CHECK_RC(mp_result_task_error(r[i], &code, &msg), 0);
      CHECK(code == 42 && strcmp(msg, "no such thing: y") == 0);
      failed++;
    } else {
      CHECK_RC(e, 0);
      CHECK(len == sizeof i && memcmp(d, &i, sizeof i) == 0);
      CHECK(mp_result_successful(r[i]) == 1);
    }
    CHECK_RC(mp_result_destroy(r[i]), 0);
  }
  /* Callbacks ran before their results became ready: exactly once each. */
  CHECK(cb_ok == N - failed && cb_err == failed && cb_bad == 0);
}

static void on_map_done(const void *data, size_t len, void *user) {
  const int64_t *r = data;
  if (len != 5000 * sizeof *r || r[4999] != 4999 * 4999)
    cb_bad++;
  cb_ok++;
}

static void case_map(mp_pool_t *pool) {
  enum { N = 200000 };
  int64_t *in = malloc(N * sizeof *in), *out = malloc(N * sizeof *out);
  CHECK(in && out);
  for (int i = 0; i < N; i++)
    in[i] = i;
  for (size_t cs = 0; cs <= 1000; cs += 1000) {
    memset(out, 0, N * sizeof *out);
    CHECK_RC(mp_pool_map(pool, sq, in, N, sizeof *in, out, sizeof *out, cs),
             0);
    for (int i = 0; i < N; i++)
      CHECK(out[i] == (int64_t)i * i);
  }
  CHECK_RC(mp_pool_map(pool, sq, in, 0, sizeof *in, out, sizeof *out, 0), 0);
  CHECK_RC(mp_pool_map(pool, sq, NULL, 5, sizeof *in, out, sizeof *out, 0),
           MP_EINVAL);
  CHECK_RC(mp_pool_map(pool, sq, in, 5, 0, out, sizeof *out, 0), MP_EINVAL);
  /* chunksize 1: every item its own task. */
  memset(out, 0, N * sizeof *out);
  CHECK_RC(mp_pool_map(pool, sq, in, 3000, sizeof *in, out, sizeof *out, 1),
           0);
  for (int i = 0; i < 3000; i++)
    CHECK(out[i] == (int64_t)i * i);
  /* starmap: a struct of arguments per call. */
  pair_t *pr = malloc(1000 * sizeof *pr);
  CHECK(pr);
  for (int i = 0; i < 1000; i++)
    pr[i] = (pair_t){i, 2 * i, "abc"};
  CHECK_RC(mp_pool_starmap(pool, add, pr, 1000, sizeof *pr, out, sizeof *out,
                           0),
           0);
  for (int i = 0; i < 1000; i++)
    CHECK(out[i] == 3 * i + 3);
  free(pr);
  /* map_async with a callback. */
  mp_result_t *r;
  mp_async_opts_t o = {on_map_done, on_error, NULL};
  cb_ok = cb_err = cb_bad = 0;
  CHECK_RC(mp_pool_map_async(pool, sq, in, 5000, sizeof *in, out, sizeof *out,
                             0, &o, &r),
           0);
  CHECK_RC(mp_result_get(r, MP_FOREVER, NULL, NULL), 0);
  mp_result_destroy(r);
  CHECK(cb_bad == 0 && cb_ok == 1 && cb_err == 0);
  for (int i = 0; i < 5000; i++)
    CHECK(out[i] == (int64_t)i * i);
  free(in);
  free(out);
}

/* A map whose items fail: MP_ETASK, first failing item's code, the other
 * results written. Run with ctx 1 on every rank. */
static void case_map_errors(mp_pool_t *pool) {
  enum { N = 10000 };
  int64_t in[N], out[N];
  for (int i = 0; i < N; i++)
    in[i] = i;
  CHECK_RC(mp_pool_map(pool, sq, in, N, sizeof *in, out, sizeof *out, 0),
           MP_ETASK);
  for (int i = 0; i < N; i++)
    if (i % 1000 != 999)
      CHECK(out[i] == (int64_t)i * i);
  mp_result_t *r;
  CHECK_RC(mp_pool_map_async(pool, sq, in, N, sizeof *in, out, sizeof *out,
                             100, NULL, &r),
           0);
  CHECK_RC(mp_result_get(r, MP_FOREVER, NULL, NULL), MP_ETASK);
  int code;
  CHECK_RC(mp_result_task_error(r, &code, NULL), 0);
  CHECK(code == 7);
  mp_result_destroy(r);
  /* imap: the failing items fail one by one, the others come through. */
  mp_imap_t *it;
  CHECK_RC(mp_pool_imap(pool, sq, in, 3000, sizeof *in, sizeof *out, NULL,
                        &it),
           0);
  for (int i = 0; i < 3000; i++) {
    int64_t v;
    size_t idx;
    int e = mp_imap_next(it, &v, &idx, MP_FOREVER);
    CHECK(idx == (size_t)i);
    if (i % 1000 == 999)
      CHECK_RC(e, MP_ETASK);
    else
      CHECK(e == 0 && v == (int64_t)i * i);
  }
  CHECK_RC(mp_imap_next(it, NULL, NULL, MP_FOREVER), MP_ECLOSED);
  mp_imap_destroy(it);
}

static int64_t gen_next, gen_calls;

static int gen(void *item, void *user) {
  gen_calls++;
  int64_t v = gen_next++;
  memcpy(item, &v, sizeof v);
  return 1; /* endless */
}

static void case_imap(mp_pool_t *pool) {
  enum { N = 20000 };
  static int64_t in[N];
  for (int i = 0; i < N; i++)
    in[i] = i;
  mp_imap_t *it;
  mp_imap_opts_t io = {.chunksize = 7};
  CHECK_RC(mp_pool_imap(pool, sq, in, N, sizeof *in, sizeof(int64_t), &io,
                        &it),
           0);
  for (int i = 0; i < N; i++) {
    int64_t v;
    size_t idx;
    CHECK_RC(mp_imap_next(it, &v, &idx, MP_FOREVER), 0);
    CHECK(idx == (size_t)i && v == (int64_t)i * i);
  }
  CHECK_RC(mp_imap_next(it, NULL, NULL, 0), MP_ECLOSED);
  mp_imap_destroy(it);
  /* Unordered: every index once. */
  static uint8_t seen[N];
  CHECK_RC(mp_pool_imap_unordered(pool, sq, in, N, sizeof *in,
                                  sizeof(int64_t), &io, &it),
           0);
  for (int i = 0; i < N; i++) {
    int64_t v;
    size_t idx;
    CHECK_RC(mp_imap_next(it, &v, &idx, MP_FOREVER), 0);
    CHECK(idx < N && !seen[idx] && v == (int64_t)idx * (int64_t)idx);
    seen[idx] = 1;
  }
  CHECK_RC(mp_imap_next(it, NULL, NULL, MP_FOREVER), MP_ECLOSED);
  mp_imap_destroy(it);
  /* Lazy: an endless input is read only max_inflight ahead. */
  mp_imap_opts_t lo = {.chunksize = 4, .max_inflight = 64, .input = gen};
  CHECK_RC(mp_pool_imap(pool, sq, NULL, 0, sizeof(int64_t), sizeof(int64_t),
                        &lo, &it),
           0);
  for (int i = 0; i < 1000; i++) {
    int64_t v;
    CHECK_RC(mp_imap_next(it, &v, NULL, MP_FOREVER), 0);
    CHECK(v == (int64_t)i * i);
    CHECK(gen_calls <= i + 1 + 64);
  }
  mp_imap_destroy(it);
}

static _Atomic int term_cb;

static void on_term(int err, int task_code, const char *msg, void *user) {
  if (err == MP_ECLOSED)
    term_cb++;
}

static void on_term_ok(const void *data, size_t len, void *user) {
  term_cb++;
}

static void case_lifecycle(mp_pool_t *pool) {
  CHECK_RC(mp_pool_join(pool, 0), MP_EINVAL); /* not closed */
  CHECK_RC(mp_pool_close(pool), 0);
  CHECK_RC(mp_pool_apply(pool, echo, "x", 1, NULL, NULL), MP_ECLOSED);
  CHECK_RC(mp_pool_map(pool, sq, &(int64_t){1}, 1, 8, NULL, 0, 0),
           MP_ECLOSED);
  CHECK_RC(mp_pool_join(pool, MP_FOREVER), 0);
  CHECK_RC(mp_pool_close(pool), 0);
  CHECK_RC(mp_pool_join(pool, MP_FOREVER), 0);
}

/* A second pool in the same run: the worker ranks called mp_pool_create
 * again after MP_EWORKERRANK. terminate with work queued. */
static void case_terminate(mp_pool_t *pool) {
  enum { N = 200 };
  mp_result_t *r[N];
  uint32_t us = 20000;
  for (int i = 0; i < N; i++) {
    mp_async_opts_t o = {on_term_ok, on_term, NULL};
    CHECK_RC(mp_pool_apply_async(pool, who, &us, sizeof us, &o, &r[i]), 0);
  }
  CHECK_RC(mp_result_get(r[0], MP_FOREVER, NULL, NULL), 0);
  CHECK_RC(mp_pool_terminate(pool), 0);
  int closed = 0;
  for (int i = 0; i < N; i++) {
    int e = mp_result_get(r[i], MP_FOREVER, NULL, NULL);
    CHECK(e == 0 || e == MP_ECLOSED);
    closed += e == MP_ECLOSED;
    mp_result_destroy(r[i]);
  }
  CHECK(closed > 0);
  CHECK(term_cb == N); /* one callback of either kind per task */
  CHECK_RC(mp_pool_apply(pool, echo, "x", 1, NULL, NULL), MP_ECLOSED);
  CHECK_RC(mp_pool_join(pool, MP_FOREVER), 0);
}

static void case_initializer(mp_pool_t *pool) {
  int seen[2] = {0, 0};
  for (int i = 0; i < 200; i++) {
    mp_buf_t out = MP_BUF_INIT;
    uint32_t us = 200;
    CHECK_RC(mp_pool_apply(pool, who, &us, sizeof us, &out, NULL), 0);
    who_t w;
    CHECK(out.len == sizeof w);
    memcpy(&w, out.data, sizeof w);
    CHECK(w.index == 0 || w.index == 1);
    CHECK(w.init_calls == 1); /* once per worker rank */
    CHECK(w.ctx == 5);        /* each rank's own ctx */
    CHECK(w.pid != getpid());
    seen[w.index]++;
    mp_buf_free(&out);
  }
  /* apply waits for each task: both ranks are idle in turn; async spreads */
  mp_result_t *r[100];
  uint32_t us = 2000;
  for (int i = 0; i < 100; i++)
    CHECK_RC(mp_pool_apply_async(pool, who, &us, sizeof us, NULL, &r[i]), 0);
  for (int i = 0; i < 100; i++) {
    const void *d;
    size_t len;
    CHECK_RC(mp_result_get(r[i], MP_FOREVER, &d, &len), 0);
    who_t w;
    memcpy(&w, d, sizeof w);
    seen[w.index]++;
    mp_result_destroy(r[i]);
  }
  CHECK(seen[0] > 0 && seen[1] > 0);
  CHECK(init_calls == 0); /* never on the root */
}

/* Chunks are pulled by idle ranks: the rank stuck on the 1 s item does not
 * hold a share of the rest. */
static void case_balance(mp_pool_t *pool) {
  enum { N = 80 };
  int32_t in[N], out[N];
  for (int i = 0; i < N; i++)
    in[i] = i;
  CHECK_RC(mp_pool_map(pool, uneven, in, N, sizeof *in, out, sizeof *out, 1),
           0);
  int slow = out[0], on_slow = 0;
  for (int i = 0; i < N; i++)
    on_slow += out[i] == slow;
  printf("items on the slow rank: %d of %d\n", on_slow, N);
  CHECK(on_slow < N / 4); /* a static split would give it N / 2 */
}

static void case_kill(mp_pool_t *pool) {
  enum { N = 2000 };
  static int64_t in[N], out[N];
  for (int i = 0; i < N; i++)
    in[i] = i, out[i] = -1;
  int e = mp_pool_map(pool, killer, in, N, sizeof *in, out, sizeof *out, 10);
  /* Reached only when the job survives the death (mpirun
   * --enable-recovery): the chunk that died fails, the rest arrived. */
  printf("map after a rank died: %s\n", mp_err_name(e));
  CHECK_RC(e, MP_EWORKERDIED);
  /* The tasks the dead rank held unanswered fail (it may have run any of
   * them); all others arrived. */
  int lost = 0;
  for (int i = 0; i < N; i++) {
    CHECK(out[i] == i || out[i] == -1);
    lost += out[i] == -1;
  }
  CHECK(out[500] == -1);
  printf("items lost with the rank: %d\n", lost);
  mp_buf_t b = MP_BUF_INIT;
  for (int i = 0; i < 20; i++)
    CHECK_RC(mp_pool_apply(pool, echo, "again", 5, &b, NULL), 0);
  mp_buf_free(&b);
  printf("pool went on with the other rank\n");
}

typedef struct {
  const char *name;
  void (*fn)(mp_pool_t *);
  int pools; /* how many pools the case makes (worker ranks serve each) */
} case_t;

static const case_t cases[] = {
    {"apply", case_apply, 1},       {"async", case_async, 1},
    {"map", case_map, 1},           {"map_errors", case_map_errors, 1},
    {"imap", case_imap, 1},         {"lifecycle", case_lifecycle, 2},
    {"terminate", case_terminate, 1}, {"initializer", case_initializer, 1},
    {"balance", case_balance, 1},   {"kill", case_kill, 1},
};

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc != 2) {
    fprintf(stderr, "usage: mpirun -n 3 %s CASE|binary|badopts\n", argv[0]);
    return 2;
  }
  const char *name = argv[1];
  mp_pool_t *pool;
  if (strcmp(name, "binary") == 0) {
    /* Run as `mpirun -n 1 mpi_pool binary : -n 2 mpi_pool_other binary`. */
    mp_pool_opts_t o = {.backend = MP_POOL_MPI};
    int e = mp_pool_create(&pool, &o);
    printf("create: %s\n", mp_err_name(e));
    return e == MP_EBINARY ? 0 : 1;
  }
  if (strcmp(name, "badopts") == 0) {
    /* Every rank gets the same verdict, then a good pool still works. */
    mp_pool_opts_t o = {.backend = MP_POOL_MPI, .workers = 7};
    CHECK_RC(mp_pool_create(&pool, &o), MP_EINVAL);
    CHECK_RC(mp_pool_create(NULL, &o), MP_EINVAL);
    o.workers = 0;
    int e = mp_pool_create(&pool, &o);
    if (e == MP_EWORKERRANK)
      return 0;
    CHECK_RC(e, 0);
    CHECK(mp_pool_size(pool) == 2);
    mp_buf_t b = MP_BUF_INIT;
    CHECK_RC(mp_pool_apply(pool, echo, "ok", 2, &b, NULL), 0);
    mp_buf_free(&b);
    CHECK_RC(mp_pool_destroy(pool), 0);
    return 0;
  }
  const case_t *c = NULL;
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    if (strcmp(cases[i].name, name) == 0)
      c = &cases[i];
  if (!c) {
    fprintf(stderr, "no case %s\n", name);
    return 2;
  }
  ctx_value = strcmp(name, "map_errors") == 0 ? 1 : 5;
  mp_pool_opts_t o = {.backend = MP_POOL_MPI,
                      .initializer = init,
                      .ctx = &ctx_value};
  int pool_count_root = 0;
  for (int k = 0; k < c->pools; k++) {
    int e = mp_pool_create(&pool, &o);
    if (e == MP_EWORKERRANK)
      continue; /* served the root's pool k */
    pool_count_root++;
    CHECK_RC(e, 0);
    CHECK(mp_pool_size(pool) == 2);
    if (k == 0)
      c->fn(pool);
    else
      case_terminate(pool);
    CHECK_RC(mp_pool_destroy(pool), 0);
  }
  if (pool_count_root)
    printf("case %s passed\n", name);
  return 0;
}
