/* Internal helpers: time, futex, fds, random names. */
#include <fcntl.h>
#include <linux/futex.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"
#include "mproc/common.h"

int mp__check_timeout(int timeout_ms) {
  return (timeout_ms >= 0 || timeout_ms == MP_FOREVER) ? 0 : MP_EINVAL;
}

uint64_t mp__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void mp__deadline_init(mp__deadline_t *d, int timeout_ms) {
  d->forever = timeout_ms < 0;
  clock_gettime(CLOCK_MONOTONIC, &d->ts);
  if (d->forever)
    return;
  d->ts.tv_sec += timeout_ms / 1000;
  d->ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (d->ts.tv_nsec >= 1000000000L) {
    d->ts.tv_sec++;
    d->ts.tv_nsec -= 1000000000L;
  }
}

int mp__deadline_remaining_ms(const mp__deadline_t *d) {
  if (d->forever)
    return -1;
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  int64_t ns = (int64_t)(d->ts.tv_sec - now.tv_sec) * 1000000000LL +
               (d->ts.tv_nsec - now.tv_nsec);
  if (ns <= 0)
    return 0;
  int64_t ms = (ns + 999999) / 1000000;
  return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

bool mp__deadline_passed(const mp__deadline_t *d) {
  return !d->forever && mp__deadline_remaining_ms(d) == 0;
}

int mp__futex_wait(_Atomic uint32_t *addr, uint32_t val,
                   const mp__deadline_t *deadline) {
  const struct timespec *ts = NULL;
  if (deadline && !deadline->forever)
    ts = &deadline->ts;
  /* FUTEX_WAIT_BITSET takes an absolute timeout; FUTEX_CLOCK_MONOTONIC is
   * the default clock for it. Not FUTEX_PRIVATE_FLAG: waiters may be in other
   * processes. */
  long r = syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_BITSET, val, ts,
                   NULL, FUTEX_BITSET_MATCH_ANY);
  if (r == 0)
    return 0;
  if (errno == EAGAIN)
    return 0;
  if (errno == ETIMEDOUT)
    return MP_ETIMEDOUT;
  if (errno == EINTR)
    return MP_EINTR;
  return -errno;
}

int mp__futex_wake(_Atomic uint32_t *addr, int n) {
  long r = syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE, n, NULL, NULL, 0);
  return r < 0 ? -errno : (int)r;
}

void mp__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield" ::: "memory");
#else
  __asm__ __volatile__("" ::: "memory");
#endif
}

bool mp__spin_while_eq(_Atomic uint32_t *addr, uint32_t val, int rounds) {
  for (int i = 0; i < rounds; i++) {
    if (atomic_load_explicit(addr, memory_order_acquire) != val)
      return true;
    mp__cpu_relax();
  }
  return atomic_load_explicit(addr, memory_order_acquire) != val;
}

int mp__set_cloexec(int fd, bool on) {
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0)
    return -errno;
  flags = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
  return fcntl(fd, F_SETFD, flags) < 0 ? -errno : 0;
}

int mp__set_nonblock(int fd, bool on) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0)
    return -errno;
  flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  return fcntl(fd, F_SETFL, flags) < 0 ? -errno : 0;
}

int mp__write_full(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

int mp__read_full(int fd, void *buf, size_t len) {
  char *p = buf;
  size_t got = 0;
  while (got < len) {
    ssize_t n = read(fd, p + got, len - got);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    if (n == 0)
      return got == 0 ? MP_ECLOSED : MP_EIO;
    got += (size_t)n;
  }
  return 0;
}

void mp__close(int fd) {
  int saved = errno;
  if (fd >= 0)
    close(fd);
  /* errno lives in a page of its own thread's: written needlessly, it costs
   * a copy-on-write fault after each fork. */
  if (errno != saved)
    errno = saved;
}

int mp__random_name(char *buf, size_t cap, const char *prefix) {
  size_t plen = strlen(prefix);
  if (cap < plen + 17)
    return MP_EINVAL;
  uint64_t r = 0;
  size_t got = 0;
  while (got < sizeof r) {
    ssize_t n = getrandom((char *)&r + got, sizeof r - got, 0);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    got += (size_t)n;
  }
  snprintf(buf, cap, "%s%016llx", prefix, (unsigned long long)r);
  return 0;
}

void mp__cmsg_set_fds(struct msghdr *msg, void *buf, const int *fds, size_t n) {
  memset(buf, 0, CMSG_SPACE(n * sizeof(int)));
  msg->msg_control = buf;
  msg->msg_controllen = CMSG_SPACE(n * sizeof(int));
  struct cmsghdr *c = CMSG_FIRSTHDR(msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(n * sizeof(int));
  memcpy(CMSG_DATA(c), fds, n * sizeof(int));
}

size_t mp__cmsg_take_fds(struct msghdr *msg, int *fds, size_t cap) {
  size_t got = 0;
  if (msg->msg_controllen == 0)
    return 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
      continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (got < cap)
        fds[got++] = fd;
      else
        mp__close(fd);
    }
  }
  return got;
}
