/* Connections by address: Python's multiprocessing.connection Listener and
 * Client over Unix or TCP sockets, with its mutual authkey challenge
 * (HMAC-SHA256 from OpenSSL's libcrypto). Accepted sockets become ordinary
 * mp_conn_t connections (pipe.c's framing). */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"
#include "mproc/connection.h"

#define ADDR_MAX 160
#define CHALLENGE "#CHALLENGE#"
#define WELCOME "#WELCOME#"
#define FAILURE "#FAILURE#"
#define DIGEST "{sha256}"
#define NONCE_LEN 40 /* Python's MESSAGE_LENGTH */
#define AUTH_MSG_MAX 256

struct mp_listener {
  int fd;
  int family;
  pid_t creator;   /* removes the socket file at close */
  bool unix_file;  /* a socket file we created */
  char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
  char address[ADDR_MAX];
  unsigned char *key;
  size_t key_len;
  int auth_timeout_ms;
};

/* ---- addresses ------------------------------------------------------------ */

typedef struct {
  struct sockaddr_storage ss;
  socklen_t len;
  int family;
  bool abstract;
  char host[ADDR_MAX], port[16]; /* TCP */
} addr_t;

static int parse_unix(const char *p, addr_t *a) {
  struct sockaddr_un *un = (struct sockaddr_un *)&a->ss;
  size_t n = strlen(p);
  memset(un, 0, sizeof *un);
  un->sun_family = AF_UNIX;
  a->family = AF_UNIX;
  if (n < 2 && p[0] == '@')
    return MP_EINVAL;
  if (n == 0)
    return MP_EINVAL;
  if (n >= sizeof un->sun_path)
    return MP_ENAMETOOLONG;
  memcpy(un->sun_path, p, n);
  a->abstract = p[0] == '@';
  if (a->abstract)
    un->sun_path[0] = '\0'; /* Linux's abstract namespace */
  a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n +
                       (a->abstract ? 0 : 1));
  return 0;
}

/* "host:port", "[v6]:port". Only splits; resolution is done by the caller. */
static int parse_tcp(const char *p, addr_t *a) {
  const char *colon = strrchr(p, ':'), *h = p;
  size_t hl;
  if (!colon || !colon[1] || strlen(colon + 1) >= sizeof a->port)
    return MP_EINVAL;
  hl = (size_t)(colon - p);
  if (hl >= 2 && p[0] == '[' && p[hl - 1] == ']') {
    h = p + 1;
    hl -= 2;
  }
  if (hl == 0 || hl >= sizeof a->host)
    return MP_EINVAL;
  for (const char *q = colon + 1; *q; q++)
    if (*q < '0' || *q > '9')
      return MP_EINVAL;
  memcpy(a->host, h, hl);
  a->host[hl] = '\0';
  strcpy(a->port, colon + 1);
  a->family = AF_INET; /* or AF_INET6 once resolved */
  return 0;
}

static int parse_addr(const char *s, addr_t *a) {
  memset(a, 0, sizeof *a);
  if (!s || !*s)
    return MP_EINVAL;
  if (strncmp(s, "unix:", 5) == 0)
    return parse_unix(s + 5, a);
  if (strncmp(s, "tcp:", 4) == 0)
    return parse_tcp(s + 4, a);
  if (s[0] == '/' || s[0] == '.' || s[0] == '@')
    return parse_unix(s, a);
  return parse_tcp(s, a);
}

static int resolve(addr_t *a, bool passive, struct addrinfo **res) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICSERV |
                                       (passive ? AI_PASSIVE : 0)};
  int e = getaddrinfo(a->host, a->port, &hints, res);
  if (e == 0)
    return 0;
  if (e == EAI_SYSTEM)
    return -errno;
  if (e == EAI_MEMORY)
    return MP_ENOMEM;
  return MP_ENOENT; /* unknown host */
}

/* ---- authentication ------------------------------------------------------- */

/* Bound every read and write of the handshake: a peer that sends half a
 * message or stops reading cannot keep us beyond the deadline. */
static void sock_timeouts(int fd, int ms) {
  struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
  if (ms < 0)
    tv = (struct timeval){0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* Receive one handshake message (at most AUTH_MSG_MAX bytes: anything
 * longer is refused unread) before the deadline. */
static int auth_recv(mp_conn_t *c, mp__deadline_t *dl, unsigned char *buf,
                     size_t *len) {
  int r = mp_conn_poll(c, mp__deadline_remaining_ms(dl));
  if (r == 0)
    return MP_ETIMEDOUT;
  if (r < 0)
    return r;
  r = mp_conn_recv_into(c, buf, AUTH_MSG_MAX, len);
  if (r == MP_ECLOSED || r == MP_EIO || r == MP_EAGAIN)
    return r == MP_EAGAIN ? MP_ETIMEDOUT : MP_ECONNRESET;
  return r == MP_ETOOSHORT ? MP_EACCES : r;
}

/* HMAC-SHA256(key, msg) as DIGEST + 32 bytes into out. */
static int auth_response(const unsigned char *key, size_t key_len,
                         const unsigned char *msg, size_t msg_len,
                         unsigned char *out, size_t *out_len) {
  unsigned int n = 0;
  size_t pl = strlen(DIGEST);
  memcpy(out, DIGEST, pl);
  if (!HMAC(EVP_sha256(), key, (int)key_len, msg, msg_len, out + pl, &n))
    return MP_ENOMEM;
  *out_len = pl + n;
  return 0;
}

static int send_str(mp_conn_t *c, const char *s) {
  int r = mp_conn_send(c, s, strlen(s));
  return r == MP_EPIPE ? MP_ECONNRESET : r;
}

/* Python's deliver_challenge: send a nonce, check the peer's HMAC of it. */
static int auth_deliver(mp_conn_t *c, const unsigned char *key, size_t key_len,
                        mp__deadline_t *dl) {
  unsigned char msg[64], want[64], got[AUTH_MSG_MAX];
  size_t cl = strlen(CHALLENGE), dlen = strlen(DIGEST), wl, gl;
  memcpy(msg, CHALLENGE, cl);
  memcpy(msg + cl, DIGEST, dlen);
  if (getrandom(msg + cl + dlen, NONCE_LEN, 0) != NONCE_LEN)
    return -errno;
  size_t ml = cl + dlen + NONCE_LEN;
  int r = mp_conn_send(c, msg, ml);
  if (r < 0)
    return r == MP_EPIPE ? MP_ECONNRESET : r;
  if ((r = auth_response(key, key_len, msg + cl, ml - cl, want, &wl)) < 0 ||
      (r = auth_recv(c, dl, got, &gl)) < 0)
    return r;
  if (gl != wl || CRYPTO_memcmp(got, want, wl) != 0) {
    send_str(c, FAILURE);
    return MP_EACCES;
  }
  return send_str(c, WELCOME);
}

/* Python's answer_challenge: HMAC the peer's nonce, expect its welcome. */
static int auth_answer(mp_conn_t *c, const unsigned char *key, size_t key_len,
                       mp__deadline_t *dl) {
  unsigned char msg[AUTH_MSG_MAX], resp[64];
  size_t ml, rl, cl = strlen(CHALLENGE);
  int r = auth_recv(c, dl, msg, &ml);
  if (r < 0)
    return r;
  if (ml < cl + strlen(DIGEST) || memcmp(msg, CHALLENGE, cl) != 0 ||
      memcmp(msg + cl, DIGEST, strlen(DIGEST)) != 0)
    return MP_EACCES; /* not our protocol, or a digest we do not offer */
  if ((r = auth_response(key, key_len, msg + cl, ml - cl, resp, &rl)) < 0)
    return r;
  if ((r = mp_conn_send(c, resp, rl)) < 0)
    return r == MP_EPIPE ? MP_ECONNRESET : r;
  if ((r = auth_recv(c, dl, msg, &ml)) < 0)
    return r;
  return ml == strlen(WELCOME) && memcmp(msg, WELCOME, ml) == 0 ? 0
                                                                : MP_EACCES;
}

/* Wrap fd (owned from here on) and run the handshake in the given order. */
static int conn_finish(int fd, const unsigned char *key, size_t key_len,
                       bool server, int timeout_ms, mp_conn_t **out) {
  mp_conn_t *c;
  int r = mp_conn_from_fd(&c, fd);
  if (r < 0) {
    mp__close(fd);
    return r;
  }
  if (key) {
    mp__deadline_t dl;
    mp__deadline_init(&dl, timeout_ms);
    sock_timeouts(fd, timeout_ms == MP_FOREVER ? 0 : (timeout_ms ? timeout_ms : 1));
    if (server)
      r = auth_deliver(c, key, key_len, &dl);
    if (r == 0)
      r = auth_answer(c, key, key_len, &dl);
    if (r == 0 && !server)
      r = auth_deliver(c, key, key_len, &dl);
    sock_timeouts(fd, -1);
    if (r < 0) {
      mp_conn_destroy(c);
      return r;
    }
  }
  *out = c;
  return 0;
}

/* ---- listener ------------------------------------------------------------- */

static int tcp_listen(addr_t *a, int backlog, mp_listener_t *l) {
  struct addrinfo *res, *ai;
  int r = resolve(a, true, &res);
  if (r < 0)
    return r;
  r = MP_EINVAL;
  for (ai = res; ai; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0) {
      r = -errno;
      continue;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, backlog) == 0) {
      l->fd = fd;
      l->family = ai->ai_family;
      r = 0;
      break;
    }
    r = -errno;
    mp__close(fd);
  }
  freeaddrinfo(res);
  if (r < 0)
    return r;
  /* The real port (for port 0) goes into the address clients use. */
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  char host[INET6_ADDRSTRLEN];
  if (getsockname(l->fd, (struct sockaddr *)&ss, &sl) < 0)
    return -errno;
  int port;
  if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
    port = ntohs(s6->sin6_port);
    snprintf(l->address, sizeof l->address, "[%s]:%d", host, port);
  } else {
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
    port = ntohs(s4->sin_port);
    snprintf(l->address, sizeof l->address, "%s:%d", host, port);
  }
  return 0;
}

static int unix_listen(addr_t *a, const char *spec, int backlog, unsigned mode,
                       mp_listener_t *l) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  /* bind never replaces an existing file: EADDRINUSE, as Python's. */
  if (bind(fd, (struct sockaddr *)&a->ss, a->len) < 0) {
    int r = -errno;
    mp__close(fd);
    return r;
  }
  struct sockaddr_un *un = (struct sockaddr_un *)&a->ss;
  if (!a->abstract) {
    l->unix_file = true;
    snprintf(l->path, sizeof l->path, "%s", un->sun_path);
    chmod(l->path, mode ? mode : 0600);
  }
  if (listen(fd, backlog) < 0) {
    int r = -errno;
    if (l->unix_file)
      unlink(l->path);
    mp__close(fd);
    return r;
  }
  l->fd = fd;
  l->family = AF_UNIX;
  snprintf(l->address, sizeof l->address, "%s", spec);
  return 0;
}

int mp_listener_create(mp_listener_t **out, const char *address,
                       const mp_listener_opts_t *opts) {
  mp_listener_opts_t o = {0};
  addr_t a;
  int r;
  if (opts)
    o = *opts;
  if (!out || (o.authkey_len && !o.authkey) || o.backlog < 0 ||
      o.auth_timeout_ms < 0 || (o.mode & ~0777u) || o.authkey_len > INT32_MAX)
    return MP_EINVAL;
  if ((r = parse_addr(address, &a)) < 0)
    return r;
  mp_listener_t *l = calloc(1, sizeof *l);
  if (!l)
    return MP_ENOMEM;
  l->fd = -1;
  l->auth_timeout_ms = o.auth_timeout_ms ? o.auth_timeout_ms : 20000;
  if (o.authkey) {
    l->key_len = o.authkey_len;
    if (!(l->key = malloc(o.authkey_len ? o.authkey_len : 1))) {
      free(l);
      return MP_ENOMEM;
    }
    memcpy(l->key, o.authkey, o.authkey_len);
  }
  int backlog = o.backlog ? o.backlog : 64;
  const char *spec = strncmp(address, "unix:", 5) == 0 ? address + 5 : address;
  r = a.family == AF_UNIX ? unix_listen(&a, spec, backlog, o.mode, l)
                          : tcp_listen(&a, backlog, l);
  if (r < 0) {
    if (l->fd >= 0)
      mp__close(l->fd);
    free(l->key);
    free(l);
    return r;
  }
  l->creator = getpid();
  *out = l;
  return 0;
}

int mp_listener_accept(mp_listener_t *l, mp_conn_t **c, int timeout_ms) {
  if (!l || !c || mp__check_timeout(timeout_ms) < 0)
    return MP_EINVAL;
  mp__deadline_t dl;
  mp__deadline_init(&dl, timeout_ms);
  int fd;
  for (;;) {
    struct pollfd p = {.fd = l->fd, .events = POLLIN};
    int n = poll(&p, 1, mp__deadline_remaining_ms(&dl));
    if (n < 0 && errno != EINTR)
      return -errno;
    if (n == 0)
      return MP_ETIMEDOUT;
    if (n < 0)
      continue;
    fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0)
      break;
    if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
      return -errno;
  }
  /* Blocking from here on: the connection is an ordinary mp_conn_t. */
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0)
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  if (l->family != AF_UNIX) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return conn_finish(fd, l->key, l->key_len, true, l->auth_timeout_ms, c);
}

const char *mp_listener_address(const mp_listener_t *l) {
  return l ? l->address : NULL;
}

int mp_listener_fileno(const mp_listener_t *l) {
  return l ? l->fd : MP_EINVAL;
}

int mp_listener_close(mp_listener_t *l) {
  if (!l)
    return MP_EINVAL;
  if (l->unix_file && l->creator == getpid())
    unlink(l->path);
  mp__close(l->fd);
  if (l->key)
    OPENSSL_cleanse(l->key, l->key_len);
  free(l->key);
  free(l);
  return 0;
}

/* ---- client --------------------------------------------------------------- */

/* connect(2) within the deadline (non-blocking connect, then poll). */
static int connect_until(int fd, const struct sockaddr *sa, socklen_t len,
                         mp__deadline_t *dl) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
    return -errno;
  int r = 0;
  if (connect(fd, sa, len) < 0) {
    if (errno != EINPROGRESS && errno != EINTR)
      return -errno;
    for (;;) {
      struct pollfd p = {.fd = fd, .events = POLLOUT};
      int n = poll(&p, 1, mp__deadline_remaining_ms(dl));
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return -errno;
      if (n == 0)
        return MP_ETIMEDOUT;
      break;
    }
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
      return -errno;
    r = -err;
  }
  if (r == 0 && fcntl(fd, F_SETFL, fl) < 0)
    r = -errno;
  return r;
}

int mp_client_connect(mp_conn_t **c, const char *address,
                      const mp_client_opts_t *opts) {
  mp_client_opts_t o = {0};
  addr_t a;
  int r;
  if (opts)
    o = *opts;
  if (!c || (o.authkey_len && !o.authkey) || o.authkey_len > INT32_MAX ||
      mp__check_timeout(o.timeout_ms) < 0)
    return MP_EINVAL;
  if ((r = parse_addr(address, &a)) < 0)
    return r;
  int timeout = o.timeout_ms ? o.timeout_ms : MP_FOREVER;
  mp__deadline_t dl;
  mp__deadline_init(&dl, timeout);
  int fd = -1;
  if (a.family == AF_UNIX) {
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
      return -errno;
    if ((r = connect_until(fd, (struct sockaddr *)&a.ss, a.len, &dl)) < 0) {
      mp__close(fd);
      return r;
    }
  } else {
    struct addrinfo *res, *ai;
    if ((r = resolve(&a, false, &res)) < 0)
      return r;
    r = MP_ECONNREFUSED;
    for (ai = res; ai; ai = ai->ai_next) {
      fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) {
        r = -errno;
        continue;
      }
      if ((r = connect_until(fd, ai->ai_addr, ai->ai_addrlen, &dl)) == 0)
        break;
      mp__close(fd);
      fd = -1;
      if (r == MP_ETIMEDOUT)
        break;
    }
    freeaddrinfo(res);
    if (fd < 0)
      return r;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  int left = mp__deadline_remaining_ms(&dl);
  if (left == 0)
    left = 1; /* the handshake still gets its chance to fail in time */
  return conn_finish(fd, o.authkey, o.authkey_len, false, left, c);
}
