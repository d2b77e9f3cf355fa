/* Fuzz target: the pipe framing. The input is a byte stream as a peer
 * would write it. It is received twice, once on a blocking descriptor with
 * everything written up front, once on a non-blocking one fed in two parts
 * (split where the first byte says), and both must yield the same messages
 * and errors: EAGAIN midway never loses or repeats a byte. A bound on the
 * message size keeps allocations small; every call must return. */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mproc.h"

#define MAX_EVENTS 4096

typedef struct {
  int code;
  size_t len;
  uint32_t sum;
} event_t;

static uint32_t sum_of(const unsigned char *p, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 16777619u;
  return h;
}

/* One receive; into: mp_conn_recv_into with a 4 KiB buffer. */
static int recv_one(mp_conn_t *c, bool into, event_t *e) {
  static unsigned char buf[4096];
  void *m = NULL;
  size_t len = 0;
  int r = into ? mp_conn_recv_into(c, buf, sizeof buf, &len)
               : mp_conn_recv(c, &m, &len);
  e->code = r;
  e->len = r == 0 || r == MP_ETOOSHORT ? len : 0;
  e->sum = r == 0 ? sum_of(into ? buf : m, len) : 0;
  if (!into && r == 0)
    free(m);
  return r;
}

static bool final(int r) {
  return r != 0 && r != MP_EMSGSIZE && r != MP_ENOMEM && r != MP_EAGAIN &&
         r != MP_ETOOSHORT;
}

/* recv_into leaves a too-long message in place: take it with recv. */
static size_t drain(mp_conn_t *c, bool into, bool nonblock, event_t *ev,
                    size_t n) {
  for (int guard = 0; n < MAX_EVENTS; guard++) {
    if (guard > 100000)
      abort(); /* a receive loop that never ends */
    event_t e;
    int r = recv_one(c, into, &e);
    if (r == MP_ETOOSHORT)
      r = recv_one(c, false, &e);
    if (r == MP_EAGAIN && nonblock)
      return n;
    ev[n++] = e;
    if (final(r))
      return n;
  }
  return n;
}

static size_t run(const uint8_t *data, size_t size, size_t split, bool into,
                  bool nonblock, event_t *ev) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0)
    abort();
  fcntl(fds[1], F_SETPIPE_SZ, 1 << 20);
  mp_conn_t *c;
  if (mp_conn_from_fd(&c, fds[0]) < 0)
    abort();
  mp_conn_set_max_message(c, 1 << 16);
  size_t n = 0;
  if (nonblock) {
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    if (write(fds[1], data, split) != (ssize_t)split)
      abort();
    n = drain(c, into, true, ev, n);
    if (n && final(ev[n - 1].code) && ev[n - 1].code != MP_EAGAIN) {
      /* ended in the first part already */
    } else {
      if (write(fds[1], data + split, size - split) !=
          (ssize_t)(size - split))
        abort();
      close(fds[1]);
      fds[1] = -1;
      n = drain(c, into, true, ev, n);
    }
  } else {
    if (write(fds[1], data, size) != (ssize_t)size)
      abort();
    close(fds[1]);
    fds[1] = -1;
    n = drain(c, into, false, ev, n);
  }
  if (fds[1] >= 0)
    close(fds[1]);
  mp_conn_destroy(c);
  return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > (512 << 10))
    return 0;
  bool into = data[0] & 1;
  size_t split = size > 1 ? (size_t)data[0] * (size - 1) / 255 + 1 : 1;
  if (split > size)
    split = size;
  static event_t a[MAX_EVENTS], b[MAX_EVENTS];
  size_t na = run(data + 1, size - 1, 0, into, false, a);
  size_t nb = run(data + 1, size - 1, split - 1, into, true, b);
  /* The same messages in the same order: a stream cut anywhere reads the
   * same. The end may differ only as EOF seen at a different moment. */
  if (na != nb)
    abort();
  for (size_t i = 0; i < na; i++)
    if (a[i].code != b[i].code || a[i].len != b[i].len || a[i].sum != b[i].sum)
      abort();
  return 0;
}
