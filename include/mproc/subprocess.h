/* mproc: subprocess. Run external commands with piped input and output
 * (Python's subprocess: Popen, communicate, run).
 *
 * Children are started with clone(CLONE_VM | CLONE_VFORK) + execve, the way
 * glibc's posix_spawn does it: the parent's memory is never copied, so the
 * cost does not grow with the parent's size. A command that cannot start
 * (missing file, not executable, bad cwd) fails in mp_subprocess_spawn with
 * the real errno (MP_ENOENT, MP_EACCES, MP_ENOTDIR, ...), never as a child
 * that exits 127.
 *
 * Every descriptor mproc opens is close-on-exec; by default the child also
 * loses every other descriptor above 2 (Python's close_fds=True).
 *
 * Handles belong to the process that spawned the child: a forked child of
 * that process must not use (or destroy) them; it may only close its copies
 * of the pipe descriptors, which are close-on-exec anyway. One handle is not
 * thread-safe: use it from one thread at a time. Different handles may be
 * used from different threads. */
#ifndef MPROC_SUBPROCESS_H
#define MPROC_SUBPROCESS_H

#include <stdbool.h>

#include "common.h"
#include "error.h"
#include "wait.h"

MP_BEGIN_DECLS

typedef struct mp_subprocess mp_subprocess_t;

/* What one of the child's standard descriptors is connected to. */
typedef enum {
  MP_STDIO_INHERIT = 0, /* the caller's own 0, 1 or 2 (Python's None) */
  MP_STDIO_PIPE = 1,    /* a new pipe; the caller's end: mp_subprocess_fd */
  MP_STDIO_DEVNULL = 2, /* /dev/null */
  MP_STDIO_FD = 3,      /* the caller's descriptor in .fd (duplicated) */
  MP_STDIO_STDOUT = 4   /* stderr only: wherever stdout goes (STDOUT) */
} mp_stdio_mode_t;

typedef struct mp_stdio {
  mp_stdio_mode_t mode;
  int fd; /* MP_STDIO_FD only */
} mp_stdio_t;

/* Flags for mp_subprocess_opts_t.flags. */
enum {
  /* Keep the caller's descriptors that are not close-on-exec open in the
   * child (Python's close_fds=False). By default only 0, 1, 2 survive. */
  MP_SUBPROCESS_KEEP_FDS = 1 << 0,
  /* Let the child outlive this process. By default the child gets SIGKILL
   * when this process dies (PR_SET_PDEATHSIG, set before exec), so that a
   * parent killed with SIGKILL leaves no command behind. The kernel ties
   * that signal to the cloning thread: commands asked for by threads other
   * than the main one are cloned by an internal thread that lives as long
   * as the process, so they do not die with the thread that asked. The
   * kernel clears it for set-uid/set-gid commands and ones with file
   * capabilities. */
  MP_SUBPROCESS_OUTLIVE_PARENT = 1 << 1,
  /* setsid() in the child (Python's start_new_session=True). */
  MP_SUBPROCESS_NEW_SESSION = 1 << 2,
  /* Keep SIGPIPE and SIGXFSZ ignored in the child when the caller ignores
   * them (Python's restore_signals=False). By default they are reset to
   * their default action, as a shell would start the command. */
  MP_SUBPROCESS_KEEP_SIGNALS = 1 << 3
};

/* Options for mp_subprocess_spawn; all-zero (or a NULL pointer) is Python's
 * Popen default: inherit environment, directory and stdio. */
typedef struct mp_subprocess_opts {
  /* NULL: the caller's environment; else the child's whole environment, a
   * NULL-terminated list of "NAME=value" (Python's env=). */
  const char *const *env;
  /* NULL-terminated list applied on top of env (or of the caller's
   * environment): "NAME=value" sets, a bare "NAME" removes. */
  const char *const *env_add;
  /* Directory the child starts in (NULL: the caller's). A relative argv[0]
   * containing '/' is resolved from there, as execvp would after chdir. */
  const char *cwd;
  /* [0] stdin, [1] stdout, [2] stderr. */
  mp_stdio_t stdio[3];
  /* Pipe buffer size in bytes: 0 grows pipes to 1 MiB once a large transfer
   * is seen (communicate feeding > 64 KiB, or a read that found the pipe
   * full); > 0 sets it at once; -1 leaves the kernel's 64 KiB. Pipe memory
   * counts against a per-user limit (/proc/sys/fs/pipe-user-pages-soft). */
  int pipe_size;
  unsigned flags; /* MP_SUBPROCESS_* */
} mp_subprocess_opts_t;

/* Start argv[0] with arguments argv (NULL-terminated) (Python's Popen). A
 * name without '/' is searched in PATH like execvp, in the child's
 * environment as Python does (env with env_add applied, or the caller's
 * environment with env_add applied), "/bin:/usr/bin" when it has no PATH.
 * A file without a #! line or ELF header fails with MP_ENOEXEC (no /bin/sh
 * retry, as posix_spawnp and Python).
 * On success *sp is a new handle, to be released with
 * mp_subprocess_destroy.
 * Returns 0, or:
 *   MP_EINVAL  sp or argv NULL, argv empty, a bad stdio mode (STDOUT for
 *              stdin or stdout, FD with fd < 0), pipe_size < -1;
 *   MP_EBADF   an MP_STDIO_FD descriptor is not open;
 *   MP_ENOENT, MP_EACCES, MP_ENOEXEC, MP_ENOTDIR, MP_E2BIG, ...: the command
 *              or cwd could not be used: the errno of the failed exec or
 *              chdir, nothing left running;
 *   MP_ENOMEM, MP_EMFILE, MP_EAGAIN: out of memory, descriptors or
 *              processes. */
MP_EXTERN int mp_subprocess_spawn(mp_subprocess_t **sp,
                                  const char *const argv[],
                                  const mp_subprocess_opts_t *opts);

/* Feed input[0..input_len) to the child's stdin pipe, then close it, while
 * reading its stdout and stderr pipes until both reach end of file, then
 * wait for the child to exit (Python's Popen.communicate). Any sizes work in
 * any order without deadlock (one poll loop over all pipes). If the child
 * stops reading its input, the rest is dropped (no SIGPIPE is raised in the
 * caller).
 * On success *out and *err (when not NULL) receive malloc'd buffers the
 * caller frees, NUL-terminated (the NUL is not counted in *out_len /
 * *err_len); NULL with length 0 for a stream that is not a pipe. A piped
 * stream whose pointer is NULL is drained and dropped. out_len/err_len may be
 * NULL.
 * On MP_ETIMEDOUT the child keeps running and what was read so far stays in
 * the handle, *out and *err untouched; call again with the same input and
 * input_len (any timeout) to continue where it stopped, e.g. after
 * mp_subprocess_kill to collect the output of a killed child (Python's
 * pattern). After a successful call the pipes are closed; another call
 * returns 0 with empty output.
 * Returns 0, or MP_ETIMEDOUT, or MP_EINVAL (sp NULL, bad timeout, input_len
 * > 0 with input NULL or without a stdin pipe, a continued call whose input
 * differs), MP_ENOMEM (output buffers; what was read stays, the call may be
 * repeated), MP_EIO (a read or write failed for another reason). */
MP_EXTERN int mp_subprocess_communicate(mp_subprocess_t *sp, const void *input,
                                        size_t input_len, char **out,
                                        size_t *out_len, char **err,
                                        size_t *err_len, int timeout_ms);

/* Wait at most timeout_ms for the child to exit and reap it (Python's
 * Popen.wait). Only this child is waited for (pidfd / waitid on its pid): an
 * application's SIGCHLD handling is left alone. If the application reaps the
 * child itself (waitpid(-1), SIGCHLD ignored) the return code is 0, as in
 * Python. Do not wait with pipes full: a child blocked writing to a pipe
 * nobody reads never exits (use communicate).
 * Returns 0 (and *returncode, when not NULL, as mp_subprocess_returncode),
 * MP_ETIMEDOUT, or MP_EINVAL (sp NULL, bad timeout). */
MP_EXTERN int mp_subprocess_wait(mp_subprocess_t *sp, int timeout_ms,
                                 int *returncode);

/* Check without blocking whether the child has exited, reaping it if so
 * (Python's Popen.poll). Returns 1 when it has exited (*returncode set when
 * not NULL), 0 while it runs, MP_EINVAL for a NULL sp. */
MP_EXTERN int mp_subprocess_poll(mp_subprocess_t *sp, int *returncode);

/* The exit status once the child was reaped by wait, poll or communicate:
 * the exit code, or minus the signal number when a signal killed it
 * (Python's Popen.returncode). Returns 0 and sets *returncode, MP_EAGAIN if
 * not reaped yet (not finished: the same code as mp_process_exitcode; this
 * call does not check: use poll), MP_EINVAL (NULL arguments). */
MP_EXTERN int mp_subprocess_returncode(const mp_subprocess_t *sp,
                                       int *returncode);

/* Send signal sig to the child (Python's send_signal); through the pidfd,
 * so a reused pid is never hit. Nothing happens once the child was reaped.
 * Returns 0, MP_EINVAL (sp NULL, bad signal number), MP_EPERM. */
MP_EXTERN int mp_subprocess_signal(mp_subprocess_t *sp, int sig);
/* mp_subprocess_signal(sp, SIGTERM) (Python's terminate). */
MP_EXTERN int mp_subprocess_terminate(mp_subprocess_t *sp);
/* mp_subprocess_signal(sp, SIGKILL) (Python's kill). */
MP_EXTERN int mp_subprocess_kill(mp_subprocess_t *sp);

/* The child's process id (Python's Popen.pid), or MP_EINVAL. */
MP_EXTERN int mp_subprocess_pid(const mp_subprocess_t *sp);

/* The caller's end of the pipe to the child's stdin (which 0), from its
 * stdout (1) or stderr (2), for the caller's own event loop or pipelines
 * (pass it as MP_STDIO_FD of the next command, then mp_subprocess_close_fd
 * it here). Owned by the handle: do not close it yourself. Close-on-exec,
 * blocking until communicate makes stdin's non-blocking.
 * Returns the descriptor, MP_ECLOSED when that stream is not a pipe or was
 * closed, MP_EINVAL (sp NULL, which not 0..2). */
MP_EXTERN int mp_subprocess_fd(const mp_subprocess_t *sp, int which);

/* Close the caller's end of a pipe (Python's proc.stdin.close()): closing
 * stdin sends end of file to the child. Returns 0, MP_ECLOSED when not a
 * pipe or already closed, MP_EINVAL (sp NULL, which not 0..2). */
MP_EXTERN int mp_subprocess_close_fd(mp_subprocess_t *sp, int which);

/* For mp_wait: ready when the child has exited (its pidfd polls readable). */
MP_EXTERN mp_waitable_t mp_subprocess_waitable(mp_subprocess_t *sp);

/* Release the handle: closes the pipes, and if the child still runs, kills
 * it with SIGKILL and reaps it (no zombie is ever left behind; unlike
 * Python, which leaves it running, so wait first to let it finish).
 * Returns 0 or MP_EINVAL (sp NULL). */
MP_EXTERN int mp_subprocess_destroy(mp_subprocess_t *sp);

/* ---- run: spawn + communicate + wait in one call ------------------------ */

/* Options for mp_run (all-zero or NULL: no input, no capture, no timeout). */
typedef struct mp_run_opts {
  mp_subprocess_opts_t sp; /* env, cwd, stdio, flags as for spawn */
  /* Bytes fed to stdin (makes stdin a pipe; stdio[0] must stay INHERIT). */
  const void *input;
  size_t input_len;
  /* Capture stdout and stderr (stdio[1] and [2] must stay INHERIT). A
   * stream set to MP_STDIO_PIPE in sp.stdio is captured as well. */
  bool capture_output;
  /* Non-zero returncode gives MP_ETASK (Python's check=True). */
  bool check;
  /* Python's run(timeout=): kill the child (SIGKILL) and reap it once it
   * has run this many ms. 0 (zeroed options) or MP_FOREVER: no limit.
   * This is a limit on the child, not a wait: it is not named timeout_ms
   * because every timeout_ms in mproc means "0: do not wait". */
  int time_limit_ms;
} mp_run_opts_t;

typedef struct mp_run_result {
  int returncode; /* as mp_subprocess_returncode */
  int pid;
  char *out; /* captured stdout, malloc'd, NUL-terminated; NULL if not */
  size_t out_len;
  char *err; /* captured stderr, likewise */
  size_t err_len;
} mp_run_result_t;

/* Run argv to completion (Python's subprocess.run). *result is always reset
 * first; fill it and free it with mp_run_result_free.
 * Returns 0, or:
 *   MP_ETASK      check set and returncode != 0; *result is filled;
 *   MP_ETIMEDOUT  time_limit_ms passed: the child was killed and reaped;
 *                 *result holds what was captured until then and
 *                 returncode -SIGKILL;
 *   MP_EINVAL     argv or result NULL, argv empty, time_limit_ms < -1, input or
 *                 capture_output together with an explicit stdio mode;
 *   any error of mp_subprocess_spawn / communicate (*result left empty). */
MP_EXTERN int mp_run(const char *const argv[], const mp_run_opts_t *opts,
                     mp_run_result_t *result);

/* Free the buffers of a result and zero it. Safe on a zeroed result.
 * Returns 0 or MP_EINVAL (NULL). */
MP_EXTERN int mp_run_result_free(mp_run_result_t *result);

MP_END_DECLS

#endif
