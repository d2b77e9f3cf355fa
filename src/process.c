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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdio_ext.h>
#include <sys/mman.h>
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
  _Atomic int state; /* PROC_*, changed under hot.reg_mu once started; read
                      * without it by the getters (another thread may join) */
  pid_t pid;
  pid_t starter; /* getpid() of the process that started it */
  int pidfd;     /* -1 until started */
  int statusfd;  /* fork server: exit code pipe; -1 otherwise */
  int exitcode;
  bool status_lost;
  int npass;
  int pass_fds[MP_PROCESS_PASS_FDS_MAX]; /* for the fork server */
  bool server_gone; /* fork server died: watch the pidfd instead */
  mp__gate_slot_t *slot; /* fork children: start gate and exit report */
  struct mp_process *prev, *next; /* registry, while running */
  unsigned char arg_buf[64];      /* arg, when it fits */
};

static pthread_once_t reg_once = PTHREAD_ONCE_INIT;

/* A few handles are kept in the page of the start state (below) rather than
 * allocated. The sanitizers' builds allocate every handle, so a use after
 * destroy is still caught. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define HANDLE_CACHE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define HANDLE_CACHE 0
#endif
#endif
#ifndef HANDLE_CACHE
#define HANDLE_CACHE 4
#endif

/* Identity of this process (Python's _identity): "" in the main process,
 * "1", "1:2", ... in children; names default to "Process-<identity>:N". */
static int kernel_support; /* 0 unknown, 1 yes, MP_ENOSYS */

static int sys_pidfd_open(pid_t pid) {
  return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* ---- start gate and exit reports ------------------------------------------
 * A fork child waits at a gate until its parent holds its pidfd: until
 * then it cannot end, so nobody (an application reaping every child, or the
 * kernel under SIGCHLD SIG_IGN) can reap it and free its pid first. On a
 * normal exit the child writes its exit code beside the gate, so the code
 * survives an application that reaps the child itself. Slots live in pages
 * shared with the children (MAP_SHARED | MAP_ANONYMOUS), allocated here and
 * freed once the child is collected. */
enum { GATE_WAIT = 0, GATE_SLEEP = 1, GATE_GO = 2, GATE_ABORT = 3 };
#define GATE_EXITED 0x10000u /* report: exited, code in the low 8 bits */
struct mp__gate_slot {
  _Atomic uint32_t gate;
  _Atomic uint32_t report;
};
#define GATE_PAGE_SLOTS (4096 / sizeof(mp__gate_slot_t))
typedef struct gate_page {
  mp__gate_slot_t *slots;
  uint64_t used[GATE_PAGE_SLOTS / 64];
  struct gate_page *next;
} gate_page_t;

/* ---- the state a start writes ---------------------------------------------
 * fork write-protects every page of the parent, so each page the parent
 * writes between two forks costs it a copy-on-write fault after the next
 * one, and each page a child writes costs the child one; on a VM a fault
 * costs tens of microseconds, as much as the rest of a start. Everything of
 * this file's that a start and join write is in this one page, which the
 * atfork handlers (registry lock) write on every fork anyway. */
static struct {
  /* Started, not yet reaped children of this process. */
  pthread_mutex_t reg_mu;
  mp_process_t *reg_head;
  /* Identity of this process (Python's _identity): "" in the main process,
   * "1", "1:2", ... in children; names default to "Process-<identity>:N". */
  const char *cur_identity;
  const char *cur_name;
  const char *parent_name;
  pid_t cur_parent;
  bool cur_daemon;
  atomic_uint name_counter;
  /* Start gates: the first page's bookkeeping is here, others on the heap. */
  pthread_mutex_t gate_mu;
  gate_page_t *gate_pages;
  gate_page_t gate_page0;
  /* In a child: where to report its own exit code (in the parent's page). */
  mp__gate_slot_t *self_report;
#if HANDLE_CACHE
  /* Handles: malloc and free would write the allocator's state and the
   * chunk's heap page. */
  atomic_uint handle_used; /* bit i: handle_cache[i] is taken */
  mp_process_t handle_cache[HANDLE_CACHE];
#endif
} hot __attribute__((aligned(4096))) = {
    .reg_mu = PTHREAD_MUTEX_INITIALIZER,
    .cur_identity = "",
    .cur_name = "MainProcess",
    .parent_name = "",
    .gate_mu = PTHREAD_MUTEX_INITIALIZER,
};
_Static_assert(sizeof hot <= 4096, "the start state fits one page");

static mp_process_t *handle_get(void) {
#if HANDLE_CACHE
  unsigned u = atomic_load(&hot.handle_used);
  while (u != (1u << HANDLE_CACHE) - 1) {
    unsigned b = (unsigned)__builtin_ctz(~u);
    if (atomic_compare_exchange_weak(&hot.handle_used, &u, u | 1u << b)) {
      memset(&hot.handle_cache[b], 0, sizeof hot.handle_cache[b]);
      return &hot.handle_cache[b];
    }
  }
#endif
  return calloc(1, sizeof(mp_process_t));
}

static void handle_put(mp_process_t *p) {
  if (p->arg != p->arg_buf)
    free(p->arg);
#if HANDLE_CACHE
  if (p >= hot.handle_cache && p < hot.handle_cache + HANDLE_CACHE) {
    atomic_fetch_and(&hot.handle_used,
                     ~(1u << (unsigned)(p - hot.handle_cache)));
    return;
  }
#endif
  free(p);
}

static mp__gate_slot_t *gate_alloc(void) {
  pthread_mutex_lock(&hot.gate_mu);
  mp__gate_slot_t *got = NULL;
  for (gate_page_t *g = hot.gate_pages; g && !got; g = g->next) {
    for (size_t w = 0; w < GATE_PAGE_SLOTS / 64 && !got; w++) {
      if (g->used[w] == UINT64_MAX)
        continue;
      int b = __builtin_ctzll(~g->used[w]);
      g->used[w] |= 1ull << b;
      got = &g->slots[w * 64 + (size_t)b];
    }
  }
  if (!got) {
    gate_page_t *g = hot.gate_page0.slots ? calloc(1, sizeof *g) : &hot.gate_page0;
    if (g == &hot.gate_page0)
      memset(g, 0, sizeof *g);
    void *m = g ? mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0)
                : MAP_FAILED;
    if (m != MAP_FAILED) {
      g->slots = m;
      g->used[0] = 1;
      g->next = hot.gate_pages;
      hot.gate_pages = g;
      got = &g->slots[0];
    } else if (g != &hot.gate_page0) {
      free(g);
    }
  }
  pthread_mutex_unlock(&hot.gate_mu);
  if (got) {
    atomic_store(&got->gate, GATE_WAIT);
    atomic_store(&got->report, 0);
  }
  return got;
}

static void gate_free(mp__gate_slot_t *s) {
  if (!s)
    return;
  pthread_mutex_lock(&hot.gate_mu);
  for (gate_page_t *g = hot.gate_pages; g; g = g->next) {
    if (s >= g->slots && s < g->slots + GATE_PAGE_SLOTS) {
      size_t i = (size_t)(s - g->slots);
      g->used[i / 64] &= ~(1ull << (i % 64));
      break;
    }
  }
  pthread_mutex_unlock(&hot.gate_mu);
}

/* Parent: let the child go (or tell it to leave at once). */
static void gate_open(mp__gate_slot_t *s, uint32_t how) {
  if (atomic_exchange(&s->gate, how) == GATE_SLEEP)
    mp__futex_wake(&s->gate, 1);
}

/* Child: wait until the parent (pid `parent`) opened the gate. False:
 * leave. The child comes here after its own set-up, just before the
 * target: by then the parent has almost always opened the gate, and the
 * child passes without waiting. A parent that died before opening it (an
 * outlive_parent child has no parent-death signal) is seen within 100 ms. */
static bool gate_pass(mp__gate_slot_t *s, pid_t parent) {
  uint32_t v = atomic_load(&s->gate);
  if (v == GATE_WAIT && !mp__spin_while_eq(&s->gate, GATE_WAIT, 200)) {
    uint32_t expect = GATE_WAIT;
    atomic_compare_exchange_strong(&s->gate, &expect, GATE_SLEEP);
    while (atomic_load(&s->gate) == GATE_SLEEP) {
      mp__deadline_t dl;
      mp__deadline_init(&dl, 100);
      mp__futex_wait(&s->gate, GATE_SLEEP, &dl);
      if (atomic_load(&s->gate) == GATE_SLEEP && getppid() != parent)
        return false;
    }
  }
  return atomic_load(&s->gate) == GATE_GO;
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
  p->next = hot.reg_head;
  if (hot.reg_head)
    hot.reg_head->prev = p;
  hot.reg_head = p;
}

static void reg_unlink(mp_process_t *p) {
  if (p->prev)
    p->prev->next = p->next;
  else if (hot.reg_head == p)
    hot.reg_head = p->next;
  if (p->next)
    p->next->prev = p->prev;
  p->prev = p->next = NULL;
}

static void atfork_prepare(void) {
  pthread_mutex_lock(&hot.reg_mu);
}
static void atfork_parent(void) {
  pthread_mutex_unlock(&hot.reg_mu);
}
static void forget_parent(void) {
  /* The parent's children are not ours; their handles stay readable in our
   * copy of memory but are out of the registry. */
  hot.reg_head = NULL;
  /* The parent's gate pages stay mapped here but are not ours to use. */
  pthread_mutex_init(&hot.gate_mu, NULL);
  hot.gate_pages = NULL;
  hot.gate_page0.slots = NULL;
  hot.self_report = NULL;
  mp__forkserver_atfork_child();
}

void mp__process_forget_parent(void) {
  /* A fork-server child comes from a server forked when this file's atfork
   * handler may not have been installed yet: the lock is made anew. */
  pthread_mutex_init(&hot.reg_mu, NULL);
  forget_parent();
}

/* This thread's id, cached: 0 until asked. A fork child's only thread has
 * a new one (reset in atfork_child). */
static _Thread_local pid_t self_tid;

static bool on_main_thread(void) {
  if (!self_tid)
    self_tid = gettid();
  return self_tid == (pid_t)mp__self_pid();
}

static void atfork_child(void) {
  /* The forking thread took the lock in atfork_prepare and is this
   * child's only thread: it releases it. */
  pthread_mutex_unlock(&hot.reg_mu);
  self_tid = 0;
  forget_parent();
}

static void exit_handler(void);

/* pidfds (pidfd_open, Linux 5.3) and waitid(P_PIDFD) (5.4): on an older
 * kernel the probe sees EINVAL for an unknown idtype instead of EBADF. */
static void kernel_probe(void) {
  siginfo_t si;
  int r = waitid((idtype_t)P_PIDFD, (id_t)INT32_MAX, &si, WEXITED | WNOHANG);
  kernel_support = r < 0 && errno == EINVAL ? MP_ENOSYS : 1;
}

static void reg_init(void) {
  pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
  atexit(exit_handler);
  kernel_probe();
  /* Bind now, in the parent, the library calls a fork child makes on its
   * way: resolved lazily in each child, they would cost it a dozen page
   * faults per start. */
  (void)__fpending(stdout);
}

/* Try to collect p's exit status without blocking. Caller holds hot.reg_mu.
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
      /* ECHILD: someone else (the application, or the kernel under SIGCHLD
       * SIG_IGN) reaped it. A target that returned left its code. */
      uint32_t rep = p->slot ? atomic_load(&p->slot->report) : 0;
      if (rep & GATE_EXITED)
        p->exitcode = (int)(rep & 0xff);
      else
        p->status_lost = true;
    } else if (si.si_pid == 0) {
      return MP_EAGAIN;
    } else {
      p->exitcode = mp__exitcode_from_siginfo(si.si_code, si.si_status);
    }
  }
  p->state = PROC_DONE;
  gate_free(p->slot);
  p->slot = NULL;
  reg_unlink(p);
  return 0;
}

static int proc_collect(mp_process_t *p) {
  pthread_mutex_lock(&hot.reg_mu);
  int r = proc_collect_locked(p);
  pthread_mutex_unlock(&hot.reg_mu);
  return r;
}

/* fd that polls readable when p's status can be collected. */
static int proc_wait_fd(const mp_process_t *p) {
  return p->method == MP_START_FORKSERVER && !p->server_gone ? p->statusfd
                                                             : p->pidfd;
}

/* ---- child side ---------------------------------------------------------- */

static void exit_children(void);

/* Whether fp holds buffered output. In glibc a byte stream's is read from
 * the FILE itself: __fpending's code lies on a page of the C library that
 * the child would fault in just for this. A wide stream (_mode > 0) keeps
 * its output in its wide buffer: asked through __fpending. */
static bool stdio_pending(FILE *fp) {
#ifdef __GLIBC__
  if (fp->_mode > 0)
    return __fpending(fp) > 0;
  return fp->_IO_write_ptr > fp->_IO_write_base;
#else
  return __fpending(fp) > 0;
#endif
}

/* A system call of at most two arguments made here rather than through the
 * C library's wrapper. fork copies no page table entries of code: each
 * 64 KiB window of the C library a child enters costs it a page fault, and
 * the wrappers of prctl and getppid lie in one the rest of a start never
 * enters. The result is the kernel's: -errno on failure. */
static long child_syscall2(long nr, long a, long b) {
#if defined(__x86_64__)
  long r;
  __asm__ volatile("syscall"
                   : "=a"(r)
                   : "a"(nr), "D"(a), "S"(b)
                   : "rcx", "r11", "memory");
  return r;
#elif defined(__aarch64__)
  register long x8 __asm__("x8") = nr;
  register long x0 __asm__("x0") = a;
  register long x1 __asm__("x1") = b;
  __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1) : "memory");
  return x0;
#else
  long r = syscall(nr, a, b);
  return r < 0 ? -errno : r;
#endif
}

bool mp__process_child_enter(const char *name, const char *ident, pid_t parent,
                             pid_t real_parent, bool outlive, bool daemon) {
  if (!outlive) {
    child_syscall2(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL);
    /* The parent may have died between fork and prctl: then the signal was
     * never armed, and we were reparented. */
    if ((pid_t)child_syscall2(SYS_getppid, 0, 0) != real_parent)
      return false;
  }
  /* name and ident stay valid: the caller never returns. */
  hot.parent_name = hot.cur_name;
  hot.cur_name = name;
  hot.cur_parent = parent;
  hot.cur_identity = ident;
  hot.cur_daemon = daemon;
  atomic_store(&hot.name_counter, 0);
  return true;
}

void mp__process_child_run(mp_process_fn fn, const void *arg, size_t len) {
  int rc = fn(arg, len);
  /* A normal exit, as Python's: daemon children are terminated, the others
   * joined (a child that dies abnormally takes them down with the
   * parent-death signal instead). */
  exit_children();
  if (stdio_pending(stdout))
    fflush(stdout);
  if (stdio_pending(stderr))
    fflush(stderr);
  if (hot.self_report)
    atomic_store(&hot.self_report->report, GATE_EXITED | (uint32_t)(rc & 0xff));
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
  mp_process_t *p = handle_get();
  if (!p)
    return MP_ENOMEM;
  if (arg_len > 0) {
    p->arg = arg_len <= sizeof p->arg_buf ? p->arg_buf : malloc(arg_len);
    if (!p->arg) {
      handle_put(p);
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
  unsigned n = atomic_fetch_add(&hot.name_counter, 1) + 1;
  /* Not snprintf: its buffers reach a stack page a bare fork never writes,
   * one more copy-on-write fault per start. */
  size_t len = strnlen(hot.cur_identity, 40);
  memcpy(p->ident, hot.cur_identity, len);
  if (len)
    p->ident[len++] = ':';
  char digits[12];
  size_t nd = 0;
  do
    digits[nd++] = (char)('0' + n % 10);
  while ((n /= 10) != 0);
  while (nd)
    p->ident[len++] = digits[--nd];
  p->ident[len] = '\0';
  if (opts && opts->name) {
    size_t nl = strnlen(opts->name, sizeof p->name - 1);
    memcpy(p->name, opts->name, nl);
    p->name[nl] = '\0';
  } else {
    memcpy(p->name, "Process-", 8);
    memcpy(p->name + 8, p->ident, len + 1);
  }
  *pp = p;
  return 0;
}

static int start_fork(mp_process_t *p, const sigset_t *mask) {
  mp__gate_slot_t *slot = gate_alloc();
  if (!slot)
    return MP_ENOMEM;
  pid_t self = (pid_t)mp__self_pid();
  pid_t pid = fork();
  if (pid < 0) {
    int err = -errno;
    gate_free(slot);
    return err;
  }
  if (pid == 0) {
    if (mask)
      pthread_sigmask(SIG_SETMASK, mask, NULL);
    if (!mp__process_child_enter(p->name, p->ident, self, self, p->outlive,
                                 p->daemon) ||
        !gate_pass(slot, self))
      _exit(1);
    hot.self_report = slot;
    mp__process_child_run(p->fn, p->arg, p->arg_len);
  }
  /* The child waits at the gate before its target: it cannot have ended by
   * itself, so its pid is still its own whoever else reaps children. */
  int fd = sys_pidfd_open(pid);
  if (fd < 0) {
    int err = -errno;
    gate_open(slot, GATE_ABORT); /* it leaves without running the target */
    waitpid(pid, NULL, 0);
    gate_free(slot);
    return err;
  }
  p->pid = pid;
  p->pidfd = fd;
  p->slot = slot;
  gate_open(slot, GATE_GO);
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
  pthread_mutex_lock(&hot.reg_mu);
  int r = 0;
  if (p->state != PROC_CREATED)
    r = MP_EINVAL;
  else if (p->npass == MP_PROCESS_PASS_FDS_MAX)
    r = MP_E2BIG;
  else
    p->pass_fds[p->npass++] = fd;
  pthread_mutex_unlock(&hot.reg_mu);
  return r;
}

int mp_process_start(mp_process_t *p) {
  if (!p)
    return MP_EINVAL;
  pthread_mutex_lock(&hot.reg_mu);
  bool fresh = p->state == PROC_CREATED;
  if (fresh)
    p->state = PROC_STARTING; /* a concurrent second start fails */
  pthread_mutex_unlock(&hot.reg_mu);
  if (!fresh)
    return MP_EINVAL;
  if (kernel_support == MP_ENOSYS) {
    pthread_mutex_lock(&hot.reg_mu);
    p->state = PROC_CREATED;
    pthread_mutex_unlock(&hot.reg_mu);
    return MP_ENOSYS;
  }
  /* Only when something is buffered: taking a stream's lock writes a page
   * that the last fork shared, one copy-on-write fault per start. */
  if (__fpending(stdout))
    fflush(stdout);
  if (__fpending(stderr))
    fflush(stderr);
  int r;
  if (p->method == MP_START_FORKSERVER)
    r = mp__forkserver_spawn(p->fn, p->arg, p->arg_len, p->name, p->ident,
                             p->outlive, p->daemon, p->pass_fds, p->npass, &p->pid,
                             &p->pidfd, &p->statusfd);
  else if (p->outlive || on_main_thread())
    r = start_fork(p, NULL);
  else
    r = start_fork_via_spawner(p);
  pthread_mutex_lock(&hot.reg_mu);
  if (r < 0) {
    p->state = PROC_CREATED; /* a failed start changes nothing */
  } else {
    p->starter = (pid_t)mp__self_pid();
    p->state = PROC_RUNNING;
    reg_link(p);
  }
  pthread_mutex_unlock(&hot.reg_mu);
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
  pthread_mutex_lock(&hot.reg_mu);
  int r = 0;
  if (p->state < PROC_RUNNING)
    r = MP_EINVAL;
  else if (p->state == PROC_RUNNING &&
           sys_pidfd_send_signal(p->pidfd, sig) < 0 && errno != ESRCH)
    r = -errno;
  pthread_mutex_unlock(&hot.reg_mu);
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
  handle_put(p);
  return 0;
}

pid_t mp_current_pid(void) {
  return getpid();
}

pid_t mp_parent_pid(void) {
  return hot.cur_parent ? hot.cur_parent : getppid();
}

int mp_has_parent(void) {
  return hot.cur_parent != 0;
}

const char *mp_current_process_name(void) {
  return hot.cur_name;
}

int mp_current_process(mp_process_info_t *info) {
  if (!info)
    return MP_EINVAL;
  memset(info, 0, sizeof *info);
  snprintf(info->name, sizeof info->name, "%s", hot.cur_name);
  snprintf(info->identity, sizeof info->identity, "%s", hot.cur_identity);
  info->pid = getpid();
  info->daemon = hot.cur_daemon;
  return 0;
}

int mp_parent_process(mp_process_info_t *info) {
  if (!info)
    return MP_EINVAL;
  if (!hot.cur_parent)
    return MP_ENOENT;
  memset(info, 0, sizeof *info);
  /* The parent's identity is ours without its last part. */
  const char *cut = strrchr(hot.cur_identity, ':');
  size_t n = cut ? (size_t)(cut - hot.cur_identity) : 0;
  if (n >= sizeof info->identity)
    n = sizeof info->identity - 1;
  memcpy(info->identity, hot.cur_identity, n);
  snprintf(info->name, sizeof info->name, "%s", hot.parent_name);
  info->pid = hot.cur_parent;
  return 0;
}

int mp_active_children(mp_process_t **out, size_t cap) {
  if (!out && cap > 0)
    return MP_EINVAL;
  pthread_once(&reg_once, reg_init);
  int n = 0;
  pthread_mutex_lock(&hot.reg_mu);
  mp_process_t *p = hot.reg_head;
  while (p) {
    mp_process_t *next = p->next;
    if (p->starter == getpid() && proc_collect_locked(p) == MP_EAGAIN) {
      if ((size_t)n < cap)
        out[n] = p;
      n++;
    }
    p = next;
  }
  pthread_mutex_unlock(&hot.reg_mu);
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
 * fork server goes. Used by the exit handler and at a child's normal exit. */
static void exit_children(void) {
  pthread_mutex_lock(&hot.reg_mu);
  bool none = !hot.reg_head;
  pthread_mutex_unlock(&hot.reg_mu);
  if (none) {
    /* The common child's way out: no system call. */
    mp_forkserver_stop();
    return;
  }
  pid_t self = (pid_t)mp__self_pid();
  pthread_mutex_lock(&hot.reg_mu);
  for (mp_process_t *q = hot.reg_head; q; q = q->next)
    if (q->starter == self && q->daemon && q->state == PROC_RUNNING)
      sys_pidfd_send_signal(q->pidfd, SIGTERM);
  pthread_mutex_unlock(&hot.reg_mu);
  for (;;) {
    pthread_mutex_lock(&hot.reg_mu);
    /* Children allowed to outlive us are left to run. */
    mp_process_t *p = hot.reg_head;
    while (p && (p->starter != self || (p->outlive && !p->daemon)))
      p = p->next;
    pthread_mutex_unlock(&hot.reg_mu);
    if (!p)
      break;
    if (mp_process_join(p, MP_FOREVER) < 0) {
      pthread_mutex_lock(&hot.reg_mu);
      if (p->state != PROC_DONE) {
        p->state = PROC_DONE;
        p->status_lost = true;
        reg_unlink(p);
      }
      pthread_mutex_unlock(&hot.reg_mu);
    }
  }
  mp_forkserver_stop();
}

static void exit_handler(void) {
  exit_children();
}
