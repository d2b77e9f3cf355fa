/* mproc: error codes.
 *
 * Every function that can fail returns an int: 0 on success, a negative code
 * on failure. System errors are -errno (MP_EINVAL == -EINVAL); mproc's own
 * conditions have codes of their own in the -4000 range. A call that fails
 * changes nothing and never invokes its callback. */
#ifndef MPROC_ERROR_H
#define MPROC_ERROR_H

#include <errno.h>

#include "common.h"

MP_BEGIN_DECLS

/* XX(name, value, message): the one table every code, name and message comes
 * from. */
#define MP_ERRNO_MAP(XX)                                                       \
  XX(E2BIG, -E2BIG, "argument list too long")                                  \
  XX(EACCES, -EACCES, "permission denied")                                     \
  XX(EAGAIN, -EAGAIN, "resource temporarily unavailable")                      \
  XX(EBADF, -EBADF, "bad file descriptor")                                     \
  XX(EBUSY, -EBUSY, "resource busy or locked")                                 \
  XX(ECANCELED, -ECANCELED, "operation canceled")                              \
  XX(ECHILD, -ECHILD, "no child processes")                                    \
  XX(ECONNREFUSED, -ECONNREFUSED, "connection refused")                        \
  XX(ECONNRESET, -ECONNRESET, "connection reset by peer")                      \
  XX(EDEADLK, -EDEADLK, "resource deadlock avoided")                           \
  XX(EEXIST, -EEXIST, "file already exists")                                   \
  XX(EFAULT, -EFAULT, "bad address in system call argument")                   \
  XX(EFBIG, -EFBIG, "file too large")                                          \
  XX(EINTR, -EINTR, "interrupted system call")                                 \
  XX(EINVAL, -EINVAL, "invalid argument")                                      \
  XX(EIO, -EIO, "i/o error")                                                   \
  XX(EISDIR, -EISDIR, "illegal operation on a directory")                      \
  XX(ELOOP, -ELOOP, "too many symbolic links encountered")                     \
  XX(EMFILE, -EMFILE, "too many open files")                                   \
  XX(EMLINK, -EMLINK, "too many links")                                        \
  XX(EMSGSIZE, -EMSGSIZE, "message too long")                                  \
  XX(ENAMETOOLONG, -ENAMETOOLONG, "name too long")                             \
  XX(ENFILE, -ENFILE, "file table overflow")                                   \
  XX(ENODEV, -ENODEV, "no such device")                                        \
  XX(ENOENT, -ENOENT, "no such file or directory")                             \
  XX(ENOEXEC, -ENOEXEC, "exec format error")                                   \
  XX(ENOMEM, -ENOMEM, "not enough memory")                                     \
  XX(ENOSPC, -ENOSPC, "no space left on device")                               \
  XX(ENOSYS, -ENOSYS, "function not implemented")                              \
  XX(ENOTCONN, -ENOTCONN, "socket is not connected")                           \
  XX(ENOTDIR, -ENOTDIR, "not a directory")                                     \
  XX(ENOTEMPTY, -ENOTEMPTY, "directory not empty")                             \
  XX(ENOTSUP, -ENOTSUP, "operation not supported")                             \
  XX(EOVERFLOW, -EOVERFLOW, "value too large for defined data type")           \
  XX(EPERM, -EPERM, "operation not permitted")                                 \
  XX(EPIPE, -EPIPE, "broken pipe")                                             \
  XX(EPROTO, -EPROTO, "corrupt shared object or message stream")              \
  XX(ERANGE, -ERANGE, "result out of range")                                   \
  XX(EROFS, -EROFS, "read-only file system")                                   \
  XX(ESPIPE, -ESPIPE, "invalid seek")                                          \
  XX(ESRCH, -ESRCH, "no such process")                                         \
  XX(ETIMEDOUT, -ETIMEDOUT, "connection timed out")                            \
  XX(ETXTBSY, -ETXTBSY, "text file is busy")                                   \
  XX(EXDEV, -EXDEV, "cross-device link not permitted")                         \
  XX(EEMPTY, -4001, "queue is empty")                                          \
  XX(EFULL, -4002, "queue is full")                                            \
  XX(ECLOSED, -4003, "object is closed")                                       \
  XX(EWORKERDIED, -4004, "worker died while running the task")                 \
  XX(EOWNERDEAD, -4005, "previous owner died holding the lock")                \
  XX(ETASK, -4006, "task returned an error")                                   \
  XX(ETOOSHORT, -4007, "buffer too short for the message")                   \
  XX(EWORKERRANK, -4008, "this MPI rank served as a pool worker")              \
  XX(EBINARY, -4009, "MPI ranks run different binaries")

typedef enum {
#define MP__ERR_ENUM(name, val, msg) MP_##name = (val),
  MP_ERRNO_MAP(MP__ERR_ENUM)
#undef MP__ERR_ENUM
} mp_errno_t;

/* A human-readable message for `err` (0 gives "success"). Never NULL; the
 * string is static. Unknown codes give "unknown error". */
MP_EXTERN const char *mp_strerror(int err);

/* The code's name, e.g. "MP_EEMPTY" or "MP_ENOENT" (0 gives "MP_OK"). Never
 * NULL; the string is static. Unknown codes give "MP_EUNKNOWN". */
MP_EXTERN const char *mp_err_name(int err);

MP_END_DECLS

#endif
