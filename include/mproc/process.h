/* mproc: processes (Python's Process, current_process, active_children,
 * cpu_count, start methods).
 *
 * A process runs a target `int fn(const void *arg, size_t len)` with a copy of
 * the argument bytes given at creation. The target's return value is the exit
 * code (its low 8 bits, as for exit(3)); a process killed by signal N has
 * exit code -N, as in Python.
 *
 * What is valid in a child after fork (start method MP_START_FORK): the child
 * is a copy of the caller at the moment of mp_process_start, with only the
 * calling thread. Everything created before the start is there (memory,
 * fds, mproc pipes, queues, locks and shared memory are made to be used from
 * it). Other threads of the parent do not exist in the child: a mutex one of
 * them held stays locked forever, and library state guarded by such a lock
 * may be inconsistent. Programs that run threads should use
 * MP_START_FORKSERVER (and call mp_forkserver_start() early, before starting
 * threads). In the child, the parent's mp_process_t handles are not the
 * child's children: mp_active_children() starts empty, and the parent's
 * handles must not be joined, killed or destroyed from the child. The child
 * ends with _exit(2) after flushing stdout and stderr: atexit handlers of the
 * parent do not run in it.
 *
 * In a fork-server child (MP_START_FORKSERVER) memory is the program as it
 * was when the server started (globals set later are not seen), with one
 * thread and no lock held; descriptors marked close-on-exec were closed in
 * the server, so connections of the application are not inherited: pass
 * their descriptors with mp_process_pass_fd, or use objects opened by name.
 * The target function pointer, the argument bytes and the passed
 * descriptors are all the request carries. */
#ifndef MPROC_PROCESS_H
#define MPROC_PROCESS_H

#include <stdbool.h>

#include "common.h"
#include "error.h"
#include "wait.h"

MP_BEGIN_DECLS

typedef struct mp_process mp_process_t;

/* A process target: receives the copied argument bytes (NULL, 0 when none
 * were given). Its return value is the exit code. */
typedef int (*mp_process_fn)(const void *arg, size_t len);

typedef struct mp_process_opts {
  /* NULL: "Process-N", N counting from 1 in each process (in a child the
   * parent's identity is prefixed: "Process-1:1"). Copied; at most 63 bytes
   * are kept. */
  const char *name;
  /* Daemon children are terminated (SIGTERM, then joined) when the parent
   * exits normally (exit(3) or return from main); non-daemon children are
   * joined then, as Python does. */
  bool daemon;
  /* MP_START_FORK (default) or MP_START_FORKSERVER. */
  mp_start_method_t start_method;
  /* By default a child is killed (SIGKILL) when its parent process dies,
   * even by SIGKILL (PR_SET_PDEATHSIG; forks for threads other than the main
   * one are made by an internal thread that lives as long as the process,
   * so a child never dies with the thread that started it). true lets it
   * outlive its parent, and the parent's exit does not wait for it. */
  bool outlive_parent;
} mp_process_opts_t;

/* Create a process object (not started) that will run fn(arg, arg_len).
 * The arg bytes are copied: the caller's buffer may be freed at once.
 * Returns 0, MP_EINVAL (p or fn NULL, arg NULL with arg_len > 0, unknown
 * start method), MP_ENOMEM. The caller owns *p and frees it with
 * mp_process_destroy. */
MP_EXTERN int mp_process_create(mp_process_t **p, mp_process_fn fn,
                                const void *arg, size_t arg_len,
                                const mp_process_opts_t *opts);

/* Hand the open descriptor fd to the child, at the same number and with
 * the same close-on-exec flag. Only needed for MP_START_FORKSERVER, whose
 * children inherit none of the application's descriptors; a fork child
 * inherits them all, and there the call only checks fd. Call before start;
 * fd must stay open until then (the child gets its own copy). At most
 * MP_PROCESS_PASS_FDS_MAX. Wrap a connection's descriptor in the child with
 * mp_conn_from_fd. Returns 0, MP_EINVAL (p NULL, fd < 0, already started),
 * MP_EBADF (fd not open), MP_E2BIG (too many). */
#define MP_PROCESS_PASS_FDS_MAX 32
MP_EXTERN int mp_process_pass_fd(mp_process_t *p, int fd);

/* Start the child (once). Standard output and error are flushed first so
 * buffered output is not written twice. Returns 0, MP_EINVAL (p NULL or
 * already started), MP_EAGAIN / MP_ENOMEM (fork failed), MP_ENOSYS (a
 * kernel older than Linux 5.4: no pidfds), or an error from the fork
 * server. */
MP_EXTERN int mp_process_start(mp_process_t *p);

/* Wait for the child to end, at most timeout_ms (MP_FOREVER: no limit, 0:
 * just check). Reaps only this child (waitid on its pidfd): never another
 * child of the application, and SIGCHLD handling is left to the application.
 * Returns 0 (ended; see mp_process_exitcode), MP_ETIMEDOUT, MP_EINVAL (p NULL,
 * not started, bad timeout), MP_ECHILD (the exit status is lost: the child
 * was killed by a signal and reaped by the application itself, e.g. with
 * waitpid(-1) or under SIGCHLD SIG_IGN, or its fork server died). A fork
 * child whose target returned reports its exit code itself, so that code
 * is known even when the application reaped the child. */
MP_EXTERN int mp_process_join(mp_process_t *p, int timeout_ms);

/* 1 if the child was started and has not ended, 0 if not (never started or
 * ended: an ended child is reaped here), MP_EINVAL if p is NULL. */
MP_EXTERN int mp_process_is_alive(mp_process_t *p);

/* Send SIGTERM (terminate) or SIGKILL (kill) to the child, through its pidfd
 * so a reused pid is never hit. No-op (0) when the child already ended.
 * Returns 0, MP_EINVAL (p NULL or not started). */
MP_EXTERN int mp_process_terminate(mp_process_t *p);
MP_EXTERN int mp_process_kill(mp_process_t *p);

/* The exit code once the child ended and was reaped (by join, is_alive or
 * mp_active_children): the target's return value (0..255) or minus the
 * signal that killed it. Returns 0 with *code set, MP_EAGAIN (not started
 * or still running: Python's None), MP_ECHILD (exit status lost: reaped by
 * the application itself, or the fork server died), MP_EINVAL (NULL). */
MP_EXTERN int mp_process_exitcode(mp_process_t *p, int *code);

/* The child's pid (> 0), 0 if not started, MP_EINVAL if p is NULL. */
MP_EXTERN pid_t mp_process_pid(const mp_process_t *p);

/* The process name (owned by p, valid until destroy); NULL if p is NULL. */
MP_EXTERN const char *mp_process_name(const mp_process_t *p);

/* A waitable for mp_wait: ready once the child has ended. Until started its
 * fd is -1 (mp_wait rejects it with MP_EINVAL). Valid until destroy. */
MP_EXTERN mp_waitable_t mp_process_waitable(mp_process_t *p);

/* Free the object (Python's close()). Returns 0 (also for NULL),
 * MP_EBUSY while the child is running (nothing is freed then). An ended
 * child is reaped first. */
MP_EXTERN int mp_process_destroy(mp_process_t *p);

/* This process's pid, and the pid of the process that started it (for a
 * fork-server child: the process that asked for it, not the server). In a
 * process not started by mproc, mp_parent_pid() is getppid() (the shell,
 * say): ask mp_has_parent() to tell the two apart. */
MP_EXTERN pid_t mp_current_pid(void);
MP_EXTERN pid_t mp_parent_pid(void);

/* 1 in a process started by mp_process (either start method), 0 otherwise:
 * Python's `parent_process() is not None`. */
MP_EXTERN int mp_has_parent(void);

/* The name of the calling process: "MainProcess", or its mp_process name in
 * a child. Static storage. */
MP_EXTERN const char *mp_current_process_name(void);

/* What Python's current_process() and parent_process() tell: name, pid,
 * daemon flag and identity ("" in the main process, "1", "1:2", ... in
 * children, as Python's _identity joined by ':'). */
typedef struct mp_process_info {
  char name[64];
  char identity[64];
  pid_t pid;
  bool daemon;
} mp_process_info_t;

/* Fill *info for the calling process. Returns 0, MP_EINVAL (info NULL). */
MP_EXTERN int mp_current_process(mp_process_info_t *info);
/* Fill *info for the process that started the caller (name as the caller
 * inherited it; daemon is always false: the parent's flag is its parent's
 * business). Returns 0, MP_ENOENT (not started by mproc: Python's None),
 * MP_EINVAL (info NULL). */
MP_EXTERN int mp_parent_process(mp_process_info_t *info);

/* Children started from this process that are still running. Finished ones
 * are reaped on the way (their exit code becomes available). Up to cap
 * handles are written to out (out may be NULL when cap is 0). Returns the
 * number of running children (which may exceed cap) or MP_EINVAL (out NULL
 * with cap > 0). */
MP_EXTERN int mp_active_children(mp_process_t **out, size_t cap);

/* Number of CPUs this process may run on (sched_getaffinity), >= 1. */
MP_EXTERN int mp_cpu_count(void);

/* Start the fork server now (it is otherwise started by the first
 * MP_START_FORKSERVER process). Call it early, before the program starts
 * threads: the server is a fork of the caller at this moment, and each
 * fork-server child is a fork of the server, so it never inherits a lock
 * held by another thread. Returns 0 (also when already running), or a
 * fork/socket error. */
MP_EXTERN int mp_forkserver_start(void);

/* Stop the fork server (its running children are killed unless they were
 * created with outlive_parent) and close its socket. Returns 0. It is
 * stopped at normal exit too, and ends by itself when its parent dies. */
MP_EXTERN int mp_forkserver_stop(void);

MP_END_DECLS

#endif
