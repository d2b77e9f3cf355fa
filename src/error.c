/* Error names and messages, generated from MP_ERRNO_MAP; any other errno
 * value falls back to the C library's name and description. */
#include <stdio.h>
#include <string.h>

#include "mproc/error.h"

/* errno values are small positive ints; our own codes are -4000 and below. */
static const char *errno_desc(int err) {
  if (err >= 0 || err <= -4000)
    return NULL;
  return strerrordesc_np(-err); /* NULL for a value that is no errno */
}

const char *mp_strerror(int err) {
  if (err == 0)
    return "success";
  switch (err) {
#define MP__ERR_MSG(name, val, msg)                                            \
  case (val):                                                                  \
    return msg;
    MP_ERRNO_MAP(MP__ERR_MSG)
#undef MP__ERR_MSG
  default: {
    const char *d = errno_desc(err);
    return d ? d : "unknown error";
  }
  }
}

const char *mp_err_name(int err) {
  if (err == 0)
    return "MP_OK";
  switch (err) {
#define MP__ERR_NAME(name, val, msg)                                           \
  case (val):                                                                  \
    return "MP_" #name;
    MP_ERRNO_MAP(MP__ERR_NAME)
#undef MP__ERR_NAME
  default: {
    static _Thread_local char buf[40];
    const char *n = errno_desc(err) ? strerrorname_np(-err) : NULL;
    if (!n)
      return "MP_EUNKNOWN";
    snprintf(buf, sizeof buf, "MP_%s", n);
    return buf;
  }
  }
}
