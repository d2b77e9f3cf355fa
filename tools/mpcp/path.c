/* Path helpers: relative opens of any length, display joins, temp names. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mpcp.h"

char mpcp_temp_prefix[64];

/* The kernel refuses paths of PATH_MAX bytes or more, so a long relative path
 * is walked in pieces cut at a '/' below that limit, each piece opened
 * relative to the directory the previous one reached. */
int mpcp_open_rel(int dirfd, const char *rel, int flags, mode_t mode) {
  const size_t piece = PATH_MAX - 256;
  if (rel[0] == '\0')
    rel = ".";
  size_t n = strlen(rel);
  if (n < piece)
    return openat(dirfd, rel, flags | O_CLOEXEC, mode);
  char *buf = malloc(piece + 1);
  if (!buf) {
    errno = ENOMEM;
    return -1;
  }
  int cur = dirfd, fd = -1;
  const char *p = rel;
  while (strlen(p) >= piece) {
    size_t cut = piece;
    while (cut > 0 && p[cut] != '/')
      cut--;
    if (cut == 0) {
      errno = ENAMETOOLONG;
      goto out;
    }
    memcpy(buf, p, cut);
    buf[cut] = '\0';
    int next = openat(cur, buf, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (cur != dirfd)
      close(cur);
    cur = next;
    if (cur < 0)
      goto out;
    p += cut + 1;
  }
  fd = openat(cur, *p ? p : ".", flags | O_CLOEXEC, mode);
out:;
  int saved = errno;
  if (cur >= 0 && cur != dirfd)
    close(cur);
  free(buf);
  errno = saved;
  return fd;
}

static bool skip_part(const char *s) {
  return !s || !*s || strcmp(s, ".") == 0;
}

char *mpcp_join(const char *a, const char *b, const char *c) {
  const char *parts[3] = {a, b, c};
  size_t n = 1;
  for (int i = 0; i < 3; i++)
    if (!skip_part(parts[i]))
      n += strlen(parts[i]) + 1;
  char *out = malloc(n + 1);
  if (!out)
    return NULL;
  out[0] = '\0';
  size_t len = 0;
  for (int i = 0; i < 3; i++) {
    if (skip_part(parts[i]))
      continue;
    if (len > 0 && out[len - 1] != '/')
      out[len++] = '/';
    size_t pl = strlen(parts[i]);
    memcpy(out + len, parts[i], pl);
    len += pl;
    out[len] = '\0';
  }
  if (len == 0)
    strcpy(out, ".");
  return out;
}

/* Temp names start with a per-run prefix (".mpcp-<parent pid>-"), so after an
 * interrupt the parent can find and remove any a dead worker left behind. */
pid_t mpcp_self_pid;

void mpcp_temp_name(char *buf, size_t len) {
  static unsigned long counter;
  snprintf(buf, len, "%s%ld-%lu", mpcp_temp_prefix, (long)mpcp_self_pid,
           ++counter);
}
