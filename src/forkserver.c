/* The fork server (start method MP_START_FORKSERVER).
 *
 * A process forked from the application early (mp_forkserver_start, or the
 * first fork-server process) and double-forked so it is never the
 * application's child. It has one thread and waits on a unix stream socket;
 * each request carries a target function pointer and the argument bytes.
 * Pointers stay valid because the server and its children are forks of the
 * same program: same binary, same address space layout. The server forks
 * the child, creates its pidfd (race-free: the child is its own, unreaped)
 * and a status pipe, and passes both to the application with SCM_RIGHTS.
 * When the child ends the server reaps it and writes the exit code to the
 * pipe.
 *
 * The server starts like a fresh exec: it closes every close-on-exec
 * descriptor it inherited, keeping the others (stdio, descriptors the
 * program meant children to inherit).
 *
 * Lifetime: the server reads EOF on its socket when the application exits,
 * whatever the way (SIGKILL included) or calls mp_forkserver_stop, and then
 * exits; its children die with it through PR_SET_PDEATHSIG unless they asked
 * to outlive their parent. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "process_internal.h"

typedef struct {
  uint64_t fn;
  uint64_t arg_len;
  int32_t requester;
  uint32_t outlive;
  uint32_t daemon;
  char name[MP__PROC_NAME_MAX];
  char ident[MP__PROC_NAME_MAX];
  uint32_t nfds; /* descriptors riding on the request (SCM_RIGHTS) */
  int32_t fdnums[MP_PROCESS_PASS_FDS_MAX]; /* their numbers in the child */
  uint8_t cloexec[MP_PROCESS_PASS_FDS_MAX];
} fs_request_t;

#define FDS_CMSG_SPACE CMSG_SPACE(MP_PROCESS_PASS_FDS_MAX * sizeof(int))

typedef struct {
  int32_t err;
  int32_t pid;
} fs_response_t;

static pthread_mutex_t fs_mu = PTHREAD_MUTEX_INITIALIZER;
static int fs_fd = -1;
static int fs_pidfd = -1; /* the server's keeper, our quiet child */

/* Reap the server's keeper once the server is gone (nobody else can). */
static void fs_reap_locked(void) {
  if (fs_pidfd < 0)
    return;
  siginfo_t si;
  while (waitid((idtype_t)P_PIDFD, (id_t)fs_pidfd, &si, WEXITED | __WALL) < 0 &&
         errno == EINTR) {
  }
  mp__close(fs_pidfd);
  fs_pidfd = -1;
}

void mp__forkserver_atfork_child(void) {
  /* The server belongs to the parent; a child that wants one starts its
   * own. */
  pthread_mutex_init(&fs_mu, NULL);
  if (fs_fd >= 0)
    mp__close(fs_fd);
  if (fs_pidfd >= 0)
    mp__close(fs_pidfd);
  fs_fd = fs_pidfd = -1;
}

/* ---- server side --------------------------------------------------------- */

typedef struct {
  pid_t pid;
  int status_wr;
  bool outlive;
} fs_child_t;

typedef struct {
  int sock;
  int sigfd;
  sigset_t oldmask;
  struct sigaction oldint, oldpipe;
  fs_child_t *kids;
  size_t nkids, capkids;
} fs_server_t;

static int send_response(int sock, const fs_response_t *resp, const int *fds,
                         int nfds) {
  struct iovec iov = {.iov_base = (void *)resp, .iov_len = sizeof *resp};
  union {
    char buf[CMSG_SPACE(2 * sizeof(int))];
    struct cmsghdr align;
  } u;
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (nfds > 0)
    mp__cmsg_set_fds(&msg, u.buf, fds, (size_t)nfds);
  ssize_t n;
  do
    n = sendmsg(sock, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return -errno;
  if ((size_t)n < sizeof *resp)
    return mp__write_full(sock, (const char *)resp + n,
                          sizeof *resp - (size_t)n);
  return 0;
}

static void server_reap(fs_server_t *s) {
  struct signalfd_siginfo ssi;
  while (read(s->sigfd, &ssi, sizeof ssi) > 0) {
  }
  for (;;) {
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG) < 0 || si.si_pid == 0)
      return;
    int code = mp__exitcode_from_siginfo(si.si_code, si.si_status);
    for (size_t i = 0; i < s->nkids; i++) {
      if (s->kids[i].pid != si.si_pid)
        continue;
      /* The pipe has room: one int per pipe, written once. */
      if (write(s->kids[i].status_wr, &code, sizeof code) < 0) {
      }
      mp__close(s->kids[i].status_wr);
      s->kids[i] = s->kids[--s->nkids];
      break;
    }
  }
}

/* Put the received descriptors at the numbers they had in the application.
 * First above every number involved, so that no dup2 clobbers a descriptor
 * still to be moved. */
static void place_fds(const fs_request_t *rq, const int *fds, int nfds) {
  int hi = 0, tmp[MP_PROCESS_PASS_FDS_MAX];
  for (int i = 0; i < nfds; i++) {
    if (rq->fdnums[i] > hi)
      hi = rq->fdnums[i];
    if (fds[i] > hi)
      hi = fds[i];
  }
  for (int i = 0; i < nfds; i++) {
    tmp[i] = fcntl(fds[i], F_DUPFD, hi + 1);
    if (tmp[i] < 0)
      _exit(1);
    close(fds[i]);
  }
  for (int i = 0; i < nfds; i++) {
    if (dup2(tmp[i], rq->fdnums[i]) < 0)
      _exit(1);
    if (rq->cloexec[i])
      fcntl(rq->fdnums[i], F_SETFD, FD_CLOEXEC);
    close(tmp[i]);
  }
}

static __attribute__((noreturn)) void server_child(fs_server_t *s,
                                                   const fs_request_t *rq,
                                                   void *arg, const int *fds,
                                                   int nfds, pid_t server) {
  mp__close(s->sock);
  mp__close(s->sigfd);
  for (size_t i = 0; i < s->nkids; i++)
    mp__close(s->kids[i].status_wr);
  place_fds(rq, fds, nfds);
  mp__process_forget_parent();
  sigaction(SIGINT, &s->oldint, NULL);
  sigaction(SIGPIPE, &s->oldpipe, NULL);
  sigprocmask(SIG_SETMASK, &s->oldmask, NULL);
  if (!mp__process_child_enter(rq->name, rq->ident, rq->requester, server,
                               rq->outlive != 0, rq->daemon != 0))
    _exit(1);
  mp__process_child_run((mp_process_fn)(uintptr_t)rq->fn, arg,
                        (size_t)rq->arg_len);
}

static void server_spawn(fs_server_t *s, const fs_request_t *rq, void *arg,
                         const int *fds, int nfds) {
  fs_response_t resp = {0, 0};
  int st[2] = {-1, -1};
  if (s->nkids == s->capkids) {
    size_t cap = s->capkids ? s->capkids * 2 : 16;
    fs_child_t *k = realloc(s->kids, cap * sizeof *k);
    if (!k) {
      resp.err = MP_ENOMEM;
      send_response(s->sock, &resp, NULL, 0);
      return;
    }
    s->kids = k;
    s->capkids = cap;
  }
  if (pipe2(st, O_CLOEXEC) < 0) {
    resp.err = -errno;
    send_response(s->sock, &resp, NULL, 0);
    return;
  }
  pid_t server = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    mp__close(st[0]);
    mp__close(st[1]);
    server_child(s, rq, arg, fds, nfds, server);
  }
  if (pid < 0) {
    resp.err = -errno;
    mp__close(st[0]);
    mp__close(st[1]);
    send_response(s->sock, &resp, NULL, 0);
    return;
  }
  s->kids[s->nkids].pid = pid;
  s->kids[s->nkids].status_wr = st[1];
  s->kids[s->nkids].outlive = rq->outlive != 0;
  s->nkids++;
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (pidfd < 0) {
    resp.err = -errno;
    kill(pid, SIGKILL);
    mp__close(st[0]);
    send_response(s->sock, &resp, NULL, 0);
    return;
  }
  resp.pid = pid;
  int out[2] = {pidfd, st[0]};
  send_response(s->sock, &resp, out, 2);
  mp__close(pidfd);
  mp__close(st[0]);
}

/* Like a fresh exec: close every close-on-exec descriptor the server
 * inherited (all of mproc's, and those of most libraries), so that it holds
 * no copy of the application's pipes and sockets: a reader of a pipe must
 * see end of file when the application closes its writer. */
static void server_close_cloexec_fds(int keep) {
  DIR *d = opendir("/proc/self/fd");
  if (!d)
    return;
  int fds[256], n = 0, dfd = dirfd(d);
  struct dirent *e;
  bool more = true;
  while (more) {
    n = 0;
    more = false;
    rewinddir(d);
    while ((e = readdir(d))) {
      int fd = atoi(e->d_name);
      if (e->d_name[0] < '0' || e->d_name[0] > '9' || fd == dfd || fd == keep)
        continue;
      int fl = fcntl(fd, F_GETFD);
      if (fl < 0 || !(fl & FD_CLOEXEC))
        continue;
      if (n == (int)(sizeof fds / sizeof fds[0])) {
        more = true;
        break;
      }
      fds[n++] = fd;
    }
    for (int i = 0; i < n; i++)
      close(fds[i]);
  }
  closedir(d);
}

/* The parent-death signal would also get them, but only once this process
 * is torn down; they are still our unreaped children, so their pids are
 * safe to signal. */
static __attribute__((noreturn)) void server_exit(fs_server_t *s) {
  for (size_t i = 0; i < s->nkids; i++)
    if (!s->kids[i].outlive)
      kill(s->kids[i].pid, SIGKILL);
  _exit(0);
}

/* Read a request header; passed descriptors ride on its first bytes. */
static int read_request(int sock, fs_request_t *rq, int *fds, int *nfds) {
  size_t got = 0;
  *nfds = 0;
  while (got < sizeof *rq) {
    union {
      char buf[FDS_CMSG_SPACE];
      struct cmsghdr align;
    } u;
    struct iovec iov = {.iov_base = (char *)rq + got,
                        .iov_len = sizeof *rq - got};
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = u.buf,
                         .msg_controllen = sizeof u.buf};
    ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR)
      continue;
    if (n > 0)
      *nfds += (int)mp__cmsg_take_fds(
          &msg, fds + *nfds, (size_t)(MP_PROCESS_PASS_FDS_MAX - *nfds));
    if (n <= 0) {
      for (int i = 0; i < *nfds; i++)
        mp__close(fds[i]);
      *nfds = 0;
      return -1;
    }
    got += (size_t)n;
  }
  return 0;
}

static __attribute__((noreturn)) void server_main(int sock) {
  server_close_cloexec_fds(sock);
  fs_server_t s;
  memset(&s, 0, sizeof s);
  s.sock = sock;
  /* Ctrl-C goes to the whole foreground group: the application decides
   * what happens to its children, not the terminal. */
  struct sigaction ign;
  memset(&ign, 0, sizeof ign);
  ign.sa_handler = SIG_IGN;
  sigaction(SIGINT, &ign, &s.oldint);
  /* A status pipe whose reader is gone must not kill the server. */
  sigaction(SIGPIPE, &ign, &s.oldpipe);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, &s.oldmask);
  s.sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (s.sigfd < 0)
    _exit(1);
  for (;;) {
    struct pollfd pfd[2] = {{.fd = sock, .events = POLLIN},
                            {.fd = s.sigfd, .events = POLLIN}};
    if (poll(pfd, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      _exit(1);
    }
    if (pfd[1].revents)
      server_reap(&s);
    if (!pfd[0].revents)
      continue;
    fs_request_t rq;
    int fds[MP_PROCESS_PASS_FDS_MAX], nfds = 0;
    if (read_request(sock, &rq, fds, &nfds) < 0)
      server_exit(&s); /* the application is gone or stopped us */
    rq.name[sizeof rq.name - 1] = '\0';
    rq.ident[sizeof rq.ident - 1] = '\0';
    void *arg = NULL;
    if (rq.arg_len > 0) {
      arg = malloc((size_t)rq.arg_len);
      if (!arg || mp__read_full(sock, arg, (size_t)rq.arg_len) < 0)
        _exit(1);
    }
    if (rq.nfds != (uint32_t)nfds) {
      fs_response_t resp = {MP_EIO, 0};
      send_response(sock, &resp, NULL, 0);
    } else {
      server_spawn(&s, &rq, arg, fds, nfds);
    }
    for (int i = 0; i < nfds; i++)
      mp__close(fds[i]);
    free(arg);
  }
}

/* ---- application side ---------------------------------------------------- */

/* Start the server under a keeper: a child without exit signal (see
 * mp__clone_quiet), never reported by the application's wait calls, under a
 * subreaper or as PID 1 included. The keeper forks the server through
 * fork(3), so every atfork handler runs and the server starts as clean as
 * after any fork, then waits for it and leaves with it. Only while this
 * process has one thread: the keeper itself is a raw clone, which skips the
 * C library's fork handling, safe when no other thread can hold a lock.
 * 1 when done, 0 when not possible here, or a negative code. */
static int fs_start_quiet_locked(int sv[2]) {
  char state;
  long threads = 0;
  uint64_t start;
  if (mp__proc_stat((uint32_t)getpid(), &state, &threads, &start) < 0 ||
      threads != 1)
    return 0;
  int pidfd = -1;
  pid_t pid = mp__clone_quiet(&pidfd);
  if (pid == MP_ENOSYS || pid == MP_EPERM)
    return 0;
  if (pid < 0)
    return pid;
  if (pid == 0) {
    mp__close(sv[0]);
    mp__forkserver_atfork_child(); /* fs_mu is held: the server starts clean */
    pid_t srv = fork();
    if (srv == 0)
      server_main(sv[1]);
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    syscall(SYS_close_range, 3, ~0U, 0);
    siginfo_t si;
    while (srv > 0 && waitid(P_PID, (id_t)srv, &si, WEXITED) < 0 &&
           errno == EINTR) {
    }
    /* A raw clone: no libc or sanitizer exit path (stdio buffers inherited
     * from the application must not be written out). */
    syscall(SYS_exit_group, 0);
    __builtin_unreachable();
  }
  fs_pidfd = pidfd;
  return 1;
}

static int fs_start_locked(void) {
  if (fs_fd >= 0)
    return 0;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    return -errno;
  int q = fs_start_quiet_locked(sv);
  if (q < 0) {
    mp__close(sv[0]);
    mp__close(sv[1]);
    return q;
  }
  if (q == 1) {
    mp__close(sv[1]);
    fs_fd = sv[0];
    return 0;
  }
  /* With threads running: double-forked through fork(3), so the server is
   * re-parented away from the application (to a subreaper, when the
   * application is one: there the server shows up in its wait calls until
   * mp_forkserver_stop or exit). */
  pid_t mid = fork();
  if (mid < 0) {
    int err = -errno;
    mp__close(sv[0]);
    mp__close(sv[1]);
    return err;
  }
  if (mid == 0) {
    /* Intermediate: fork the server and leave, so the server is reparented
     * and never shows up in the application's wait calls. */
    mp__close(sv[0]);
    mp__forkserver_atfork_child(); /* fs_mu is held: the server starts clean */
    pid_t srv = fork();
    if (srv == 0)
      server_main(sv[1]);
    _exit(srv < 0 ? 1 : 0);
  }
  mp__close(sv[1]);
  siginfo_t si;
  memset(&si, 0, sizeof si);
  int r;
  do
    r = waitid(P_PID, (id_t)mid, &si, WEXITED);
  while (r < 0 && errno == EINTR);
  /* ECHILD: the application reaped it (or ignores SIGCHLD); the socket
   * tells below whether the server runs. */
  if (r == 0 && (si.si_code != CLD_EXITED || si.si_status != 0)) {
    mp__close(sv[0]);
    return MP_EAGAIN;
  }
  fs_fd = sv[0];
  return 0;
}

int mp_forkserver_start(void) {
  pthread_mutex_lock(&fs_mu);
  int r = fs_start_locked();
  pthread_mutex_unlock(&fs_mu);
  return r;
}

static void fs_stop_locked(void) {
  if (fs_fd < 0)
    return;
  /* Wait for the server to leave: its end of the socket closes when it
   * exits, so a read returns EOF then. */
  shutdown(fs_fd, SHUT_WR);
  char c;
  struct pollfd pfd = {.fd = fs_fd, .events = POLLIN};
  bool gone = false;
  while (!gone && poll(&pfd, 1, 5000) > 0)
    gone = read(fs_fd, &c, 1) <= 0;
  mp__close(fs_fd);
  fs_fd = -1;
  if (gone)
    fs_reap_locked();
}

int mp_forkserver_stop(void) {
  pthread_mutex_lock(&fs_mu);
  fs_stop_locked();
  pthread_mutex_unlock(&fs_mu);
  return 0;
}

static int fs_request_locked(const fs_request_t *rq, const void *arg,
                             size_t len, const int *pass_fds,
                             fs_response_t *resp, int fds[2]) {
  struct iovec iov[2] = {{.iov_base = (void *)rq, .iov_len = sizeof *rq},
                         {.iov_base = (void *)arg, .iov_len = len}};
  struct msghdr msg = {.msg_iov = iov, .msg_iovlen = len ? 2 : 1};
  union {
    char buf[FDS_CMSG_SPACE];
    struct cmsghdr align;
  } cu;
  if (rq->nfds > 0) /* the descriptors go with the first bytes sent */
    mp__cmsg_set_fds(&msg, cu.buf, pass_fds, rq->nfds);
  size_t total = sizeof *rq + len, done = 0;
  while (done < total) {
    ssize_t n = sendmsg(fs_fd, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    msg.msg_control = NULL;
    msg.msg_controllen = 0;
    done += (size_t)n;
    /* Advance the iovecs past what was sent. */
    size_t k = (size_t)n;
    while (msg.msg_iovlen > 0 && k >= msg.msg_iov[0].iov_len) {
      k -= msg.msg_iov[0].iov_len;
      msg.msg_iov++;
      msg.msg_iovlen--;
    }
    if (msg.msg_iovlen > 0) {
      msg.msg_iov[0].iov_base = (char *)msg.msg_iov[0].iov_base + k;
      msg.msg_iov[0].iov_len -= k;
    }
  }
  union {
    char buf[CMSG_SPACE(2 * sizeof(int))];
    struct cmsghdr align;
  } u;
  struct iovec riov = {.iov_base = resp, .iov_len = sizeof *resp};
  struct msghdr rmsg = {.msg_iov = &riov,
                        .msg_iovlen = 1,
                        .msg_control = u.buf,
                        .msg_controllen = sizeof u.buf};
  ssize_t n;
  do
    n = recvmsg(fs_fd, &rmsg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return -errno;
  if (n == 0)
    return MP_ECLOSED;
  /* The server sends both descriptors or none. */
  fds[0] = fds[1] = -1;
  int got[2];
  size_t k = mp__cmsg_take_fds(&rmsg, got, 2);
  if (k == 2)
    memcpy(fds, got, sizeof got);
  else if (k == 1)
    mp__close(got[0]);
  if ((size_t)n < sizeof *resp) {
    int r = mp__read_full(fs_fd, (char *)resp + n, sizeof *resp - (size_t)n);
    if (r < 0)
      return r;
  }
  return 0;
}

int mp__forkserver_spawn(mp_process_fn fn, const void *arg, size_t len,
                         const char *name, const char *ident, bool outlive,
                         bool daemon, const int *pass_fds, int npass, pid_t *pid, int *pidfd,
                         int *statusfd) {
  fs_request_t rq;
  memset(&rq, 0, sizeof rq);
  rq.nfds = (uint32_t)npass;
  for (int i = 0; i < npass; i++) {
    int fl = fcntl(pass_fds[i], F_GETFD);
    if (fl < 0)
      return MP_EBADF; /* closed since mp_process_pass_fd */
    rq.fdnums[i] = pass_fds[i];
    rq.cloexec[i] = (fl & FD_CLOEXEC) != 0;
  }
  rq.fn = (uint64_t)(uintptr_t)fn;
  rq.arg_len = len;
  rq.requester = getpid();
  rq.outlive = outlive;
  rq.daemon = daemon;
  snprintf(rq.name, sizeof rq.name, "%s", name);
  snprintf(rq.ident, sizeof rq.ident, "%s", ident);
  fs_response_t resp = {0, 0};
  int fds[2] = {-1, -1};
  pthread_mutex_lock(&fs_mu);
  int r = 0;
  /* A server that died (killed by someone) is replaced once. */
  for (int attempt = 0; attempt < 2; attempt++) {
    r = fs_start_locked();
    if (r < 0)
      break;
    r = fs_request_locked(&rq, arg, len, pass_fds, &resp, fds);
    if (r != MP_ECLOSED && r != MP_EPIPE && r != MP_ECONNRESET)
      break;
    mp__close(fs_fd);
    fs_fd = -1;
    fs_reap_locked(); /* the dead server's keeper */
  }
  pthread_mutex_unlock(&fs_mu);
  if (r == 0 && resp.err < 0)
    r = resp.err;
  if (r == 0 && (fds[0] < 0 || fds[1] < 0))
    r = MP_EIO;
  if (r < 0) {
    if (fds[0] >= 0)
      mp__close(fds[0]);
    if (fds[1] >= 0)
      mp__close(fds[1]);
    return r;
  }
  mp__set_nonblock(fds[1], true);
  *pid = resp.pid;
  *pidfd = fds[0];
  *statusfd = fds[1];
  return 0;
}
