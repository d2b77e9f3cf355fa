/* mp_wait: poll(2) over the objects' descriptors. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>

#include "internal.h"
#include "mproc/wait.h"

#define MP__WAIT_STACK 32

/* Objects with a check are asked before sleeping (one may be ready while
 * its fd is quiet, e.g. a connection holding buffered data) and after their
 * fd polls readable; objects without one are ready when their fd is
 * readable (or hung up: a closed peer or an ended process is something to
 * look at). Every ready object is reported, as Python's wait does. */
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
  int ready = 0;
  for (size_t i = 0; i < n; i++) {
    pfd[i].fd = objs[i].fd;
    pfd[i].events = POLLIN;
    pfd[i].revents = 0;
    objs[i].ready = objs[i].check && objs[i].check(objs[i].obj);
    ready += objs[i].ready;
  }
  mp__deadline_t dl;
  mp__deadline_init(&dl, timeout_ms);
  for (;;) {
    /* With something ready already, just collect the rest. */
    int ms = ready > 0 ? 0 : mp__deadline_remaining_ms(&dl);
    int r = poll(pfd, (nfds_t)n, ms);
    if (r < 0) {
      if (errno == EINTR && ready == 0)
        continue;
      if (errno != EINTR)
        ready = -errno;
      break;
    }
    for (size_t i = 0; r > 0 && i < n; i++) {
      if (objs[i].ready || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      if (!objs[i].check || objs[i].check(objs[i].obj)) {
        objs[i].ready = true;
        ready++;
      }
    }
    if (ready > 0 || ms == 0)
      break;
    if (r > 0) {
      /* Readable but not ready (another consumer won): do not spin on a
       * level-triggered fd that stays readable. */
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
    }
  }
  if (pfd != stack)
    free(pfd);
  return ready;
}
