/* Internal helpers shared by several parts: process identity, the
 * spawner thread. */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "robust.h"
#include "runner.h"

/* Above the kernel's largest pid_max (2^22): never a live process. */
#define NO_SUCH_PID 0x3fffffffu

/* The owner word of a process-owned lock held by pid, started at start
 * (0: unknown), as the locks store it; mp__rb_owner_dead is what every
 * lock, queue and manager asks of it. */
static uint64_t owner_word(uint32_t pid, uint64_t start) {
  return (uint64_t)(uint32_t)start << 32 | pid;
}

static bool owner_dead(uint32_t pid, uint64_t start) {
  return mp__rb_owner_dead(owner_word(pid, start), 0);
}

/* Waits until /proc shows pid in state (or gone when state is 0). */
static void wait_state(pid_t pid, char state) {
  for (int i = 0; i < 2000; i++) {
    char st;
    long threads;
    uint64_t start;
    int r = mp__proc_stat((uint32_t)pid, &st, &threads, &start);
    if (state ? r == 0 && st == state : r == MP_ENOENT)
      return;
    mpt_sleep_ms(5);
  }
  ASSERT(!"process never reached the state");
}

/* "Threads:" of /proc/self/status. */
static long status_threads(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long n = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "Threads: %ld", &n) == 1)
      break;
  if (f)
    fclose(f);
  return n;
}

TEST(proc_identity_self) {
  uint64_t start = 0;
  ASSERT_OK(mp__pid_start_time((uint32_t)getpid(), &start));
  ASSERT(start > 0);
  ASSERT_EQ(mp__self_pid(), getpid());
  ASSERT_EQ(mp__self_pid_start(), start);
  ASSERT_EQ(mp__self_tid(), gettid());
  ASSERT_EQ(mp__self_tid_start(), start);
  char st = 0;
  long threads = 0;
  ASSERT_OK(mp__proc_stat((uint32_t)getpid(), &st, &threads, &start));
  ASSERT(st == 'R' || st == 'S');
  /* As many as the kernel lists (a sanitizer may run a thread of its own). */
  ASSERT_EQ(threads, status_threads());
  ASSERT_ERR(mp__pid_start_time(NO_SUCH_PID, &start), MP_ENOENT);
  ASSERT_EQ(start, 0);
  ASSERT_EQ(mp__owner_probe(NO_SUCH_PID, false, &start), MP__OWNER_GONE);
  ASSERT(owner_dead(NO_SUCH_PID, 0));
  /* The caller itself is alive, under its own start time only. */
  ASSERT_EQ(mp__owner_probe(mp__self_pid(), false, &start), MP__OWNER_EXISTS);
  ASSERT_EQ(start, mp__self_pid_start());
  ASSERT(!owner_dead(mp__self_pid(), 0));
  ASSERT(!owner_dead(mp__self_pid(), mp__self_pid_start()));
  ASSERT(owner_dead(mp__self_pid(), mp__self_pid_start() + 1));
}

static void *tid_thread(void *arg) {
  uint32_t *out = arg;
  out[0] = mp__self_tid();
  out[1] = (uint32_t)gettid();
  out[2] = mp__self_pid();
  return NULL;
}

TEST(proc_identity_threads_and_fork) {
  uint32_t main_tid = mp__self_tid(), seen[3];
  pthread_t t;
  ASSERT_OK(-pthread_create(&t, NULL, tid_thread, seen));
  ASSERT_OK(-pthread_join(t, NULL));
  ASSERT_EQ(seen[0], seen[1]);
  ASSERT(seen[0] != main_tid);
  ASSERT_EQ(seen[2], getpid());
  /* The caches are reset in a forked child. */
  uint32_t parent = mp__self_pid();
  uint64_t parent_start = mp__self_pid_start();
  pid_t pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0) {
    bool ok = mp__self_pid() == (uint32_t)getpid() &&
              mp__self_pid() != parent && mp__self_tid() == mp__self_pid() &&
              mp__self_pid_start() >= parent_start &&
              !owner_dead(parent, parent_start);
    _exit(ok ? 0 : 1);
  }
  mpt_wait_ok(pid);
}

/* Child bodies: wait until the parent closes its end of the pipe. */
static void *linger(void *arg) {
  int fd = *(int *)arg;
  char c;
  (void)!read(fd, &c, 1);
  _exit(0);
}

static void linger_in_thread(int *fd) {
  /* The main thread ends; another keeps the process alive. */
  pthread_t t;
  if (pthread_create(&t, NULL, linger, fd) != 0)
    _exit(1);
  pthread_exit(NULL);
}

static void linger_here(int *fd) {
  linger(fd);
}

/* Forks a child running body until *release is closed. */
static pid_t fork_lingering(void (*body)(int *fd), int *release) {
  int p[2];
  ASSERT_OK(pipe(p) < 0 ? -errno : 0);
  pid_t pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0) {
    close(p[1]);
    body(&p[0]);
    _exit(1);
  }
  close(p[0]);
  *release = p[1];
  return pid;
}

TEST(proc_identity_dead_owner) {
  int release;
  pid_t pid = fork_lingering(linger_here, &release);
  uint64_t start = 0, now = 0;
  ASSERT_OK(mp__pid_start_time((uint32_t)pid, &start));
  ASSERT_EQ(mp__owner_probe((uint32_t)pid, false, &now), MP__OWNER_EXISTS);
  ASSERT_EQ(now, start);
  ASSERT(!owner_dead((uint32_t)pid, start));
  /* Another start time: the pid was reused by somebody else. */
  ASSERT(owner_dead((uint32_t)pid, start + 1));
  /* Killed but not reaped: a zombie holds nothing. */
  ASSERT_OK(kill(pid, SIGKILL));
  wait_state(pid, 'Z');
  /* The leader turns 'Z' first; other threads of the process (a sanitizer's,
   * say) may take a moment more to go, and until then it still counts. */
  for (int i = 0;
       i < 500 && mp__owner_probe((uint32_t)pid, false, &now) != MP__OWNER_GONE;
       i++)
    mpt_sleep_ms(10);
  ASSERT_EQ(mp__owner_probe((uint32_t)pid, false, &now), MP__OWNER_GONE);
  ASSERT(owner_dead((uint32_t)pid, start));
  ASSERT(owner_dead((uint32_t)pid, 0));
  int status;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_EQ(mp__owner_probe((uint32_t)pid, false, &now), MP__OWNER_GONE);
  close(release);
}

TEST(proc_identity_main_thread_exited) {
  int release;
  pid_t pid = fork_lingering(linger_in_thread, &release);
  /* The leader shows 'Z' while the other thread runs: the process is
   * alive, its main thread is not. */
  wait_state(pid, 'Z');
  uint64_t start = 0;
  ASSERT_EQ(mp__owner_probe((uint32_t)pid, false, &start), MP__OWNER_EXISTS);
  ASSERT(start > 0);
  ASSERT(!owner_dead((uint32_t)pid, start));
  ASSERT_EQ(mp__owner_probe((uint32_t)pid, true, &start), MP__OWNER_GONE);
  ASSERT(mp__rb_owner_dead(owner_word((uint32_t)pid, start), MP__RB_THREAD));
  close(release);
  mpt_wait_ok(pid);
}

/* ---- the spawner thread (process and subprocess share it) -------------- */

static int ret_arg(const void *arg, size_t len) {
  int v = 0;
  if (len == sizeof v)
    memcpy(&v, arg, sizeof v);
  return v;
}

static void *spawn_loop(void *arg) {
  bool subprocess = (intptr_t)arg % 2;
  for (int i = 0; i < 15; i++) {
    if (subprocess) {
      char word[16];
      snprintf(word, sizeof word, "w%d", i);
      const char *argv[] = {"echo", word, NULL};
      mp_run_opts_t ro;
      memset(&ro, 0, sizeof ro);
      ro.capture_output = true;
      mp_run_result_t res;
      if (mp_run(argv, &ro, &res) != 0)
        return (void *)1;
      bool ok = res.out_len == strlen(word) + 1 &&
                memcmp(res.out, word, strlen(word)) == 0;
      mp_run_result_free(&res);
      if (!ok)
        return (void *)2;
    } else {
      mp_process_t *p;
      mp_process_opts_t o = {.start_method = MP_START_FORK};
      int code = -1;
      if (mp_process_create(&p, ret_arg, &i, sizeof i, &o) < 0 ||
          mp_process_start(p) < 0 || mp_process_join(p, MP_FOREVER) < 0 ||
          mp_process_exitcode(p, &code) < 0 || code != i)
        return (void *)3;
      mp_process_destroy(p);
    }
  }
  return NULL;
}

TEST(spawner_shared_by_process_and_subprocess) {
  /* Non-main threads: every start goes through the one spawner thread. */
  pthread_t t[4];
  for (intptr_t i = 0; i < 4; i++)
    ASSERT_OK(-pthread_create(&t[i], NULL, spawn_loop, (void *)i));
  for (int i = 0; i < 4; i++) {
    void *r;
    ASSERT_OK(-pthread_join(t[i], &r));
    ASSERT(r == NULL);
  }
  ASSERT_EQ(mp_active_children(NULL, 0), 0);
}

/* ---- descriptors over a Unix socket ------------------------------------- */

TEST(cmsg_fds_set_and_take) {
  int sv[2];
  ASSERT_OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 ? -errno
                                                                       : 0);
  int before = mpt_count_fds();
  int fds[3];
  for (int i = 0; i < 3; i++) {
    fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ASSERT(fds[i] >= 0);
  }
  for (size_t cap = 0; cap <= 4; cap++) {
    char byte = 'x';
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union {
      char buf[CMSG_SPACE(3 * sizeof(int))];
      struct cmsghdr align;
    } u, r;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    mp__cmsg_set_fds(&msg, u.buf, fds, 3);
    ASSERT_EQ(sendmsg(sv[0], &msg, 0), 1);
    struct msghdr in = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = r.buf,
                        .msg_controllen = sizeof r.buf};
    ASSERT_EQ(recvmsg(sv[1], &in, MSG_CMSG_CLOEXEC), 1);
    int got[4] = {-1, -1, -1, -1};
    size_t k = mp__cmsg_take_fds(&in, got, cap);
    ASSERT_EQ(k, cap < 3 ? cap : 3);
    /* The ones kept are open and new; the rest were closed. */
    ASSERT_EQ(mpt_count_fds(), before + 3 + (int)k);
    for (size_t i = 0; i < k; i++) {
      ASSERT(got[i] > fds[2]);
      ASSERT(fcntl(got[i], F_GETFD) & FD_CLOEXEC);
      close(got[i]);
    }
  }
  /* Nothing attached: nothing taken. */
  char byte = 'y';
  ASSERT_EQ(write(sv[0], &byte, 1), 1);
  struct iovec iov = {.iov_base = &byte, .iov_len = 1};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } r;
  struct msghdr in = {.msg_iov = &iov,
                      .msg_iovlen = 1,
                      .msg_control = r.buf,
                      .msg_controllen = sizeof r.buf};
  ASSERT_EQ(recvmsg(sv[1], &in, 0), 1);
  int got;
  ASSERT_EQ(mp__cmsg_take_fds(&in, &got, 1), 0);
  for (int i = 0; i < 3; i++)
    close(fds[i]);
  close(sv[0]);
  close(sv[1]);
}

/* ---- segment tracker ------------------------------------------------------ */

/* True once pid is a zombie or gone. */
static bool dead_or_zombie(pid_t pid) {
  char st;
  long threads;
  uint64_t start;
  int r = mp__proc_stat((uint32_t)pid, &st, &threads, &start);
  return r == MP_ENOENT || (r == 0 && (st == 'Z' || st == 'X'));
}

static bool wait_gone(const char *name) {
  for (int i = 0; i < 3000 && mpt_shm_exists(name); i++)
    mpt_sleep_ms(5);
  return !mpt_shm_exists(name);
}

/* In a child: creates a segment, kills the tracker's watcher, creates a
 * second one, and leaves without removing either. */
static void tracker_killed_case(bool ignore_sigpipe) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t c = fork();
  ASSERT(c >= 0);
  if (c == 0) {
    close(fds[0]);
    signal(SIGPIPE, ignore_sigpipe ? SIG_IGN : SIG_DFL);
    mp__seg_t a, b;
    if (mp__seg_create(&a, NULL, 4096, 0, true) < 0)
      _exit(10);
    pid_t w = mp__tracker_pid();
    if (w <= 0 || kill(w, SIGKILL) < 0)
      _exit(11);
    while (!dead_or_zombie(w))
      mpt_sleep_ms(2);
    if (mp__seg_create(&b, NULL, 4096, 0, true) < 0)
      _exit(12);
    pid_t w2 = mp__tracker_pid();
    if (w2 <= 0 || w2 == w)
      _exit(13);
    char names[2 * MP__SEG_NAME_MAX];
    memcpy(names, a.name, MP__SEG_NAME_MAX);
    memcpy(names + MP__SEG_NAME_MAX, b.name, MP__SEG_NAME_MAX);
    if (write(fds[1], names, sizeof names) != (ssize_t)sizeof names)
      _exit(14);
    _exit(0); /* neither name removed: the new watcher must do it */
  }
  close(fds[1]);
  char names[2 * MP__SEG_NAME_MAX];
  ASSERT_EQ(mp__read_full(fds[0], names, sizeof names), 0);
  close(fds[0]);
  int st;
  ASSERT_EQ(waitpid(c, &st, 0), c);
  ASSERT(WIFEXITED(st)); /* not killed by SIGPIPE */
  ASSERT_EQ(WEXITSTATUS(st), 0);
  ASSERT(wait_gone(names));
  ASSERT(wait_gone(names + MP__SEG_NAME_MAX));
}

TEST(tracker_killed_restarted_no_sigpipe) {
  tracker_killed_case(false);
}

TEST(tracker_killed_restarted_sigpipe_ignored) {
  tracker_killed_case(true);
}

TEST(tracker_sigchld_ignored) {
  /* The watcher is no child that SIGCHLD SIG_IGN or a reaping loop could
   * take away: start-up works, the names go at the owner's exit. */
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t c = fork();
  ASSERT(c >= 0);
  if (c == 0) {
    close(fds[0]);
    signal(SIGCHLD, SIG_IGN);
    mp__seg_t a;
    if (mp__seg_create(&a, NULL, 4096, 0, true) < 0)
      _exit(10);
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    if (errno != ECHILD) /* no child of ours for wait(2) to see */
      _exit(11);
    if (write(fds[1], a.name, MP__SEG_NAME_MAX) != MP__SEG_NAME_MAX)
      _exit(12);
    _exit(0);
  }
  close(fds[1]);
  char name[MP__SEG_NAME_MAX];
  ASSERT_EQ(mp__read_full(fds[0], name, sizeof name), 0);
  close(fds[0]);
  mpt_wait_ok(c);
  ASSERT(wait_gone(name));
}

/* Test-only hook: the first random name drawn is one already taken. */
static char taken_name[MP__SEG_NAME_MAX];
static int draws;
static int colliding_name(char *buf, size_t cap, const char *prefix) {
  if (draws++ == 0) {
    snprintf(buf, cap, "%s", taken_name);
    return 0;
  }
  return mp__random_name(buf, cap, prefix);
}

TEST(seg_random_name_collision_draws_again) {
  ASSERT_OK(mp__random_name(taken_name, sizeof taken_name, "/mp-"));
  int fd = shm_open(taken_name, O_RDWR | O_CREAT | O_EXCL, 0600);
  ASSERT(fd >= 0);
  draws = 0;
  mp__test_random_name = colliding_name;
  mp__seg_t s;
  int r = mp__seg_create(&s, NULL, 4096, 0, true);
  mp__test_random_name = NULL;
  ASSERT_OK(r);
  ASSERT_EQ(draws, 2);
  ASSERT(strcmp(s.name, taken_name) != 0);
  /* The other object was left alone. */
  ASSERT(mpt_shm_exists(taken_name));
  ASSERT_OK(mp__seg_unlink(s.name));
  mp__seg_close(&s);
  close(fd);
  shm_unlink(taken_name);
}

TEST(queue_check_live_queue_passes) {
  /* mp_queue_open's header check (mp__queue_check) reads both sides' state
   * and the ring size while other processes put, get, grow and shrink: a
   * correct queue in motion must pass it every time, without waiting. */
  mp_queue_t *q = NULL;
  ASSERT_OK(mp_queue_create(&q, &(mp_queue_opts_t){.capacity = 8 << 20}));
  char path[128];
  snprintf(path, sizeof path, "/dev/shm%s", mp_queue_name(q));
  int ready[2];
  ASSERT(pipe(ready) == 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(ready[0]);
    static unsigned char buf[4096];
    uint64_t put = 0, got = 0;
    for (int round = 0; round < 100000; round++) {
      /* A backlog of up to a few MiB (the ring grows), then drained to a
       * few messages (it shrinks back). */
      int n = round % 2 ? 500 : 8000 + 97 * (round % 8);
      for (int k = 0; k < n; k++) {
        int r = mp_queue_put(q, buf, 16 + (put * 7) % 300, 0);
        if (r == MP_ECLOSED)
          _exit(0);
        if (r != 0)
          _exit(1);
        put++;
      }
      while (put - got > (uint64_t)(round % 7) * 10) {
        size_t len;
        int r = mp_queue_get_into(q, buf, sizeof buf, &len, 0);
        if (r == MP_ECLOSED)
          _exit(0);
        if (r != 0)
          _exit(2);
        got++;
      }
      if (round == 1 && write(ready[1], "", 1) != 1)
        _exit(4);
    }
    _exit(3);
  }
  close(ready[1]);
  char c;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  close(ready[0]);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  ASSERT(fd >= 0);
  /* Beyond the object's end is never read: only the header is looked at. */
  size_t span = (size_t)64 << 20;
  void *base = mmap(NULL, span, PROT_READ, MAP_SHARED, fd, 0);
  ASSERT(base != MAP_FAILED);
  close(fd);
  int refused = 0;
  for (int i = 0; i < 1000000; i++)
    if (mp__queue_check(base, span, span) != 0)
      refused++;
  munmap(base, span);
  ASSERT_OK(mp_queue_close(q));
  mpt_wait_ok(pid);
  ASSERT_EQ(refused, 0);
  ASSERT_OK(mp_queue_destroy(q));
}
