/* mp_wait: poll(2) over the objects' descriptors. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>

#include "internal.h"
#include "mproc/wait.h"

#define MP__WAIT_STACK 32

/* Objects with a check are asked before sleeping and after their fd polls
 * readable; objects without one are ready when their fd is readable (or
 * hung up: a closed peer or an ended process is something to look at). */
static int wait_scan(mp_waitable_t *objs, size_t n, const struct pollfd *pfd,
                     bool before_sleep) {
  int ready = 0;
  for (size_t i = 0; i < n; i++) {
    bool r;
    if (before_sleep)
      r = objs[i].check ? objs[i].check(objs[i].obj) : false;
    else if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
      r = false;
    else
      r = objs[i].check ? objs[i].check(objs[i].obj) : true;
    objs[i].ready = r;
    ready += r;
  }
  return ready;
}

int mp_wait(mp_waitable_t *objs, size_t n, int timeout_ms) {
  if ((!objs && n > 0) || mp__check_timeout(timeout_ms) < 0 || n > INT32_MAX)
    return MP_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (objs[i].fd < 0)
      return MP_EINVAL;
  struct pollfd stack[MP__WAIT_STACK];
  struct pollfd *pfd = stack;
  if (n > MP__WAIT_STACK) {
    pfd = malloc(n * sizeof *pfd);
    if (!pfd)
      return MP_ENOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    pfd[i].fd = objs[i].fd;
    pfd[i].events = POLLIN;
    pfd[i].revents = 0;
  }
  int ready = wait_scan(objs, n, pfd, true);
  mp__deadline_t dl;
  mp__deadline_init(&dl, timeout_ms);
  while (ready == 0) {
    int ms = mp__deadline_remaining_ms(&dl);
    int r = poll(pfd, (nfds_t)n, ms);
    if (r < 0 && errno != EINTR) {
      ready = -errno;
      break;
    }
    if (r > 0)
      ready = wait_scan(objs, n, pfd, false);
    if (ready == 0 && ms == 0)
      break;
    if (ready == 0 && r > 0) {
      /* Readable but not ready (another consumer won): avoid a busy loop
       * on a level-triggered fd that stays readable. */
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
    }
  }
  if (pfd != stack)
    free(pfd);
  return ready;
}
