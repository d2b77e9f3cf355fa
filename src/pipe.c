/* Connections: length-prefixed messages over a socketpair or a pipe.
 *
 * Frame: an 8-byte native-endian header, then the payload. The header's top
 * bit marks a descriptor message (payload empty, the fd rides on the header
 * bytes as SCM_RIGHTS). A small message is copied behind its header and sent
 * with one write; a large one goes out with writev, no copy.
 *
 * The receiver reads into a per-connection buffer as much as the kernel has,
 * so a small message costs one read, and a stream of them far fewer. Large
 * messages are read straight into their destination. Socket reads always use
 * recvmsg with room for control data: a plain read would drop (close) a
 * descriptor riding on the bytes it consumes. The kernel stops a stream read
 * right after the bytes that carried descriptors, so they arrive in order
 * and are queued until mp_conn_recv_fd takes them. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "internal.h"
#include "mproc/pipe.h"

#define HDR_SIZE 8
#define HDR_FD (UINT64_C(1) << 63)
/* 1 TiB: far beyond any real message, and a corrupt length above it is
 * caught before it reaches malloc. */
#define MSG_MAX (UINT64_C(1) << 40)
#define RBUF_SIZE (64 * 1024)
#define SMALL_SEND 4096
#define FDQ_MAX 64

struct mp_conn {
  int fd;
  bool readable;
  bool writable;
  bool is_socket;
  char *rbuf; /* RBUF_SIZE bytes, allocated on first receive */
  size_t rpos, rlen;
  uint64_t max_msg; /* largest message recv accepts */
  uint64_t skip;    /* bytes of a refused message still to discard */
  /* A large message whose reading stopped midway (EAGAIN on a
   * non-blocking descriptor): pgot of plen bytes are in pbuf, and the
   * next receive continues it, so framing never breaks. */
  char *pbuf;
  size_t plen, pgot;
  int fdq[FDQ_MAX]; /* received descriptors not yet taken */
  int fdq_head, fdq_len;
};

static mp_conn_t *conn_new(int fd, bool r, bool w, bool sock) {
  mp_conn_t *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->fd = fd;
  c->readable = r;
  c->writable = w;
  c->is_socket = sock;
  c->max_msg = MP_CONN_MAX_MESSAGE;
  return c;
}

int mp_pipe(mp_conn_t **a, mp_conn_t **b, bool duplex) {
  if (!a || !b)
    return MP_EINVAL;
  int fds[2];
  if (duplex) {
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
      return -errno;
  } else if (pipe2(fds, O_CLOEXEC) < 0) {
    return -errno;
  }
  mp_conn_t *x = conn_new(fds[0], true, duplex, duplex);
  mp_conn_t *y = conn_new(fds[1], duplex, true, duplex);
  if (!x || !y) {
    free(x);
    free(y);
    mp__close(fds[0]);
    mp__close(fds[1]);
    return MP_ENOMEM;
  }
  *a = x;
  *b = y;
  return 0;
}

int mp_conn_from_fd(mp_conn_t **c, int fd) {
  if (!c || fd < 0)
    return MP_EINVAL;
  struct stat st;
  if (fstat(fd, &st) < 0)
    return errno == EBADF ? MP_EBADF : -errno;
  bool sock = S_ISSOCK(st.st_mode), r = true, w = true;
  if (!sock) {
    if (!S_ISFIFO(st.st_mode))
      return MP_EINVAL;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
      return -errno;
    r = (fl & O_ACCMODE) != O_WRONLY;
    w = (fl & O_ACCMODE) != O_RDONLY;
  }
  mp_conn_t *x = conn_new(fd, r, w, sock);
  if (!x)
    return MP_ENOMEM;
  *c = x;
  return 0;
}

/* ---- sending ------------------------------------------------------------- */

/* Write all of iov; sockets never raise SIGPIPE (MSG_NOSIGNAL). */
static int send_iov(mp_conn_t *c, struct iovec *iov, int iovcnt) {
  struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt};
  for (;;) {
    ssize_t n = c->is_socket ? sendmsg(c->fd, &msg, MSG_NOSIGNAL)
                             : writev(c->fd, msg.msg_iov, (int)msg.msg_iovlen);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return errno == ECONNRESET ? MP_EPIPE : -errno;
    }
    size_t k = (size_t)n;
    while (msg.msg_iovlen > 0 && k >= msg.msg_iov[0].iov_len) {
      k -= msg.msg_iov[0].iov_len;
      msg.msg_iov++;
      msg.msg_iovlen--;
    }
    if (msg.msg_iovlen == 0)
      return 0;
    msg.msg_iov[0].iov_base = (char *)msg.msg_iov[0].iov_base + k;
    msg.msg_iov[0].iov_len -= k;
  }
}

/* A pipe has no MSG_NOSIGNAL: block SIGPIPE around the write, and swallow
 * the one our write raised. If the thread already blocked SIGPIPE itself,
 * the signal is left pending as it would be without us. */
static int send_iov_nosigpipe(mp_conn_t *c, struct iovec *iov, int iovcnt) {
  if (c->is_socket)
    return send_iov(c, iov, iovcnt);
  sigset_t set, old;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, &old);
  int r = send_iov(c, iov, iovcnt);
  if (r == MP_EPIPE && !sigismember(&old, SIGPIPE)) {
    struct timespec zero = {0, 0};
    while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return r;
}

static int check_send(const mp_conn_t *c) {
  if (!c)
    return MP_EINVAL;
  if (c->fd < 0)
    return MP_ECLOSED;
  if (!c->writable)
    return MP_EBADF;
  return 0;
}

int mp_conn_send(mp_conn_t *c, const void *buf, size_t len) {
  int r = check_send(c);
  if (r < 0)
    return r;
  if (!buf && len > 0)
    return MP_EINVAL;
  if ((uint64_t)len >= MSG_MAX)
    return MP_EMSGSIZE;
  uint64_t hdr = (uint64_t)len;
  if (len <= SMALL_SEND - HDR_SIZE) {
    char tmp[SMALL_SEND];
    memcpy(tmp, &hdr, HDR_SIZE);
    if (len)
      memcpy(tmp + HDR_SIZE, buf, len);
    if (c->is_socket) {
      /* The common case in one plain send(2), cheaper than sendmsg. */
      ssize_t n;
      do
        n = send(c->fd, tmp, HDR_SIZE + len, MSG_NOSIGNAL);
      while (n < 0 && errno == EINTR);
      if (n == (ssize_t)(HDR_SIZE + len))
        return 0;
      if (n < 0)
        return errno == ECONNRESET ? MP_EPIPE : -errno;
      struct iovec rest = {.iov_base = tmp + n,
                           .iov_len = HDR_SIZE + len - (size_t)n};
      return send_iov(c, &rest, 1);
    }
    struct iovec iov = {.iov_base = tmp, .iov_len = HDR_SIZE + len};
    return send_iov_nosigpipe(c, &iov, 1);
  }
  struct iovec iov[2] = {{.iov_base = &hdr, .iov_len = HDR_SIZE},
                         {.iov_base = (void *)buf, .iov_len = len}};
  return send_iov_nosigpipe(c, iov, 2);
}

int mp_conn_send_fd(mp_conn_t *c, int fd) {
  int r = check_send(c);
  if (r < 0)
    return r;
  if (fd < 0)
    return MP_EINVAL;
  if (!c->is_socket)
    return MP_ENOTSUP;
  if (fcntl(fd, F_GETFD) < 0)
    return MP_EBADF;
  uint64_t hdr = HDR_FD;
  struct iovec iov = {.iov_base = &hdr, .iov_len = HDR_SIZE};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } u;
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  mp__cmsg_set_fds(&msg, u.buf, &fd, 1);
  ssize_t n;
  do
    n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return errno == ECONNRESET ? MP_EPIPE : -errno;
  if ((size_t)n < HDR_SIZE) {
    /* The descriptor went with the first bytes; finish the header. */
    struct iovec rest = {.iov_base = (char *)&hdr + n,
                         .iov_len = HDR_SIZE - (size_t)n};
    return send_iov(c, &rest, 1);
  }
  return 0;
}

/* ---- receiving ----------------------------------------------------------- */

static void fdq_push(mp_conn_t *c, int fd) {
  if (c->fdq_len == FDQ_MAX) {
    mp__close(fd); /* a peer flooding descriptors loses the excess */
    return;
  }
  c->fdq[(c->fdq_head + c->fdq_len) % FDQ_MAX] = fd;
  c->fdq_len++;
}

/* One read of up to n bytes. Returns bytes read, 0 at end of stream, or a
 * negative code. */
static ssize_t conn_read(mp_conn_t *c, void *p, size_t n) {
  for (;;) {
    ssize_t r;
    if (!c->is_socket) {
      r = read(c->fd, p, n);
    } else {
      union {
        char buf[CMSG_SPACE(8 * sizeof(int))];
        struct cmsghdr align;
      } u;
      struct iovec iov = {.iov_base = p, .iov_len = n};
      struct msghdr msg = {.msg_iov = &iov,
                           .msg_iovlen = 1,
                           .msg_control = u.buf,
                           .msg_controllen = sizeof u.buf};
      r = recvmsg(c->fd, &msg, MSG_CMSG_CLOEXEC);
      if (r >= 0) {
        int fds[8];
        size_t k = mp__cmsg_take_fds(&msg, fds, 8);
        for (size_t i = 0; i < k; i++)
          fdq_push(c, fds[i]);
      }
    }
    if (r >= 0)
      return r;
    if (errno == EINTR)
      continue;
    if (errno == ECONNRESET)
      return 0;
    return -errno;
  }
}

static int check_recv(mp_conn_t *c) {
  if (!c)
    return MP_EINVAL;
  if (c->fd < 0)
    return MP_ECLOSED;
  if (!c->readable)
    return MP_EBADF;
  if (!c->rbuf) {
    c->rbuf = malloc(RBUF_SIZE);
    if (!c->rbuf)
      return MP_ENOMEM;
  }
  return 0;
}

/* Read more into the buffer, after what is there. Needs room. */
static int fill(mp_conn_t *c) {
  if (c->rpos > 0 && c->rlen == RBUF_SIZE) {
    memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
    c->rlen -= c->rpos;
    c->rpos = 0;
  }
  ssize_t n = conn_read(c, c->rbuf + c->rlen, RBUF_SIZE - c->rlen);
  if (n < 0)
    return (int)n;
  if (n == 0)
    return c->rlen == c->rpos ? MP_ECLOSED : MP_EIO;
  c->rlen += (size_t)n;
  return 0;
}

/* Make the next header available (not consumed). */
static int peek_header(mp_conn_t *c, uint64_t *hdr) {
  while (c->rlen - c->rpos < HDR_SIZE) {
    if (c->rpos > 0 && RBUF_SIZE - c->rpos < HDR_SIZE) {
      memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
      c->rlen -= c->rpos;
      c->rpos = 0;
    }
    int r = fill(c);
    if (r < 0)
      return r;
  }
  memcpy(hdr, c->rbuf + c->rpos, HDR_SIZE);
  return 0;
}

/* Copy the payload of the message whose header (len bytes) is at rpos into
 * dst, consuming it. */
static int take_payload(mp_conn_t *c, void *dst, size_t len) {
  size_t avail = c->rlen - c->rpos - HDR_SIZE;
  if (len > avail && HDR_SIZE + len <= RBUF_SIZE) {
    /* Fits in the buffer: gather it there, reading ahead as we go. */
    if (c->rpos + HDR_SIZE + len > RBUF_SIZE) {
      memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
      c->rlen -= c->rpos;
      c->rpos = 0;
    }
    while (c->rlen - c->rpos - HDR_SIZE < len) {
      int r = fill(c);
      if (r < 0)
        return r == MP_ECLOSED ? MP_EIO : r;
    }
    avail = len;
  }
  if (len <= avail) {
    if (len)
      memcpy(dst, c->rbuf + c->rpos + HDR_SIZE, len);
    c->rpos += HDR_SIZE + len;
  } else {
    /* Large: what is buffered, then straight into dst. */
    memcpy(dst, c->rbuf + c->rpos + HDR_SIZE, avail);
    c->rpos = c->rlen = 0;
    size_t got = avail;
    while (got < len) {
      ssize_t n = conn_read(c, (char *)dst + got, len - got);
      if (n == MP_EAGAIN) {
        /* Non-blocking and dry midway: the bytes read so far stay with
         * the connection (see take_or_park). */
        c->pbuf = dst;
        c->plen = len;
        c->pgot = got;
        return MP_EAGAIN;
      }
      if (n < 0)
        return (int)n;
      if (n == 0)
        return MP_EIO;
      got += (size_t)n;
    }
  }
  if (c->rpos == c->rlen)
    c->rpos = c->rlen = 0;
  return 0;
}

/* Discard what is left of a refused message, as it arrives. */
static int drain_skip(mp_conn_t *c) {
  while (c->skip) {
    size_t have = c->rlen - c->rpos;
    if (have == 0) {
      c->rpos = c->rlen = 0;
      int r = fill(c);
      if (r < 0)
        return r == MP_EIO ? MP_ECLOSED : r;
      continue;
    }
    size_t k = have < c->skip ? have : (size_t)c->skip;
    c->rpos += k;
    c->skip -= k;
  }
  if (c->rpos == c->rlen)
    c->rpos = c->rlen = 0;
  return 0;
}

/* Refuse the message whose header is at rpos (err: MP_EMSGSIZE, or
 * MP_ENOMEM when no buffer could be had): its payload is skipped, on this
 * call as far as it has arrived and on later ones for the rest, and the
 * message after it comes next. */
static int refuse(mp_conn_t *c, uint64_t len, int err) {
  c->rpos += HDR_SIZE;
  c->skip = len;
  int r = drain_skip(c);
  return r == 0 || r == MP_EAGAIN || r == MP_ECLOSED ? err : r;
}

/* Continue a message whose reading stopped midway. 0 once complete. */
static int resume_partial(mp_conn_t *c) {
  while (c->pgot < c->plen) {
    size_t have = c->rlen - c->rpos;
    if (have) {
      size_t k = have < c->plen - c->pgot ? have : c->plen - c->pgot;
      memcpy(c->pbuf + c->pgot, c->rbuf + c->rpos, k);
      c->rpos += k;
      c->pgot += k;
      continue;
    }
    c->rpos = c->rlen = 0;
    ssize_t n = conn_read(c, c->pbuf + c->pgot, c->plen - c->pgot);
    if (n < 0)
      return (int)n;
    if (n == 0)
      return MP_EIO;
    c->pgot += (size_t)n;
  }
  if (c->rpos == c->rlen)
    c->rpos = c->rlen = 0;
  return 0;
}

static void drop_partial(mp_conn_t *c) {
  free(c->pbuf);
  c->pbuf = NULL;
  c->plen = c->pgot = 0;
}

/* The header of the next message, which must carry a descriptor (fd) or
 * data (!fd): MP_EINVAL for the other kind, left in place. A data length
 * beyond what we write means a corrupt stream: MP_EPROTO (the stream cannot
 * be resynchronised). */
static int next_header(mp_conn_t *c, bool fd, uint64_t *hdr) {
  int r = check_recv(c);
  if (r < 0)
    return r;
  if (c->skip && (r = drain_skip(c)) < 0)
    return r;
  if ((r = peek_header(c, hdr)) < 0)
    return r;
  if ((*hdr & HDR_FD) && !c->is_socket)
    return MP_EPROTO; /* no descriptor travels on a pipe */
  if (((*hdr & HDR_FD) != 0) != fd)
    return MP_EINVAL;
  if (!fd && (*hdr >= MSG_MAX || *hdr >= SIZE_MAX))
    return MP_EPROTO;
  return 0;
}

/* Read the payload of len bytes into dst; on a non-blocking descriptor
 * that runs dry midway, keep what was read in the connection (owned is
 * true when dst is a malloc'd buffer the connection may take over) and
 * return MP_EAGAIN. */
static int take_or_park(mp_conn_t *c, void *dst, size_t len, bool owned) {
  int r = take_payload(c, dst, len);
  if (r != MP_EAGAIN || c->pbuf == NULL)
    return r;
  /* take_payload parked the message in dst (c->pbuf == dst): keep it in a
   * buffer of our own. */
  if (owned)
    return r;
  char *p = malloc(len ? len : 1);
  if (!p) {
    c->skip = len - c->pgot;
    c->pbuf = NULL;
    c->plen = c->pgot = 0;
    return MP_ENOMEM;
  }
  memcpy(p, dst, c->pgot);
  c->pbuf = p;
  return r;
}

int mp_conn_recv_into(mp_conn_t *c, void *buf, size_t cap, size_t *len) {
  if (!len || (!buf && cap > 0))
    return MP_EINVAL;
  int r;
  if (c && c->pbuf) {
    if ((r = check_recv(c)) < 0 || (r = resume_partial(c)) < 0)
      return r;
    *len = c->plen;
    if (c->plen > cap)
      return MP_ETOOSHORT;
    memcpy(buf, c->pbuf, c->plen);
    drop_partial(c);
    return 0;
  }
  uint64_t hdr;
  if ((r = next_header(c, false, &hdr)) < 0)
    return r;
  if (hdr > c->max_msg)
    return refuse(c, hdr, MP_EMSGSIZE);
  *len = (size_t)hdr;
  if (hdr > cap)
    return MP_ETOOSHORT;
  return take_or_park(c, buf, (size_t)hdr, false);
}

int mp_conn_recv(mp_conn_t *c, void **buf, size_t *len) {
  if (!buf || !len)
    return MP_EINVAL;
  int r;
  if (c && c->pbuf) {
    if ((r = check_recv(c)) < 0 || (r = resume_partial(c)) < 0)
      return r;
    *buf = c->pbuf;
    *len = c->plen;
    c->pbuf = NULL;
    c->plen = c->pgot = 0;
    return 0;
  }
  uint64_t hdr;
  if ((r = next_header(c, false, &hdr)) < 0)
    return r;
  if (hdr > c->max_msg)
    return refuse(c, hdr, MP_EMSGSIZE);
  void *p = malloc(hdr ? (size_t)hdr : 1);
  if (!p)
    return refuse(c, hdr, MP_ENOMEM);
  if ((r = take_or_park(c, p, (size_t)hdr, true)) < 0) {
    if (c->pbuf != p)
      free(p);
    return r;
  }
  *buf = p;
  *len = (size_t)hdr;
  return 0;
}

int mp_conn_set_max_message(mp_conn_t *c, size_t max) {
  if (!c || max >= MSG_MAX)
    return MP_EINVAL;
  c->max_msg = max;
  return 0;
}

int mp_conn_recv_fd(mp_conn_t *c, int *fd) {
  if (!fd)
    return MP_EINVAL;
  if (c && c->fd >= 0 && c->readable && !c->is_socket)
    return MP_ENOTSUP;
  if (c && c->pbuf)
    return MP_EINVAL; /* a data message, half read, comes first */
  uint64_t hdr;
  int r = next_header(c, true, &hdr);
  if (r < 0)
    return r;
  c->rpos += HDR_SIZE;
  if (c->rpos == c->rlen)
    c->rpos = c->rlen = 0;
  if (c->fdq_len == 0)
    return MP_EIO; /* the descriptor was dropped (queue overflow) */
  *fd = c->fdq[c->fdq_head];
  c->fdq_head = (c->fdq_head + 1) % FDQ_MAX;
  c->fdq_len--;
  return 0;
}

int mp_conn_poll(mp_conn_t *c, int timeout_ms) {
  if (!c || mp__check_timeout(timeout_ms) < 0)
    return MP_EINVAL;
  if (c->fd < 0)
    return MP_ECLOSED;
  if (!c->readable)
    return MP_EBADF;
  if (c->rlen > c->rpos)
    return 1;
  struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
  mp__deadline_t dl;
  mp__deadline_init(&dl, timeout_ms);
  for (;;) {
    int n = poll(&pfd, 1, mp__deadline_remaining_ms(&dl));
    if (n > 0)
      return 1;
    if (n == 0)
      return 0;
    if (errno != EINTR)
      return -errno;
  }
}

int mp_conn_fileno(const mp_conn_t *c) {
  if (!c)
    return MP_EINVAL;
  return c->fd < 0 ? MP_ECLOSED : c->fd;
}

int mp_conn_close(mp_conn_t *c) {
  if (!c)
    return MP_EINVAL;
  if (c->fd >= 0)
    mp__close(c->fd);
  c->fd = -1;
  while (c->fdq_len > 0) {
    mp__close(c->fdq[c->fdq_head]);
    c->fdq_head = (c->fdq_head + 1) % FDQ_MAX;
    c->fdq_len--;
  }
  free(c->rbuf);
  c->rbuf = NULL;
  c->rpos = c->rlen = 0;
  drop_partial(c);
  c->skip = 0;
  return 0;
}

int mp_conn_destroy(mp_conn_t *c) {
  if (!c)
    return 0;
  mp_conn_close(c);
  free(c);
  return 0;
}

static bool conn_ready_check(void *obj) {
  mp_conn_t *c = obj;
  return mp_conn_poll(c, 0) != 0;
}

mp_waitable_t mp_conn_waitable(mp_conn_t *c) {
  mp_waitable_t w = {.fd = -1, .check = conn_ready_check, .obj = c};
  if (c && c->fd >= 0 && c->readable)
    w.fd = c->fd;
  return w;
}
