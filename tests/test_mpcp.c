/* mpcp: runs the built binary on trees made here and checks the copies entry
 * by entry. Trees live under the build directory and are removed at the end
 * of each case. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "runner.h"

/* Paths here are short; a truncated one would fail the case visibly. Both
 * compilers know the warning; each is told in its own words. */
#if defined(__clang__)
#if __has_warning("-Wformat-truncation")
#pragma clang diagnostic ignored "-Wformat-truncation"
#endif
#elif defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

/* ---- helpers
 * ----------------------------------------------------------------- */

static char bin_path[PATH_MAX];

/* How the binary is run: tests/test_mpcp_mpi.c runs the cases again as
 * "mpirun ... mpcp --mpi". */
#ifndef MPCP_RUN_FMT
#define MPCP_RUN_FMT "%s"
#endif

static const char *bin(void) {
  if (!bin_path[0]) {
    snprintf(bin_path, sizeof bin_path, "%s/mpcp", mpt_build_dir());
    if (access(bin_path, X_OK) != 0)
      snprintf(bin_path, sizeof bin_path, "%s/tools/mpcp/mpcp",
               mpt_build_dir());
    char *real = realpath(bin_path, NULL);
    ASSERT(real);
    snprintf(bin_path, sizeof bin_path, MPCP_RUN_FMT, real);
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
static void interrupt_case(int sig, bool tmpfile, bool chunked) {
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
    if (chunked) { /* every file preallocated and copied in chunks */
      setenv("MPCP_CHUNK_MIN", "65536", 1);
      setenv("MPCP_CHUNK_SIZE", "32768", 1);
    }
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
  interrupt_case(SIGINT, false, false);
}

TEST(mpcp_sigterm_no_partial_file_tmpfile) {
  interrupt_case(SIGTERM, true, false);
}

/* SIGHUP and SIGQUIT clean up as SIGINT does (129, 131), the preallocated
 * temp files of chunked files included. */
TEST(mpcp_sighup_sigquit_clean_up) {
  interrupt_case(SIGHUP, false, false);
  interrupt_case(SIGQUIT, false, true);
  interrupt_case(SIGHUP, false, true);
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

/* ---- data never lost or misplaced ----------------------------------------- */

/* Runs a shell fragment in the work dir; returns its status. */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
  char args[2048], cmd[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  snprintf(cmd, sizeof cmd, "cd '%s' && %s", work, args);
  int st;
  free(mpt_run_cmd(cmd, &st));
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The prefix that runs the next mpcp() command as nobody (65534). */
#define AS_NOBODY "--version >/dev/null && setpriv --reuid=65534 --regid=65534 --clear-groups "

static bool is_root(void) {
  if (geteuid() != 0) {
    printf("skipped: needs root\n");
    return false;
  }
  return true;
}

/* A FIFO read by a child: returns the child's pid; it writes what it read
 * to out_rel. */
static pid_t fifo_reader(const char *fifo_rel, const char *out_rel) {
  char fifo[PATH_MAX], out[PATH_MAX];
  snprintf(fifo, sizeof fifo, "%s", path(fifo_rel));
  snprintf(out, sizeof out, "%s", path(out_rel));
  pid_t pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0) {
    int in = open(fifo, O_RDONLY);
    int o = open(out, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    char buf[4096];
    ssize_t n;
    while (in >= 0 && o >= 0 && (n = read(in, buf, sizeof buf)) > 0)
      if (write(o, buf, (size_t)n) != n)
        _exit(1);
    _exit(0);
  }
  return pid;
}

/* An existing destination that is a device or a FIFO is written into, as cp
 * does, never replaced by a regular file (top level and inside a tree). */
TEST(mpcp_dest_device_or_fifo_written_into) {
  if (!is_root())
    return;
  setup(false);
  write_file("f", "payload\n");
  ASSERT(mknod(path("null"), S_IFCHR | 0666, makedev(1, 3)) == 0);
  int rc;
  char *out = mpcp(&rc, false, "f null");
  ASSERT_EQ(rc, 0);
  free(out);
  struct stat st;
  ASSERT(lstat(path("null"), &st) == 0);
  ASSERT(S_ISCHR(st.st_mode));
  ASSERT_EQ(st.st_rdev, makedev(1, 3));
  out = mpcp(&rc, false, "-a f null");
  ASSERT_EQ(rc, 0);
  free(out);
  ASSERT(lstat(path("null"), &st) == 0);
  ASSERT(S_ISCHR(st.st_mode));
  /* a FIFO at the top, read by a child */
  ASSERT(mkfifo(path("fifo"), 0644) == 0);
  pid_t r = fifo_reader("fifo", "got");
  out = mpcp(&rc, false, "f fifo");
  ASSERT_EQ(rc, 0);
  free(out);
  int ws;
  ASSERT_EQ(waitpid(r, &ws, 0), r);
  ASSERT(lstat(path("fifo"), &st) == 0);
  ASSERT(S_ISFIFO(st.st_mode));
  assert_content("got", "payload\n");
  /* inside a tree: dst/d/x is a FIFO, src/d/x a file */
  mkdir_p("src/d");
  mkdir_p("dst/d");
  write_file("src/d/x", "tree data\n");
  ASSERT(mkfifo(path("dst/d/x"), 0644) == 0);
  r = fifo_reader("dst/d/x", "got2");
  out = mpcp(&rc, false, "-r src/d dst");
  ASSERT_EQ(rc, 0);
  free(out);
  ASSERT_EQ(waitpid(r, &ws, 0), r);
  ASSERT(lstat(path("dst/d/x"), &st) == 0);
  ASSERT(S_ISFIFO(st.st_mode));
  assert_content("got2", "tree data\n");
  cleanup();
}

/* A symlink copied onto its own target: "are the same file", exit 1, the
 * target untouched (top level with -a and -r, and an entry inside a tree). */
TEST(mpcp_symlink_onto_own_target_refused) {
  setup(false);
  write_file("f", "precious\n");
  ASSERT(symlink("f", path("l")) == 0);
  const char *opts[] = {"-a", "-r"};
  for (int i = 0; i < 2; i++) {
    int rc;
    char *out = mpcp(&rc, false, "%s l f", opts[i]);
    ASSERT_EQ(rc, 1);
    ASSERT(strstr(out, "'l' and 'f' are the same file"));
    free(out);
    struct stat st;
    ASSERT(lstat(path("f"), &st) == 0);
    ASSERT(S_ISREG(st.st_mode));
    assert_content("f", "precious\n");
  }
  mkdir_p("a");
  mkdir_p("b");
  write_file("b/x", "keep me\n");
  write_file("a/y", "y\n");
  ASSERT(symlink("../b/x", path("a/x")) == 0);
  int rc;
  char *out = mpcp(&rc, false, "-a a/. b");
  ASSERT_EQ(rc, 1);
  ASSERT(strstr(out, "are the same file"));
  free(out);
  struct stat st;
  ASSERT(lstat(path("b/x"), &st) == 0);
  ASSERT(S_ISREG(st.st_mode));
  assert_content("b/x", "keep me\n");
  assert_content("b/y", "y\n");
  /* a hard link of the source in the destination */
  mkdir_p("h/src");
  mkdir_p("h/dst");
  write_file("h/src/f", "linked\n");
  ASSERT(link(path("h/src/f"), path("h/dst/f")) == 0);
  out = mpcp(&rc, false, "-a h/src/. h/dst");
  ASSERT_EQ(rc, 1);
  ASSERT(strstr(out, "are the same file"));
  free(out);
  assert_content("h/src/f", "linked\n");
  cleanup();
}

/* A symlink to a directory in the destination is never followed: cp's
 * "cannot overwrite non-directory", nothing written outside DEST. */
TEST(mpcp_dest_symlink_dir_not_followed) {
  setup(false);
  mkdir_p("s/sub");
  mkdir_p("elsewhere");
  mkdir_p("dst/s");
  write_file("s/sub/file", "a\n");
  ASSERT(symlink("../../elsewhere", path("dst/s/sub")) == 0);
  int rc;
  char *out = mpcp(&rc, false, "-r s dst");
  ASSERT_EQ(rc, 1);
  ASSERT(strstr(out, "cannot overwrite non-directory 'dst/s/sub' with "
                     "directory 's/sub'"));
  free(out);
  ASSERT(!exists("elsewhere/file"));
  /* at the top level too */
  mkdir_p("s2");
  mkdir_p("d2");
  write_file("s2/g", "g\n");
  ASSERT(symlink("../elsewhere", path("d2/s2")) == 0);
  out = mpcp(&rc, false, "-a s2 d2");
  ASSERT_EQ(rc, 1);
  ASSERT(strstr(out, "cannot overwrite non-directory"));
  free(out);
  ASSERT(!exists("elsewhere/g"));
  cleanup();
}

/* As a normal user, an xattr that cannot be set (user.* on a read-only file,
 * security.capability) never drops the file: cp -a copies it, exit 0. */
TEST(mpcp_xattr_failure_keeps_file) {
  if (!is_root())
    return;
  setup(true);
  ASSERT(chmod(work, 0755) == 0);
  mkdir_p("src");
  write_file("src/ro", "read only\n");
  write_file("src/cap", "capable\n");
  write_file("src/plain", "plain\n");
  if (setxattr(path("src/ro"), "user.k", "v", 1, 0) < 0) {
    printf("skipped: no user xattrs here\n");
    cleanup();
    return;
  }
  static const unsigned char cap[20] = {1, 0, 0, 2, 0, 0, 0, 0, 0, 0,
                                        0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  ASSERT(sh("chown -R 65534:65534 src && chmod 0444 src/ro && chmod 0755 "
            "'%s'",
            work) == 0);
  ASSERT(setxattr(path("src/cap"), "security.capability", cap, sizeof cap,
                  0) == 0);
  ASSERT(sh("mkdir dst && chown 65534:65534 dst") == 0);
  int rc;
  char *out = mpcp(&rc, false, AS_NOBODY "%s -a src/ro src/cap src/plain dst",
                   bin());
  ASSERT_EQ(rc, 0);
  free(out);
  assert_content("dst/ro", "read only\n");
  assert_content("dst/cap", "capable\n");
  assert_content("dst/plain", "plain\n");
  char v[8];
  ASSERT_EQ(getxattr(path("dst/ro"), "user.k", v, sizeof v), 1);
  struct stat st;
  ASSERT(stat(path("dst/ro"), &st) == 0);
  ASSERT_EQ(st.st_mode & 07777, 0444);
  cleanup();
}

/* Appends to or truncates `rel` once a temp file shows up in dst (the copy
 * is then held by MPCP_TEST_DELAY_MS). */
static void change_during_copy(const char *args, const char *rel, bool grow) {
  char src[PATH_MAX];
  snprintf(src, sizeof src, "%s", path(rel));
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "cd '%s' && exec %s %s", work, bin(), args);
  pid_t pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0) {
    int nul = open("/dev/null", O_WRONLY);
    dup2(nul, 1);
    setenv("MPCP_TEST_DELAY_MS", "300", 1);
    setenv("MPCP_CHUNK_MIN", "1048576", 1);
    setenv("MPCP_CHUNK_SIZE", "262144", 1);
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 500; i++) {
    int d = open(path("dst"), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int n = d >= 0 ? count_temps(d) : 0;
    if (d >= 0)
      close(d);
    if (n > 0)
      break;
    mpt_sleep_ms(10);
  }
  mpt_sleep_ms(50);
  if (grow) {
    int fd = open(src, O_WRONLY | O_APPEND);
    ASSERT(fd >= 0);
    ASSERT_EQ(write(fd, "appended tail\n", 14), 14);
    close(fd);
  } else {
    ASSERT(truncate(src, 100000) == 0);
  }
  int st;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  ASSERT(WIFEXITED(st));
  ASSERT_EQ(WEXITSTATUS(st), 0);
}

/* A source file that changes during its copy: the copy ends equal to the
 * file as it is afterwards (it is copied again), small and chunked. */
TEST(mpcp_source_changed_during_copy) {
  setup(false);
  size_t n = 3u << 20;
  char *buf = malloc(n);
  for (int round = 0; round < 4; round++) {
    bool big = round & 1, grow = round & 2;
    cleanup();
    setup(false);
    mkdir_p("src");
    mkdir_p("dst");
    fill(buf, big ? n : 200000, (unsigned)round + 7);
    write_at(AT_FDCWD, path("src/f"), buf, big ? n : 200000, 0644);
    change_during_copy("-a -j 2 src/f dst/f", "src/f", grow);
    size_t la, lb;
    char *a = slurp(path("src/f"), &la), *b = slurp(path("dst/f"), &lb);
    ASSERT(a && b);
    ASSERT_EQ(la, lb);
    ASSERT(memcmp(a, b, la) == 0);
    free(a);
    free(b);
  }
  free(buf);
  cleanup();
}

/* A worker killed while copying a chunk of a big file: the chunk is copied
 * again by another worker and the file is complete; when it dies every
 * time, the error names the file and no temp file is left. */
TEST(mpcp_worker_killed_mid_chunk) {
  setup(false);
  mkdir_p("src");
  size_t n = 2u << 20;
  char *buf = malloc(n);
  fill(buf, n, 3);
  write_at(AT_FDCWD, path("src/big"), buf, n, 0644);
  free(buf);
  int rc;
  run_env = "MPCP_CHUNK_MIN=1048576 MPCP_CHUNK_SIZE=262144 "
            "MPCP_TEST_CRASH_ONCE=big";
  char *out = mpcp(&rc, false, "-a -j 2 src dst");
  ASSERT_EQ(rc, 0);
  free(out);
  size_t la, lb;
  char *a = slurp(path("src/big"), &la), *b = slurp(path("dst/big"), &lb);
  ASSERT(a && b);
  ASSERT_EQ(la, lb);
  ASSERT(memcmp(a, b, la) == 0);
  free(a);
  free(b);
  run_env = "MPCP_CHUNK_MIN=1048576 MPCP_CHUNK_SIZE=262144 "
            "MPCP_TEST_CRASH=big";
  out = mpcp(&rc, false, "-a -j 2 src dst2");
  ASSERT_EQ(rc, 1);
  ASSERT(strstr(out, "'src/big'"));
  free(out);
  ASSERT(!exists("dst2/big"));
  int d = open(path("dst2"), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT(d >= 0);
  ASSERT_EQ(count_temps(d), 0);
  close(d);
  cleanup();
}

/* ---- as cp does ------------------------------------------------------------ */

/* A default ACL on the destination directory does not leak into -a copies:
 * they get the source's ACL or none. */
TEST(mpcp_default_acl_not_inherited) {
  setup(false);
  mkdir_p("src/sub");
  write_file("src/f", "f\n");
  write_file("src/sub/g", "g\n");
  ASSERT(chmod(path("src/f"), 0640) == 0);
  mkdir_p("dst");
  if (sh("setfacl -d -m u:nobody:rwx dst") != 0) {
    printf("skipped: no ACLs here\n");
    cleanup();
    return;
  }
  int rc;
  char *out = mpcp(&rc, false, "-a src/f src/sub dst");
  ASSERT_EQ(rc, 0);
  free(out);
  const char *names[] = {"dst/f", "dst/sub", "dst/sub/g"};
  for (int i = 0; i < 3; i++) {
    errno = 0;
    ASSERT(getxattr(path(names[i]), "system.posix_acl_access", NULL, 0) < 0);
    ASSERT_EQ(errno, ENODATA);
  }
  ASSERT(getxattr(path("dst/sub"), "system.posix_acl_default", NULL, 0) < 0);
  struct stat st;
  ASSERT(stat(path("dst/f"), &st) == 0);
  ASSERT_EQ(st.st_mode & 07777, 0640);
  cleanup();
}

/* As a normal user: a file owned by someone else keeps its mode (big and
 * small), and loses setuid/setgid since its owner could not be kept. */
TEST(mpcp_user_copy_modes) {
  if (!is_root())
    return;
  setup(true);
  ASSERT(chmod(work, 0755) == 0);
  mkdir_p("src");
  size_t n = 3u << 20;
  char *buf = malloc(n);
  fill(buf, n, 11);
  write_at(AT_FDCWD, path("src/big"), buf, n, 0644);
  free(buf);
  write_file("src/small", "s\n");
  write_file("src/suid", "#!/bin/sh\n");
  ASSERT(chmod(path("src/suid"), 04755) == 0);
  write_file("src/sgid", "#!/bin/sh\n");
  ASSERT(chmod(path("src/sgid"), 02755) == 0);
  ASSERT(sh("mkdir dst && chown 65534:65534 dst") == 0);
  int rc;
  run_env = "MPCP_CHUNK_MIN=1048576";
  char *out = mpcp(&rc, false, AS_NOBODY "%s -a -j 2 src/big src/small "
                   "src/suid src/sgid dst", bin());
  ASSERT_EQ(rc, 0);
  free(out);
  struct stat st;
  ASSERT(stat(path("dst/big"), &st) == 0);
  ASSERT_EQ(st.st_mode & 07777, 0644);
  ASSERT(stat(path("dst/small"), &st) == 0);
  ASSERT_EQ(st.st_mode & 07777, 0644);
  ASSERT(stat(path("dst/suid"), &st) == 0);
  ASSERT_EQ(st.st_uid, 65534);
  ASSERT_EQ(st.st_mode & 07777, 0755);
  ASSERT(stat(path("dst/sgid"), &st) == 0);
  ASSERT_EQ(st.st_mode & 07777, 0755);
  cleanup();
}

/* -r (no -a) does not carry setuid/setgid of a directory over, as cp. */
TEST(mpcp_recursive_drops_dir_setgid) {
  setup(false);
  mkdir_p("src/d");
  ASSERT(chmod(path("src/d"), 02755) == 0);
  int rc;
  char *out = mpcp(&rc, false, "-r src/d dst");
  ASSERT_EQ(rc, 0);
  free(out);
  struct stat st;
  ASSERT(stat(path("dst"), &st) == 0);
  ASSERT_EQ(st.st_mode & S_ISGID, 0);
  cleanup();
}

/* "link/" copies the directory a symlink points to; a symlink SRC without
 * -r copies its target. */
TEST(mpcp_symlink_src_followed_as_cp) {
  setup(false);
  mkdir_p("d");
  write_file("d/x", "x\n");
  ASSERT(symlink("d", path("ld")) == 0);
  write_file("f", "target\n");
  ASSERT(symlink("f", path("lf")) == 0);
  int rc;
  char *out = mpcp(&rc, false, "-a ld/ new");
  ASSERT_EQ(rc, 0);
  free(out);
  struct stat st;
  ASSERT(lstat(path("new"), &st) == 0);
  ASSERT(S_ISDIR(st.st_mode));
  assert_content("new/x", "x\n");
  out = mpcp(&rc, false, "lf copy");
  ASSERT_EQ(rc, 0);
  free(out);
  ASSERT(lstat(path("copy"), &st) == 0);
  ASSERT(S_ISREG(st.st_mode));
  assert_content("copy", "target\n");
  cleanup();
}

/* Existing destinations as cp: a symlink to a file is written through, a
 * dangling one refused, a read-only file refused to a normal user. */
TEST(mpcp_existing_dest_as_cp) {
  setup(true);
  ASSERT(chmod(work, 0755) == 0);
  write_file("new", "new\n");
  write_file("tgt", "old\n");
  ASSERT(symlink("tgt", path("dl")) == 0);
  int rc;
  char *out = mpcp(&rc, false, "new dl");
  ASSERT_EQ(rc, 0);
  free(out);
  struct stat st;
  ASSERT(lstat(path("dl"), &st) == 0);
  ASSERT(S_ISLNK(st.st_mode));
  assert_content("tgt", "new\n");
  ASSERT(symlink("nowhere", path("dang")) == 0);
  out = mpcp(&rc, false, "-a new dang");
  ASSERT_EQ(rc, 1);
  ASSERT(strstr(out, "not writing through dangling symlink 'dang'"));
  free(out);
  ASSERT(lstat(path("dang"), &st) == 0);
  ASSERT(S_ISLNK(st.st_mode));
  ASSERT(!exists("nowhere"));
  if (geteuid() == 0) {
    ASSERT(sh("mkdir u && echo keep > u/ro && chmod 444 u/ro && "
              "chown -R 65534:65534 u new") == 0);
    out = mpcp(&rc, false, AS_NOBODY "%s new u/ro", bin());
    ASSERT_EQ(rc, 1);
    ASSERT(strstr(out, "cannot create regular file 'u/ro': Permission "
                       "denied"));
    free(out);
    assert_content("u/ro", "keep\n");
  }
  cleanup();
}

/* -u / -n with hard links: a link whose first name was skipped links to the
 * destination entry kept, as cp -au. */
TEST(mpcp_update_keeps_hard_links) {
  setup(false);
  mkdir_p("src");
  write_file("src/a", "linked\n");
  ASSERT(link(path("src/a"), path("src/b")) == 0);
  int rc;
  char *out = mpcp(&rc, false, "-a src dst");
  ASSERT_EQ(rc, 0);
  free(out);
  /* keep the name the walk meets first (as for cp, the order decides) */
  DIR *dir = opendir(path("src"));
  ASSERT(dir);
  const char *second = NULL;
  struct dirent *de;
  while (!second && (de = readdir(dir)))
    if (!strcmp(de->d_name, "a"))
      second = "b";
    else if (!strcmp(de->d_name, "b"))
      second = "a";
  closedir(dir);
  ASSERT(second);
  char drop[16];
  snprintf(drop, sizeof drop, "dst/%s", second);
  ASSERT(unlink(path(drop)) == 0);
  const char *opts[] = {"-au", "-an"};
  for (int i = 0; i < 2; i++) {
    out = mpcp(&rc, false, "%s src/. dst", opts[i]);
    ASSERT_EQ(rc, 0);
    free(out);
    struct stat a, b;
    ASSERT(stat(path("dst/a"), &a) == 0);
    ASSERT(stat(path("dst/b"), &b) == 0);
    ASSERT_EQ(a.st_ino, b.st_ino);
    ASSERT(unlink(path(drop)) == 0);
  }
  cleanup();
}

/* Disk full: the error names the real file, once, never a temp name. */
TEST(mpcp_disk_full_names_file_once) {
  if (!is_root())
    return;
  setup(false);
  mkdir_p("src");
  mkdir_p("small");
  if (sh("mount -t tmpfs -o size=1m mpcp-test small") != 0) {
    printf("skipped: cannot mount tmpfs\n");
    cleanup();
    return;
  }
  size_t n = 4u << 20;
  char *buf = malloc(n);
  fill(buf, n, 5);
  write_at(AT_FDCWD, path("src/big"), buf, n, 0644);
  free(buf);
  int rc;
  run_env = "MPCP_CHUNK_MIN=1048576 MPCP_CHUNK_SIZE=262144";
  char *out = mpcp(&rc, false, "-j 2 src/big small/big");
  sh("umount small");
  ASSERT_EQ(rc, 1);
  ASSERT(strstr(out, "'small/big'"));
  ASSERT(!strstr(out, ".mpcp-"));
  const char *first = strstr(out, "small/big");
  ASSERT(!strstr(first + 1, "small/big"));
  free(out);
  run_env = "";
  cleanup();
}

/* The files count: entries copied, whatever failed in the walk. */
TEST(mpcp_json_files_count_with_walk_error) {
  if (!is_root())
    return;
  setup(true);
  ASSERT(chmod(work, 0755) == 0);
  mkdir_p("src/locked");
  for (int i = 0; i < 10; i++) {
    char rel[32];
    snprintf(rel, sizeof rel, "src/f%d", i);
    write_file(rel, "x");
  }
  write_file("src/locked/y", "y");
  ASSERT(sh("chown -R 65534:65534 src && chmod 000 src/locked && mkdir dst "
            "&& chown 65534 dst") == 0);
  int rc;
  char *out =
      mpcp(&rc, true, AS_NOBODY "%s -r --json src dst/c", bin());
  ASSERT_EQ(rc, 1);
  ASSERT_EQ(json_field(out, "files"), 10);
  free(out);
  cleanup();
}

/* -v: names quoted as cp does (control characters escaped), and lines for
 * directories and hard links. */
TEST(mpcp_verbose_lines_as_cp) {
  setup(false);
  mkdir_p("src/sub");
  write_file("src/a\nb", "x");
  write_file("src/sub/f", "f");
  ASSERT(link(path("src/sub/f"), path("src/hl")) == 0);
  int rc;
  char *out = mpcp(&rc, true, "-av src dst");
  ASSERT_EQ(rc, 0);
  ASSERT(strstr(out, "'src/a'$'\\n''b' -> 'dst/a'$'\\n''b'\n"));
  ASSERT(strstr(out, "'src/sub' -> 'dst/sub'\n"));
  ASSERT(strstr(out, "'src' -> 'dst'\n"));
  ASSERT(strstr(out, "'src/hl' -> 'dst/hl'\n") ||
         strstr(out, "'src/sub/f' -> 'dst/sub/f'\n"));
  int lines = 0;
  for (char *p = out; *p; p++)
    lines += *p == '\n';
  ASSERT_EQ(lines, 5);
  free(out);
  cleanup();
}

/* --exclude 'cache/' matches directories named cache only. */
TEST(mpcp_exclude_dir_pattern) {
  setup(false);
  mkdir_p("src/cache");
  mkdir_p("src/sub/cache");
  write_file("src/cache/x", "x");
  write_file("src/sub/cache/y", "y");
  write_file("src/sub/keep", "k");
  mkdir_p("src/other");
  write_file("src/other/cache", "a file named cache");
  int rc;
  char *out = mpcp(&rc, false, "-r --exclude 'cache/' src dst");
  ASSERT_EQ(rc, 0);
  free(out);
  ASSERT(!exists("dst/cache"));
  ASSERT(!exists("dst/sub/cache"));
  assert_content("dst/sub/keep", "k");
  assert_content("dst/other/cache", "a file named cache");
  cleanup();
}

/* ---- --resume -------------------------------------------------------------- */

static ino_t ino_of(const char *rel) {
  struct stat st;
  ASSERT(lstat(path(rel), &st) == 0);
  return st.st_ino;
}

/* --resume copies what is missing or differs (type, size, mtime), fixes the
 * metadata of the rest in place, removes a dead run's temp files; with
 * --checksum it compares contents; a second run changes nothing. */
TEST(mpcp_resume_copies_only_differences) {
  setup(false);
  mkdir_p("src/sub");
  write_file("src/same", "unchanged\n");
  write_file("src/newer", "version 1\n");
  write_file("src/sub/mode", "mode\n");
  write_file("src/sub/gone", "gone\n");
  write_file("src/sub/quiet", "original\n");
  ASSERT(symlink("same", path("src/ln")) == 0);
  ASSERT(link(path("src/same"), path("src/sub/hl")) == 0);
  int rc;
  char *out = mpcp(&rc, false, "-a src dst");
  ASSERT_EQ(rc, 0);
  free(out);
  ino_t same = ino_of("dst/same"), mode = ino_of("dst/sub/mode");
  write_file("src/newer", "version 2\n"); /* same size, new mtime */
  ASSERT(chmod(path("dst/sub/mode"), 0600) == 0);
  ASSERT(unlink(path("dst/sub/gone")) == 0);
  /* same size and mtime, other bytes: only --checksum sees it */
  ASSERT(sh("printf 'tampered\\n' > dst/sub/quiet && "
            "touch -r src/sub/quiet dst/sub/quiet") == 0);
  write_file("dst/sub/.mpcp-999999999-1-1", "leftover");
  out = mpcp(&rc, true, "-a --resume --json src/. dst");
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(json_field(out, "files"), 2); /* newer, gone */
  free(out);
  assert_content("dst/newer", "version 2\n");
  assert_content("dst/sub/gone", "gone\n");
  assert_content("dst/sub/quiet", "tampered\n");
  ASSERT(!exists("dst/sub/.mpcp-999999999-1-1"));
  ASSERT_EQ(ino_of("dst/same"), same);
  ASSERT_EQ(ino_of("dst/sub/mode"), mode);
  ASSERT_EQ(ino_of("dst/sub/hl"), same);
  struct stat st;
  ASSERT(stat(path("dst/sub/mode"), &st) == 0);
  ASSERT_EQ(st.st_mode & 07777, 0644);
  out = mpcp(&rc, true, "-a --checksum --json src/. dst");
  ASSERT_EQ(rc, 0);
  free(out);
  assert_content("dst/sub/quiet", "original\n");
  ASSERT_EQ(ino_of("dst/same"), same);
  ASSERT(compare_trees("src", "dst", true) > 0);
  /* again: nothing to do */
  out = mpcp(&rc, true, "-a --resume --json src/. dst");
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(json_field(out, "files"), 0);
  free(out);
  cleanup();
}

/* A run killed outright (SIGKILL to its whole group: nothing cleans up),
 * then --resume: the tree is complete and no temp file is left. */
TEST(mpcp_resume_after_kill) {
  setup(false);
  mkdir_p("src/d1");
  mkdir_p("src/d2");
  char *buf = malloc(70000);
  for (int i = 0; i < 40; i++) {
    char rel[64];
    snprintf(rel, sizeof rel, "src/d%d/f%02d", i % 2 + 1, i);
    fill(buf, 70000, (unsigned)i);
    write_at(AT_FDCWD, path(rel), buf, 70000, 0644);
  }
  free(buf);
  char src[PATH_MAX], dst[PATH_MAX];
  snprintf(src, sizeof src, "%s", path("src"));
  snprintf(dst, sizeof dst, "%s", path("dst"));
  pid_t pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0) {
    setpgid(0, 0);
    int nul = open("/dev/null", O_WRONLY);
    dup2(nul, 1);
    dup2(nul, 2);
    setenv("MPCP_TEST_DELAY_MS", "40", 1);
    execl(bin(), "mpcp", "-a", "-j", "2", src, dst, (char *)NULL);
    _exit(127);
  }
  setpgid(pid, pid);
  int temps = 0;
  for (int i = 0; i < 300 && temps == 0; i++) {
    mpt_sleep_ms(20);
    int d = open(path("dst"), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d >= 0) {
      temps = count_temps(d);
      close(d);
    }
  }
  ASSERT(temps > 0);
  ASSERT(kill(-pid, SIGKILL) == 0);
  int st;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  /* the killed group's workers, if they were reparented here */
  while (waitpid(-1, &st, WNOHANG) > 0)
    ;
  mpt_sleep_ms(100);
  while (waitpid(-1, &st, WNOHANG) > 0)
    ;
  int d = open(path("dst"), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT(count_temps(d) > 0);
  int rc;
  char *out = mpcp(&rc, false, "-a --resume src/. dst");
  ASSERT_EQ(rc, 0);
  free(out);
  ASSERT_EQ(count_temps(d), 0);
  close(d);
  ASSERT(compare_trees("src", "dst", true) > 0);
  cleanup();
}

/* On a 40-column terminal every progress line fits and ends on a whole
 * field (run under script(1) for a terminal). */
TEST(mpcp_progress_narrow_terminal) {
  setup(false);
  mkdir_p("src");
  for (int i = 0; i < 60; i++) {
    char rel[32];
    snprintf(rel, sizeof rel, "src/f%02d", i);
    write_file(rel, "bytes");
  }
  char cmd[PATH_MAX * 2];
  snprintf(cmd, sizeof cmd,
           "cd '%s' && MPCP_TEST_DELAY_MS=10 script -qec \"stty cols 40; "
           "%s -a -j 2 --progress src dst\" /dev/null",
           work, bin());
  int st;
  char *out = mpt_run_cmd(cmd, &st);
  if (!WIFEXITED(st) || WEXITSTATUS(st) == 127) {
    printf("skipped: no script(1)\n");
    free(out);
    cleanup();
    return;
  }
  ASSERT_EQ(WEXITSTATUS(st), 0);
  int draws = 0;
  for (char *save = NULL, *seg = strtok_r(out, "\r\n", &save); seg;
       seg = strtok_r(NULL, "\r\n", &save)) {
    char *esc = strstr(seg, "\033[K");
    if (!esc || esc == seg)
      continue;
    *esc = '\0';
    size_t len = strlen(seg);
    ASSERT(len <= 39);
    /* whole fields only: one of the layouts, never one cut short */
    int pct, used = 0;
    unsigned long long a, b;
    ASSERT(sscanf(seg, "%d%%", &pct) == 1);
    const char *eta = strstr(seg, "ETA ");
    if (eta) {
      ASSERT(strlen(eta) >= 8); /* "ETA 0:00" or "ETA --:--" */
    } else if (strstr(seg, " files ")) {
      ASSERT(seg[len - 1] == 'B' || seg[len - 1] == '+');
    } else if (strchr(seg, '/')) {
      ASSERT(sscanf(seg, "%d%% %llu/%llu%n", &pct, &a, &b, &used) == 3);
      ASSERT(seg[used] == '\0' || !strcmp(seg + used, "+"));
    } else {
      ASSERT(sscanf(seg, "%d%%%n", &pct, &used) == 1 && seg[used] == '\0');
    }
    draws++;
  }
  ASSERT(draws >= 1);
  free(out);
  cleanup();
}

/* As root, a chown the filesystem refuses (here: a user namespace where the
 * owner is not mapped) keeps the file: cp's error and exit status 1, mode
 * restricted to the owner as cp leaves it. */
TEST(mpcp_root_chown_failure_keeps_file) {
  if (!is_root())
    return;
  setup(false);
  mkdir_p("src");
  mkdir_p("dst");
  write_file("src/f", "owned by nobody\n");
  ASSERT(chown(path("src/f"), 65534, 65534) == 0);
  if (sh("unshare -Ur true") != 0) {
    printf("skipped: no user namespaces\n");
    cleanup();
    return;
  }
  int rc;
  char *out = mpcp(&rc, false, "--version >/dev/null && unshare -Ur %s -a "
                   "src/f dst/", bin());
  ASSERT_EQ(rc, 1);
  ASSERT(strstr(out, "failed to preserve ownership for 'dst/f'"));
  free(out);
  assert_content("dst/f", "owned by nobody\n");
  struct stat st;
  ASSERT(stat(path("dst/f"), &st) == 0);
  ASSERT_EQ(st.st_mode & 07777, 0600);
  cleanup();
}

/* Messages about directories that cannot be read, and about destination
 * entries that cannot be looked at, are worded as cp 9.1 words them
 * ("cannot access" an unreadable directory, "cannot stat" a destination
 * entry in a directory that cannot be searched). Run as nobody, since root
 * reads everything. */
TEST(mpcp_messages_as_cp) {
  if (!is_root())
    return;
  setup(true);
  ASSERT(chmod(work, 0755) == 0);
  mkdir_p("s/nd");
  mkdir_p("s/ok");
  mkdir_p("top");
  write_file("s/nd/x", "x");
  write_file("s/ok/z", "z");
  mkdir_p("d/ok");
  ASSERT(sh("chown -R 65534:65534 s top d && chmod 000 s/nd top d/ok") == 0);
  int rc;
  char *out = mpcp(&rc, false, AS_NOBODY "%s -r s/. d", bin());
  ASSERT_EQ(rc, 1);
  ASSERT(strstr(out, "mpcp: cannot access 's/./nd': Permission denied\n"));
  ASSERT(strstr(out, "mpcp: cannot stat 'd/ok/z': Permission denied\n"));
  ASSERT(!strstr(out, "cannot open directory"));
  ASSERT(!strstr(out, "cannot create regular file"));
  free(out);
  out = mpcp(&rc, false, AS_NOBODY "%s -r top d/t", bin());
  ASSERT_EQ(rc, 1);
  ASSERT(strstr(out, "mpcp: cannot access 'top': Permission denied\n"));
  free(out);
  cleanup();
}

/* Names that are not printable text (control characters, bytes that are
 * not UTF-8) are quoted for the shell in -v lines and in messages, as cp
 * does: 'a'$'\n''b', 'x'$'\377''y'; printable UTF-8 stays as it is. */
TEST(mpcp_names_quoted_in_messages) {
  setup(true);
  ASSERT(chmod(work, 0755) == 0);
  mkdir_p("s");
  write_file("s/x\377y", "1");
  write_file("s/\xc3\xa9t\xc3\xa9", "2");
  write_file("s/t\tb", "3");
  int rc;
  run_env = "LC_ALL=C.UTF-8";
  char *out = mpcp(&rc, true, "-rv s d");
  ASSERT_EQ(rc, 0);
  ASSERT(strstr(out, "'s/x'$'\\377''y' -> 'd/x'$'\\377''y'\n"));
  ASSERT(strstr(out, "'s/\xc3\xa9t\xc3\xa9' -> 'd/\xc3\xa9t\xc3\xa9'\n"));
  ASSERT(strstr(out, "'s/t'$'\\t''b' -> 'd/t'$'\\t''b'\n"));
  free(out);
  /* In the C locale every byte above 0x7f is escaped, as cp does there. */
  run_env = "LC_ALL=C";
  out = mpcp(&rc, true, "-rv s dc");
  ASSERT_EQ(rc, 0);
  ASSERT(strstr(out, "'s/'$'\\303\\251''t'$'\\303\\251' -> "));
  free(out);
  /* A message names the entry the same way. */
  mkdir_p("s2/a\nb");
  write_file("s2/a\nb/f", "f");
  if (geteuid() == 0) {
    ASSERT(chmod(work, 0777) == 0);
    ASSERT(sh("chown -R 65534:65534 s2 && chmod 000 's2/a\nb'") == 0);
    out = mpcp(&rc, false, AS_NOBODY "%s -r s2 d2", bin());
  } else {
    ASSERT(chmod(path("s2/a\nb"), 0) == 0);
    out = mpcp(&rc, false, "-r s2 d2");
  }
  ASSERT_EQ(rc, 1);
  ASSERT(strstr(out, "mpcp: cannot access 's2/a'$'\\n''b': Permission "
                     "denied\n"));
  free(out);
  /* A file in the destination's way, named with a byte that is not UTF-8. */
  mkdir_p("s3");
  write_file("s3/q\377", "new");
  mkdir_p("d3/q\377");
  out = mpcp(&rc, false, "-r s3/. d3");
  ASSERT_EQ(rc, 1);
  ASSERT(strstr(out, "'d3/q'$'\\377'"));
  ASSERT(!strstr(out, "q\377"));
  free(out);
  cleanup();
}

/* One file is copied by mpcp itself (no worker processes): a signal in the
 * middle still leaves neither a temp file nor a partial file under the final
 * name, and the exit status is 128 + the signal. */
static void single_file_interrupted(int sig) {
  setup(false);
  mkdir_p("dst");
  char *buf = malloc(1 << 20);
  fill(buf, 1 << 20, 7);
  write_at(AT_FDCWD, path("big"), buf, 1 << 20, 0644);
  free(buf);
  char src[PATH_MAX], dst[PATH_MAX];
  snprintf(src, sizeof src, "%s", path("big"));
  snprintf(dst, sizeof dst, "%s", path("dst"));
  char *argv[] = {"mpcp", "-a", src, dst, NULL};
  char *envp[] = {"MPCP_TEST_DELAY_MS=5000", NULL}; /* held before its name */
  posix_spawn_file_actions_t fa;
  ASSERT(posix_spawn_file_actions_init(&fa) == 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  ASSERT(posix_spawn(&pid, bin(), &fa, NULL, argv, envp) == 0);
  posix_spawn_file_actions_destroy(&fa);
  int d = open(path("dst"), O_PATH | O_DIRECTORY | O_CLOEXEC);
  ASSERT(d >= 0);
  for (int i = 0; i < 500 && count_temps(d) == 0; i++)
    mpt_sleep_ms(10);
  ASSERT_EQ(count_temps(d), 1);
  ASSERT(kill(pid, sig) == 0);
  int st;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  ASSERT(WIFEXITED(st));
  ASSERT_EQ(WEXITSTATUS(st), 128 + sig);
  ASSERT_EQ(count_temps(d), 0);
  ASSERT(!exists("dst/big"));
  close(d);
  cleanup();
}

TEST(mpcp_single_file_sigint) {
  single_file_interrupted(SIGINT);
}

TEST(mpcp_single_file_sigterm) {
  single_file_interrupted(SIGTERM);
}

/* A single file copied by mpcp itself: content, -a metadata, -v line and
 * --verify as with workers. */
TEST(mpcp_single_file_inline) {
  setup(false);
  char *buf = malloc(3 << 20);
  fill(buf, 3 << 20, 9);
  write_at(AT_FDCWD, path("f"), buf, 3 << 20, 0640);
  free(buf);
  struct timespec ts[2] = {{1000000000, 5}, {1000000000, 123456789}};
  ASSERT(utimensat(AT_FDCWD, path("f"), ts, 0) == 0);
  int rc;
  char *out = mpcp(&rc, false, "-av --verify --json f g");
  ASSERT_EQ(rc, 0);
  ASSERT(strstr(out, "'f' -> 'g'\n"));
  ASSERT_EQ(json_field(out, "files"), 1);
  free(out);
  int a = open(path("f"), O_RDONLY | O_CLOEXEC),
      b = open(path("g"), O_RDONLY | O_CLOEXEC);
  ASSERT(a >= 0 && b >= 0);
  ASSERT(same_bytes(a, b));
  close(a);
  close(b);
  struct stat st;
  ASSERT(stat(path("g"), &st) == 0);
  ASSERT_EQ(st.st_mode & 07777, 0640);
  ASSERT_EQ(st.st_mtim.tv_nsec, 123456789);
  cleanup();
}

/* Write-behind (a helper thread flushing a big file while it is copied),
 * here with a 1 MiB step so the 3 MiB and the sparse 8 MiB files of the
 * tree take it: by a worker (-j 1, whole files) and by mpcp itself (one
 * file; 20 MiB, copied in 8 MiB pieces, so flushes run while it is
 * copied), the copies are exact and the sparse file stays sparse. */
TEST(mpcp_writebehind_whole_files) {
  setup(false);
  make_all_cases("src");
  int rc;
  run_env = "MPCP_WRITEBEHIND=1";
  char *out = mpcp(&rc, false, "-a -j 1 --no-progress src dst");
  if (rc != 0)
    mpt_fail(__FILE__, __LINE__, "mpcp failed (%d): %s", rc, out);
  free(out);
  int n = compare_trees("src", "dst", true);
  if (n < 480)
    mpt_fail(__FILE__, __LINE__, "only %d entries compared", n);
  run_env = "MPCP_WRITEBEHIND=1";
  out = mpcp(&rc, false, "-a src/sparse one");
  ASSERT_EQ(rc, 0);
  free(out);
  size_t hn = 20u << 20;
  char *hb = malloc(hn);
  ASSERT(hb);
  fill(hb, hn, 11);
  write_at(AT_FDCWD, path("huge"), hb, hn, 0644);
  free(hb);
  run_env = "MPCP_WRITEBEHIND=1";
  out = mpcp(&rc, false, "-a huge two");
  ASSERT_EQ(rc, 0);
  free(out);
  const char *pairs[][2] = {{"src/sparse", "one"}, {"huge", "two"}};
  for (int i = 0; i < 2; i++) {
    int a = open(path(pairs[i][0]), O_RDONLY | O_CLOEXEC),
        b = open(path(pairs[i][1]), O_RDONLY | O_CLOEXEC);
    ASSERT(a >= 0 && b >= 0);
    ASSERT(same_bytes(a, b));
    struct stat sa, sb;
    ASSERT(fstat(a, &sa) == 0 && fstat(b, &sb) == 0);
    ASSERT_EQ(sa.st_size, sb.st_size);
    ASSERT(sb.st_blocks <= sa.st_blocks + 64);
    close(a);
    close(b);
  }
  int d = open(path("."), O_PATH | O_DIRECTORY | O_CLOEXEC);
  ASSERT_EQ(count_temps(d), 0);
  close(d);
  cleanup();
}

/* --resume removes an interrupted run's temp files in every directory,
 * with files (swept by a worker with the directory's first batch) or
 * without (swept by the walk), and never the current run's own. */
TEST(mpcp_resume_sweeps_every_directory) {
  setup(false);
  mkdir_p("src/only_dirs/sub");
  write_file("src/only_dirs/sub/f", "f\n");
  mkdir_p("src/many");
  for (int i = 0; i < 300; i++) { /* several batches in one directory */
    char rel[64];
    snprintf(rel, sizeof rel, "src/many/f%03d", i);
    write_file(rel, "x\n");
  }
  int rc;
  char *out = mpcp(&rc, false, "-a src dst");
  ASSERT_EQ(rc, 0);
  free(out);
  write_file("dst/only_dirs/.mpcp-999999999-1-1", "leftover");
  write_file("dst/many/.mpcp-999999999-1-2", "leftover");
  write_file("dst/.mpcp-999999999-1-3", "leftover");
  ASSERT(unlink(path("dst/many/f150")) == 0);
  run_env = "MPCP_BATCH_FILES=16";
  out = mpcp(&rc, true, "-a --resume --json src/. dst");
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(json_field(out, "files"), 1);
  free(out);
  ASSERT(!exists("dst/only_dirs/.mpcp-999999999-1-1"));
  ASSERT(!exists("dst/many/.mpcp-999999999-1-2"));
  ASSERT(!exists("dst/.mpcp-999999999-1-3"));
  assert_content("dst/many/f150", "x\n");
  int d = open(path("dst"), O_PATH | O_DIRECTORY | O_CLOEXEC);
  ASSERT_EQ(count_temps(d), 0);
  close(d);
  cleanup();
}
