/* mpcp: runs the built binary on trees made here and checks the copies entry
 * by entry. Trees live under the build directory and are removed at the end
 * of each case. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "runner.h"

/* Paths here are short; a truncated one would fail the case visibly. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

/* ---- helpers
 * ----------------------------------------------------------------- */

static char bin_path[PATH_MAX];

static const char *bin(void) {
  if (!bin_path[0]) {
    snprintf(bin_path, sizeof bin_path, "%s/mpcp", mpt_build_dir());
    if (access(bin_path, X_OK) != 0)
      snprintf(bin_path, sizeof bin_path, "%s/tools/mpcp/mpcp",
               mpt_build_dir());
    char *real = realpath(bin_path, NULL);
    ASSERT(real);
    snprintf(bin_path, sizeof bin_path, "%s", real);
    free(real);
  }
  return bin_path;
}

/* A fresh directory for one case (under /tmp when other users must reach
 * it); removed by cleanup(). */
static char work[PATH_MAX];

static void setup(bool in_tmp) {
  if (in_tmp)
    snprintf(work, sizeof work, "/tmp/mpcp-test-XXXXXX");
  else
    snprintf(work, sizeof work, "%s/mpcp-test-XXXXXX", mpt_build_dir());
  ASSERT(mkdtemp(work));
  char *real = realpath(work, NULL);
  ASSERT(real);
  snprintf(work, sizeof work, "%s", real);
  free(real);
}

static void cleanup(void) {
  char cmd[PATH_MAX + 64];
  snprintf(cmd, sizeof cmd, "chmod -R u+rwx '%s' 2>/dev/null; rm -rf '%s'",
           work, work);
  free(mpt_run_cmd(cmd, NULL));
}

static char *path(const char *rel) {
  static char buf[4][PATH_MAX];
  static int i;
  i = (i + 1) % 4;
  snprintf(buf[i], sizeof buf[i], "%s/%s", work, rel);
  return buf[i];
}

/* Runs mpcp with args (a shell fragment, run in the work dir); returns its
 * output (stdout and, unless json_only, stderr) and sets *rc. */
static char *mpcp(int *rc, bool stdout_only, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Environment assignments put in front of the next mpcp() command. */
static const char *run_env = "";

static char *mpcp(int *rc, bool stdout_only, const char *fmt, ...) {
  char args[2048], cmd[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  snprintf(cmd, sizeof cmd, "cd '%s' && %s %s %s %s", work, run_env, bin(),
           args, stdout_only ? "2>/dev/null" : "2>&1");
  run_env = "";
  int st;
  char *out = mpt_run_cmd(cmd, &st);
  *rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return out;
}

static void write_at(int dirfd, const char *name, const void *data, size_t len,
                     mode_t mode) {
  int fd = openat(dirfd, name, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, mode);
  ASSERT(fd >= 0);
  ASSERT_EQ(write(fd, data, len), (ssize_t)len);
  close(fd);
}

static void write_file(const char *rel, const char *text) {
  write_at(AT_FDCWD, path(rel), text, strlen(text), 0644);
}

static void mkdir_p(const char *rel) {
  char cmd[PATH_MAX + 32];
  snprintf(cmd, sizeof cmd, "mkdir -p '%s'", path(rel));
  free(mpt_run_cmd(cmd, NULL));
}

static char *slurp(const char *p, size_t *len) {
  int fd = open(p, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return NULL;
  struct stat st;
  fstat(fd, &st);
  char *b = malloc((size_t)st.st_size + 1);
  ssize_t n = read(fd, b, (size_t)st.st_size);
  close(fd);
  b[n < 0 ? 0 : n] = '\0';
  if (len)
    *len = n < 0 ? 0 : (size_t)n;
  return b;
}

static bool exists(const char *rel) {
  struct stat st;
  return lstat(path(rel), &st) == 0;
}

static void assert_content(const char *rel, const char *text) {
  char *b = slurp(path(rel), NULL);
  ASSERT(b);
  ASSERT_STR_EQ(b, text);
  free(b);
}

static unsigned long long json_field(const char *json, const char *key) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\": ", key);
  const char *p = strstr(json, pat);
  ASSERT(p);
  return strtoull(p + strlen(pat), NULL, 10);
}

/* ---- comparing two trees entry by entry
 * -------------------------------------- */

typedef struct {
  ino_t src[64], dst[64];
  int n;
} links_t;

static bool same_bytes(int a, int b) {
  char x[65536], y[65536];
  for (;;) {
    ssize_t n = read(a, x, sizeof x), m = read(b, y, sizeof y);
    if (n != m || n < 0)
      return false;
    if (n == 0)
      return true;
    if (memcmp(x, y, (size_t)n))
      return false;
  }
}

static void compare_xattrs(int sdir, int ddir, const char *name) {
  char sp[64], dp[64], sl[4096], dl[4096];
  int sfd = openat(sdir, name, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  int dfd = openat(ddir, name, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  ASSERT(sfd >= 0 && dfd >= 0);
  (void)sp;
  (void)dp;
  ssize_t n = flistxattr(sfd, sl, sizeof sl),
          m = flistxattr(dfd, dl, sizeof dl);
  ASSERT(n >= 0 && m >= 0);
  ASSERT_EQ(n, m);
  for (char *p = sl; p < sl + n; p += strlen(p) + 1) {
    char a[4096], b[4096];
    ssize_t x = fgetxattr(sfd, p, a, sizeof a),
            y = fgetxattr(dfd, p, b, sizeof b);
    if (x != y || x < 0 || memcmp(a, b, (size_t)x))
      mpt_fail(__FILE__, __LINE__, "xattr %s of %s differs", p, name);
  }
  close(sfd);
  close(dfd);
}

/* Returns how many entries were compared. */
static int compare_dirs(int sdir, int ddir, links_t *hl, bool meta) {
  int count = 0, sfd = openat(sdir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR *d = fdopendir(sfd);
  ASSERT(d);
  struct dirent *de;
  while ((de = readdir(d))) {
    const char *name = de->d_name;
    if (!strcmp(name, ".") || !strcmp(name, ".."))
      continue;
    struct stat s, t;
    ASSERT(fstatat(sdir, name, &s, AT_SYMLINK_NOFOLLOW) == 0);
    if (fstatat(ddir, name, &t, AT_SYMLINK_NOFOLLOW) != 0)
      mpt_fail(__FILE__, __LINE__, "missing in copy: %s", name);
    count++;
    if ((s.st_mode & S_IFMT) != (t.st_mode & S_IFMT))
      mpt_fail(__FILE__, __LINE__, "type of %s differs", name);
    if (meta) {
      if (!S_ISLNK(s.st_mode) && (s.st_mode & 07777) != (t.st_mode & 07777))
        mpt_fail(__FILE__, __LINE__, "mode of %s: %o != %o", name,
                 s.st_mode & 07777, t.st_mode & 07777);
      ASSERT_EQ(s.st_uid, t.st_uid);
      ASSERT_EQ(s.st_gid, t.st_gid);
      if (s.st_mtim.tv_sec != t.st_mtim.tv_sec ||
          s.st_mtim.tv_nsec != t.st_mtim.tv_nsec)
        mpt_fail(__FILE__, __LINE__, "mtime of %s differs", name);
    }
    if (S_ISREG(s.st_mode)) {
      ASSERT_EQ(s.st_size, t.st_size);
      int a = openat(sdir, name, O_RDONLY | O_CLOEXEC);
      int b = openat(ddir, name, O_RDONLY | O_CLOEXEC);
      ASSERT(a >= 0 && b >= 0);
      if (!same_bytes(a, b))
        mpt_fail(__FILE__, __LINE__, "content of %s differs", name);
      close(a);
      close(b);
      /* Sparse stays sparse: no more blocks than the source, give or take. */
      if (s.st_blocks * 512 < s.st_size / 2)
        ASSERT(t.st_blocks <= s.st_blocks + 64);
      if (meta && s.st_nlink > 1) {
        int i;
        for (i = 0; i < hl->n; i++)
          if (hl->src[i] == s.st_ino)
            break;
        if (i == hl->n) {
          ASSERT(hl->n < 64);
          hl->src[hl->n] = s.st_ino;
          hl->dst[hl->n++] = t.st_ino;
        } else if (hl->dst[i] != t.st_ino) {
          mpt_fail(__FILE__, __LINE__, "hard link %s not kept", name);
        }
        ASSERT_EQ(s.st_nlink, t.st_nlink);
      }
      if (meta)
        compare_xattrs(sdir, ddir, name);
    } else if (S_ISLNK(s.st_mode)) {
      char a[PATH_MAX], b[PATH_MAX];
      ssize_t n = readlinkat(sdir, name, a, sizeof a);
      ssize_t m = readlinkat(ddir, name, b, sizeof b);
      ASSERT(n >= 0 && n == m && !memcmp(a, b, (size_t)n));
    } else if (S_ISCHR(s.st_mode) || S_ISBLK(s.st_mode)) {
      ASSERT_EQ(s.st_rdev, t.st_rdev);
    } else if (S_ISDIR(s.st_mode)) {
      if (meta)
        compare_xattrs(sdir, ddir, name);
      int a = openat(sdir, name, O_PATH | O_DIRECTORY | O_CLOEXEC);
      int b = openat(ddir, name, O_PATH | O_DIRECTORY | O_CLOEXEC);
      ASSERT(a >= 0 && b >= 0);
      count += compare_dirs(a, b, hl, meta);
      close(a);
      close(b);
    }
  }
  closedir(d);
  return count;
}

static int compare_trees(const char *src, const char *dst, bool meta) {
  int a = open(path(src), O_PATH | O_DIRECTORY | O_CLOEXEC);
  int b = open(path(dst), O_PATH | O_DIRECTORY | O_CLOEXEC);
  ASSERT(a >= 0 && b >= 0);
  links_t hl = {.n = 0};
  int n = compare_dirs(a, b, &hl, meta);
  if (meta) {
    struct stat s, t;
    ASSERT(fstat(a, &s) == 0 && fstat(b, &t) == 0);
    ASSERT_EQ(s.st_mode & 07777, t.st_mode & 07777);
    ASSERT_EQ(s.st_mtim.tv_nsec, t.st_mtim.tv_nsec);
  }
  close(a);
  close(b);
  return n;
}

/* Names starting ".mpcp-" anywhere below rel: temp files left behind. */
static int count_temps(int dir) {
  int n = 0, fd = openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR *d = fdopendir(fd);
  ASSERT(d);
  struct dirent *de;
  while ((de = readdir(d))) {
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
      continue;
    if (!strncmp(de->d_name, ".mpcp-", 6))
      n++;
    if (de->d_type == DT_DIR) {
      int sub = openat(dir, de->d_name, O_PATH | O_DIRECTORY | O_CLOEXEC);
      ASSERT(sub >= 0);
      n += count_temps(sub);
      close(sub);
    }
  }
  closedir(d);
  return n;
}

/* ---- the tree with every case
 * -------------------------------------------------- */

static void fill(char *buf, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1103515245u + 12345u;
    buf[i] = (char)(seed >> 16);
  }
}

static void make_all_cases(const char *rel) {
  mkdir_p(rel);
  int root = open(path(rel), O_PATH | O_DIRECTORY | O_CLOEXEC);
  ASSERT(root >= 0);
  char *buf = malloc(3u << 20);
  fill(buf, 3u << 20, 7);
  /* regular files of several sizes, an empty one, a setuid one */
  write_at(root, "empty", "", 0, 0644);
  write_at(root, "small", buf, 100, 0640);
  write_at(root, "medium", buf, 200000, 0600);
  write_at(root, "big", buf, 3u << 20, 0644); /* chunked: see env below */
  write_at(root, "suid", buf, 10, 04755);
  /* a sparse file: 8 MiB with 4 KiB of data in the middle */
  int fd = openat(root, "sparse", O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  ASSERT(fd >= 0);
  ASSERT_EQ(pwrite(fd, buf, 4096, 4 << 20), 4096);
  ASSERT(ftruncate(fd, 8 << 20) == 0);
  close(fd);
  /* nanosecond mtimes and another owner */
  struct timespec ts[2] = {{1234567890, 111111111}, {1234567890, 123456789}};
  ASSERT(utimensat(root, "small", ts, 0) == 0);
  if (geteuid() == 0)
    ASSERT(fchownat(root, "medium", 1234, 5678, 0) == 0);
  /* xattrs: a user one and an ACL (system.posix_acl_access, raw format) */
  ASSERT(setxattr(path("src/small"), "user.mpcp", "value", 5, 0) == 0 ||
         errno == ENOTSUP);
  struct {
    uint32_t version;
    struct {
      uint16_t tag, perm;
      uint32_t id;
    } e[5];
  } acl = {2,
           {{1, 6, 0xffffffffu},
            {2, 4, 65534},
            {4, 4, 0xffffffffu},
            {0x10, 4, 0xffffffffu},
            {0x20, 4, 0xffffffffu}}};
  ASSERT(setxattr(path("src/medium"), "system.posix_acl_access", &acl,
                  sizeof acl, 0) == 0 ||
         errno == ENOTSUP);
  /* symlinks: plain, dangling, a loop, to a directory */
  ASSERT(symlinkat("small", root, "link") == 0);
  ASSERT(symlinkat("nowhere/at/all", root, "dangling") == 0);
  ASSERT(symlinkat("loop2", root, "loop1") == 0);
  ASSERT(symlinkat("loop1", root, "loop2") == 0);
  ASSERT(symlinkat("sub", root, "dirlink") == 0);
  /* hard links, also across directories */
  ASSERT(mkdirat(root, "sub", 0755) == 0);
  ASSERT(linkat(root, "small", root, "hard1", 0) == 0);
  ASSERT(linkat(root, "small", root, "sub/hard2", 0) == 0);
  ASSERT(linkat(root, "big", root, "sub/bighard", 0) == 0);
  /* special files */
  ASSERT(mkfifoat(root, "fifo", 0640) == 0);
  if (geteuid() == 0)
    ASSERT(mknodat(root, "null", S_IFCHR | 0666, makedev(1, 3)) == 0);
  /* a name that is not UTF-8 */
  write_at(root, "bad\xff\xfe-name", "x", 1, 0644);
  /* read-only directories with content */
  ASSERT(mkdirat(root, "ro", 0755) == 0);
  write_at(root, "ro/inside", "ro", 2, 0444);
  ASSERT(mkdirat(root, "ro/deeper", 0755) == 0);
  ASSERT(fchmodat(root, "ro/deeper", 0500, 0) == 0);
  ASSERT(fchmodat(root, "ro", 0555, 0) == 0);
  /* many small files in several directories: several batches */
  for (int d = 0; d < 3; d++) {
    char dn[32];
    snprintf(dn, sizeof dn, "many%d", d);
    ASSERT(mkdirat(root, dn, 0750) == 0);
    int dfd = openat(root, dn, O_PATH | O_DIRECTORY | O_CLOEXEC);
    for (int i = 0; i < 150; i++) {
      char fn[32];
      snprintf(fn, sizeof fn, "f%03d", i);
      write_at(dfd, fn, buf + i, (size_t)(i * 37 % 5000), 0644);
    }
    close(dfd);
  }
  /* a path longer than PATH_MAX: 24 levels of 200-byte names */
  char comp[201];
  memset(comp, 'd', 200);
  comp[200] = '\0';
  int cur = openat(root, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  for (int i = 0; i < 24; i++) {
    ASSERT(mkdirat(cur, comp, 0755) == 0);
    int next = openat(cur, comp, O_PATH | O_DIRECTORY | O_CLOEXEC);
    ASSERT(next >= 0);
    close(cur);
    cur = next;
  }
  write_at(cur, "deep-file", "deep", 4, 0644);
  ASSERT(symlinkat("deep-file", cur, "deep-link") == 0);
  close(cur);
  /* directory times last: set after the content above was made */
  ASSERT(utimensat(root, "sub", ts, 0) == 0);
  free(buf);
  close(root);
}

/* ---- cases
 * ---------------------------------------------------------------------- */

TEST(mpcp_archive_all_cases) {
  setup(false);
  make_all_cases("src");
  int rc;
  run_env = "MPCP_CHUNK_MIN=1048576 MPCP_CHUNK_SIZE=262144";
  char *out = mpcp(&rc, false, "-a -j 3 --no-progress src dst");
  if (rc != 0)
    mpt_fail(__FILE__, __LINE__, "mpcp failed (%d): %s", rc, out);
  ASSERT_STR_EQ(out, "");
  free(out);
  int n = compare_trees("src", "dst", true);
  if (n < 480)
    mpt_fail(__FILE__, __LINE__, "only %d entries compared", n);
  int d = open(path("dst"), O_PATH | O_DIRECTORY | O_CLOEXEC);
  ASSERT_EQ(count_temps(d), 0);
  close(d);
  cleanup();
}

/* The same tree through the O_TMPFILE path and one worker. */
TEST(mpcp_archive_tmpfile_one_job) {
  setup(false);
  make_all_cases("src");
  mkdir_p("out");
  int rc;
  /* out exists: the copy goes to out/src; the second run overwrites it
   * through O_TMPFILE inodes (linked to a temp name, renamed over). */
  char *out = mpcp(&rc, false, "-a -j 1 src out");
  ASSERT_EQ(rc, 0);
  free(out);
  run_env = "MPCP_TMPFILE=1";
  out = mpcp(&rc, false, "-a src out");
  if (rc != 0)
    mpt_fail(__FILE__, __LINE__, "mpcp failed (%d): %s", rc, out);
  free(out);
  compare_trees("src", "out/src", true);
  int d = open(path("out"), O_PATH | O_DIRECTORY | O_CLOEXEC);
  ASSERT_EQ(count_temps(d), 0);
  close(d);
  cleanup();
}

TEST(mpcp_recursive_without_a) {
  setup(false);
  mkdir_p("src/sub");
  write_file("src/sub/f", "data");
  ASSERT(chmod(path("src/sub/f"), 0751) == 0);
  ASSERT(symlink("sub/f", path("src/l")) == 0);
  int rc;
  char *out = mpcp(&rc, false, "-r src dst");
  ASSERT_EQ(rc, 0);
  free(out);
  compare_trees("src", "dst", false);
  struct stat st;
  ASSERT(lstat(path("dst/l"), &st) == 0 && S_ISLNK(st.st_mode));
  ASSERT(stat(path("dst/sub/f"), &st) == 0);
  ASSERT_EQ(st.st_mode & 0777, 0751 & ~022);
  /* a directory without -r: omitted, reported, exit 1 */
  out = mpcp(&rc, false, "src dst3");
  ASSERT_EQ(rc, 1);
  ASSERT(strstr(out, "-r not specified; omitting directory 'src'"));
  ASSERT(!exists("dst3"));
  free(out);
  cleanup();
}

/* A file the copying user cannot read: reported with its path and reason,
 * exit 1, everything else copied. Tests run as root, which reads anything,
 * so this runs mpcp as nobody. */
TEST(mpcp_unreadable_file) {
  if (geteuid() != 0) {
    printf("skipped: needs root to switch to nobody\n");
    return;
  }
  setup(true);
  ASSERT(chmod(work, 0755) == 0);
  mkdir_p("src/sub");
  write_file("src/a", "a");
  write_file("src/sub/b", "b");
  write_file("src/sub/secret", "s");
  write_file("src/z", "z");
  char cmd[PATH_MAX * 2];
  snprintf(cmd, sizeof cmd, "chown -R 65534:65534 '%s' && chmod 000 '%s'", work,
           path("src/sub/secret"));
  free(mpt_run_cmd(cmd, NULL));
  int rc;
  char *out = mpcp(&rc, false,
                   "--version >/dev/null && setpriv --reuid=65534 "
                   "--regid=65534 --clear-groups %s -a src dst",
                   bin());
  ASSERT_EQ(rc, 1);
  ASSERT(strstr(out, "src/sub/secret"));
  ASSERT(strstr(out, "Permission denied"));
  free(out);
  assert_content("dst/a", "a");
  assert_content("dst/sub/b", "b");
  assert_content("dst/z", "z");
  ASSERT(!exists("dst/sub/secret"));
  int d = open(path("dst"), O_PATH | O_DIRECTORY | O_CLOEXEC);
  ASSERT_EQ(count_temps(d), 0);
  close(d);
  cleanup();
}

/* SIGINT/SIGTERM mid-copy: exit 130/143, and every file under a final name
 * is complete; no temp file is left. */
static void interrupt_case(int sig, bool tmpfile) {
  setup(false);
  mkdir_p("src/d1");
  mkdir_p("src/d2");
  char *buf = malloc(70000);
  for (int i = 0; i < 60; i++) {
    char rel[64];
    snprintf(rel, sizeof rel, "src/d%d/f%02d", i % 2 + 1, i);
    fill(buf, 70000, (unsigned)i);
    write_at(AT_FDCWD, path(rel), buf, 70000, 0644);
  }
  free(buf);
  char dst[PATH_MAX], src[PATH_MAX];
  snprintf(src, sizeof src, "%s", path("src"));
  snprintf(dst, sizeof dst, "%s", path("dst"));
  pid_t pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0) {
    int nul = open("/dev/null", O_WRONLY);
    dup2(nul, 1);
    dup2(nul, 2);
    setenv("MPCP_TEST_DELAY_MS", "40", 1);
    if (tmpfile)
      setenv("MPCP_TMPFILE", "1", 1);
    execl(bin(), "mpcp", "-a", "-j", "2", src, dst, (char *)NULL);
    _exit(127);
  }
  /* Wait until some files are done, then interrupt. */
  for (int i = 0; i < 200; i++) {
    mpt_sleep_ms(20);
    struct stat st;
    if (stat(path("dst/d1/f00"), &st) == 0 ||
        stat(path("dst/d2/f01"), &st) == 0)
      break;
  }
  ASSERT(kill(pid, sig) == 0);
  int st;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  ASSERT(WIFEXITED(st));
  ASSERT_EQ(WEXITSTATUS(st), 128 + sig);
  /* Every final name holds a complete copy. */
  int copied = 0;
  for (int i = 0; i < 60; i++) {
    char rel[64], drel[64];
    snprintf(rel, sizeof rel, "src/d%d/f%02d", i % 2 + 1, i);
    snprintf(drel, sizeof drel, "dst/d%d/f%02d", i % 2 + 1, i);
    if (!exists(drel))
      continue;
    size_t a, b;
    char *x = slurp(path(rel), &a), *y = slurp(path(drel), &b);
    ASSERT(a == b && memcmp(x, y, a) == 0);
    free(x);
    free(y);
    copied++;
  }
  ASSERT(copied < 60);
  int d = open(path("dst"), O_PATH | O_DIRECTORY | O_CLOEXEC);
  ASSERT_EQ(count_temps(d), 0);
  close(d);
  cleanup();
}

TEST(mpcp_sigint_no_partial_file) {
  interrupt_case(SIGINT, false);
}

TEST(mpcp_sigterm_no_partial_file_tmpfile) {
  interrupt_case(SIGTERM, true);
}

TEST(mpcp_into_itself_refused) {
  setup(false);
  mkdir_p("src/sub");
  write_file("src/f", "f");
  int rc;
  char *out = mpcp(&rc, false, "-r src src/sub");
  ASSERT_EQ(rc, 1);
  ASSERT(strstr(out, "into itself"));
  ASSERT(!exists("src/sub/src"));
  free(out);
  out = mpcp(&rc, false, "-a src src");
  ASSERT_EQ(rc, 1);
  ASSERT(strstr(out, "into itself"));
  ASSERT(!exists("src/src"));
  free(out);
  out = mpcp(&rc, false, "-a src/ src/sub/new");
  ASSERT_EQ(rc, 1);
  ASSERT(!exists("src/sub/new"));
  free(out);
  /* a file onto itself, directly or through a hard link */
  out = mpcp(&rc, false, "src/f src/f");
  ASSERT_EQ(rc, 1);
  ASSERT(strstr(out, "are the same file"));
  free(out);
  ASSERT(link(path("src/f"), path("src/g")) == 0);
  out = mpcp(&rc, false, "src/f src/g");
  ASSERT_EQ(rc, 1);
  ASSERT(strstr(out, "are the same file"));
  free(out);
  assert_content("src/f", "f");
  cleanup();
}

TEST(mpcp_dest_semantics) {
  setup(false);
  mkdir_p("src/sub");
  write_file("src/sub/f", "f");
  write_file("one", "1");
  write_file("two", "2");
  mkdir_p("existing");
  int rc;
  /* DEST missing: SRC becomes DEST */
  free(mpcp(&rc, false, "-r src newdir"));
  ASSERT_EQ(rc, 0);
  assert_content("newdir/sub/f", "f");
  /* DEST an existing directory: SRC goes inside it (trailing slash too) */
  free(mpcp(&rc, false, "-r src/ existing"));
  ASSERT_EQ(rc, 0);
  assert_content("existing/src/sub/f", "f");
  /* several SRCs into a directory */
  free(mpcp(&rc, false, "one two src existing"));
  ASSERT_EQ(rc, 1); /* src without -r */
  assert_content("existing/one", "1");
  assert_content("existing/two", "2");
  /* several SRCs, DEST not a directory */
  char *out = mpcp(&rc, false, "one two three");
  ASSERT_EQ(rc, 1);
  ASSERT(strstr(out, "target 'three' is not a directory"));
  free(out);
  /* file to a new name, file over a file */
  free(mpcp(&rc, false, "one copy"));
  ASSERT_EQ(rc, 0);
  assert_content("copy", "1");
  free(mpcp(&rc, false, "two copy"));
  ASSERT_EQ(rc, 0);
  assert_content("copy", "2");
  /* a directory onto a file, a file onto a directory */
  out = mpcp(&rc, false, "-r src copy");
  ASSERT_EQ(rc, 1);
  ASSERT(strstr(out, "cannot overwrite non-directory"));
  free(out);
  /* missing source */
  out = mpcp(&rc, false, "nothing here");
  ASSERT_EQ(rc, 1);
  ASSERT(strstr(out, "cannot stat 'nothing'"));
  free(out);
  /* no operands */
  out = mpcp(&rc, false, "one");
  ASSERT_EQ(rc, 1);
  ASSERT(strstr(out, "missing destination file operand"));
  free(out);
  cleanup();
}

TEST(mpcp_exclude) {
  setup(false);
  mkdir_p("src/sub/cache");
  write_file("src/keep.c", "k");
  write_file("src/drop.o", "d");
  write_file("src/sub/also.o", "d");
  write_file("src/sub/keep.h", "k");
  write_file("src/sub/cache/x", "x");
  mkdir_p("src/top/cache");
  write_file("src/top/cache/y", "y");
  int rc;
  char *out = mpcp(&rc, true,
                   "-a --json --exclude '*.o' --exclude 'sub/cache' src dst");
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(json_field(out, "excluded"), 3);
  free(out);
  ASSERT(exists("dst/keep.c"));
  ASSERT(exists("dst/sub/keep.h"));
  ASSERT(!exists("dst/drop.o"));
  ASSERT(!exists("dst/sub/also.o"));
  ASSERT(!exists("dst/sub/cache"));
  ASSERT(exists("dst/top/cache/y")); /* a path pattern is anchored */
  cleanup();
}

TEST(mpcp_no_clobber_and_update) {
  setup(false);
  mkdir_p("src");
  mkdir_p("dst");
  write_file("src/a", "new a");
  write_file("src/b", "new b");
  write_file("src/c", "new c");
  write_file("dst/a", "old a");
  write_file("dst/b", "old b");
  /* -n: existing files stay, missing ones are copied */
  int rc;
  char *out = mpcp(&rc, true, "-a -n --json src/a src/b src/c dst");
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(json_field(out, "skipped"), 2);
  ASSERT_EQ(json_field(out, "files"), 1);
  free(out);
  assert_content("dst/a", "old a");
  assert_content("dst/c", "new c");
  /* -u: a newer destination stays, an older one is replaced */
  struct timespec old[2] = {{1000, 0}, {1000, 0}};
  struct timespec newer[2] = {{2000000000, 0}, {2000000000, 0}};
  ASSERT(utimensat(AT_FDCWD, path("dst/a"), old, 0) == 0);
  ASSERT(utimensat(AT_FDCWD, path("dst/b"), newer, 0) == 0);
  out = mpcp(&rc, true, "-u --json src/a src/b dst");
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(json_field(out, "skipped"), 1);
  free(out);
  assert_content("dst/a", "new a");
  assert_content("dst/b", "old b");
  cleanup();
}

TEST(mpcp_dry_run) {
  setup(false);
  mkdir_p("src/sub");
  write_file("src/a", "aaaa");
  write_file("src/sub/b", "bb");
  int rc;
  char *out = mpcp(&rc, false, "-a --dry-run src dst");
  ASSERT_EQ(rc, 0);
  ASSERT(strstr(out, "would copy 'src/a' -> 'dst/a'"));
  ASSERT(strstr(out, "would copy 'src/sub/b' -> 'dst/sub/b'"));
  free(out);
  ASSERT(!exists("dst"));
  out = mpcp(&rc, true, "-a --dry-run --json src dst");
  ASSERT_EQ(json_field(out, "files"), 2);
  ASSERT_EQ(json_field(out, "bytes"), 6);
  ASSERT(strstr(out, "\"dry_run\": true"));
  free(out);
  ASSERT(!exists("dst"));
  cleanup();
}

TEST(mpcp_verify_redoes_mismatch) {
  setup(false);
  make_all_cases("src");
  int rc;
  char *out = mpcp(&rc, true, "--verify --json -a -j 2 src dst");
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(json_field(out, "mismatches"), 0);
  ASSERT(json_field(out, "verified") > 450);
  free(out);
  /* A copy corrupted on the way (test hook) is found and copied again. */
  run_env = "MPCP_TEST_CORRUPT=medium MPCP_CHUNK_MIN=1048576 "
            "MPCP_CHUNK_SIZE=262144";
  out = mpcp(&rc, true, "--verify --json -a src dst2");
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(json_field(out, "mismatches"), 1);
  ASSERT_EQ(json_field(out, "errors"), 0);
  free(out);
  compare_trees("src", "dst2", true);
  /* Without --verify the corruption would have stayed: the hook works. */
  run_env = "MPCP_TEST_CORRUPT=medium";
  out = mpcp(&rc, true, "-a src dst3");
  ASSERT_EQ(rc, 0);
  free(out);
  size_t a, b;
  char *x = slurp(path("src/medium"), &a), *y = slurp(path("dst3/medium"), &b);
  ASSERT(a == b && memcmp(x, y, a) != 0);
  free(x);
  free(y);
  cleanup();
}

TEST(mpcp_json_and_progress_output) {
  setup(false);
  mkdir_p("src/sub");
  write_file("src/a", "12345");
  write_file("src/sub/b", "123");
  ASSERT(symlink("a", path("src/l")) == 0);
  ASSERT(link(path("src/a"), path("src/h")) == 0);
  int rc;
  char *out = mpcp(&rc, true, "-a --json src dst");
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(out[0], '{');
  ASSERT_EQ(json_field(out, "files"), 4);
  ASSERT_EQ(json_field(out, "bytes"), 8);
  ASSERT_EQ(json_field(out, "dirs"), 2);
  ASSERT_EQ(json_field(out, "hard_links"), 1);
  ASSERT_EQ(json_field(out, "errors"), 0);
  ASSERT(strstr(out, "\"seconds\": "));
  free(out);
  /* stderr not a terminal: no bar, no escape codes, nothing at all */
  out = mpcp(&rc, false, "-a src dst2");
  ASSERT_EQ(rc, 0);
  ASSERT_STR_EQ(out, "");
  free(out);
  /* --progress forces the line and the summary */
  out = mpcp(&rc, false, "-a --progress src dst3");
  ASSERT_EQ(rc, 0);
  ASSERT(strstr(out, "mpcp: 4 files, 8 B in "));
  ASSERT(strstr(out, "0 errors"));
  free(out);
  /* -v lists each copy like cp -v */
  out = mpcp(&rc, false, "-a -v src dst4");
  ASSERT(strstr(out, "'src/sub/b' -> 'dst4/sub/b'"));
  free(out);
  out = mpcp(&rc, false, "--version");
  ASSERT(strstr(out, "mpcp "));
  free(out);
  out = mpcp(&rc, false, "--help");
  ASSERT_EQ(rc, 0);
  ASSERT(strstr(out, "--exclude"));
  free(out);
  out = mpcp(&rc, false, "--bogus a b");
  ASSERT_EQ(rc, 1);
  free(out);
  out = mpcp(&rc, false, "-j 0 a b");
  ASSERT_EQ(rc, 1);
  free(out);
  cleanup();
}

/* A worker killed in the middle of a batch (test hook: SIGKILL while copying
 * f07): that entry is reported, every other entry of the batch is retried
 * and copied, no temp file is left, nothing hangs. */
TEST(mpcp_worker_crash_reported) {
  setup(false);
  mkdir_p("src/sub");
  for (int i = 0; i < 20; i++) {
    char rel[32], text[32];
    snprintf(rel, sizeof rel, "src/%sf%02d", i % 3 ? "" : "sub/", i);
    snprintf(text, sizeof text, "file %d", i);
    write_file(rel, text);
  }
  int rc;
  run_env = "MPCP_TEST_CRASH=f07";
  char *out = mpcp(&rc, false, "-a -j 2 src dst");
  ASSERT_EQ(rc, 1);
  ASSERT(strstr(out, "a worker failed copying 'src/f07'"));
  free(out);
  for (int i = 0; i < 20; i++) {
    char rel[32], text[32];
    snprintf(rel, sizeof rel, "dst/%sf%02d", i % 3 ? "" : "sub/", i);
    snprintf(text, sizeof text, "file %d", i);
    if (i == 7)
      ASSERT(!exists(rel));
    else
      assert_content(rel, text);
  }
  int d = open(path("dst"), O_PATH | O_DIRECTORY | O_CLOEXEC);
  ASSERT_EQ(count_temps(d), 0);
  close(d);
  cleanup();
}

/* The progress line: redrawn several times, counters and bar never go
 * backwards, totals end exact, and the summary closes it. */
TEST(mpcp_progress_monotonic) {
  setup(false);
  for (int d = 0; d < 6; d++) {
    char dir[32];
    snprintf(dir, sizeof dir, "src/d%d", d);
    mkdir_p(dir);
    for (int i = 0; i < 100; i++) {
      char rel[64];
      snprintf(rel, sizeof rel, "src/d%d/f%03d", d, i);
      write_file(rel, "some bytes for the progress line");
    }
  }
  int rc;
  run_env = "MPCP_TEST_DELAY_MS=3";
  char *out = mpcp(&rc, false, "-a -j 2 --progress src dst");
  ASSERT_EQ(rc, 0);
  ASSERT(strstr(out, "mpcp: 600 files,"));
  int draws = 0;
  double last_pct = -1;
  unsigned long long last_done = 0, last_total = 0;
  for (char *save = NULL, *seg = strtok_r(out, "\r\n", &save); seg;
       seg = strtok_r(NULL, "\r\n", &save)) {
    double pct;
    unsigned long long done, total;
    char *bar = strchr(seg, ']');
    if (sscanf(seg, "%lf%%", &pct) != 1 || !bar ||
        sscanf(bar + 1, " %llu/%llu", &done, &total) != 2)
      continue;
    ASSERT(pct >= last_pct);
    ASSERT(done >= last_done);
    ASSERT(total >= last_total);
    ASSERT(done <= total);
    last_pct = pct;
    last_done = done;
    last_total = total;
    draws++;
  }
  ASSERT(draws >= 3);
  ASSERT_EQ(last_total, 600);
  free(out);
  cleanup();
}
