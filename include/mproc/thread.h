/* mproc: threads with the shape of mp_process (Python's threading.Thread,
 * current_thread().name), so threaded code maps one to one.
 *
 * The mproc sync primitives work between threads as between processes.
 * Thread-local data is C11 `_Thread_local` (Python's threading.local).
 *
 * After fork the child has only the thread that forked: the parent's
 * mp_thread_t handles name threads that do not exist there and must not be
 * joined or destroyed in the child. */
#ifndef MPROC_THREAD_H
#define MPROC_THREAD_H

#include <stdbool.h>

#include "common.h"
#include "error.h"

MP_BEGIN_DECLS

typedef struct mp_thread mp_thread_t;

/* A thread target, as a process target: the copied argument bytes (NULL, 0
 * when none were given); its return value is the thread's exit code. */
typedef int (*mp_thread_fn)(const void *arg, size_t len);

typedef struct mp_thread_opts {
  /* NULL: "Thread-N", N counting from 1 in each process. Copied; at most 63
   * bytes are kept (the kernel's thread name keeps 15). */
  const char *name;
} mp_thread_opts_t;

/* Create a thread object (not started) that will run fn(arg, arg_len) with
 * a copy of the arg bytes. Returns 0, MP_EINVAL (t or fn NULL, arg NULL with
 * arg_len > 0), MP_ENOMEM. The caller owns *t (mp_thread_destroy). */
MP_EXTERN int mp_thread_create(mp_thread_t **t, mp_thread_fn fn,
                               const void *arg, size_t arg_len,
                               const mp_thread_opts_t *opts);
/* Start it (once: of several threads starting the same object at once,
 * exactly one succeeds). Returns 0, MP_EINVAL (NULL or already started),
 * MP_EAGAIN (no thread could be made). */
MP_EXTERN int mp_thread_start(mp_thread_t *t);
/* Wait for the thread to end, at most timeout_ms. Returns 0, MP_ETIMEDOUT,
 * MP_EINVAL (NULL, not started, bad timeout), MP_EDEADLK (a thread joining
 * itself). */
MP_EXTERN int mp_thread_join(mp_thread_t *t, int timeout_ms);
/* 1 if started and not ended, 0 if not, MP_EINVAL if NULL. */
MP_EXTERN int mp_thread_is_alive(const mp_thread_t *t);
/* The target's return value once ended; -1 when the target ended its
 * thread with pthread_exit or was cancelled. Returns 0, MP_EAGAIN (not
 * started or still running), MP_EINVAL (NULL). */
MP_EXTERN int mp_thread_exitcode(const mp_thread_t *t, int *code);
/* The name (owned by t), NULL if t is NULL. */
MP_EXTERN const char *mp_thread_name(const mp_thread_t *t);
/* Free it. Returns 0 (also for NULL), MP_EBUSY while the thread runs
 * (nothing is freed then). An ended thread is joined first. */
MP_EXTERN int mp_thread_destroy(mp_thread_t *t);

/* The calling thread's name: its mp_thread name, "MainThread" for the
 * thread that runs main(), "Dummy-<tid>" for other threads. Static or
 * thread-local storage: valid while the thread lives. */
MP_EXTERN const char *mp_current_thread_name(void);

MP_END_DECLS

#endif
