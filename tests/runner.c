/* Test runner: see runner.h. */
#include "runner.h"
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MPT_MAX 512

static struct {
  const char *name;
  mpt_fn fn;
} tests[MPT_MAX];
static int ntests;

void mpt_register(const char *name, mpt_fn fn) {
  if (ntests < MPT_MAX) {
    tests[ntests].name = name;
    tests[ntests].fn = fn;
    ntests++;
  }
}

void mpt_fail(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s:%d: ", file, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, " [pid %d]\n", (int)getpid());
  fflush(stderr);
  _exit(1);
}

int mpt_count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  struct dirent *e;
  if (!d)
    return -1;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n - 1; /* the DIR's own fd */
}

bool mpt_shm_exists(const char *name) {
  char path[256];
  struct stat st;
  snprintf(path, sizeof path, "/dev/shm%s", name);
  return stat(path, &st) == 0;
}

int mpt_with_small_dev_shm(size_t shm_bytes, void (*fn)(void)) {
  pid_t pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0) {
    char opts[64];
    snprintf(opts, sizeof opts, "size=%zu,mode=1777", shm_bytes);
    if (unshare(CLONE_NEWNS) < 0 ||
        mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0 ||
        mount("tmpfs", "/dev/shm", "tmpfs", 0, opts) < 0)
      mpt_fail(__FILE__, __LINE__, "private /dev/shm: %s", strerror(errno));
    fn();
    _exit(0);
  }
  int st;
  while (waitpid(pid, &st, 0) < 0)
    ASSERT(errno == EINTR);
  return st;
}

int mpt_count_shm(void) {
  DIR *d = opendir("/dev/shm");
  int n = 0;
  struct dirent *e;
  if (!d)
    return -1;
  while ((e = readdir(d)))
    if (strncmp(e->d_name, "mp-", 3) == 0)
      n++;
  closedir(d);
  return n;
}

void mpt_sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

uint64_t mpt_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static char *read_all_fd(int fd) {
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  for (;;) {
    if (len + 1 >= cap)
      buf = realloc(buf, cap *= 2);
    ssize_t n = read(fd, buf + len, cap - len - 1);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    len += (size_t)n;
  }
  buf[len] = '\0';
  return buf;
}

char *mpt_capture_stdout(void (*fn)(void *), void *arg) {
  int p[2];
  if (pipe(p) < 0)
    mpt_fail(__FILE__, __LINE__, "pipe");
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    dup2(p[1], 1);
    close(p[1]);
    fn(arg);
    fflush(stdout);
    _exit(0);
  }
  close(p[1]);
  char *out = read_all_fd(p[0]);
  close(p[0]);
  int st;
  waitpid(pid, &st, 0);
  return out;
}

char *mpt_run_cmd(const char *cmd, int *status) {
  fflush(stdout);
  FILE *f = popen(cmd, "r");
  if (!f)
    mpt_fail(__FILE__, __LINE__, "popen %s", cmd);
  char *out = read_all_fd(fileno(f));
  int st = pclose(f);
  if (status)
    *status = st;
  return out;
}

const char *mpt_build_dir(void) {
  const char *b = getenv("MP_BUILD_DIR");
  return b && *b ? b : "build";
}

char *mpt__run_example(const char *file, int line, const char *name,
                       int flags) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "%s/examples/%s%s", mpt_build_dir(), name,
           flags & MPT_STDERR ? " 2>&1" : "");
  int st = -1;
  char *out = mpt_run_cmd(cmd, &st);
  if (st != 0)
    mpt_fail(file, line, "%s failed (status %d): %s", name, st, out);
  return out;
}

int mpt_count(const char *s, const char *needle) {
  int n = 0;
  for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle))
    n++;
  return n;
}

bool mpt_before(const char *s, const char *first, const char *second) {
  const char *a = strstr(s, first), *b = strstr(s, second);
  return a && b && a < b;
}

int mpt_wait_exit(pid_t pid) {
  int st;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR)
      mpt_fail(__FILE__, __LINE__, "waitpid(%d): %s", (int)pid,
               strerror(errno));
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

void mpt__wait_ok(const char *file, int line, pid_t pid) {
  int rc = mpt_wait_exit(pid);
  if (rc != 0)
    mpt_fail(file, line, "child %d: %s %d", (int)pid,
             rc > 128 ? "killed by signal" : "exit status",
             rc > 128 ? rc - 128 : rc);
}

void mpt__join_ok(const char *file, int line, mp_process_t *p) {
  int rc = mp_process_join(p, MP_FOREVER), code = -1;
  if (rc == 0)
    rc = mp_process_exitcode(p, &code);
  if (rc != 0)
    mpt_fail(file, line, "join: %s", mp_err_name(rc));
  if (code != 0)
    mpt_fail(file, line, "process exit code %d", code);
}

int mpt_kill_reap(pid_t pid) {
  kill(pid, SIGKILL);
  return mpt_wait_exit(pid);
}

_Atomic int mpt_storm_alarms;

static void storm_on_alarm(int sig) {
  (void)sig;
  mpt_storm_alarms++;
}

void mpt_storm_start(int us, bool restart) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = storm_on_alarm;
  sa.sa_flags = restart ? SA_RESTART : 0;
  sigemptyset(&sa.sa_mask);
  mpt_storm_alarms = 0;
  ASSERT_EQ(sigaction(SIGALRM, &sa, NULL), 0);
  struct itimerval it = {{0, us}, {0, us}};
  ASSERT_EQ(setitimer(ITIMER_REAL, &it, NULL), 0);
}

void mpt_storm_stop(void) {
  struct itimerval off = {{0, 0}, {0, 0}};
  setitimer(ITIMER_REAL, &off, NULL);
  signal(SIGALRM, SIG_IGN);
}

pid_t mpt_hog_start(void) {
  pid_t pid = fork();
  if (pid == 0) {
    volatile unsigned long x = 0;
    for (;;)
      x++;
  }
  ASSERT(pid > 0);
  return pid;
}

void mpt_hog_stop(pid_t hog) {
  mpt_kill_reap(hog);
}

/* Runs in the test's own process: the body, then the leak checks. */
static void run_body(int i) {
  /* The segment tracker keeps one pipe fd for the life of the process; start
   * it first so it is not counted as the test's leak. */
  mp__tracker_register("/mp-runner-warmup");
  mp__tracker_unregister("/mp-runner-warmup");
  int fds_before = mpt_count_fds();
  tests[i].fn();
  fflush(stdout);
  /* Every child the test forked must have been reaped. */
  pid_t z = waitpid(-1, NULL, WNOHANG);
  if (z >= 0)
    mpt_fail(__FILE__, __LINE__, "test left %s child process",
             z > 0 ? "an unreaped" : "a running");
  int fds_after = mpt_count_fds();
  if (fds_after != fds_before)
    mpt_fail(__FILE__, __LINE__, "fd leak: %d open before, %d after",
             fds_before, fds_after);
  _exit(0);
}

static int run_one(int i) {
  int timeout_s = 60;
  const char *t = getenv("MPT_TIMEOUT");
  if (t && atoi(t) > 0)
    timeout_s = atoi(t);
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    return 1;
  }
  if (pid == 0) {
    setpgid(0, 0);
    run_body(i);
  }
  setpgid(pid, pid);
  uint64_t end = mpt_now_ms() + (uint64_t)timeout_s * 1000u;
  int st = 0;
  for (;;) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid)
      break;
    if (mpt_now_ms() > end) {
      fprintf(stderr, "%s: timed out after %d s\n", tests[i].name, timeout_s);
      kill(-pid, SIGKILL);
      waitpid(pid, &st, 0);
      return 1;
    }
    mpt_sleep_ms(5);
  }
  /* Anything the test left running in its group goes too. */
  kill(-pid, SIGKILL);
  if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
    return 0;
  if (WIFSIGNALED(st))
    fprintf(stderr, "%s: killed by signal %d\n", tests[i].name, WTERMSIG(st));
  return 1;
}

int main(int argc, char **argv) {
  int passed = 0, failed = 0;
  setvbuf(stdout, NULL, _IOLBF, 0);
  for (int i = 0; i < ntests; i++) {
    bool selected = argc < 2;
    for (int a = 1; a < argc; a++)
      if (strcmp(argv[a], tests[i].name) == 0)
        selected = true;
    if (!selected)
      continue;
    int r = run_one(i);
    printf("%s %s\n", r == 0 ? "ok" : "not ok", tests[i].name);
    if (r == 0)
      passed++;
    else
      failed++;
  }
  if (passed + failed == 0) {
    fprintf(stderr, "no test matched\n");
    return 2;
  }
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
