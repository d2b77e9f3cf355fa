/* A small test runner in the libuv style.
 *
 *   TEST(queue_fifo) { ... ASSERT_OK(mp_queue_put(q, "a", 1, 0)); ... }
 *
 * Each TEST runs in its own forked process, in its own process group, under a
 * timeout (MPT_TIMEOUT seconds, default 60): a hang fails the test and the
 * whole group is killed. After the test body returns, the runner checks that
 * the test reaped every child it forked and left no extra fd open.
 *
 * `test_x` runs every test and ends with "N passed, N failed";
 * `test_x NAME` runs one (ctest registers one entry per TEST). A TEST line
 * must start at column 0 so CMake can list the cases. */
#ifndef MPROC_TEST_RUNNER_H
#define MPROC_TEST_RUNNER_H

#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "mproc.h"

typedef void (*mpt_fn)(void);
void mpt_register(const char *name, mpt_fn fn);
void mpt_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));

#define TEST(name)                                                             \
  static void test_##name(void);                                               \
  __attribute__((constructor)) static void mpt_reg_##name(void) {              \
    mpt_register(#name, test_##name);                                          \
  }                                                                            \
  static void test_##name(void)

#define ASSERT(cond)                                                           \
  do {                                                                         \
    if (!(cond))                                                               \
      mpt_fail(__FILE__, __LINE__, "assertion failed: %s", #cond);             \
  } while (0)

#define ASSERT_EQ(a, b)                                                        \
  do {                                                                         \
    int64_t mpt_a_ = (int64_t)(a), mpt_b_ = (int64_t)(b);                      \
    if (mpt_a_ != mpt_b_)                                                      \
      mpt_fail(__FILE__, __LINE__, "%s == %s: %" PRId64 " != %" PRId64, #a,    \
               #b, mpt_a_, mpt_b_);                                            \
  } while (0)

#define ASSERT_STR_EQ(a, b)                                                    \
  do {                                                                         \
    const char *mpt_a_ = (a), *mpt_b_ = (b);                                   \
    if (!mpt_a_ || !mpt_b_ || strcmp(mpt_a_, mpt_b_) != 0)                     \
      mpt_fail(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b,       \
               mpt_a_ ? mpt_a_ : "(null)", mpt_b_ ? mpt_b_ : "(null)");        \
  } while (0)

/* expr returns an mproc code: it must be 0. */
#define ASSERT_OK(expr)                                                        \
  do {                                                                         \
    int mpt_r_ = (expr);                                                       \
    if (mpt_r_ != 0)                                                           \
      mpt_fail(__FILE__, __LINE__, "%s failed: %s (%s)", #expr,                \
               mp_err_name(mpt_r_), mp_strerror(mpt_r_));                      \
  } while (0)

/* expr returns an mproc code: it must be `code`. */
#define ASSERT_ERR(expr, code)                                                 \
  do {                                                                         \
    int mpt_r_ = (expr), mpt_c_ = (code);                                      \
    if (mpt_r_ != mpt_c_)                                                      \
      mpt_fail(__FILE__, __LINE__, "%s: got %s, want %s", #expr,               \
               mp_err_name(mpt_r_), mp_err_name(mpt_c_));                      \
  } while (0)

/* Helpers for tests. */
int mpt_count_fds(void);               /* open fds of this process */
bool mpt_shm_exists(const char *name); /* "/mp-..." present in /dev/shm */
int mpt_count_shm(void);               /* entries /dev/shm/mp-* */
void mpt_sleep_ms(int ms);
uint64_t mpt_now_ms(void); /* CLOCK_MONOTONIC */
/* Capture what fn writes to stdout (fds 1) into a malloc'd string. */
char *mpt_capture_stdout(void (*fn)(void *), void *arg);
/* Run a shell command, return its stdout (malloc'd) and exit status. */
char *mpt_run_cmd(const char *cmd, int *status);
/* Build dir (env MP_BUILD_DIR, default "build"). */
const char *mpt_build_dir(void);
/* Run the built example mpt_build_dir()/examples/<name> (name may be
 * followed by shell-quoted arguments: "pool_copy_folder '/tmp/x'") and return
 * its stdout (malloc'd), with its stderr too when flags has MPT_STDERR. Fails
 * the case, showing the output, unless the example exits with status 0. */
#define MPT_STDERR 1
#define mpt_run_example(name, flags)                                           \
  mpt__run_example(__FILE__, __LINE__, (name), (flags))
char *mpt__run_example(const char *file, int line, const char *name, int flags);
/* Run fn in a forked child that has a /dev/shm of its own: a tmpfs of
 * shm_bytes in a private mount namespace, so fn can fill it without
 * touching the machine's. Returns the child's wait status (fn returning
 * gives exit 0; a failed ASSERT exits 1; a crash shows as its signal). */
int mpt_with_small_dev_shm(size_t shm_bytes, void (*fn)(void));
/* Number of non-overlapping occurrences of needle in s. */
int mpt_count(const char *s, const char *needle);
/* first appears in s, and before second. */
bool mpt_before(const char *s, const char *first, const char *second);

/* Reaping children. mpt_wait_exit waits for child pid (again after EINTR)
 * and returns its exit status, or 128 + the signal that ended it.
 * mpt_wait_ok fails the case, at the caller's line, unless the child exited
 * with status 0. mpt_kill_reap SIGKILLs child pid, reaps it and returns
 * what mpt_wait_exit does (128 + SIGKILL unless it had ended before). */
int mpt_wait_exit(pid_t pid);
#define mpt_wait_ok(pid) mpt__wait_ok(__FILE__, __LINE__, (pid))
void mpt__wait_ok(const char *file, int line, pid_t pid);
int mpt_kill_reap(pid_t pid);
/* Join process p (MP_FOREVER) and fail the case, at the caller's line,
 * unless its exit code is 0. */
#define mpt_join_ok(p) mpt__join_ok(__FILE__, __LINE__, (p))
void mpt__join_ok(const char *file, int line, mp_process_t *p);
/* Stress helpers. A signal storm in the calling process: SIGALRM every
 * `us` microseconds (1000: the usual 1 ms storm) from ITIMER_REAL, caught by
 * a handler that counts it in mpt_storm_alarms (set to 0 here), with
 * SA_RESTART only when `restart`, so that without it every blocking system
 * call keeps being interrupted. mpt_storm_stop turns the timer off and then
 * ignores SIGALRM (one still pending is dropped). A forked child inherits
 * the handler but not the timer. */
extern _Atomic int mpt_storm_alarms; /* signal handlers run on any thread */
void mpt_storm_start(int us, bool restart);
void mpt_storm_stop(void);
/* A CPU hog: a forked child that spins until mpt_hog_stop kills and reaps
 * it. */
pid_t mpt_hog_start(void);
void mpt_hog_stop(pid_t hog);

#endif
