/* Pool result buffers (mp_buf_t) and task error helpers. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "mproc/pool.h"

static int buf_grow(mp_buf_t *b, size_t need) {
  if (need <= b->cap)
    return 0;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < need) {
    if (cap > SIZE_MAX / 2)
      return MP_ENOMEM;
    cap *= 2;
  }
  void *d = realloc(b->data, cap);
  if (!d)
    return MP_ENOMEM;
  b->data = d;
  b->cap = cap;
  return 0;
}

int mp_buf_set(mp_buf_t *b, const void *data, size_t len) {
  if (!b || (!data && len))
    return MP_EINVAL;
  int r = buf_grow(b, len);
  if (r)
    return r;
  if (len)
    memmove(b->data, data, len);
  b->len = len;
  return 0;
}

int mp_buf_append(mp_buf_t *b, const void *data, size_t len) {
  if (!b || (!data && len) || len > SIZE_MAX - b->len)
    return MP_EINVAL;
  int r = buf_grow(b, b->len + len);
  if (r)
    return r;
  if (len)
    memcpy((char *)b->data + b->len, data, len);
  b->len += len;
  return 0;
}

int mp_buf_reserve(mp_buf_t *b, size_t len, void **out) {
  if (!b || !out || len > SIZE_MAX - b->len)
    return MP_EINVAL;
  int r = buf_grow(b, b->len + len);
  if (r)
    return r;
  *out = (char *)b->data + b->len;
  return 0;
}

int mp_buf_commit(mp_buf_t *b, size_t len) {
  if (!b || len > b->cap - b->len)
    return MP_EINVAL;
  b->len += len;
  return 0;
}

static int buf_vprintf(mp_buf_t *b, const char *fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0)
    return MP_EINVAL;
  int r = buf_grow(b, (size_t)n + 1);
  if (r)
    return r;
  vsnprintf(b->data, (size_t)n + 1, fmt, ap);
  b->len = (size_t)n + 1;
  return 0;
}

int mp_buf_printf(mp_buf_t *b, const char *fmt, ...) {
  if (!b || !fmt)
    return MP_EINVAL;
  va_list ap;
  va_start(ap, fmt);
  int r = buf_vprintf(b, fmt, ap);
  va_end(ap);
  return r;
}

int mp_buf_free(mp_buf_t *b) {
  if (!b)
    return MP_EINVAL;
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
  return 0;
}

int mp_task_error(mp_buf_t *result, int code, const char *fmt, ...) {
  if (code == 0)
    code = -1;
  if (result && fmt) {
    va_list ap;
    va_start(ap, fmt);
    if (buf_vprintf(result, fmt, ap) != 0)
      result->len = 0;
    va_end(ap);
  }
  return code;
}
