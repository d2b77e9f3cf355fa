/* Processes: create/start/join/kill, exit codes, the registry of started
 * children behind mp_active_children and the exit handler.
 *
 * Each started child is watched through a pidfd: join polls it and then
 * reaps exactly that child with waitid(P_PIDFD), so the application's own
 * SIGCHLD handling and wait calls are left alone. Fork-server children are
 * not our children: their exit code arrives on a status pipe from the
 * server, and the pidfd (created by the server, passed over its socket) is
 * used for signals only. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "mproc/process.h"
#include "process_internal.h"

enum { PROC_CREATED, PROC_STARTING, PROC_RUNNING, PROC_DONE };

struct mp_process {
  mp_process_fn fn;
  void *arg;
  size_t arg_len;
  char name[MP__PROC_NAME_MAX];
  char ident[MP__PROC_NAME_MAX]; /* identity the child will have */
  bool daemon;
  bool outlive;
  mp_start_method_t method;
  int state; /* PROC_*, changed under reg_mu once started */
  pid_t pid;
  pid_t starter; /* getpid() of the process that started it */
  int pidfd;     /* -1 until started */
  int statusfd;  /* fork server: exit code pipe; -1 otherwise */
  int exitcode;
  bool status_lost;
  int npass;
  int pass_fds[MP_PROCESS_PASS_FDS_MAX]; /* for the fork server */
  bool server_gone; /* fork server died: watch the pidfd instead */
  struct mp_process *prev, *next; /* registry, while running */
};

/* Started, not yet reaped children of this process. */
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static mp_process_t *reg_head;
static pthread_once_t reg_once = PTHREAD_ONCE_INIT;

/* Identity of this process (Python's _identity): "" in the main process,
 * "1", "1:2", ... in children; names default to "Process-<identity>:N". */
static char cur_identity[MP__PROC_NAME_MAX];
static char cur_name[MP__PROC_NAME_MAX] = "MainProcess";
static pid_t cur_parent;
static atomic_uint name_counter;

static int sys_pidfd_open(pid_t pid) {
  return (int)syscall(SYS_pidfd_open, pid, 0);
}

static int sys_pidfd_send_signal(int pidfd, int sig) {
  return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

int mp__exitcode_from_siginfo(int code, int status) {
  return code == CLD_EXITED ? status : -status;
}

/* ---- registry ------------------------------------------------------------ */

static void reg_link(mp_process_t *p) {
  p->prev = NULL;
  p->next = reg_head;
  if (reg_head)
    reg_head->prev = p;
  reg_head = p;
}

static void reg_unlink(mp_process_t *p) {
  if (p->prev)
    p->prev->next = p->next;
  else if (reg_head == p)
    reg_head = p->next;
  if (p->next)
    p->next->prev = p->prev;
  p->prev = p->next = NULL;
}

static void atfork_prepare(void) {
  pthread_mutex_lock(&reg_mu);
}
static void atfork_parent(void) {
  pthread_mutex_unlock(&reg_mu);
}
static void atfork_child(void) {
  /* The parent's children are not ours; their handles stay readable in our
   * copy of memory but are out of the registry. */
  pthread_mutex_unlock(&reg_mu); /* locked by atfork_prepare in this thread */
  reg_head = NULL;
  mp__forkserver_atfork_child();
}

static void exit_handler(void);

static void reg_init(void) {
  pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
  atexit(exit_handler);
}

/* Try to collect p's exit status without blocking. Caller holds reg_mu.
 * 0 when p is done, MP_EAGAIN when still running. */
static int proc_collect_locked(mp_process_t *p) {
  if (p->state == PROC_DONE)
    return 0;
  if (p->server_gone) {
    /* Not our child: the pidfd tells when it ends, nothing tells how. */
    struct pollfd pfd = {.fd = p->pidfd, .events = POLLIN};
    if (poll(&pfd, 1, 0) == 0)
      return MP_EAGAIN;
    p->status_lost = true;
  } else if (p->method == MP_START_FORKSERVER) {
    int code;
    ssize_t n;
    do
      n = read(p->statusfd, &code, sizeof code);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN)
      return MP_EAGAIN;
    if (n != (ssize_t)sizeof code) {
      /* The server died before reporting: a child that outlives it may
       * still run. */
      p->server_gone = true;
      return proc_collect_locked(p);
    }
    p->exitcode = code;
  } else {
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int r;
    do
      r = waitid((idtype_t)P_PIDFD, (id_t)p->pidfd, &si, WEXITED | WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
      /* ECHILD: someone else (the application) reaped it. */
      p->status_lost = true;
    } else if (si.si_pid == 0) {
      return MP_EAGAIN;
    } else {
      p->exitcode = mp__exitcode_from_siginfo(si.si_code, si.si_status);
    }
  }
  p->state = PROC_DONE;
  reg_unlink(p);
  return 0;
}

static int proc_collect(mp_process_t *p) {
  pthread_mutex_lock(&reg_mu);
  int r = proc_collect_locked(p);
  pthread_mutex_unlock(&reg_mu);
  return r;
}

/* fd that polls readable when p's status can be collected. */
static int proc_wait_fd(const mp_process_t *p) {
  return p->method == MP_START_FORKSERVER && !p->server_gone ? p->statusfd
                                                             : p->pidfd;
}

/* ---- child side ---------------------------------------------------------- */

bool mp__process_child_enter(const char *name, const char *ident, pid_t parent,
                             pid_t real_parent, bool outlive) {
  if (!outlive) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    /* The parent may have died between fork and prctl: then the signal was
     * never armed, and we were reparented. */
    if (getppid() != real_parent)
      return false;
  }
  snprintf(cur_name, sizeof cur_name, "%s", name);
  cur_parent = parent;
  snprintf(cur_identity, sizeof cur_identity, "%s", ident);
  atomic_store(&name_counter, 0);
  return true;
}

void mp__process_child_run(mp_process_fn fn, const void *arg, size_t len) {
  int rc = fn(arg, len);
  fflush(stdout);
  fflush(stderr);
  _exit(rc & 0xff);
}

/* ---- public API ---------------------------------------------------------- */

int mp_process_create(mp_process_t **pp, mp_process_fn fn, const void *arg,
                      size_t arg_len, const mp_process_opts_t *opts) {
  if (!pp || !fn || (!arg && arg_len > 0))
    return MP_EINVAL;
  if (opts && opts->start_method != MP_START_FORK &&
      opts->start_method != MP_START_FORKSERVER)
    return MP_EINVAL;
  pthread_once(&reg_once, reg_init);
  mp_process_t *p = calloc(1, sizeof *p);
  if (!p)
    return MP_ENOMEM;
  if (arg_len > 0) {
    p->arg = malloc(arg_len);
    if (!p->arg) {
      free(p);
      return MP_ENOMEM;
    }
    memcpy(p->arg, arg, arg_len);
  }
  p->fn = fn;
  p->arg_len = arg_len;
  p->pidfd = -1;
  p->statusfd = -1;
  p->state = PROC_CREATED;
  if (opts) {
    p->daemon = opts->daemon;
    p->outlive = opts->outlive_parent;
    p->method = opts->start_method;
  }
  /* The counter advances for every process created, named or not, as in
   * Python. */
  unsigned n = atomic_fetch_add(&name_counter, 1) + 1;
  if (cur_identity[0])
    snprintf(p->ident, sizeof p->ident, "%.40s:%u", cur_identity, n);
  else
    snprintf(p->ident, sizeof p->ident, "%u", n);
  if (opts && opts->name)
    snprintf(p->name, sizeof p->name, "%s", opts->name);
  else
    snprintf(p->name, sizeof p->name, "Process-%.54s", p->ident);
  *pp = p;
  return 0;
}

static int start_fork(mp_process_t *p, const sigset_t *mask) {
  pid_t self = getpid();
  pid_t pid = fork();
  if (pid < 0)
    return -errno;
  if (pid == 0) {
    if (mask)
      pthread_sigmask(SIG_SETMASK, mask, NULL);
    if (!mp__process_child_enter(p->name, p->ident, self, self, p->outlive))
      _exit(1);
    mp__process_child_run(p->fn, p->arg, p->arg_len);
  }
  /* The child is ours and unreaped (only we wait for it by pid), so its pid
   * cannot be reused before pidfd_open. */
  int fd = sys_pidfd_open(pid);
  if (fd < 0) {
    int err = -errno;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return err;
  }
  p->pid = pid;
  p->pidfd = fd;
  return 0;
}

/* Forks asked for by threads other than the main one go through the
 * spawner thread (mp__spawner_run): the parent-death signal follows the
 * thread that forked. The child takes the asking thread's signal mask. */
typedef struct {
  mp_process_t *p;
  sigset_t mask;
} spawn_fork_t;

static int spawn_fork(void *arg) {
  spawn_fork_t *f = arg;
  return start_fork(f->p, &f->mask);
}

static int start_fork_via_spawner(mp_process_t *p) {
  spawn_fork_t f = {.p = p};
  pthread_sigmask(SIG_SETMASK, NULL, &f.mask);
  return mp__spawner_run(spawn_fork, &f);
}

int mp_process_pass_fd(mp_process_t *p, int fd) {
  if (!p || fd < 0)
    return MP_EINVAL;
  if (fcntl(fd, F_GETFD) < 0)
    return MP_EBADF;
  pthread_mutex_lock(&reg_mu);
  int r = 0;
  if (p->state != PROC_CREATED)
    r = MP_EINVAL;
  else if (p->npass == MP_PROCESS_PASS_FDS_MAX)
    r = MP_E2BIG;
  else
    p->pass_fds[p->npass++] = fd;
  pthread_mutex_unlock(&reg_mu);
  return r;
}

int mp_process_start(mp_process_t *p) {
  if (!p)
    return MP_EINVAL;
  pthread_mutex_lock(&reg_mu);
  bool fresh = p->state == PROC_CREATED;
  if (fresh)
    p->state = PROC_STARTING; /* a concurrent second start fails */
  pthread_mutex_unlock(&reg_mu);
  if (!fresh)
    return MP_EINVAL;
  fflush(stdout);
  fflush(stderr);
  int r;
  if (p->method == MP_START_FORKSERVER)
    r = mp__forkserver_spawn(p->fn, p->arg, p->arg_len, p->name, p->ident,
                             p->outlive, p->pass_fds, p->npass, &p->pid,
                             &p->pidfd, &p->statusfd);
  else if (p->outlive || gettid() == getpid())
    r = start_fork(p, NULL);
  else
    r = start_fork_via_spawner(p);
  pthread_mutex_lock(&reg_mu);
  if (r < 0) {
    p->state = PROC_CREATED; /* a failed start changes nothing */
  } else {
    p->starter = getpid();
    p->state = PROC_RUNNING;
    reg_link(p);
  }
  pthread_mutex_unlock(&reg_mu);
  return r;
}

int mp_process_join(mp_process_t *p, int timeout_ms) {
  if (!p || mp__check_timeout(timeout_ms) < 0)
    return MP_EINVAL;
  if (p->state < PROC_RUNNING)
    return MP_EINVAL;
  mp__deadline_t dl;
  mp__deadline_init(&dl, timeout_ms);
  /* Poll first: a child that already ended makes it return at once, and
   * a running one costs no wasted waitid. */
  while (p->state != PROC_DONE) {
    struct pollfd pfd = {.fd = proc_wait_fd(p), .events = POLLIN};
    int ms = mp__deadline_remaining_ms(&dl);
    int n = poll(&pfd, 1, ms);
    if (n < 0 && errno != EINTR)
      return -errno;
    if (n > 0 && proc_collect(p) == 0)
      break;
    if (n == 0 && ms >= 0 && mp__deadline_passed(&dl))
      return MP_ETIMEDOUT;
  }
  return p->status_lost ? MP_ECHILD : 0;
}

int mp_process_is_alive(mp_process_t *p) {
  if (!p)
    return MP_EINVAL;
  if (p->state < PROC_RUNNING)
    return 0;
  return proc_collect(p) == MP_EAGAIN ? 1 : 0;
}

static int proc_signal(mp_process_t *p, int sig) {
  if (!p)
    return MP_EINVAL;
  pthread_mutex_lock(&reg_mu);
  int r = 0;
  if (p->state < PROC_RUNNING)
    r = MP_EINVAL;
  else if (p->state == PROC_RUNNING &&
           sys_pidfd_send_signal(p->pidfd, sig) < 0 && errno != ESRCH)
    r = -errno;
  pthread_mutex_unlock(&reg_mu);
  return r;
}

int mp_process_terminate(mp_process_t *p) {
  return proc_signal(p, SIGTERM);
}
int mp_process_kill(mp_process_t *p) {
  return proc_signal(p, SIGKILL);
}

int mp_process_exitcode(mp_process_t *p, int *code) {
  if (!p || !code)
    return MP_EINVAL;
  if (p->state < PROC_RUNNING)
    return MP_EAGAIN;
  int r = proc_collect(p);
  if (r < 0)
    return r;
  if (p->status_lost)
    return MP_ECHILD;
  *code = p->exitcode;
  return 0;
}

pid_t mp_process_pid(const mp_process_t *p) {
  if (!p)
    return MP_EINVAL;
  return p->state < PROC_RUNNING ? 0 : p->pid;
}

const char *mp_process_name(const mp_process_t *p) {
  return p ? p->name : NULL;
}

static bool process_ready_check(void *obj) {
  return mp_process_is_alive(obj) == 0;
}

mp_waitable_t mp_process_waitable(mp_process_t *p) {
  mp_waitable_t w = {.fd = -1, .check = NULL, .obj = p, .ready = false};
  if (p && p->state >= PROC_RUNNING) {
    w.fd = proc_wait_fd(p);
    /* A fork-server status pipe turns unreadable once drained: the check
     * makes an already-collected process count as ready. */
    if (p->method == MP_START_FORKSERVER)
      w.check = process_ready_check;
  }
  return w;
}

int mp_process_destroy(mp_process_t *p) {
  if (!p)
    return 0;
  if (p->state == PROC_STARTING)
    return MP_EBUSY;
  if (p->state != PROC_CREATED) {
    if (proc_collect(p) == MP_EAGAIN)
      return MP_EBUSY;
    mp__close(p->pidfd);
    if (p->statusfd >= 0)
      mp__close(p->statusfd);
  }
  free(p->arg);
  free(p);
  return 0;
}

pid_t mp_current_pid(void) {
  return getpid();
}

pid_t mp_parent_pid(void) {
  return cur_parent ? cur_parent : getppid();
}

const char *mp_current_process_name(void) {
  return cur_name;
}

int mp_active_children(mp_process_t **out, size_t cap) {
  if (!out && cap > 0)
    return MP_EINVAL;
  pthread_once(&reg_once, reg_init);
  int n = 0;
  pthread_mutex_lock(&reg_mu);
  mp_process_t *p = reg_head;
  while (p) {
    mp_process_t *next = p->next;
    if (p->starter == getpid() && proc_collect_locked(p) == MP_EAGAIN) {
      if ((size_t)n < cap)
        out[n] = p;
      n++;
    }
    p = next;
  }
  pthread_mutex_unlock(&reg_mu);
  return n;
}

int mp_cpu_count(void) {
  for (int ncpu = 1024; ncpu <= 1 << 20; ncpu *= 2) {
    cpu_set_t *set = CPU_ALLOC((size_t)ncpu);
    if (!set)
      break;
    size_t sz = CPU_ALLOC_SIZE((size_t)ncpu);
    if (sched_getaffinity(0, sz, set) == 0) {
      int n = CPU_COUNT_S(sz, set);
      CPU_FREE(set);
      return n > 0 ? n : 1;
    }
    CPU_FREE(set);
    if (errno != EINVAL)
      break;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

/* At normal exit, as Python: terminate daemon children, then join every
 * child this process started (but those allowed to outlive it). Then the
 * fork server goes. */
static void exit_handler(void) {
  pid_t self = getpid();
  pthread_mutex_lock(&reg_mu);
  for (mp_process_t *q = reg_head; q; q = q->next)
    if (q->starter == self && q->daemon && q->state == PROC_RUNNING)
      sys_pidfd_send_signal(q->pidfd, SIGTERM);
  pthread_mutex_unlock(&reg_mu);
  for (;;) {
    pthread_mutex_lock(&reg_mu);
    /* Children allowed to outlive us are left to run. */
    mp_process_t *p = reg_head;
    while (p && (p->starter != self || (p->outlive && !p->daemon)))
      p = p->next;
    pthread_mutex_unlock(&reg_mu);
    if (!p)
      break;
    if (mp_process_join(p, MP_FOREVER) < 0) {
      pthread_mutex_lock(&reg_mu);
      if (p->state != PROC_DONE) {
        p->state = PROC_DONE;
        p->status_lost = true;
        reg_unlink(p);
      }
      pthread_mutex_unlock(&reg_mu);
    }
  }
  mp_forkserver_stop();
}
