/* Path helpers: relative opens of any length, display joins, temp names. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <wchar.h>
#include <wctype.h>

#include "mpcp.h"

char mpcp_temp_prefix[64];

/* openat() that stays below dirfd and follows no symlink in any component
 * (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS; where the kernel lacks it,
 * one component at a time with O_NOFOLLOW): a symlink planted in a tree
 * never redirects a copy out of it. A symlink fails with ELOOP or
 * ENOTDIR. */
static int open_beneath(int dirfd, const char *rel, int flags, mode_t mode) {
  static int have_openat2 = 1;
#ifdef SYS_openat2
  if (have_openat2) {
    struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC),
                           .mode = (flags & O_CREAT) ? mode : 0,
                           .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
                                      RESOLVE_NO_MAGICLINKS};
    long fd = syscall(SYS_openat2, dirfd, rel, &how, sizeof how);
    if (fd >= 0 || (errno != ENOSYS && errno != EPERM))
      return (int)fd;
    have_openat2 = 0;
  }
#else
  (void)have_openat2;
#endif
  char *copy = strdup(rel);
  if (!copy) {
    errno = ENOMEM;
    return -1;
  }
  int cur = dirfd, fd = -1;
  char *save = NULL, *part = strtok_r(copy, "/", &save);
  while (part) {
    char *next = strtok_r(NULL, "/", &save);
    if (!strcmp(part, "..")) {
      errno = EXDEV;
      break;
    }
    int f = next ? openat(cur, part,
                          O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                 : openat(cur, part, flags | O_NOFOLLOW | O_CLOEXEC, mode);
    if (cur != dirfd)
      close(cur);
    cur = dirfd;
    if (f < 0)
      break;
    if (!next) {
      fd = f;
      break;
    }
    cur = f;
    part = next;
  }
  int saved = errno;
  if (cur != dirfd)
    close(cur);
  free(copy);
  errno = saved;
  return fd;
}

/* The kernel refuses paths of PATH_MAX bytes or more, so a long relative path
 * is walked in pieces cut at a '/' below that limit, each piece opened
 * relative to the directory the previous one reached. No symlink is
 * followed on the way (open_beneath). */
int mpcp_open_rel(int dirfd, const char *rel, int flags, mode_t mode) {
  const size_t piece = PATH_MAX - 256;
  if (rel[0] == '\0')
    rel = ".";
  size_t n = strlen(rel);
  if (n < piece)
    return open_beneath(dirfd, rel, flags, mode);
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
    int next = open_beneath(cur, buf, O_PATH | O_DIRECTORY, 0);
    if (cur != dirfd)
      close(cur);
    cur = next;
    if (cur < 0)
      goto out;
    p += cut + 1;
  }
  fd = open_beneath(cur, *p ? p : ".", flags, mode);
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

/* A name inside a directory, as a task carries it. */
bool mpcp_name_ok(const char *s, size_t n) {
  if (n == 0 || n > NAME_MAX || memchr(s, '\0', n) || memchr(s, '/', n))
    return false;
  return !(s[0] == '.' && (n == 1 || (n == 2 && s[1] == '.')));
}

/* A path below a root: relative, no empty, "." or ".." component. */
bool mpcp_rel_ok(const char *s, size_t n) {
  if (n == 0)
    return true;
  if (n >= PATH_MAX * 64 || memchr(s, '\0', n) || s[0] == '/')
    return false;
  size_t i = 0;
  while (i <= n) {
    const char *slash = memchr(s + i, '/', n - i);
    size_t j = slash ? (size_t)(slash - s) : n;
    if (!mpcp_name_ok(s + i, j - i))
      return false;
    i = j + 1;
  }
  return true;
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

/* Bytes of the printable character at s (at most n bytes), or 0 when it is
 * not printable in the current locale (or not a valid character). */
static size_t printable_len(const char *s, size_t n, mbstate_t *mb) {
  unsigned char c = (unsigned char)*s;
  if (c < 0x80 || MB_CUR_MAX == 1)
    return isprint(c) ? 1 : 0;
  wchar_t wc;
  size_t k = mbrtowc(&wc, s, n, mb);
  if (k == (size_t)-1 || k == (size_t)-2 || k == 0 || !iswprint((wint_t)wc))
    return 0;
  return k;
}

/* Quotes a name as cp does (quotearg's shell-escape-always style): 'name';
 * "name" when it holds a ' but nothing special between double quotes;
 * characters that are not printable in the locale (control characters,
 * bytes that are not valid UTF-8 in a UTF-8 locale, any byte above 0x7f in
 * the C locale) as $'\n' or $'\377' outside the quotes, runs of them in one
 * $'...'; a ' among them as '\''. Always terminated; cut to fit len (six
 * bytes of out per byte of s always fit). */
void mpcp_quote(const char *s, char *out, size_t len) {
  size_t slen = strlen(s);
  bool odd = false, sq = false, dq_special = false;
  mbstate_t mb;
  memset(&mb, 0, sizeof mb);
  /* First pass: is every character printable? */
  for (size_t i = 0; i < slen;) {
    size_t k = printable_len(s + i, slen - i, &mb);
    if (k == 0) {
      odd = true;
      break;
    }
    if (s[i] == '\'')
      sq = true;
    else if (s[i] == '"' || s[i] == '$' || s[i] == '`' || s[i] == '\\')
      dq_special = true;
    i += k;
  }
  size_t n = 0;
#define PUT(str)                                                               \
  do {                                                                         \
    for (const char *q_ = (str); *q_ && n + 1 < len; q_++)                     \
      out[n++] = *q_;                                                          \
  } while (0)
  if (!odd && sq && !dq_special) {
    PUT("\"");
    PUT(s);
    PUT("\"");
  } else if (!odd && !sq) {
    PUT("'");
    PUT(s);
    PUT("'");
  } else {
    /* state: 0 outside quotes, 1 inside '...', 2 inside $'...' */
    int state = 0;
    memset(&mb, 0, sizeof mb);
    for (size_t i = 0; i < slen;) {
      size_t k = printable_len(s + i, slen - i, &mb);
      if (k == 0) {
        unsigned char c = (unsigned char)s[i];
        static const char names[] = "abtnvfr";
        char one[8];
        if (state == 1)
          PUT("'");
        if (state != 2)
          PUT("$'");
        state = 2;
        if (c >= 7 && c <= 13)
          snprintf(one, sizeof one, "\\%c", names[c - 7]);
        else
          snprintf(one, sizeof one, "\\%03o", c);
        PUT(one);
        memset(&mb, 0, sizeof mb);
        i++;
        continue;
      }
      if (state == 2)
        PUT("'");
      if (state != 1)
        PUT("'");
      state = 1;
      if (s[i] == '\'') {
        PUT("'\\''");
      } else {
        char piece[MB_LEN_MAX + 1];
        memcpy(piece, s + i, k);
        piece[k] = '\0';
        PUT(piece);
      }
      i += k;
    }
    if (state)
      PUT("'");
  }
#undef PUT
  if (len)
    out[n < len ? n : len - 1] = '\0';
}

/* printf for messages: only %s, %.*s and %% are known, and a '%s' (quoted
 * in the format) is printed quoted as mpcp_quote does. Returns the length
 * written (cut to fit len). */
int mpcp_vformat(char *out, size_t len, const char *fmt, va_list ap) {
  size_t n = 0;
#define PUTN(str, k)                                                           \
  do {                                                                         \
    for (size_t i_ = 0; i_ < (k) && (str)[i_] && n + 1 < len; i_++)            \
      out[n++] = (str)[i_];                                                    \
  } while (0)
  for (const char *p = fmt; *p;) {
    if (!strncmp(p, "'%s'", 4)) {
      const char *a = va_arg(ap, const char *);
      if (!a)
        a = "";
      size_t qlen = strlen(a) * 6 + 8;
      char small[512], *q = qlen <= sizeof small ? small : malloc(qlen);
      if (q) {
        mpcp_quote(a, q, qlen);
        PUTN(q, qlen);
        if (q != small)
          free(q);
      }
      p += 4;
    } else if (!strncmp(p, "%s", 2)) {
      const char *a = va_arg(ap, const char *);
      PUTN(a ? a : "(null)", (size_t)-1);
      p += 2;
    } else if (!strncmp(p, "%.*s", 4)) {
      int w = va_arg(ap, int);
      const char *a = va_arg(ap, const char *);
      if (a && w > 0)
        PUTN(a, (size_t)w);
      p += 4;
    } else if (!strncmp(p, "%%", 2)) {
      PUTN("%", 1);
      p += 2;
    } else {
      PUTN(p, 1);
      p++;
    }
  }
#undef PUTN
  if (len)
    out[n < len ? n : len - 1] = '\0';
  return (int)n;
}

int mpcp_format(char *out, size_t len, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = mpcp_vformat(out, len, fmt, ap);
  va_end(ap);
  return n;
}

/* "'src' -> 'dst'\n" with both quoted as cp -v does: malloc'd. */
char *mpcp_verbose_text(const char *src, const char *dst) {
  size_t a = strlen(src) * 6 + 8, b = strlen(dst) * 6 + 8;
  char *qa = malloc(a), *qb = malloc(b), *out = NULL;
  if (qa && qb) {
    mpcp_quote(src, qa, a);
    mpcp_quote(dst, qb, b);
    size_t n = strlen(qa) + strlen(qb) + 6;
    out = malloc(n);
    if (out)
      snprintf(out, n, "%s -> %s\n", qa, qb);
  }
  free(qa);
  free(qb);
  return out;
}

bool mpcp_split_fs(int fd) {
  static const unsigned long types[] = {
      0x6969,     /* NFS */
      0xFF534D42, /* CIFS */
      0xFE534D42, /* SMB2 */
      0x0BD00BD0, /* Lustre */
      0x47504653, /* GPFS */
      0x19830326, /* BeeGFS */
      0x00C36400, /* CephFS */
      0x65735546, /* FUSE */
  };
  struct statfs sf;
  if (fd < 0 || fstatfs(fd, &sf) < 0)
    return false;
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
    if ((unsigned long)sf.f_type == types[i])
      return true;
  return false;
}

void mpcp_root_close(mpcp_root_t *r) {
  if (r->src_fd >= 0)
    close(r->src_fd);
  if (r->dst_fd >= 0)
    close(r->dst_fd);
  free(r->src_disp);
  free(r->dst_disp);
  r->src_fd = r->dst_fd = -1;
  r->src_disp = r->dst_disp = NULL;
}
