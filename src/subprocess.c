/* Subprocess: spawn commands with clone(CLONE_VM | CLONE_VFORK) + execve,
 * feed and drain their pipes with one poll loop, reap them through a pidfd.
 *
 * Why not posix_spawn: the child must call prctl(PR_SET_PDEATHSIG) before
 * exec so that commands do not outlive a parent killed with SIGKILL, and
 * posix_spawn runs no code of ours. The child here is what glibc's
 * posix_spawn does (same clone flags, same signal handling), plus that
 * prctl, setsid and close_range: it shares our memory on its own small stack
 * while this thread is suspended, and reports a failed chdir/exec by writing
 * errno into a close-on-exec pipe before exiting, so spawn returns the real
 * errno. (A pipe rather than the shared memory itself: tools such as
 * valgrind and qemu-user turn CLONE_VM | CLONE_VFORK into a plain fork.) */
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "mproc/subprocess.h"

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

extern char **environ;

#define SP_CHILD_STACK (64 * 1024)
#define SP_BIG_PIPE (1024 * 1024)
#define SP_DEFAULT_PIPE (64 * 1024)
#define SP_MIN_READ (64 * 1024) /* free space kept for each read */
#define SP_POPULATE (1024 * 1024)
#define SP_THREAD_MIN (4 * 1024 * 1024) /* input worth a feeder thread */
#define SP_STDOUT_MARK (-2)             /* child stderr: dup of its stdout */

typedef struct sp_writer sp_writer_t;

typedef struct {
  char *data;
  size_t len, cap;
  size_t populated; /* bytes known to be backed by pages */
} sp_buf_t;

struct mp_subprocess {
  pid_t pid;
  int pidfd;  /* -1 when the kernel has none */
  int fds[3]; /* caller's pipe ends, -1 */
  bool grown[3];
  int pipe_size;
  bool reaped;
  int returncode;
  /* communicate state, kept across MP_ETIMEDOUT */
  bool comm_started;
  const void *in;
  size_t in_len, in_off;
  sp_buf_t out, err;
};

/* ---- the child ----------------------------------------------------------
 * Runs on its own stack in our address space while the spawning thread is
 * suspended. It must not touch locks, malloc or anything a sanitizer
 * intercepts: raw system calls only, and no instrumentation. */

/* The kernel's struct sigaction as x86_64 and arm64 lay it out (with
 * sa_restorer); the raw call bypasses sanitizer interceptors. */
struct sp_ksigaction {
  void *handler;
  unsigned long flags;
  void *restorer;
  uint64_t mask;
};

typedef struct {
  char *const *paths; /* candidate program paths, NULL-terminated */
  char *const *argv;
  char *const *envp;
  const char *cwd;
  int src[3]; /* fd to install as 0,1,2; -1 inherit; SP_STDOUT_MARK */
  unsigned flags;
  pid_t ppid;
  uint64_t oldmask; /* the signal mask the command starts with */
  bool own_mask;    /* sp_clone: take the calling thread's mask */
  void *stack_top;
  int errfd; /* write end of the error pipe, >= 3, close-on-exec */
} sp_child_t;

#define SP_SYS(...) syscall(__VA_ARGS__)

__attribute__((no_sanitize("address", "undefined", "thread"),
               noinline)) static int
sp_child_main(void *arg) {
  sp_child_t *a = arg;
  int e = 0;

  /* A handler of ours must not run here, on our memory: default every
   * caught signal before unblocking them (exec would do it anyway). */
  for (int sig = 1; sig < 65; sig++) {
    struct sp_ksigaction sa;
    if (sig == SIGKILL || sig == SIGSTOP)
      continue;
    if (SP_SYS(SYS_rt_sigaction, sig, NULL, &sa, sizeof(uint64_t)) != 0)
      continue;
    if (sa.handler == (void *)SIG_DFL)
      continue;
    if (sa.handler == (void *)SIG_IGN &&
        ((a->flags & MP_SUBPROCESS_KEEP_SIGNALS) ||
         (sig != SIGPIPE && sig != SIGXFSZ)))
      continue;
    sa.handler = (void *)SIG_DFL;
    sa.flags = 0;
    sa.mask = 0;
    SP_SYS(SYS_rt_sigaction, sig, &sa, NULL, sizeof(uint64_t));
  }
  if (a->flags & MP_SUBPROCESS_NEW_SESSION)
    SP_SYS(SYS_setsid);
  if (!(a->flags & MP_SUBPROCESS_OUTLIVE_PARENT)) {
    SP_SYS(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    /* The parent may have died before the prctl took effect. */
    if (SP_SYS(SYS_getppid) != a->ppid)
      SP_SYS(SYS_exit_group, 127);
  }
  if (a->cwd && SP_SYS(SYS_chdir, a->cwd) != 0) {
    e = errno;
    goto fail;
  }
  /* A source that is itself one of 0..2 may be overwritten by an earlier
   * dup2: move it out of the way first. */
  int src[3];
  for (int i = 0; i < 3; i++) {
    src[i] = a->src[i];
    if (src[i] >= 0 && src[i] < 3 && src[i] != i) {
      long r = SP_SYS(SYS_fcntl, src[i], F_DUPFD_CLOEXEC, 3);
      if (r < 0) {
        e = errno;
        goto fail;
      }
      src[i] = (int)r;
    }
  }
  for (int i = 0; i < 3; i++) {
    long r = 0;
    if (src[i] == i)
      r = SP_SYS(SYS_fcntl, i, F_SETFD, 0);
    else if (src[i] >= 0)
      r = SP_SYS(SYS_dup3, src[i], i, 0);
    else if (src[i] == SP_STDOUT_MARK)
      r = SP_SYS(SYS_dup3, 1, 2, 0);
    if (r < 0) {
      e = errno;
      goto fail;
    }
  }
  /* Everything above 2 goes at exec; marking rather than closing keeps the
   * error pipe usable until then. */
  if (!(a->flags & MP_SUBPROCESS_KEEP_FDS) &&
      SP_SYS(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
    /* Before Linux 5.11: close all but the error pipe. */
    struct rlimit rl;
    long max = 65536;
    if (SP_SYS(SYS_prlimit64, 0, RLIMIT_NOFILE, NULL, &rl) == 0 &&
        rl.rlim_cur < (rlim_t)max)
      max = (long)rl.rlim_cur;
    for (long fd = 3; fd < max; fd++)
      if (fd != a->errfd)
        SP_SYS(SYS_close, fd);
  }
  SP_SYS(SYS_rt_sigprocmask, SIG_SETMASK, &a->oldmask, NULL, sizeof(uint64_t));
  /* execvp's rules: go on after ENOENT/ENOTDIR (and a dead mount), report
   * EACCES if any candidate gave it, stop at any other error. Unlike
   * execvp, no /bin/sh retry on ENOEXEC (as posix_spawnp and Python). */
  bool eacces = false;
  e = ENOENT;
  for (char *const *p = a->paths; *p; p++) {
    SP_SYS(SYS_execve, *p, a->argv, a->envp);
    int x = errno;
    if (x == EACCES) {
      eacces = true;
      continue;
    }
    if (x == ENOENT || x == ENOTDIR || x == ESTALE || x == ENODEV ||
        x == ETIMEDOUT)
      continue;
    e = x;
    eacces = false;
    break;
  }
  if (eacces)
    e = EACCES;
fail:
  if (!e)
    e = EIO;
  while (SP_SYS(SYS_write, a->errfd, &e, sizeof e) < 0 && errno == EINTR) {
  }
  SP_SYS(SYS_exit_group, 127);
  return 127;
}

/* ---- spawn (parent side) ------------------------------------------------ */

/* Length of the name part of "NAME=value" (or of a bare "NAME"). */
static size_t sp_name_len(const char *s) {
  const char *eq = strchr(s, '=');
  return eq ? (size_t)(eq - s) : strlen(s);
}

static bool sp_same_name(const char *a, const char *b) {
  size_t n = sp_name_len(a);
  return n == sp_name_len(b) && memcmp(a, b, n) == 0;
}

/* The child's environment: NULL to pass `base` as is, else a malloc'd array
 * (pointers only; the strings stay the caller's). */
static int sp_build_env(const mp_subprocess_opts_t *o, char ***envp) {
  char *const *base = o->env ? (char *const *)o->env : environ;
  *envp = NULL;
  if (!o->env_add)
    return 0;
  size_t nb = 0, na = 0;
  while (base && base[nb])
    nb++;
  while (o->env_add[na])
    na++;
  char **env = malloc((nb + na + 1) * sizeof *env);
  if (!env)
    return MP_ENOMEM;
  size_t n = 0;
  for (size_t i = 0; i < nb; i++) {
    bool replaced = false;
    for (size_t j = 0; j < na && !replaced; j++)
      replaced = sp_same_name(base[i], o->env_add[j]);
    if (!replaced)
      env[n++] = base[i];
  }
  for (size_t j = 0; j < na; j++) {
    bool later = false; /* the last setting of a name wins */
    for (size_t k = j + 1; k < na && !later; k++)
      later = sp_same_name(o->env_add[j], o->env_add[k]);
    if (!later && strchr(o->env_add[j], '='))
      env[n++] = (char *)o->env_add[j];
  }
  env[n] = NULL;
  *envp = env;
  return 0;
}

static const char *sp_getenv(char *const *env, const char *name) {
  size_t n = strlen(name);
  for (; env && *env; env++)
    if (strncmp(*env, name, n) == 0 && (*env)[n] == '=')
      return *env + n + 1;
  return NULL;
}

/* Candidate paths for argv0, as execvp searches them: one malloc holding
 * the pointer array and the strings. */
static int sp_build_paths(const char *argv0, char *const *env, char ***out) {
  size_t alen = strlen(argv0);
  const char *path = NULL;
  size_t ndirs = 1, plen = 0;
  if (alen > 0 && !strchr(argv0, '/')) {
    path = sp_getenv(env, "PATH");
    if (!path)
      path = "/bin:/usr/bin";
    plen = strlen(path);
    for (const char *c = path; *c; c++)
      ndirs += *c == ':';
  }
  size_t bytes = (ndirs + 1) * sizeof(char *) + plen + ndirs * (alen + 2) + 1;
  char **paths = malloc(bytes);
  if (!paths)
    return MP_ENOMEM;
  char *s = (char *)(paths + ndirs + 1);
  if (!path) {
    /* An empty name fails with ENOENT, as execvp. */
    paths[0] = s;
    memcpy(s, argv0, alen + 1);
    paths[alen > 0 ? 1 : 0] = NULL;
    *out = paths;
    return 0;
  }
  size_t n = 0;
  const char *dir = path;
  for (;;) {
    const char *end = strchr(dir, ':');
    size_t dlen = end ? (size_t)(end - dir) : strlen(dir);
    paths[n++] = s;
    memcpy(s, dir, dlen);
    s += dlen;
    if (dlen > 0) /* an empty entry is the current directory */
      *s++ = '/';
    memcpy(s, argv0, alen + 1);
    s += alen + 1;
    if (!end)
      break;
    dir = end + 1;
  }
  paths[n] = NULL;
  *out = paths;
  return 0;
}

static int sp_check_opts(const mp_subprocess_opts_t *o) {
  for (int i = 0; i < 3; i++) {
    const mp_stdio_t *s = &o->stdio[i];
    switch (s->mode) {
    case MP_STDIO_INHERIT:
    case MP_STDIO_PIPE:
    case MP_STDIO_DEVNULL:
      break;
    case MP_STDIO_FD:
      if (s->fd < 0)
        return MP_EINVAL;
      if (fcntl(s->fd, F_GETFD) < 0)
        return MP_EBADF;
      break;
    case MP_STDIO_STDOUT:
      if (i != 2)
        return MP_EINVAL;
      break;
    default:
      return MP_EINVAL;
    }
  }
  return o->pipe_size < -1 ? MP_EINVAL : 0;
}

static void sp_set_pipe_size(int fd, int size) {
  /* Best effort: over the per-user limit the pipe keeps its size. */
  (void)fcntl(fd, F_SETPIPE_SZ, size);
}

static void sp_free(mp_subprocess_t *sp) {
  for (int i = 0; i < 3; i++)
    mp__close(sp->fds[i]);
  mp__close(sp->pidfd);
  free(sp->out.data);
  free(sp->err.data);
  free(sp);
}

/* Reap the child. block: wait for it. Returns 0 when reaped, MP_ETIMEDOUT
 * when it still runs (non-blocking). */
static int sp_reap(mp_subprocess_t *sp, bool block) {
  if (sp->reaped)
    return 0;
  for (;;) {
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int opts = WEXITED | (block ? 0 : WNOHANG);
    int r = sp->pidfd >= 0
                ? waitid((idtype_t)P_PIDFD, (id_t)sp->pidfd, &si, opts)
                : waitid(P_PID, (id_t)sp->pid, &si, opts);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      /* Reaped behind our back (SIGCHLD ignored, waitpid(-1) elsewhere):
       * the status is lost; Python reports 0. */
      sp->reaped = true;
      sp->returncode = 0;
      return 0;
    }
    if (si.si_pid == 0)
      return MP_ETIMEDOUT;
    sp->reaped = true;
    sp->returncode = si.si_code == CLD_EXITED ? si.si_status : -si.si_status;
    return 0;
  }
}

/* ThreadSanitizer's clone interceptor re-initialises its own state in the
 * child, which with CLONE_VM is the parent's state: go around it to glibc's
 * (same function, exported as __clone too). */
#if defined(__SANITIZE_THREAD__)
extern int __clone(int (*fn)(void *), void *stack, int flags, void *arg, ...);
#define SP_CLONE __clone
#else
#define SP_CLONE clone
#endif

/* Start the child; this thread is suspended until it has exec'd or exited.
 * Returns 0 or -errno of clone. */
static int sp_clone(sp_child_t *ca, pid_t *pid, int *pidfd) {
  /* No signal handler may run in the child while it shares our memory:
   * block everything (raw call: glibc would keep its internal signals). */
  uint64_t all = ~0ull, mine;
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, &mine, sizeof(uint64_t));
  if (ca->own_mask)
    ca->oldmask = mine;
  *pidfd = -1;
  *pid = SP_CLONE(sp_child_main, ca->stack_top,
                  CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, ca, pidfd);
  if (*pid < 0 && errno == EINVAL) { /* kernel without CLONE_PIDFD */
    *pidfd = -1;
    *pid = SP_CLONE(sp_child_main, ca->stack_top,
                    CLONE_VM | CLONE_VFORK | SIGCHLD, ca);
  }
  int clone_errno = errno;
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, &mine, NULL, sizeof(uint64_t));
  return *pid < 0 ? -clone_errno : 0;
}

/* ---- the spawner thread ---------------------------------------------------
 * Threads other than the main one have their commands cloned by the
 * process's spawner thread (mp__spawner_run): the parent-death signal
 * follows the thread that cloned. The command starts with the asking
 * thread's signal mask. */
typedef struct {
  sp_child_t *ca;
  pid_t *pid;
  int *pidfd;
} sp_spawn_t;

static int sp_spawn_clone(void *arg) {
  sp_spawn_t *s = arg;
  return sp_clone(s->ca, s->pid, s->pidfd);
}

static int sp_clone_via_spawner(sp_child_t *ca, pid_t *pid, int *pidfd) {
  sigset_t mask;
  pthread_sigmask(SIG_SETMASK, NULL, &mask);
  ca->own_mask = false;
  ca->oldmask = 0;
  for (int sig = 1; sig < 65; sig++)
    if (sigismember(&mask, sig) == 1)
      ca->oldmask |= 1ull << (sig - 1);
  sp_spawn_t s = {.ca = ca, .pid = pid, .pidfd = pidfd};
  return mp__spawner_run(sp_spawn_clone, &s);
}

/* One child stack is kept for the next spawn: the mmap, munmap and first
 * touches would otherwise be paid by every spawn. */
static _Atomic(void *) sp_stack_cache;

static void *sp_stack_get(void) {
  void *s = atomic_exchange(&sp_stack_cache, NULL);
  if (s)
    return s;
  s = mmap(NULL, SP_CHILD_STACK, PROT_READ | PROT_WRITE,
           MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  return s == MAP_FAILED ? NULL : s;
}

static void sp_stack_put(void *s) {
  void *expected = NULL;
  if (!atomic_compare_exchange_strong(&sp_stack_cache, &expected, s))
    munmap(s, SP_CHILD_STACK);
}

int mp_subprocess_spawn(mp_subprocess_t **spp, const char *const argv[],
                        const mp_subprocess_opts_t *opts) {
  static const mp_subprocess_opts_t defaults;
  if (!spp || !argv || !argv[0])
    return MP_EINVAL;
  const mp_subprocess_opts_t *o = opts ? opts : &defaults;
  int r = sp_check_opts(o);
  if (r)
    return r;

  mp_subprocess_t *sp = calloc(1, sizeof *sp);
  if (!sp)
    return MP_ENOMEM;
  sp->pidfd = -1;
  sp->pipe_size = o->pipe_size;
  int child_end[3] = {-1, -1, -1};
  int devnull = -1, errpipe[2] = {-1, -1};
  char **envp = NULL, **paths = NULL;
  void *stack = NULL;
  for (int i = 0; i < 3; i++)
    sp->fds[i] = -1;

  sp_child_t ca;
  memset(&ca, 0, sizeof ca);
  ca.flags = o->flags;
  ca.cwd = o->cwd;
  ca.argv = (char *const *)argv;
  for (int i = 0; i < 3; i++) {
    const mp_stdio_t *s = &o->stdio[i];
    ca.src[i] = -1;
    if (s->mode == MP_STDIO_PIPE) {
      int p[2];
      if (pipe2(p, O_CLOEXEC) < 0) {
        r = -errno;
        goto out;
      }
      sp->fds[i] = i == 0 ? p[1] : p[0];
      child_end[i] = i == 0 ? p[0] : p[1];
      ca.src[i] = child_end[i];
      if (o->pipe_size > 0)
        sp_set_pipe_size(p[0], o->pipe_size);
    } else if (s->mode == MP_STDIO_DEVNULL) {
      if (devnull < 0 &&
          (devnull = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0) {
        r = -errno;
        goto out;
      }
      ca.src[i] = devnull;
    } else if (s->mode == MP_STDIO_FD) {
      ca.src[i] = s->fd;
    } else if (s->mode == MP_STDIO_STDOUT) {
      ca.src[i] = SP_STDOUT_MARK;
    }
  }

  if ((r = sp_build_env(o, &envp)) != 0)
    goto out;
  ca.envp = envp ? envp : (o->env ? (char *const *)o->env : environ);
  if ((r = sp_build_paths(argv[0], ca.envp, &paths)) != 0)
    goto out;
  ca.paths = paths;
  ca.ppid = getpid();

  /* The error pipe's write end must not be one of the child's 0..2. */
  if (pipe2(errpipe, O_CLOEXEC) < 0) {
    r = -errno;
    goto out;
  }
  if (errpipe[1] < 3) {
    int fd = fcntl(errpipe[1], F_DUPFD_CLOEXEC, 3);
    if (fd < 0) {
      r = -errno;
      goto out;
    }
    close(errpipe[1]);
    errpipe[1] = fd;
  }
  ca.errfd = errpipe[1];

  if (!(stack = sp_stack_get())) {
    r = MP_ENOMEM;
    goto out;
  }

  ca.stack_top = (char *)stack + SP_CHILD_STACK;
  pid_t pid = -1;
  int pidfd = -1;
  if ((o->flags & MP_SUBPROCESS_OUTLIVE_PARENT) || gettid() == getpid()) {
    ca.own_mask = true;
    r = sp_clone(&ca, &pid, &pidfd);
  } else {
    r = sp_clone_via_spawner(&ca, &pid, &pidfd);
  }
  if (r)
    goto out;
  sp->pid = pid;
  sp->pidfd = pidfd;
  if (sp->pidfd < 0) {
    long fd = syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0)
      sp->pidfd = (int)fd;
  }
  /* End of file: the exec happened (the pipe closed with it); an int: the
   * child's errno. */
  close(errpipe[1]);
  errpipe[1] = -1;
  int child_errno = 0;
  ssize_t n;
  while ((n = read(errpipe[0], &child_errno, sizeof child_errno)) < 0 &&
         errno == EINTR) {
  }
  if (n == (ssize_t)sizeof child_errno) {
    r = -child_errno;
    sp_reap(sp, true);
    goto out;
  }
  r = 0;

out:
  if (stack)
    sp_stack_put(stack);
  for (int i = 0; i < 3; i++)
    mp__close(child_end[i]);
  mp__close(devnull);
  mp__close(errpipe[0]);
  mp__close(errpipe[1]);
  free(envp);
  free(paths);
  if (r) {
    sp_free(sp);
    return r;
  }
  *spp = sp;
  return 0;
}

/* ---- communicate -------------------------------------------------------- */

/* Room for the next read plus a NUL; doubling. */
static int sp_buf_reserve(sp_buf_t *b) {
  /* Small outputs stay in a small heap block (no mmap); once past 64 KiB
   * each read gets room for a good share of a pipe. */
  size_t need = (b->len < SP_MIN_READ ? 4096 : SP_MIN_READ) + 1;
  if (b->cap - b->len >= need)
    return 0;
  size_t cap = b->cap ? b->cap * 2 : 16 * 1024;
  while (cap - b->len < need)
    cap *= 2;
  char *d = realloc(b->data, cap);
  if (!d)
    return MP_ENOMEM;
  b->data = d;
  b->cap = cap;
  return 0;
}

/* Back the next stretch of a large buffer with pages in one call: faults
 * taken one page at a time inside read() cost more than the copy itself. */
static void sp_buf_populate(sp_buf_t *b) {
  static _Atomic int unsupported;
  if (b->cap < SP_POPULATE ||
      atomic_load_explicit(&unsupported, memory_order_relaxed))
    return;
  size_t want = b->len + SP_POPULATE;
  if (want > b->cap)
    want = b->cap;
  if (b->populated < b->len)
    b->populated = b->len;
  if (want <= b->populated + 4096)
    return;
  uintptr_t page = 4096;
  uintptr_t lo = ((uintptr_t)b->data + b->populated) & ~(page - 1);
  uintptr_t hi = ((uintptr_t)b->data + want) & ~(page - 1);
  if (hi > lo && madvise((void *)lo, hi - lo, MADV_POPULATE_WRITE) != 0 &&
      (errno == EINVAL || errno == ENOSYS))
    atomic_store_explicit(&unsupported, 1, memory_order_relaxed);
  b->populated = want;
}

static void sp_close_stream(mp_subprocess_t *sp, int i) {
  mp__close(sp->fds[i]);
  sp->fds[i] = -1;
}

/* Drain pipe i once (it polled readable). Returns 0 or an error. */
static int sp_read_some(mp_subprocess_t *sp, int i, sp_buf_t *b) {
  int r = sp_buf_reserve(b);
  if (r)
    return r;
  sp_buf_populate(b);
  ssize_t n = read(sp->fds[i], b->data + b->len, b->cap - b->len - 1);
  if (n < 0)
    return errno == EINTR || errno == EAGAIN ? 0 : MP_EIO;
  if (n == 0) {
    sp_close_stream(sp, i);
    return 0;
  }
  b->len += (size_t)n;
  /* The pipe was full: a large stream, worth a bigger pipe. */
  if (!sp->grown[i] && sp->pipe_size == 0 && n >= SP_DEFAULT_PIPE) {
    sp->grown[i] = true;
    sp_set_pipe_size(sp->fds[i], SP_BIG_PIPE);
  }
  return 0;
}

static int sp_write_some(mp_subprocess_t *sp, bool *epipe) {
  size_t left = sp->in_len - sp->in_off;
  ssize_t n = write(sp->fds[0], (const char *)sp->in + sp->in_off, left);
  if (n < 0) {
    if (errno == EINTR || errno == EAGAIN)
      return 0;
    if (errno != EPIPE)
      return MP_EIO;
    /* The child stopped reading: drop the rest, as Python does. */
    *epipe = true;
    sp->in_off = sp->in_len;
  } else {
    sp->in_off += (size_t)n;
  }
  if (sp->in_off == sp->in_len)
    sp_close_stream(sp, 0);
  return 0;
}

/* Hand a buffer to the caller (or drop it). */
static void sp_hand_out(sp_buf_t *b, int fd_was_pipe, char **p, size_t *len) {
  if (p) {
    if (b->data)
      b->data[b->len] = '\0';
    else if (fd_was_pipe)
      b->data = calloc(1, 1); /* "" for a pipe that gave nothing */
    *p = b->data;
    if (len)
      *len = b->data ? b->len : 0;
  } else {
    if (len)
      *len = 0;
    free(b->data);
  }
  b->data = NULL;
  b->len = b->cap = b->populated = 0;
}

/* Block SIGPIPE for this thread while writing to a pipe the child may have
 * closed; a SIGPIPE raised by our writes is consumed before unblocking. */
typedef struct {
  sigset_t old;
  bool was_pending;
} sp_sigpipe_t;

static void sp_sigpipe_block(sp_sigpipe_t *s) {
  sigset_t set, pending;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  sigpending(&pending);
  s->was_pending = sigismember(&pending, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, &s->old);
}

static void sp_sigpipe_restore(sp_sigpipe_t *s, bool epipe) {
  if (epipe && !s->was_pending) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    struct timespec zero = {0, 0};
    while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &s->old, NULL);
}

/* The stdin feeder thread. It owns fds[0] and in_off while it runs. */
struct sp_writer {
  mp_subprocess_t *sp;
  const mp__deadline_t *dl;
  int cancel_fd; /* eventfd: readable when the thread must stop */
  int result;
  pthread_t thread;
};

static void *sp_writer_main(void *arg) {
  sp_writer_t *w = arg;
  mp_subprocess_t *sp = w->sp;
  bool epipe = false;
  /* All signals are blocked here: a SIGPIPE from a closed stdin is
   * directed at this thread, stays pending and goes with it. */
  while (sp->fds[0] >= 0 && w->result == 0) {
    struct pollfd pf[2] = {{.fd = sp->fds[0], .events = POLLOUT},
                           {.fd = w->cancel_fd, .events = POLLIN}};
    int pr = poll(pf, 2, mp__deadline_remaining_ms(w->dl));
    if (pr < 0 && errno != EINTR)
      w->result = -errno;
    else if (pr == 0)
      w->result = MP_ETIMEDOUT;
    else if (pr > 0 && pf[1].revents)
      break;
    else if (pr > 0 && pf[0].revents)
      w->result = sp_write_some(sp, &epipe);
  }
  return NULL;
}

static int sp_writer_start(sp_writer_t *w, mp_subprocess_t *sp,
                           const mp__deadline_t *dl) {
  w->sp = sp;
  w->dl = dl;
  w->result = 0;
  w->cancel_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (w->cancel_fd < 0)
    return -errno;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int r = pthread_create(&w->thread, NULL, sp_writer_main, w);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (r != 0) {
    mp__close(w->cancel_fd);
    return -r;
  }
  return 0;
}

static int sp_writer_stop(sp_writer_t *w, bool cancel) {
  if (cancel) {
    uint64_t one = 1;
    while (write(w->cancel_fd, &one, sizeof one) < 0 && errno == EINTR) {
    }
  }
  pthread_join(w->thread, NULL);
  mp__close(w->cancel_fd);
  return w->result;
}

int mp_subprocess_communicate(mp_subprocess_t *sp, const void *input,
                              size_t input_len, char **out, size_t *out_len,
                              char **err, size_t *err_len, int timeout_ms) {
  if (!sp || mp__check_timeout(timeout_ms) || (input_len > 0 && !input))
    return MP_EINVAL;
  if (sp->comm_started) {
    /* Continuing: the same input, or none once it was all fed. */
    bool same = input == sp->in && input_len == sp->in_len;
    if (!same && (sp->fds[0] >= 0 || input_len > 0))
      return MP_EINVAL;
  } else {
    if (input_len > 0 && sp->fds[0] < 0)
      return MP_EINVAL;
    sp->comm_started = true;
    sp->in = input;
    sp->in_len = input_len;
    sp->in_off = 0;
    if (sp->fds[0] >= 0) {
      if (input_len == 0) {
        sp_close_stream(sp, 0);
      } else {
        mp__set_nonblock(sp->fds[0], true);
        if (sp->pipe_size == 0 && input_len > SP_DEFAULT_PIPE)
          sp_set_pipe_size(sp->fds[0], SP_BIG_PIPE);
      }
    }
  }
  bool out_pipe = sp->fds[1] >= 0 || sp->out.data;
  bool err_pipe = sp->fds[2] >= 0 || sp->err.data;

  mp__deadline_t dl;
  mp__deadline_init(&dl, timeout_ms);
  /* Large input while output flows back: feed it from a second thread, so
   * that writing and reading (each a copy through the kernel) can run on two
   * cores instead of one. */
  sp_writer_t w;
  bool threaded = sp->fds[0] >= 0 && (sp->fds[1] >= 0 || sp->fds[2] >= 0) &&
                  sp->in_len - sp->in_off >= SP_THREAD_MIN &&
                  sp_writer_start(&w, sp, &dl) == 0;
  sp_sigpipe_t sg;
  bool writing = !threaded && sp->fds[0] >= 0, epipe = false;
  if (writing)
    sp_sigpipe_block(&sg);
  int r = 0;
  bool first = true;
  while ((!threaded && sp->fds[0] >= 0) || sp->fds[1] >= 0 || sp->fds[2] >= 0) {
    /* A child that never stops writing keeps poll ready: the deadline must
     * be checked here too (after one pass, so that 0 still does work). */
    if (!first && mp__deadline_passed(&dl)) {
      r = MP_ETIMEDOUT;
      break;
    }
    first = false;
    struct pollfd pf[3];
    int idx[3], n = 0;
    for (int i = threaded ? 1 : 0; i < 3; i++) {
      if (sp->fds[i] < 0)
        continue;
      pf[n].fd = sp->fds[i];
      pf[n].events = i == 0 ? POLLOUT : POLLIN;
      pf[n].revents = 0;
      idx[n++] = i;
    }
    int pr = poll(pf, (nfds_t)n, mp__deadline_remaining_ms(&dl));
    if (pr < 0) {
      if (errno == EINTR)
        continue;
      r = -errno;
      break;
    }
    if (pr == 0) {
      r = MP_ETIMEDOUT;
      break;
    }
    for (int k = 0; k < n && r == 0; k++) {
      if (!pf[k].revents)
        continue;
      int i = idx[k];
      if (i == 0)
        r = sp_write_some(sp, &epipe);
      else
        r = sp_read_some(sp, i, i == 1 ? &sp->out : &sp->err);
    }
    if (r)
      break;
  }
  if (writing)
    sp_sigpipe_restore(&sg, epipe);
  if (threaded) {
    /* Output done: the writer ends by itself (input fed, child gone, or
     * deadline); otherwise stop it now. */
    int wr = sp_writer_stop(&w, r != 0);
    if (r == 0)
      r = wr;
  }
  if (r)
    return r;
  r = mp_subprocess_wait(sp, mp__deadline_remaining_ms(&dl), NULL);
  if (r)
    return r;
  sp_hand_out(&sp->out, out_pipe, out, out_len);
  sp_hand_out(&sp->err, err_pipe, err, err_len);
  return 0;
}

/* ---- waiting and signals ------------------------------------------------ */

int mp_subprocess_wait(mp_subprocess_t *sp, int timeout_ms, int *returncode) {
  if (!sp || mp__check_timeout(timeout_ms))
    return MP_EINVAL;
  int r;
  if (timeout_ms == MP_FOREVER) {
    r = sp_reap(sp, true);
  } else {
    mp__deadline_t dl;
    mp__deadline_init(&dl, timeout_ms);
    int sleep_us = 500;
    while ((r = sp_reap(sp, false)) == MP_ETIMEDOUT) {
      int left = mp__deadline_remaining_ms(&dl);
      if (left == 0)
        break;
      if (sp->pidfd >= 0) {
        struct pollfd pf = {.fd = sp->pidfd, .events = POLLIN};
        (void)poll(&pf, 1, left);
      } else {
        /* No pidfd (old kernel): back off up to 20 ms. */
        int us = left * 1000 < sleep_us ? left * 1000 : sleep_us;
        struct timespec ts = {0, (long)us * 1000L};
        nanosleep(&ts, NULL);
        if (sleep_us < 20000)
          sleep_us *= 2;
      }
    }
  }
  if (r == 0 && returncode)
    *returncode = sp->returncode;
  return r;
}

int mp_subprocess_poll(mp_subprocess_t *sp, int *returncode) {
  if (!sp)
    return MP_EINVAL;
  if (sp_reap(sp, false) != 0)
    return 0;
  if (returncode)
    *returncode = sp->returncode;
  return 1;
}

int mp_subprocess_returncode(const mp_subprocess_t *sp, int *returncode) {
  if (!sp || !returncode)
    return MP_EINVAL;
  if (!sp->reaped)
    return MP_EAGAIN;
  *returncode = sp->returncode;
  return 0;
}

int mp_subprocess_signal(mp_subprocess_t *sp, int sig) {
  if (!sp || sig < 0 || sig >= 65)
    return MP_EINVAL;
  if (sp->reaped)
    return 0;
  /* The pidfd guards against a pid recycled after someone else reaped the
   * child; without pidfd_send_signal (Linux < 5.1, valgrind) plain kill. */
  long r = -1;
  errno = ENOSYS;
  if (sp->pidfd >= 0)
    r = syscall(SYS_pidfd_send_signal, sp->pidfd, sig, NULL, 0);
  if (r < 0 && errno == ENOSYS)
    r = kill(sp->pid, sig);
  if (r < 0)
    return errno == ESRCH ? 0 : -errno; /* exited, not yet reaped */
  return 0;
}

int mp_subprocess_terminate(mp_subprocess_t *sp) {
  return mp_subprocess_signal(sp, SIGTERM);
}

int mp_subprocess_kill(mp_subprocess_t *sp) {
  return mp_subprocess_signal(sp, SIGKILL);
}

int mp_subprocess_pid(const mp_subprocess_t *sp) {
  return sp ? (int)sp->pid : MP_EINVAL;
}

int mp_subprocess_fd(const mp_subprocess_t *sp, int which) {
  if (!sp || which < 0 || which > 2)
    return MP_EINVAL;
  return sp->fds[which] >= 0 ? sp->fds[which] : MP_ECLOSED;
}

int mp_subprocess_close_fd(mp_subprocess_t *sp, int which) {
  if (!sp || which < 0 || which > 2)
    return MP_EINVAL;
  if (sp->fds[which] < 0)
    return MP_ECLOSED;
  sp_close_stream(sp, which);
  return 0;
}

mp_waitable_t mp_subprocess_waitable(mp_subprocess_t *sp) {
  mp_waitable_t w = {.fd = sp ? sp->pidfd : -1, .check = NULL, .obj = sp};
  return w;
}

int mp_subprocess_destroy(mp_subprocess_t *sp) {
  if (!sp)
    return MP_EINVAL;
  for (int i = 0; i < 3; i++)
    sp_close_stream(sp, i);
  if (!sp->reaped && sp_reap(sp, false) != 0) {
    mp_subprocess_kill(sp);
    sp_reap(sp, true);
  }
  sp_free(sp);
  return 0;
}

/* ---- run ---------------------------------------------------------------- */

int mp_run_result_free(mp_run_result_t *res) {
  if (!res)
    return MP_EINVAL;
  free(res->out);
  free(res->err);
  memset(res, 0, sizeof *res);
  return 0;
}

int mp_run(const char *const argv[], const mp_run_opts_t *opts,
           mp_run_result_t *res) {
  static const mp_run_opts_t defaults;
  if (!res)
    return MP_EINVAL;
  memset(res, 0, sizeof *res);
  const mp_run_opts_t *o = opts ? opts : &defaults;
  if (!argv || !argv[0] || mp__check_timeout(o->time_limit_ms) ||
      (o->input_len > 0 && !o->input))
    return MP_EINVAL;
  mp_subprocess_opts_t so = o->sp;
  if (o->input) {
    if (so.stdio[0].mode != MP_STDIO_INHERIT)
      return MP_EINVAL;
    so.stdio[0].mode = MP_STDIO_PIPE;
  }
  if (o->capture_output) {
    if (so.stdio[1].mode != MP_STDIO_INHERIT ||
        so.stdio[2].mode != MP_STDIO_INHERIT)
      return MP_EINVAL;
    so.stdio[1].mode = so.stdio[2].mode = MP_STDIO_PIPE;
  }
  mp_subprocess_t *sp;
  int r = mp_subprocess_spawn(&sp, argv, &so);
  if (r)
    return r;
  int timeout = o->time_limit_ms > 0 ? o->time_limit_ms : MP_FOREVER;
  r = mp_subprocess_communicate(sp, o->input, o->input_len, &res->out,
                                &res->out_len, &res->err, &res->err_len,
                                timeout);
  if (r == MP_ETIMEDOUT) {
    /* Not a communicate to EOF: a grandchild may hold the pipes open. */
    mp_subprocess_kill(sp);
    sp_reap(sp, true);
    bool out_pipe = sp->fds[1] >= 0 || sp->out.data;
    bool err_pipe = sp->fds[2] >= 0 || sp->err.data;
    sp_hand_out(&sp->out, out_pipe, &res->out, &res->out_len);
    sp_hand_out(&sp->err, err_pipe, &res->err, &res->err_len);
  }
  res->pid = sp->pid;
  res->returncode = sp->reaped ? sp->returncode : 0;
  mp_subprocess_destroy(sp);
  if (r == 0 && o->check && res->returncode != 0)
    r = MP_ETASK;
  if (r && r != MP_ETASK && r != MP_ETIMEDOUT)
    mp_run_result_free(res);
  return r;
}
