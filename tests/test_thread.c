/* Tests of the thread helpers. */
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "runner.h"

static int add_fn(const void *arg, size_t len) {
  int v[2];
  if (len != sizeof v)
    return 99;
  memcpy(v, arg, sizeof v);
  return v[0] + v[1];
}

TEST(thread_run_join_exitcode) {
  int args[2] = {3, 4};
  mp_thread_t *t;
  ASSERT_OK(mp_thread_create(&t, add_fn, args, sizeof args, NULL));
  args[0] = 100; /* copied at create */
  int code = -1;
  ASSERT_ERR(mp_thread_exitcode(t, &code), MP_EAGAIN);
  ASSERT_EQ(mp_thread_is_alive(t), 0);
  ASSERT_ERR(mp_thread_join(t, 0), MP_EINVAL);
  ASSERT_OK(mp_thread_start(t));
  ASSERT_ERR(mp_thread_start(t), MP_EINVAL);
  ASSERT_OK(mp_thread_join(t, MP_FOREVER));
  ASSERT_OK(mp_thread_join(t, 0));
  ASSERT_EQ(mp_thread_is_alive(t), 0);
  ASSERT_OK(mp_thread_exitcode(t, &code));
  ASSERT_EQ(code, 7);
  ASSERT_OK(mp_thread_destroy(t));
}

static mp_event_t g_go;
static char g_name[64];

static int wait_go(const void *arg, size_t len) {
  snprintf(g_name, sizeof g_name, "%s", mp_current_thread_name());
  return mp_event_wait(&g_go, MP_FOREVER) == 0 ? 0 : 1;
}

TEST(thread_join_timeout_and_names) {
  mp_event_init(&g_go);
  ASSERT_STR_EQ(mp_current_thread_name(), "MainThread");
  mp_thread_t *t, *u;
  mp_thread_opts_t o = {.name = "worker-with-a-long-name"};
  ASSERT_OK(mp_thread_create(&t, wait_go, NULL, 0, &o));
  ASSERT_STR_EQ(mp_thread_name(t), "worker-with-a-long-name");
  ASSERT_OK(mp_thread_create(&u, wait_go, NULL, 0, NULL));
  ASSERT(strncmp(mp_thread_name(u), "Thread-", 7) == 0);
  ASSERT_OK(mp_thread_start(t));
  uint64_t t0 = mpt_now_ms();
  ASSERT_ERR(mp_thread_join(t, 100), MP_ETIMEDOUT);
  ASSERT(mpt_now_ms() - t0 >= 100);
  ASSERT_EQ(mp_thread_is_alive(t), 1);
  ASSERT_ERR(mp_thread_destroy(t), MP_EBUSY);
  ASSERT_OK(mp_event_set(&g_go));
  ASSERT_OK(mp_thread_join(t, MP_FOREVER));
  ASSERT_STR_EQ(g_name, "worker-with-a-long-name");
  ASSERT_OK(mp_thread_destroy(t));
  ASSERT_OK(mp_thread_destroy(u)); /* never started */
}

TEST(thread_errors) {
  mp_thread_t *t;
  int code;
  ASSERT_ERR(mp_thread_create(NULL, add_fn, NULL, 0, NULL), MP_EINVAL);
  ASSERT_ERR(mp_thread_create(&t, NULL, NULL, 0, NULL), MP_EINVAL);
  ASSERT_ERR(mp_thread_create(&t, add_fn, NULL, 4, NULL), MP_EINVAL);
  ASSERT_ERR(mp_thread_start(NULL), MP_EINVAL);
  ASSERT_ERR(mp_thread_join(NULL, 0), MP_EINVAL);
  ASSERT_ERR(mp_thread_is_alive(NULL), MP_EINVAL);
  ASSERT_ERR(mp_thread_exitcode(NULL, &code), MP_EINVAL);
  ASSERT(mp_thread_name(NULL) == NULL);
  ASSERT_OK(mp_thread_destroy(NULL));
  ASSERT_OK(mp_thread_create(&t, add_fn, NULL, 0, NULL));
  ASSERT_OK(mp_thread_start(t));
  ASSERT_ERR(mp_thread_join(t, -2), MP_EINVAL);
  ASSERT_ERR(mp_thread_exitcode(t, NULL), MP_EINVAL);
  ASSERT_OK(mp_thread_join(t, MP_FOREVER));
  ASSERT_OK(mp_thread_exitcode(t, &code));
  ASSERT_EQ(code, 99);
  ASSERT_OK(mp_thread_destroy(t));
}

static _Thread_local int tls_value;

static int tls_fn(const void *arg, size_t len) {
  tls_value = *(const int *)arg;
  mpt_sleep_ms(10);
  return tls_value;
}

TEST(thread_local_data) {
  tls_value = 1;
  mp_thread_t *t[3];
  for (int i = 0; i < 3; i++) {
    int v = 10 + i;
    ASSERT_OK(mp_thread_create(&t[i], tls_fn, &v, sizeof v, NULL));
    ASSERT_OK(mp_thread_start(t[i]));
  }
  for (int i = 0; i < 3; i++) {
    int code;
    ASSERT_OK(mp_thread_join(t[i], MP_FOREVER));
    ASSERT_OK(mp_thread_exitcode(t[i], &code));
    ASSERT_EQ(code, 10 + i);
    mp_thread_destroy(t[i]);
  }
  ASSERT_EQ(tls_value, 1);
}

static int exit_early(const void *arg, size_t len) {
  (void)arg;
  (void)len;
  pthread_exit(NULL); /* never returns: the target's code is unknown */
}

TEST(thread_target_calls_pthread_exit) {
  mp_thread_t *t;
  ASSERT_OK(mp_thread_create(&t, exit_early, NULL, 0, NULL));
  ASSERT_OK(mp_thread_start(t));
  ASSERT_OK(mp_thread_join(t, MP_FOREVER)); /* ends, does not hang */
  ASSERT_EQ(mp_thread_is_alive(t), 0);
  int code = 0;
  ASSERT_OK(mp_thread_exitcode(t, &code));
  ASSERT_EQ(code, -1);
  ASSERT_OK(mp_thread_destroy(t));
}

static atomic_int starts_ok, go;
static atomic_int runs;
static int count_run(const void *arg, size_t len) {
  atomic_fetch_add(&runs, 1);
  return 0;
}
static void *racer(void *arg) {
  while (!atomic_load(&go)) {
  }
  if (mp_thread_start(arg) == 0)
    atomic_fetch_add(&starts_ok, 1);
  return NULL;
}

TEST(thread_double_start_race) {
  for (int round = 0; round < 200; round++) {
    mp_thread_t *t;
    ASSERT_OK(mp_thread_create(&t, count_run, NULL, 0, NULL));
    atomic_store(&starts_ok, 0);
    atomic_store(&runs, 0);
    atomic_store(&go, 0);
    pthread_t a, b;
    ASSERT_EQ(pthread_create(&a, NULL, racer, t), 0);
    ASSERT_EQ(pthread_create(&b, NULL, racer, t), 0);
    atomic_store(&go, 1);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    ASSERT_EQ(atomic_load(&starts_ok), 1);
    ASSERT_OK(mp_thread_join(t, MP_FOREVER));
    ASSERT_EQ(atomic_load(&runs), 1);
    ASSERT_OK(mp_thread_destroy(t));
  }
}
