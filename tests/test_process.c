/* Tests for mp_process: lifecycle, exit codes, errors, registry, daemon and
 * parent-death semantics, fork server. */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runner.h"

static int ret_arg(const void *arg, size_t len) {
  int v = 0;
  if (len == sizeof v)
    memcpy(&v, arg, sizeof v);
  return v;
}

static int sleep_ms_target(const void *arg, size_t len) {
  int ms = 0;
  if (len == sizeof ms)
    memcpy(&ms, arg, sizeof ms);
  mpt_sleep_ms(ms);
  return 0;
}

static int raise_target(const void *arg, size_t len) {
  int sig;
  memcpy(&sig, arg, sizeof sig);
  raise(sig);
  return 99;
}

TEST(process_start_join_exitcode) {
  for (int v = 0; v < 4; v++) {
    mp_process_t *p;
    int want = v * 7;
    ASSERT_OK(mp_process_create(&p, ret_arg, &want, sizeof want, NULL));
    int code = 1234;
    ASSERT_ERR(mp_process_exitcode(p, &code), MP_EAGAIN);
    ASSERT_EQ(mp_process_pid(p), 0);
    ASSERT_EQ(mp_process_is_alive(p), 0);
    ASSERT_OK(mp_process_start(p));
    ASSERT(mp_process_pid(p) > 0);
    ASSERT_OK(mp_process_join(p, MP_FOREVER));
    ASSERT_OK(mp_process_exitcode(p, &code));
    ASSERT_EQ(code, want);
    ASSERT_EQ(mp_process_is_alive(p), 0);
    ASSERT_OK(mp_process_join(p, 0)); /* joining again is fine */
    ASSERT_OK(mp_process_destroy(p));
  }
}

TEST(process_exitcode_low_8_bits) {
  mp_process_t *p;
  int v = 300;
  ASSERT_OK(mp_process_create(&p, ret_arg, &v, sizeof v, NULL));
  ASSERT_OK(mp_process_start(p));
  ASSERT_OK(mp_process_join(p, MP_FOREVER));
  int code;
  ASSERT_OK(mp_process_exitcode(p, &code));
  ASSERT_EQ(code, 300 & 0xff);
  ASSERT_OK(mp_process_destroy(p));
}

TEST(process_exitcode_signal) {
  int sigs[] = {SIGSEGV, SIGUSR1, SIGABRT};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
    mp_process_t *p;
    ASSERT_OK(mp_process_create(&p, raise_target, &sigs[i], sizeof(int), NULL));
    ASSERT_OK(mp_process_start(p));
    ASSERT_OK(mp_process_join(p, MP_FOREVER));
    int code;
    ASSERT_OK(mp_process_exitcode(p, &code));
    ASSERT_EQ(code, -sigs[i]);
    ASSERT_OK(mp_process_destroy(p));
  }
}

TEST(process_terminate_kill) {
  int ms = 30000;
  mp_process_t *a, *b;
  ASSERT_OK(mp_process_create(&a, sleep_ms_target, &ms, sizeof ms, NULL));
  ASSERT_OK(mp_process_create(&b, sleep_ms_target, &ms, sizeof ms, NULL));
  ASSERT_OK(mp_process_start(a));
  ASSERT_OK(mp_process_start(b));
  ASSERT_EQ(mp_process_is_alive(a), 1);
  ASSERT_ERR(mp_process_join(a, 50), MP_ETIMEDOUT);
  ASSERT_OK(mp_process_terminate(a));
  ASSERT_OK(mp_process_kill(b));
  ASSERT_OK(mp_process_join(a, MP_FOREVER));
  ASSERT_OK(mp_process_join(b, MP_FOREVER));
  int code;
  ASSERT_OK(mp_process_exitcode(a, &code));
  ASSERT_EQ(code, -SIGTERM);
  ASSERT_OK(mp_process_exitcode(b, &code));
  ASSERT_EQ(code, -SIGKILL);
  /* Signalling an ended process is a no-op. */
  ASSERT_OK(mp_process_terminate(a));
  ASSERT_OK(mp_process_kill(b));
  ASSERT_OK(mp_process_destroy(a));
  ASSERT_OK(mp_process_destroy(b));
}

TEST(process_join_timeout_lower_bound) {
  int ms = 5000;
  mp_process_t *p;
  ASSERT_OK(mp_process_create(&p, sleep_ms_target, &ms, sizeof ms, NULL));
  ASSERT_OK(mp_process_start(p));
  uint64_t t0 = mpt_now_ms();
  ASSERT_ERR(mp_process_join(p, 200), MP_ETIMEDOUT);
  ASSERT(mpt_now_ms() - t0 >= 200);
  ASSERT_ERR(mp_process_join(p, 0), MP_ETIMEDOUT);
  ASSERT_OK(mp_process_kill(p));
  ASSERT_OK(mp_process_join(p, MP_FOREVER));
  ASSERT_OK(mp_process_destroy(p));
}

TEST(process_bad_input) {
  mp_process_t *p = NULL;
  int code;
  ASSERT_ERR(mp_process_create(NULL, ret_arg, NULL, 0, NULL), MP_EINVAL);
  ASSERT_ERR(mp_process_create(&p, NULL, NULL, 0, NULL), MP_EINVAL);
  ASSERT_ERR(mp_process_create(&p, ret_arg, NULL, 4, NULL), MP_EINVAL);
  mp_process_opts_t bad = {.start_method = (mp_start_method_t)7};
  ASSERT_ERR(mp_process_create(&p, ret_arg, NULL, 0, &bad), MP_EINVAL);
  ASSERT(p == NULL);
  ASSERT_ERR(mp_process_start(NULL), MP_EINVAL);
  ASSERT_ERR(mp_process_join(NULL, 0), MP_EINVAL);
  ASSERT_ERR(mp_process_is_alive(NULL), MP_EINVAL);
  ASSERT_ERR(mp_process_terminate(NULL), MP_EINVAL);
  ASSERT_ERR(mp_process_kill(NULL), MP_EINVAL);
  ASSERT_ERR(mp_process_exitcode(NULL, &code), MP_EINVAL);
  ASSERT_ERR(mp_process_pid(NULL), MP_EINVAL);
  ASSERT(mp_process_name(NULL) == NULL);
  ASSERT_EQ(mp_process_waitable(NULL).fd, -1);
  ASSERT_OK(mp_process_destroy(NULL));
  ASSERT_ERR(mp_active_children(NULL, 3), MP_EINVAL);

  ASSERT_OK(mp_process_create(&p, sleep_ms_target, NULL, 0, NULL));
  ASSERT_ERR(mp_process_exitcode(p, NULL), MP_EINVAL);
  /* join, signals and waitable before start */
  ASSERT_ERR(mp_process_join(p, 0), MP_EINVAL);
  ASSERT_ERR(mp_process_terminate(p), MP_EINVAL);
  ASSERT_ERR(mp_process_kill(p), MP_EINVAL);
  ASSERT_EQ(mp_process_waitable(p).fd, -1);
  ASSERT_OK(mp_process_start(p));
  ASSERT_ERR(mp_process_start(p), MP_EINVAL); /* double start */
  ASSERT_ERR(mp_process_join(p, -2), MP_EINVAL);
  ASSERT_ERR(mp_process_join(p, -1000), MP_EINVAL);
  ASSERT_OK(mp_process_join(p, MP_FOREVER));
  ASSERT_ERR(mp_process_start(p), MP_EINVAL); /* start after end */
  ASSERT_OK(mp_process_destroy(p));
}

TEST(process_destroy_running_refused) {
  int ms = 30000;
  mp_process_t *p;
  ASSERT_OK(mp_process_create(&p, sleep_ms_target, &ms, sizeof ms, NULL));
  ASSERT_OK(mp_process_destroy(p)); /* never started: fine */
  ASSERT_OK(mp_process_create(&p, sleep_ms_target, &ms, sizeof ms, NULL));
  ASSERT_OK(mp_process_start(p));
  ASSERT_ERR(mp_process_destroy(p), MP_EBUSY);
  ASSERT_EQ(mp_process_is_alive(p), 1); /* still usable */
  ASSERT_OK(mp_process_kill(p));
  /* An ended but not yet joined child is reaped by destroy. */
  while (mp_process_is_alive(p) == 1)
    mpt_sleep_ms(1);
  ASSERT_OK(mp_process_destroy(p));
}

TEST(process_names) {
  mp_process_t *a, *b, *c;
  ASSERT_STR_EQ(mp_current_process_name(), "MainProcess");
  ASSERT_OK(mp_process_create(&a, ret_arg, NULL, 0, NULL));
  ASSERT_OK(mp_process_create(&b, ret_arg, NULL, 0, NULL));
  mp_process_opts_t o = {.name = "worker"};
  ASSERT_OK(mp_process_create(&c, ret_arg, NULL, 0, &o));
  ASSERT_STR_EQ(mp_process_name(a), "Process-1");
  ASSERT_STR_EQ(mp_process_name(b), "Process-2");
  ASSERT_STR_EQ(mp_process_name(c), "worker");
  ASSERT_OK(mp_process_destroy(a));
  ASSERT_OK(mp_process_destroy(b));
  ASSERT_OK(mp_process_destroy(c));
}

/* In a child: its own name, its parent's pid, and default names of its own
 * children derived from its identity. Reports through the exit code. */
static int names_child(const void *arg, size_t len) {
  pid_t parent;
  memcpy(&parent, arg, sizeof parent);
  if (strcmp(mp_current_process_name(), "Process-1") != 0)
    return 1;
  if (mp_parent_pid() != parent || mp_current_pid() != getpid())
    return 2;
  if (mp_active_children(NULL, 0) != 0)
    return 3;
  mp_process_t *g;
  if (mp_process_create(&g, ret_arg, NULL, 0, NULL) < 0)
    return 4;
  int r = strcmp(mp_process_name(g), "Process-1:1") == 0 ? 0 : 5;
  mp_process_destroy(g);
  return r;
}

TEST(process_child_identity) {
  mp_process_t *p;
  pid_t self = getpid();
  ASSERT_OK(mp_process_create(&p, names_child, &self, sizeof self, NULL));
  ASSERT_OK(mp_process_start(p));
  ASSERT_OK(mp_process_join(p, MP_FOREVER));
  int code;
  ASSERT_OK(mp_process_exitcode(p, &code));
  ASSERT_EQ(code, 0);
  ASSERT_OK(mp_process_destroy(p));
}

TEST(process_active_children) {
  int ms = 30000, quick = 0;
  mp_process_t *p[3], *out[4];
  for (int i = 0; i < 3; i++) {
    ASSERT_OK(mp_process_create(&p[i], sleep_ms_target, i == 2 ? &quick : &ms,
                                sizeof ms, NULL));
    ASSERT_OK(mp_process_start(p[i]));
  }
  /* wait for the quick one to end without reaping it */
  struct pollfd pfd = {.fd = mp_process_waitable(p[2]).fd, .events = POLLIN};
  ASSERT_EQ(poll(&pfd, 1, -1), 1);
  int n = mp_active_children(out, 4);
  ASSERT_EQ(n, 2);
  ASSERT((out[0] == p[0] && out[1] == p[1]) ||
         (out[0] == p[1] && out[1] == p[0]));
  int code;
  ASSERT_OK(mp_process_exitcode(p[2], &code)); /* reaped by the call */
  ASSERT_EQ(code, 0);
  ASSERT_EQ(mp_active_children(out, 1), 2); /* count beyond cap */
  ASSERT_EQ(mp_active_children(NULL, 0), 2);
  for (int i = 0; i < 2; i++) {
    ASSERT_OK(mp_process_kill(p[i]));
    ASSERT_OK(mp_process_join(p[i], MP_FOREVER));
  }
  ASSERT_EQ(mp_active_children(NULL, 0), 0);
  for (int i = 0; i < 3; i++)
    ASSERT_OK(mp_process_destroy(p[i]));
}

TEST(process_cpu_count) {
  int n = mp_cpu_count();
  ASSERT(n >= 1);
  cpu_set_t set;
  ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  ASSERT_EQ(n, CPU_COUNT(&set));
  /* Restrict to one CPU: the count follows the affinity. */
  int first = -1;
  for (int i = 0; i < CPU_SETSIZE && first < 0; i++)
    if (CPU_ISSET(i, &set))
      first = i;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(first, &one);
  ASSERT_EQ(sched_setaffinity(0, sizeof one, &one), 0);
  ASSERT_EQ(mp_cpu_count(), 1);
}
