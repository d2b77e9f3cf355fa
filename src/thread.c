/* Threads with the mp_process shape. join with a timeout waits on a futex
 * the thread clears as its very last step, then pthread_join reaps it. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "mproc/thread.h"

enum { T_NEW, T_RUNNING, T_DONE };

struct mp_thread {
  mp_thread_fn fn;
  void *arg;
  size_t arg_len;
  pthread_t tid;
  _Atomic uint32_t state;
  int exitcode;
  bool joined;
  char name[64];
};

static _Atomic unsigned thread_counter;
static _Thread_local const char *current_name;

int mp_thread_create(mp_thread_t **t, mp_thread_fn fn, const void *arg,
                     size_t arg_len, const mp_thread_opts_t *opts) {
  if (!t || !fn || (!arg && arg_len > 0))
    return MP_EINVAL;
  mp_thread_t *th = calloc(1, sizeof *th);
  if (!th)
    return MP_ENOMEM;
  if (arg_len > 0) {
    if (!(th->arg = malloc(arg_len))) {
      free(th);
      return MP_ENOMEM;
    }
    memcpy(th->arg, arg, arg_len);
  }
  th->fn = fn;
  th->arg_len = arg_len;
  if (opts && opts->name)
    snprintf(th->name, sizeof th->name, "%s", opts->name);
  else
    snprintf(th->name, sizeof th->name, "Thread-%u",
             atomic_fetch_add(&thread_counter, 1) + 1);
  *t = th;
  return 0;
}

static void thread_finish(mp_thread_t *t) {
  current_name = NULL;
  atomic_store(&t->state, T_DONE);
  mp__futex_wake(&t->state, INT32_MAX);
}

/* The target left through pthread_exit (or was cancelled): no return
 * value, exit code -1, and join must still see the end. */
static void thread_unwound(void *p) {
  mp_thread_t *t = p;
  t->exitcode = -1;
  thread_finish(t);
}

static void *thread_main(void *p) {
  mp_thread_t *t = p;
  char kname[16];
  /* The kernel keeps 15 bytes of a thread name. */
  memcpy(kname, t->name, sizeof kname - 1);
  kname[sizeof kname - 1] = '\0';
  pthread_setname_np(pthread_self(), kname);
  current_name = t->name;
  pthread_cleanup_push(thread_unwound, t);
  t->exitcode = t->fn(t->arg, t->arg_len);
  pthread_cleanup_pop(0);
  thread_finish(t);
  return NULL;
}

int mp_thread_start(mp_thread_t *t) {
  if (!t)
    return MP_EINVAL;
  /* One start wins, however many threads try at once. */
  uint32_t expect = T_NEW;
  if (!atomic_compare_exchange_strong(&t->state, &expect, T_RUNNING))
    return MP_EINVAL;
  int r = pthread_create(&t->tid, NULL, thread_main, t);
  if (r != 0) {
    atomic_store(&t->state, T_NEW);
    return r == EAGAIN ? MP_EAGAIN : -r;
  }
  return 0;
}

static void thread_reap(mp_thread_t *t) {
  if (!t->joined) {
    pthread_join(t->tid, NULL);
    t->joined = true;
  }
}

int mp_thread_join(mp_thread_t *t, int timeout_ms) {
  if (!t || mp__check_timeout(timeout_ms) < 0 ||
      atomic_load(&t->state) == T_NEW)
    return MP_EINVAL;
  if (atomic_load(&t->state) == T_RUNNING &&
      pthread_equal(t->tid, pthread_self()))
    return MP_EDEADLK;
  mp__deadline_t dl;
  mp__deadline_init(&dl, timeout_ms);
  while (atomic_load(&t->state) == T_RUNNING) {
    if (timeout_ms == 0 ||
        mp__futex_wait(&t->state, T_RUNNING, &dl) == MP_ETIMEDOUT) {
      if (atomic_load(&t->state) == T_RUNNING)
        return MP_ETIMEDOUT;
    }
  }
  thread_reap(t);
  return 0;
}

int mp_thread_is_alive(const mp_thread_t *t) {
  if (!t)
    return MP_EINVAL;
  return atomic_load(&t->state) == T_RUNNING;
}

int mp_thread_exitcode(const mp_thread_t *t, int *code) {
  if (!t || !code)
    return MP_EINVAL;
  if (atomic_load(&t->state) != T_DONE)
    return MP_EAGAIN;
  *code = t->exitcode;
  return 0;
}

const char *mp_thread_name(const mp_thread_t *t) {
  return t ? t->name : NULL;
}

int mp_thread_destroy(mp_thread_t *t) {
  if (!t)
    return 0;
  uint32_t st = atomic_load(&t->state);
  if (st == T_RUNNING)
    return MP_EBUSY;
  if (st == T_DONE)
    thread_reap(t);
  free(t->arg);
  free(t);
  return 0;
}

const char *mp_current_thread_name(void) {
  static _Thread_local char dummy[32];
  if (current_name)
    return current_name;
  if (gettid() == getpid())
    return "MainThread";
  snprintf(dummy, sizeof dummy, "Dummy-%d", (int)gettid());
  return dummy;
}
