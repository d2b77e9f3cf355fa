/* A private redis-server for a test binary (the Redis tests).
 *
 * mpt_redis_start() runs `redis-server --port 0 --unixsocket <tmp>/redis.sock
 * --unixsocketperm 700 --save '' --appendonly no` (or, with a TCP port, one on
 * 127.0.0.1 at a free ephemeral port) and waits until it answers;
 * mpt_redis_stop() stops it and reaps it. The server gets SIGKILL if the
 * process that started it dies first (PR_SET_PDEATHSIG), so a killed test
 * leaves no server behind. The shared server of a binary is started by a
 * constructor in the runner's own process (not in the forked test case, whose
 * children the runner requires to be reaped) and stopped at its exit. */
#ifndef MPROC_TEST_REDIS_SERVER_H
#define MPROC_TEST_REDIS_SERVER_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct {
  pid_t pid;    /* the server, 0 when stopped */
  pid_t owner;  /* process that started it */
  int port;     /* TCP port, 0 for unix socket only */
  char dir[64]; /* temporary directory */
  char sock[100];
  char addr[256]; /* mproc address of the server */
  char pass[64];  /* requirepass, "" for none */
} mpt_redis_t;

static int mpt__free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
    if (fd >= 0)
      close(fd);
    return -1;
  }
  close(fd);
  return ntohs(a.sin_port);
}

static int mpt__can_connect(const mpt_redis_t *s) {
  int fd;
  int ok;
  if (s->port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)s->port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
  } else {
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    snprintf(a.sun_path, sizeof a.sun_path, "%s", s->sock);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
  }
  if (fd >= 0)
    close(fd);
  return ok;
}

/* Start (or restart, keeping dir, port and password) a server. tcp: also
 * listen on 127.0.0.1. pass: requirepass (NULL: none). Returns 0 or -1. */
static int mpt_redis_start(mpt_redis_t *s, int tcp, const char *pass) {
  if (!s->dir[0]) {
    snprintf(s->dir, sizeof s->dir, "/tmp/mpt-redis-XXXXXX");
    if (!mkdtemp(s->dir))
      return -1;
    snprintf(s->sock, sizeof s->sock, "%s/redis.sock", s->dir);
    snprintf(s->pass, sizeof s->pass, "%s", pass ? pass : "");
  }
  for (int attempt = 0; attempt < 5; attempt++) {
    if (tcp && (!s->port || attempt > 0))
      s->port = mpt__free_port();
    char port[16];
    snprintf(port, sizeof port, "%d", tcp ? s->port : 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
      return -1;
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      setpgid(0, 0); /* out of the way of the test's signals */
      char log[128];
      snprintf(log, sizeof log, "%s/redis.log", s->dir);
      int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
      }
      const char *argv[24];
      int n = 0;
      argv[n++] = "redis-server";
      argv[n++] = "--port";
      argv[n++] = port;
      argv[n++] = "--bind";
      argv[n++] = "127.0.0.1";
      argv[n++] = "--unixsocket";
      argv[n++] = s->sock;
      argv[n++] = "--unixsocketperm";
      argv[n++] = "700";
      argv[n++] = "--save";
      argv[n++] = "";
      argv[n++] = "--appendonly";
      argv[n++] = "no";
      argv[n++] = "--dir";
      argv[n++] = s->dir;
      if (s->pass[0]) {
        argv[n++] = "--requirepass";
        argv[n++] = s->pass;
      }
      argv[n] = NULL;
      execvp("redis-server", (char **)argv);
      _exit(127);
    }
    s->pid = pid;
    s->owner = getpid();
    /* Ready when it answers (up to 20 s on a loaded machine). */
    mpt_redis_t probe = *s;
    for (int i = 0; i < 2000; i++) {
      probe.port = 0; /* the unix socket is always there */
      if (mpt__can_connect(&probe) && (!tcp || mpt__can_connect(s)))
        break;
      if (waitpid(pid, NULL, WNOHANG) == pid) {
        s->pid = 0;
        break;
      }
      usleep(10000);
    }
    if (s->pid) {
      if (tcp)
        snprintf(s->addr, sizeof s->addr, "redis://%s%s%s127.0.0.1:%d",
                 s->pass[0] ? ":" : "", s->pass, s->pass[0] ? "@" : "",
                 s->port);
      else
        snprintf(s->addr, sizeof s->addr, "unix://%s%s%s%s",
                 s->pass[0] ? ":" : "", s->pass, s->pass[0] ? "@" : "",
                 s->sock);
      return 0;
    }
    if (!tcp)
      break; /* only a TCP port can be taken meanwhile */
  }
  return -1;
}

/* Stop: SIGKILL (nothing to save) and reap. keep_dir: for a restart. */
static void mpt_redis_kill(mpt_redis_t *s) {
  if (s->pid > 0 && s->owner == getpid()) {
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
  }
  s->pid = 0;
}

static void mpt_redis_stop(mpt_redis_t *s) {
  char path[160];
  mpt_redis_kill(s);
  if (s->dir[0] && s->owner == getpid()) {
    unlink(s->sock);
    snprintf(path, sizeof path, "%s/redis.log", s->dir);
    unlink(path);
    rmdir(s->dir);
  }
  s->dir[0] = '\0';
}

/* ---- the binary's shared server ---------------------------------------- */

static mpt_redis_t mpt_redis;

static void mpt__redis_atexit(void) {
  mpt_redis_stop(&mpt_redis);
}

/* Not for exec'd helper processes (MPT_REDIS_HELPER set): they are given an
 * address. */
__attribute__((constructor)) static void mpt__redis_boot(void) {
  if (getenv("MPT_REDIS_HELPER"))
    return;
  if (mpt_redis_start(&mpt_redis, 0, NULL) < 0) {
    fprintf(stderr, "cannot start redis-server\n");
    exit(1);
  }
  atexit(mpt__redis_atexit);
}

#endif
