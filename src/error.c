/* Error names and messages, generated from MP_ERRNO_MAP. */
#include "mproc/error.h"

const char *mp_strerror(int err) {
  if (err == 0)
    return "success";
  switch (err) {
#define MP__ERR_MSG(name, val, msg)                                            \
  case (val):                                                                  \
    return msg;
    MP_ERRNO_MAP(MP__ERR_MSG)
#undef MP__ERR_MSG
  default:
    return "unknown error";
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
  default:
    return "MP_EUNKNOWN";
  }
}
