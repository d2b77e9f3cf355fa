/* Tests for connections: framing, sizes, recv_into, poll, fd passing,
 * closing, errors, across processes. */
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runner.h"

TEST(pipe_send_recv_sizes) {
  for (int duplex = 0; duplex < 2; duplex++) {
    mp_conn_t *a, *b;
    ASSERT_OK(mp_pipe(&a, &b, duplex));
    size_t sizes[] = {0, 1, 7, 8, 64, 4087, 4088, 4089, 65535, 65536, 70000};
    /* Write from a child so big messages cannot fill the kernel buffer and
     * block the test. */
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
      mp_conn_close(a);
      for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char *m = malloc(sizes[i] + 1);
        for (size_t k = 0; k < sizes[i]; k++)
          m[k] = (char)(k * 7 + i);
        ASSERT_OK(mp_conn_send(b, m, sizes[i]));
        free(m);
      }
      ASSERT_OK(mp_conn_send(b, NULL, 0));
      _exit(0);
    }
    mp_conn_close(b);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
      void *m;
      size_t len;
      ASSERT_OK(mp_conn_recv(a, &m, &len));
      ASSERT_EQ(len, sizes[i]);
      ASSERT(m != NULL);
      for (size_t k = 0; k < len; k++)
        ASSERT_EQ(((char *)m)[k], (char)(k * 7 + i));
      free(m);
    }
    void *m;
    size_t len = 99;
    ASSERT_OK(mp_conn_recv(a, &m, &len));
    ASSERT_EQ(len, 0);
    free(m);
    /* The writer is gone: end of stream. */
    ASSERT_ERR(mp_conn_recv(a, &m, &len), MP_ECLOSED);
    ASSERT_ERR(mp_conn_recv(a, &m, &len), MP_ECLOSED);
    ASSERT_EQ(mp_conn_poll(a, 0), 1); /* EOF counts as something to read */
    mpt_wait_ok(pid);
    ASSERT_OK(mp_conn_destroy(a));
    ASSERT_OK(mp_conn_destroy(b));
  }
}

TEST(pipe_one_gib_message) {
  size_t len = (size_t)1 << 30;
  mp_conn_t *a, *b;
  ASSERT_OK(mp_pipe(&a, &b, true));
  pid_t pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0) {
    mp_conn_close(a);
    char *m = calloc(1, len); /* every byte sent is initialised */
    ASSERT(m);
    for (size_t k = 0; k < len; k += 4096)
      m[k] = (char)(k >> 12);
    m[len - 1] = 'z';
    ASSERT_OK(mp_conn_send(b, m, len));
    ASSERT_OK(mp_conn_send(b, "after", 5));
    free(m);
    _exit(0);
  }
  mp_conn_close(b);
  void *m;
  size_t got;
  ASSERT_OK(mp_conn_recv(a, &m, &got));
  ASSERT_EQ(got, len);
  for (size_t k = 0; k < len; k += 4096)
    ASSERT_EQ(((char *)m)[k], (char)(k >> 12));
  ASSERT_EQ(((char *)m)[len - 1], 'z');
  free(m);
  char small[8];
  ASSERT_OK(mp_conn_recv_into(a, small, sizeof small, &got));
  ASSERT_EQ(got, 5);
  ASSERT(memcmp(small, "after", 5) == 0);
  mpt_wait_ok(pid);
  mp_conn_destroy(a);
  mp_conn_destroy(b);
}

TEST(pipe_recv_into_tooshort_keeps_message) {
  mp_conn_t *a, *b;
  ASSERT_OK(mp_pipe(&a, &b, true));
  ASSERT_OK(mp_conn_send(b, "hello world", 11));
  ASSERT_OK(mp_conn_send(b, "x", 1));
  char buf[16];
  size_t len = 0;
  ASSERT_ERR(mp_conn_recv_into(a, buf, 4, &len), MP_ETOOSHORT);
  ASSERT_EQ(len, 11);
  ASSERT_ERR(mp_conn_recv_into(a, NULL, 0, &len), MP_ETOOSHORT);
  ASSERT_EQ(len, 11);
  ASSERT_OK(mp_conn_recv_into(a, buf, sizeof buf, &len));
  ASSERT_EQ(len, 11);
  ASSERT(memcmp(buf, "hello world", 11) == 0);
  ASSERT_OK(mp_conn_recv_into(a, buf, 1, &len));
  ASSERT_EQ(len, 1);
  ASSERT_EQ(buf[0], 'x');
  /* Duplex: the other way too. */
  ASSERT_OK(mp_conn_send(a, "back", 4));
  ASSERT_OK(mp_conn_recv_into(b, buf, sizeof buf, &len));
  ASSERT_EQ(len, 4);
  /* A big message that does not fit: kept too. */
  size_t big = 200000;
  char *m = malloc(big), *r = malloc(big);
  memset(m, 'q', big);
  pid_t pid = fork();
  if (pid == 0) {
    ASSERT_OK(mp_conn_send(b, m, big));
    _exit(0);
  }
  ASSERT_ERR(mp_conn_recv_into(a, r, big - 1, &len), MP_ETOOSHORT);
  ASSERT_EQ(len, big);
  ASSERT_OK(mp_conn_recv_into(a, r, big, &len));
  ASSERT(memcmp(m, r, big) == 0);
  ASSERT_EQ(waitpid(pid, NULL, 0), pid);
  free(m);
  free(r);
  mp_conn_destroy(a);
  mp_conn_destroy(b);
}

TEST(pipe_poll_timeout) {
  mp_conn_t *a, *b;
  ASSERT_OK(mp_pipe(&a, &b, false));
  ASSERT_EQ(mp_conn_poll(a, 0), 0);
  uint64_t t0 = mpt_now_ms();
  ASSERT_EQ(mp_conn_poll(a, 100), 0);
  ASSERT(mpt_now_ms() - t0 >= 100);
  ASSERT_OK(mp_conn_send(b, "ab", 2));
  ASSERT_OK(mp_conn_send(b, "cd", 2));
  ASSERT_EQ(mp_conn_poll(a, MP_FOREVER), 1);
  char buf[4];
  size_t len;
  ASSERT_OK(mp_conn_recv_into(a, buf, sizeof buf, &len));
  /* The second message is buffered inside the connection now. */
  ASSERT_EQ(mp_conn_poll(a, 0), 1);
  mp_waitable_t w = mp_conn_waitable(a);
  ASSERT_EQ(mp_wait(&w, 1, 0), 1);
  ASSERT_OK(mp_conn_recv_into(a, buf, sizeof buf, &len));
  ASSERT_EQ(mp_conn_poll(a, 0), 0);
  ASSERT_EQ(mp_wait(&w, 1, 0), 0);
  mp_conn_destroy(a);
  mp_conn_destroy(b);
}

TEST(pipe_bad_input) {
  mp_conn_t *a, *b;
  void *m;
  size_t len;
  int fd;
  char buf[4];
  ASSERT_ERR(mp_pipe(NULL, &b, true), MP_EINVAL);
  ASSERT_ERR(mp_pipe(&a, NULL, true), MP_EINVAL);
  ASSERT_ERR(mp_conn_send(NULL, "x", 1), MP_EINVAL);
  ASSERT_ERR(mp_conn_recv(NULL, &m, &len), MP_EINVAL);
  ASSERT_ERR(mp_conn_recv_into(NULL, buf, 4, &len), MP_EINVAL);
  ASSERT_ERR(mp_conn_poll(NULL, 0), MP_EINVAL);
  ASSERT_ERR(mp_conn_send_fd(NULL, 0), MP_EINVAL);
  ASSERT_ERR(mp_conn_recv_fd(NULL, &fd), MP_EINVAL);
  ASSERT_ERR(mp_conn_fileno(NULL), MP_EINVAL);
  ASSERT_ERR(mp_conn_close(NULL), MP_EINVAL);
  ASSERT_OK(mp_conn_destroy(NULL));
  ASSERT_EQ(mp_conn_waitable(NULL).fd, -1);

  ASSERT_OK(mp_pipe(&a, &b, false));
  ASSERT_ERR(mp_conn_send(b, NULL, 3), MP_EINVAL);
  ASSERT_ERR(mp_conn_send(b, "x", (size_t)1 << 40), MP_EMSGSIZE);
  ASSERT_ERR(mp_conn_send(b, "x", SIZE_MAX), MP_EMSGSIZE);
  ASSERT_ERR(mp_conn_recv(a, NULL, &len), MP_EINVAL);
  ASSERT_ERR(mp_conn_recv(a, &m, NULL), MP_EINVAL);
  ASSERT_ERR(mp_conn_recv_into(a, NULL, 4, &len), MP_EINVAL);
  ASSERT_ERR(mp_conn_recv_into(a, buf, 4, NULL), MP_EINVAL);
  ASSERT_ERR(mp_conn_poll(a, -2), MP_EINVAL);
  ASSERT_ERR(mp_conn_poll(a, -100), MP_EINVAL);
  /* Wrong direction on a one-way pipe. */
  ASSERT_ERR(mp_conn_send(a, "x", 1), MP_EBADF);
  ASSERT_ERR(mp_conn_recv(b, &m, &len), MP_EBADF);
  ASSERT_ERR(mp_conn_poll(b, 0), MP_EBADF);
  ASSERT_EQ(mp_conn_waitable(b).fd, -1);
  /* No descriptors over a pipe. */
  ASSERT_ERR(mp_conn_send_fd(b, 0), MP_ENOTSUP);
  ASSERT_ERR(mp_conn_recv_fd(a, &fd), MP_ENOTSUP);
  ASSERT_ERR(mp_conn_recv_fd(a, NULL), MP_EINVAL);
  ASSERT(mp_conn_fileno(a) >= 0);
  /* Closed ends. */
  ASSERT_OK(mp_conn_close(b));
  ASSERT_OK(mp_conn_close(b));
  ASSERT_ERR(mp_conn_send(b, "x", 1), MP_ECLOSED);
  ASSERT_ERR(mp_conn_fileno(b), MP_ECLOSED);
  ASSERT_ERR(mp_conn_recv(a, &m, &len), MP_ECLOSED); /* peer closed */
  ASSERT_OK(mp_conn_close(a));
  ASSERT_ERR(mp_conn_recv(a, &m, &len), MP_ECLOSED);
  ASSERT_ERR(mp_conn_recv_into(a, buf, 4, &len), MP_ECLOSED);
  ASSERT_ERR(mp_conn_poll(a, 0), MP_ECLOSED);
  ASSERT_EQ(mp_conn_waitable(a).fd, -1);
  mp_conn_destroy(a);
  mp_conn_destroy(b);

  ASSERT_OK(mp_pipe(&a, &b, true));
  ASSERT_ERR(mp_conn_send_fd(a, -1), MP_EINVAL);
  ASSERT_ERR(mp_conn_send_fd(a, 1000), MP_EBADF);
  mp_conn_destroy(a);
  mp_conn_destroy(b);
}

TEST(pipe_send_after_peer_closed_no_sigpipe) {
  for (int duplex = 0; duplex < 2; duplex++) {
    mp_conn_t *a, *b;
    ASSERT_OK(mp_pipe(&a, &b, duplex));
    ASSERT_OK(mp_conn_close(a));
    /* Default SIGPIPE disposition would kill the test: it must not fire. */
    ASSERT_ERR(mp_conn_send(b, "x", 1), MP_EPIPE);
    char big[10000] = {0};
    ASSERT_ERR(mp_conn_send(b, big, sizeof big), MP_EPIPE);
    sigset_t pending;
    sigpending(&pending);
    ASSERT(!sigismember(&pending, SIGPIPE));
    mp_conn_destroy(a);
    mp_conn_destroy(b);
  }
}

TEST(pipe_truncated_message_is_eio) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  mp_conn_t *a, *b;
  ASSERT_OK(mp_pipe(&a, &b, true));
  /* Write half a message on b's fd, then close b. */
  uint64_t hdr = 100;
  int fd = mp_conn_fileno(b);
  ASSERT_EQ(write(fd, &hdr, sizeof hdr), 8);
  ASSERT_EQ(write(fd, "abc", 3), 3);
  mp_conn_destroy(b);
  void *m;
  size_t len;
  ASSERT_ERR(mp_conn_recv(a, &m, &len), MP_EIO);
  mp_conn_destroy(a);
  close(sv[0]);
  close(sv[1]);
}

TEST(pipe_send_fd) {
  mp_conn_t *a, *b;
  ASSERT_OK(mp_pipe(&a, &b, true));
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  pid_t pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0) {
    /* The child gets a descriptor it never inherited. */
    mp_conn_close(a);
    int fd;
    char buf[8];
    size_t len;
    ASSERT_OK(mp_conn_recv_into(b, buf, sizeof buf, &len));
    ASSERT_ERR(mp_conn_recv_into(b, buf, sizeof buf, &len), MP_EINVAL);
    ASSERT_OK(mp_conn_recv_fd(b, &fd));
    ASSERT(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    ASSERT_ERR(mp_conn_recv_fd(b, &fd), MP_EINVAL); /* data is next */
    ASSERT_OK(mp_conn_recv_into(b, buf, sizeof buf, &len));
    ASSERT_EQ(write(fd, "via fd", 6), 6);
    close(fd);
    _exit(0);
  }
  close(p[0]);
  /* Re-open the pipe's write end so only the passed fd carries it. */
  int wfd = p[1];
  ASSERT_OK(mp_conn_send(a, "before", 6));
  ASSERT_OK(mp_conn_send_fd(a, wfd));
  ASSERT_OK(mp_conn_send(a, "after", 5));
  close(wfd);
  mpt_wait_ok(pid);
  mp_conn_destroy(a);
  mp_conn_destroy(b);
}

TEST(pipe_send_fd_roundtrip_local) {
  mp_conn_t *a, *b;
  ASSERT_OK(mp_pipe(&a, &b, true));
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  for (int i = 0; i < 5; i++)
    ASSERT_OK(mp_conn_send_fd(a, p[1]));
  ASSERT_OK(mp_conn_send(a, "end", 3));
  for (int i = 0; i < 3; i++) {
    int fd;
    ASSERT_OK(mp_conn_recv_fd(b, &fd));
    ASSERT_EQ(write(fd, "k", 1), 1);
    close(fd);
  }
  char c[3];
  ASSERT_EQ(read(p[0], c, 3), 3);
  /* Two descriptors still queued are closed with the connection. */
  mp_conn_destroy(b);
  mp_conn_destroy(a);
  close(p[0]);
  close(p[1]);
}

/* seed 001's demo, plus EOF once the child closed. */
static mp_conn_t *child_end, *parent_end;
static int pipe_child(const void *arg, size_t len) {
  mp_conn_close(parent_end);
  int v = 1;
  if (mp_conn_send(child_end, &v, sizeof v) < 0)
    return 1;
  v = 2;
  if (mp_conn_send(child_end, &v, sizeof v) < 0)
    return 1;
  size_t n;
  if (mp_conn_recv_into(child_end, &v, sizeof v, &n) < 0 || v != 3)
    return 2;
  mp_conn_close(child_end);
  return 0;
}

TEST(pipe_with_process) {
  ASSERT_OK(mp_pipe(&parent_end, &child_end, true));
  mp_process_t *p;
  ASSERT_OK(mp_process_create(&p, pipe_child, NULL, 0, NULL));
  ASSERT_OK(mp_process_start(p));
  ASSERT_OK(mp_conn_close(child_end));
  int v;
  size_t n;
  ASSERT_OK(mp_conn_recv_into(parent_end, &v, sizeof v, &n));
  ASSERT_EQ(v, 1);
  ASSERT_OK(mp_conn_recv_into(parent_end, &v, sizeof v, &n));
  ASSERT_EQ(v, 2);
  v = 3;
  ASSERT_OK(mp_conn_send(parent_end, &v, sizeof v));
  mpt_join_ok(p);
  ASSERT_ERR(mp_conn_recv_into(parent_end, &v, sizeof v, &n), MP_ECLOSED);
  ASSERT_OK(mp_process_destroy(p));
  mp_conn_destroy(parent_end);
  mp_conn_destroy(child_end);
}

TEST(pipe_stream_many_small) {
  mp_conn_t *a, *b;
  ASSERT_OK(mp_pipe(&a, &b, true));
  int n = 100000;
  pid_t pid = fork();
  if (pid == 0) {
    mp_conn_close(a);
    for (int i = 0; i < n; i++) {
      char m[64];
      size_t len = (size_t)(i % 60) + 4;
      memcpy(m, &i, 4);
      memset(m + 4, (char)i, len - 4);
      ASSERT_OK(mp_conn_send(b, m, len));
    }
    _exit(0);
  }
  mp_conn_close(b);
  for (int i = 0; i < n; i++) {
    char m[64];
    size_t len;
    ASSERT_OK(mp_conn_recv_into(a, m, sizeof m, &len));
    ASSERT_EQ(len, (size_t)(i % 60) + 4);
    int v;
    memcpy(&v, m, 4);
    ASSERT_EQ(v, i);
    if (len > 4)
      ASSERT_EQ(m[len - 1], (char)i);
  }
  ASSERT_EQ(waitpid(pid, NULL, 0), pid);
  mp_conn_destroy(a);
  mp_conn_destroy(b);
}

/* The decoder against a byte stream cut at random points (mid-header
 * included), with random message sizes around the buffer size, read back
 * with recv and recv_into at random capacities. */
static unsigned char pattern(size_t msg, size_t k) {
  return (unsigned char)(msg * 131 + k * 7);
}

TEST(pipe_framing_random_chunks) {
  for (int duplex = 0; duplex < 2; duplex++) {
    enum { NMSG = 400 };
    size_t sizes[NMSG];
    unsigned seed = 12345u + (unsigned)duplex;
    for (int i = 0; i < NMSG; i++) {
      unsigned r = (unsigned)rand_r(&seed);
      sizes[i] = r % 4 == 0 ? r % 200000 : r % 300;
    }
    mp_conn_t *a, *b;
    ASSERT_OK(mp_pipe(&a, &b, duplex));
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
      mp_conn_close(a);
      int fd = mp_conn_fileno(b);
      size_t total = 0;
      for (int i = 0; i < NMSG; i++)
        total += 8 + sizes[i];
      unsigned char *s = malloc(total), *p = s;
      for (int i = 0; i < NMSG; i++) {
        uint64_t h = sizes[i];
        memcpy(p, &h, 8);
        p += 8;
        for (size_t k = 0; k < sizes[i]; k++)
          *p++ = pattern((size_t)i, k);
      }
      unsigned ws = 99;
      for (size_t off = 0; off < total;) {
        size_t chunk = (size_t)rand_r(&ws) % 9000 + 1;
        if (chunk > total - off)
          chunk = total - off;
        ASSERT(write(fd, s + off, chunk) == (ssize_t)chunk);
        off += chunk;
        if (rand_r(&ws) % 50 == 0)
          mpt_sleep_ms(1);
      }
      free(s);
      _exit(0);
    }
    mp_conn_close(b);
    unsigned rs = 7;
    unsigned char *buf = malloc(200000);
    for (int i = 0; i < NMSG; i++) {
      size_t len = 0;
      if (rand_r(&rs) % 2) {
        void *m;
        ASSERT_OK(mp_conn_recv(a, &m, &len));
        memcpy(buf, m, len);
        free(m);
      } else {
        size_t cap = (size_t)rand_r(&rs) % 300;
        int r = mp_conn_recv_into(a, buf, cap, &len);
        if (r == MP_ETOOSHORT) {
          ASSERT_EQ(len, sizes[i]);
          ASSERT(cap < len);
          ASSERT_OK(mp_conn_recv_into(a, buf, 200000, &len));
        } else {
          ASSERT_OK(r);
        }
      }
      ASSERT_EQ(len, sizes[i]);
      for (size_t k = 0; k < len; k++)
        if (buf[k] != pattern((size_t)i, k))
          mpt_fail(__FILE__, __LINE__, "msg %d byte %zu", i, k);
    }
    void *m;
    size_t len;
    ASSERT_ERR(mp_conn_recv(a, &m, &len), MP_ECLOSED);
    free(buf);
    ASSERT_EQ(waitpid(pid, NULL, 0), pid);
    mp_conn_destroy(a);
    mp_conn_destroy(b);
  }
}

/* Garbage on the wire: never a crash or a hang, only error codes. */
TEST(pipe_garbage_stream) {
  unsigned seed = 4242;
  for (int round = 0; round < 200; round++) {
    mp_conn_t *a, *b;
    ASSERT_OK(mp_pipe(&a, &b, true));
    unsigned char junk[256];
    size_t n = (size_t)rand_r(&seed) % sizeof junk;
    for (size_t k = 0; k < n; k++)
      junk[k] = (unsigned char)rand_r(&seed);
    ASSERT_EQ(write(mp_conn_fileno(b), junk, n), (ssize_t)n);
    ASSERT_OK(mp_conn_close(b));
    for (int k = 0; k < 100; k++) {
      void *m;
      size_t len;
      int r = mp_conn_recv(a, &m, &len);
      if (r == 0) {
        free(m);
        continue;
      }
      ASSERT(r == MP_ECLOSED || r == MP_EIO || r == MP_EPROTO ||
             r == MP_EINVAL);
      if (r == MP_EINVAL) { /* a descriptor header: take it */
        int fd;
        r = mp_conn_recv_fd(a, &fd);
        ASSERT(r == MP_EIO || r == MP_EINVAL);
      }
      break;
    }
    mp_conn_destroy(a);
    mp_conn_destroy(b);
  }
}

/* Signals without SA_RESTART interrupt the system calls all the time: every
 * message still arrives whole. */
TEST(pipe_eintr_everywhere) {
  for (int duplex = 0; duplex < 2; duplex++) {
    mp_conn_t *a, *b;
    ASSERT_OK(mp_pipe(&a, &b, duplex));
    size_t big = 16 << 20;
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
      mp_conn_close(a);
      mpt_storm_start(500, false);
      unsigned char *m = malloc(big);
      for (size_t k = 0; k < big; k++)
        m[k] = (unsigned char)(k * 13);
      for (int i = 0; i < 3; i++)
        ASSERT_OK(mp_conn_send(b, m, big));
      for (int i = 0; i < 20000; i++)
        ASSERT_OK(mp_conn_send(b, &i, sizeof i));
      free(m);
      _exit(0);
    }
    mp_conn_close(b);
    mpt_storm_start(500, false);
    for (int i = 0; i < 3; i++) {
      void *m;
      size_t len;
      ASSERT_OK(mp_conn_recv(a, &m, &len));
      ASSERT_EQ(len, big);
      for (size_t k = 0; k < big; k += 4099)
        ASSERT_EQ(((unsigned char *)m)[k], (unsigned char)(k * 13));
      free(m);
    }
    for (int i = 0; i < 20000; i++) {
      int v;
      size_t len;
      ASSERT_OK(mp_conn_recv_into(a, &v, sizeof v, &len));
      ASSERT_EQ(v, i);
    }
    ASSERT_EQ(mp_conn_poll(a, MP_FOREVER), 1);
    mpt_storm_stop();
    int st;
    while (waitpid(pid, &st, 0) < 0)
      ASSERT_EQ(errno, EINTR);
    ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ASSERT(mpt_storm_alarms > 0);
    mp_conn_destroy(a);
    mp_conn_destroy(b);
  }
}

/* The sender is SIGKILLed at random moments: the receiver gets an intact,
 * in-order prefix of what was sent, then MP_ECLOSED or MP_EIO; never a
 * hang, never a torn message. */
TEST(pipe_sender_killed) {
  unsigned seed = 777;
  for (int round = 0; round < 20; round++) {
    mp_conn_t *a, *b;
    ASSERT_OK(mp_pipe(&a, &b, round % 2 == 0));
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
      mp_conn_close(a);
      unsigned char m[3000];
      for (uint32_t i = 0;; i++) {
        size_t len = 4 + i % 2990;
        memcpy(m, &i, 4);
        memset(m + 4, (int)(i & 0xff), len - 4);
        if (mp_conn_send(b, m, len) < 0)
          _exit(1);
      }
    }
    mp_conn_close(b);
    mpt_sleep_ms(rand_r(&seed) % 30);
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    unsigned char m[3000];
    uint32_t want = 0;
    for (;;) {
      size_t len;
      int r = mp_conn_recv_into(a, m, sizeof m, &len);
      if (r == MP_ECLOSED || r == MP_EIO)
        break;
      ASSERT_OK(r);
      uint32_t got;
      memcpy(&got, m, 4);
      ASSERT_EQ(got, want);
      ASSERT_EQ(len, 4 + want % 2990);
      for (size_t k = 4; k < len; k++)
        ASSERT_EQ(m[k], (unsigned char)(want & 0xff));
      want++;
    }
    ASSERT_EQ(waitpid(pid, NULL, 0), pid);
    mp_conn_destroy(a);
    mp_conn_destroy(b);
  }
}

TEST(pipe_conn_from_fd) {
  mp_conn_t *c;
  ASSERT_ERR(mp_conn_from_fd(NULL, 0), MP_EINVAL);
  ASSERT_ERR(mp_conn_from_fd(&c, -1), MP_EINVAL);
  ASSERT_ERR(mp_conn_from_fd(&c, 999), MP_EBADF);
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_ERR(mp_conn_from_fd(&c, devnull), MP_EINVAL); /* not a pipe */
  close(devnull);
  /* Raw pipe: direction from the access mode. */
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  mp_conn_t *r, *w;
  ASSERT_OK(mp_conn_from_fd(&r, p[0]));
  ASSERT_OK(mp_conn_from_fd(&w, p[1]));
  ASSERT_ERR(mp_conn_send(r, "x", 1), MP_EBADF);
  ASSERT_OK(mp_conn_send(w, "hey", 3));
  char buf[8];
  size_t n;
  ASSERT_OK(mp_conn_recv_into(r, buf, sizeof buf, &n));
  ASSERT_EQ(n, 3);
  mp_conn_destroy(r); /* owns and closes the fds */
  mp_conn_destroy(w);
  /* A connection's end received over another connection. */
  mp_conn_t *a, *b, *x, *y;
  ASSERT_OK(mp_pipe(&a, &b, true));
  ASSERT_OK(mp_pipe(&x, &y, true));
  ASSERT_OK(mp_conn_send_fd(a, mp_conn_fileno(y)));
  int fd;
  ASSERT_OK(mp_conn_recv_fd(b, &fd));
  mp_conn_t *y2;
  ASSERT_OK(mp_conn_from_fd(&y2, fd));
  ASSERT_OK(mp_conn_send(y2, "via", 3));
  ASSERT_OK(mp_conn_recv_into(x, buf, sizeof buf, &n));
  ASSERT_EQ(n, 3);
  mp_conn_destroy(y2);
  mp_conn_destroy(a);
  mp_conn_destroy(b);
  mp_conn_destroy(x);
  mp_conn_destroy(y);
}

/* ---- untrusted peers ----------------------------------------------------- */

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MPT_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(MPT_ASAN)
/* A length announced by a peer must be allowed to fail in malloc: that is
 * what is tested below. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
  return "allocator_may_return_null=1";
}
#endif

/* A message above the receiver's bound is skipped, and the one after it
 * arrives intact, through both receive calls. */
TEST(pipe_max_message_skips) {
  mp_conn_t *a, *b;
  ASSERT_OK(mp_pipe(&a, &b, true));
  ASSERT_OK(mp_conn_set_max_message(a, 1000));
  ASSERT_ERR(mp_conn_set_max_message(NULL, 1000), MP_EINVAL);
  ASSERT_ERR(mp_conn_set_max_message(a, (size_t)1 << 40), MP_EINVAL);
  pid_t pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0) {
    mp_conn_close(a);
    static char big[300000];
    memset(big, 'b', sizeof big);
    ASSERT_OK(mp_conn_send(b, big, 5000));
    ASSERT_OK(mp_conn_send(b, "one", 3));
    ASSERT_OK(mp_conn_send(b, big, sizeof big)); /* larger than the pipe */
    ASSERT_OK(mp_conn_send(b, "two", 3));
    _exit(0);
  }
  mp_conn_close(b);
  void *m;
  size_t len;
  char buf[16];
  ASSERT_ERR(mp_conn_recv(a, &m, &len), MP_EMSGSIZE);
  ASSERT_OK(mp_conn_recv(a, &m, &len));
  ASSERT_EQ(len, 3);
  ASSERT(memcmp(m, "one", 3) == 0);
  free(m);
  ASSERT_ERR(mp_conn_recv_into(a, buf, sizeof buf, &len), MP_EMSGSIZE);
  ASSERT_OK(mp_conn_recv_into(a, buf, sizeof buf, &len));
  ASSERT_EQ(len, 3);
  ASSERT(memcmp(buf, "two", 3) == 0);
  ASSERT_ERR(mp_conn_recv(a, &m, &len), MP_ECLOSED);
  mpt_wait_ok(pid);
  mp_conn_destroy(a);
  mp_conn_destroy(b);
}

/* A peer announcing a length no allocation can satisfy costs one
 * MP_ENOMEM: the stream is not stuck on it. */
TEST(pipe_unallocatable_length_not_stuck) {
  mp_conn_t *a, *b;
  ASSERT_OK(mp_pipe(&a, &b, true));
  uint64_t hdr = ((uint64_t)1 << 40) - 16; /* allowed by the framing */
  int fd = mp_conn_fileno(b);
  ASSERT_EQ(write(fd, &hdr, sizeof hdr), 8);
  ASSERT_EQ(write(fd, "abcdefgh", 8), 8);
  mp_conn_destroy(b);
  void *m;
  size_t len;
  ASSERT_ERR(mp_conn_recv(a, &m, &len), MP_ENOMEM);
  /* Skipped: what follows is the end of the stream, not the same error. */
  ASSERT_ERR(mp_conn_recv(a, &m, &len), MP_ECLOSED);
  mp_conn_destroy(a);
}

/* A length beyond what any sender writes is a corrupt stream. */
TEST(pipe_corrupt_length_eproto) {
  mp_conn_t *a, *b;
  ASSERT_OK(mp_pipe(&a, &b, true));
  uint64_t hdr = (uint64_t)1 << 41;
  ASSERT_EQ(write(mp_conn_fileno(b), &hdr, sizeof hdr), 8);
  void *m;
  size_t len;
  ASSERT_ERR(mp_conn_recv(a, &m, &len), MP_EPROTO);
  mp_conn_destroy(a);
  mp_conn_destroy(b);
}

/* On a non-blocking descriptor a large message arrives over many calls:
 * MP_EAGAIN in the middle keeps what was read, the message comes out whole
 * and the next one after it, through recv and recv_into alike. */
static void nonblocking_large(bool into) {
  const size_t big = 3u << 20;
  mp_conn_t *a, *b;
  ASSERT_OK(mp_pipe(&a, &b, false));
  pid_t pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0) {
    mp_conn_close(a);
    unsigned char *m = malloc(big);
    ASSERT(m);
    for (size_t k = 0; k < big; k++)
      m[k] = (unsigned char)(k * 7 + k / 251);
    for (int i = 0; i < 3; i++)
      ASSERT_OK(mp_conn_send(b, m, big - (size_t)i));
    ASSERT_OK(mp_conn_send(b, "end", 3));
    free(m);
    _exit(0);
  }
  mp_conn_close(b);
  int fd = mp_conn_fileno(a);
  ASSERT_EQ(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
  unsigned char *buf = malloc(big);
  ASSERT(buf);
  int again = 0;
  for (int i = 0; i < 4; i++) {
    void *m = NULL;
    size_t len;
    int r;
    for (;;) {
      if (into) {
        /* A buffer too short first: the half-read message is kept. */
        r = mp_conn_recv_into(a, buf, i == 3 ? 16 : 100, &len);
        if (r == MP_ETOOSHORT)
          r = mp_conn_recv_into(a, buf, big, &len);
        m = buf;
      } else {
        r = mp_conn_recv(a, &m, &len);
      }
      if (r != MP_EAGAIN)
        break;
      again++;
      ASSERT(mp_conn_poll(a, MP_FOREVER) == 1);
    }
    ASSERT_OK(r);
    if (i == 3) {
      ASSERT_EQ(len, 3);
      ASSERT(memcmp(m, "end", 3) == 0);
    } else {
      ASSERT_EQ(len, big - (size_t)i);
      const unsigned char *p = m;
      for (size_t k = 0; k < len; k++)
        if (p[k] != (unsigned char)(k * 7 + k / 251))
          mpt_fail(__FILE__, __LINE__, "message %d byte %zu", i, k);
    }
    if (!into)
      free(m);
  }
  ASSERT(again > 0); /* the descriptor did run dry midway */
  free(buf);
  mpt_wait_ok(pid);
  mp_conn_destroy(a);
}

TEST(pipe_nonblocking_large_recv_resumes) {
  nonblocking_large(false);
}

TEST(pipe_nonblocking_large_recv_into_resumes) {
  nonblocking_large(true);
}
