/* The segment tracker: names registered here are unlinked when this
 * process ends, however it ends (SIGKILL included).
 *
 * A small watcher process, started on the first registration in a process,
 * holds one end of a SOCK_SEQPACKET socket pair whose other end only this
 * process has (close-on-exec, closed in forked children by an atfork
 * handler). Each registration or removal is one message. When the socket
 * reports end of file the owner is gone, and the watcher unlinks every name
 * still registered.
 *
 * The watcher is made with clone3(CLONE_PIDFD) and no exit signal: a
 * "clone" child in the kernel's terms, which wait(2), waitpid(-1) and
 * waitid(P_ALL) without __WALL never report, which SIGCHLD SIG_IGN does not
 * reap, and which sends no SIGCHLD. So it never shows up in the
 * application's own wait loops, under PR_SET_CHILD_SUBREAPER or as PID 1
 * included, and nothing here depends on the application's SIGCHLD
 * disposition. Once its owner is gone it is re-parented like any orphan.
 *
 * Writes use send(MSG_NOSIGNAL): a dead watcher (killed by the OOM killer
 * or by hand) gives EPIPE, never SIGPIPE. The owner keeps its own list of
 * what is registered; on EPIPE it reaps the dead watcher, starts a new one
 * and hands it the whole list. */
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

typedef struct {
  char op; /* '+' register, '-' unregister */
  char name[MP__SEG_NAME_MAX];
} tracker_rec_t;

static pthread_mutex_t tracker_mu = PTHREAD_MUTEX_INITIALIZER;
static int tracker_fd = -1;     /* our end of the socket pair */
static int tracker_pidfd = -1;  /* the watcher, our clone child */
static pid_t tracker_pid;
static pid_t tracker_owner;     /* getpid() of the process that started it */
static tracker_rec_t *tracked;  /* what this process has registered */
static size_t ntracked, captracked;
static pthread_once_t tracker_atfork_once = PTHREAD_ONCE_INIT;

/* In a child: drop the parent's tracker state. The child is a new owner: it
 * must not hold the parent's socket open (that would hide the parent's end
 * from the parent's watcher), and the parent's names are not its own. The
 * watcher is the parent's. */
static void tracker_forget_parent(void) {
  if (tracker_fd >= 0)
    close(tracker_fd);
  if (tracker_pidfd >= 0)
    close(tracker_pidfd);
  tracker_fd = tracker_pidfd = -1;
  tracker_pid = 0;
  ntracked = 0;
}

static void tracker_atfork_child(void) {
  tracker_forget_parent();
  tracker_owner = 0;
  pthread_mutex_unlock(&tracker_mu); /* taken by the prepare handler */
}

static void tracker_atfork_prepare(void) {
  pthread_mutex_lock(&tracker_mu);
}
static void tracker_atfork_parent(void) {
  pthread_mutex_unlock(&tracker_mu);
}

static void tracker_install_atfork(void) {
  pthread_atfork(tracker_atfork_prepare, tracker_atfork_parent,
                 tracker_atfork_child);
}

/* "/name" -> "/dev/shm/name"; false when it is not a segment name. */
static bool watch_path(char *buf, size_t cap, const char *name) {
  size_t n = strlen(name);
  if (n < 2 || name[0] != '/' || strchr(name + 1, '/') || n + 9 > cap)
    return false;
  memcpy(buf, "/dev/shm", 8);
  memcpy(buf + 8, name, n + 1);
  return true;
}

/* Runs in the watcher: only plain system calls (the owner may have had
 * threads holding library locks), and memory from mmap, not malloc. */
static void tracker_watch(int rfd) __attribute__((noreturn));
static void tracker_watch(int rfd) {
  size_t cap = 64, n = 0;
  tracker_rec_t *names = mmap(NULL, cap * sizeof *names, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, NULL); /* SIGKILL still ends it */
  setsid();
  for (;;) {
    tracker_rec_t rec;
    ssize_t got = recv(rfd, &rec, sizeof rec, 0);
    if (got < 0 && errno == EINTR)
      continue;
    if (got <= 0)
      break; /* EOF: the owner is gone */
    if (got != (ssize_t)sizeof rec)
      continue;
    rec.name[MP__SEG_NAME_MAX - 1] = '\0';
    if (rec.op == '+') {
      if (n == cap) {
        void *p = mremap(names, cap * sizeof *names, 2 * cap * sizeof *names,
                         MREMAP_MAYMOVE);
        if (p == MAP_FAILED)
          continue;
        names = p;
        cap *= 2;
      }
      if (names != MAP_FAILED)
        names[n++] = rec;
    } else {
      for (size_t i = 0; i < n; i++) {
        if (strcmp(names[i].name, rec.name) == 0) {
          names[i] = names[--n];
          break;
        }
      }
    }
  }
  for (size_t i = 0; i < n; i++) {
    char path[MP__SEG_NAME_MAX + 16];
    if (watch_path(path, sizeof path, names[i].name))
      unlink(path);
  }
  /* A raw clone of the owner: leave without any libc or sanitizer exit
   * path, which could write out stdio buffers inherited from the owner. */
  syscall(SYS_exit_group, 0);
  __builtin_unreachable();
}

pid_t mp__clone_quiet(int *pidfd) {
  struct clone_args ca;
  memset(&ca, 0, sizeof ca);
  ca.flags = CLONE_PIDFD;
  ca.pidfd = (uint64_t)(uintptr_t)pidfd;
  ca.exit_signal = 0;
  long pid = syscall(SYS_clone3, &ca, sizeof ca);
  if (pid < 0 && errno == ENOSYS)
    /* Third argument: where CLONE_PIDFD stores the descriptor, in every
     * architecture's argument order. */
    pid = syscall(SYS_clone, CLONE_PIDFD, 0, pidfd, 0, 0);
  return pid < 0 ? -errno : (pid_t)pid;
}

static void tracker_reap_locked(void) {
  if (tracker_pidfd >= 0) {
    siginfo_t si;
    /* __WALL: a child without exit signal is a "clone" child. */
    while (waitid((idtype_t)P_PIDFD, (id_t)tracker_pidfd, &si,
                  WEXITED | __WALL) < 0 &&
           errno == EINTR) {
    }
    close(tracker_pidfd);
  }
  if (tracker_fd >= 0)
    close(tracker_fd);
  tracker_fd = tracker_pidfd = -1;
  tracker_pid = 0;
}

static int tracker_start_locked(void) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
    return -errno;
  int pidfd = -1;
  pid_t pid = mp__clone_quiet(&pidfd);
  if (pid == 0) {
    /* Keep no other fd open: an inherited copy of the owner's end would
     * hide EOF from the watcher. stdio stays. */
    int rfd = sv[0];
    if (rfd != 3) {
      dup2(rfd, 3);
      rfd = 3;
    }
    syscall(SYS_close_range, 4, ~0U, 0);
    tracker_watch(rfd);
  }
  close(sv[0]);
  if (pid < 0) {
    close(sv[1]);
    return pid;
  }
  tracker_fd = sv[1];
  tracker_pidfd = pidfd;
  tracker_pid = pid;
  tracker_owner = getpid();
  return 0;
}

static int tracker_write_locked(const tracker_rec_t *rec) {
  ssize_t n;
  do
    n = send(tracker_fd, rec, sizeof *rec, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  return n < 0 ? -errno : 0;
}

/* Start a watcher (again) and hand it everything registered. */
static int tracker_restart_locked(void) {
  tracker_reap_locked();
  int r = tracker_start_locked();
  for (size_t i = 0; r == 0 && i < ntracked; i++)
    r = tracker_write_locked(&tracked[i]);
  return r;
}

static int tracked_add_locked(const tracker_rec_t *rec) {
  if (ntracked == captracked) {
    size_t cap = captracked ? 2 * captracked : 16;
    tracker_rec_t *t = realloc(tracked, cap * sizeof *t);
    if (!t)
      return MP_ENOMEM;
    tracked = t;
    captracked = cap;
  }
  tracked[ntracked++] = *rec;
  return 0;
}

static void tracked_remove_locked(const char *name) {
  for (size_t i = 0; i < ntracked; i++) {
    if (strcmp(tracked[i].name, name) == 0) {
      tracked[i] = tracked[--ntracked];
      return;
    }
  }
}

static int tracker_send(char op, const char *name) {
  tracker_rec_t rec;
  memset(&rec, 0, sizeof rec);
  rec.op = op;
  if (strlen(name) >= sizeof rec.name)
    return MP_ENAMETOOLONG;
  strcpy(rec.name, name);
  pthread_once(&tracker_atfork_once, tracker_install_atfork);
  pthread_mutex_lock(&tracker_mu);
  int r = 0;
  if (tracker_owner != getpid()) {
    /* A child made without fork(3) (no atfork handler ran) holds copies of
     * its parent's state: none of it is its own. */
    tracker_forget_parent();
    tracker_owner = getpid();
  }
  if (op == '+') {
    if ((r = tracked_add_locked(&rec)) < 0)
      goto out;
  } else {
    tracked_remove_locked(name);
    if (tracker_fd < 0)
      goto out; /* nothing registered by this process yet */
  }
  if (tracker_fd < 0) {
    r = tracker_restart_locked();
    goto out; /* the whole list, this name included, went to it */
  }
  r = tracker_write_locked(&rec);
  if (r == MP_EPIPE || r == MP_ECONNRESET || r == MP_ENOTCONN)
    r = tracker_restart_locked(); /* the watcher died: a new one */
out:
  if (r < 0 && op == '+')
    tracked_remove_locked(name);
  pthread_mutex_unlock(&tracker_mu);
  return r;
}

int mp__tracker_register(const char *name) {
  return name ? tracker_send('+', name) : MP_EINVAL;
}

int mp__tracker_unregister(const char *name) {
  return name ? tracker_send('-', name) : MP_EINVAL;
}

pid_t mp__tracker_pid(void) {
  pthread_mutex_lock(&tracker_mu);
  pid_t pid = tracker_owner == getpid() ? tracker_pid : 0;
  pthread_mutex_unlock(&tracker_mu);
  return pid;
}
