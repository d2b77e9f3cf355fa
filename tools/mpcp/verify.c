/* --verify: XXH3-128 of a whole file, read sequentially in 1 MiB blocks. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
#include <xxhash.h>

#include "mpcp.h"

int mpcp_hash_fd(int fd, uint64_t out[2]) {
  static char *buf;
  if (!buf && !(buf = malloc(1u << 20)))
    return -ENOMEM;
  XXH3_state_t *st = XXH3_createState();
  if (!st)
    return -ENOMEM;
  XXH3_128bits_reset(st);
  posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  int rc = 0;
  for (;;) {
    ssize_t n = read(fd, buf, 1u << 20);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      rc = -errno;
      break;
    }
    if (n == 0)
      break;
    XXH3_128bits_update(st, buf, (size_t)n);
  }
  XXH128_hash_t h = XXH3_128bits_digest(st);
  XXH3_freeState(st);
  out[0] = h.low64;
  out[1] = h.high64;
  return rc;
}
