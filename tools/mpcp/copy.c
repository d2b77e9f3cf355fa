/* The worker side: copies one batch of entries (or one chunk of a big file,
 * or verifies a batch) relative to the inherited root fds.
 *
 * A regular file is written under a temporary name in its destination
 * directory (".mpcp-<parent pid>-<pid>-<n>"), its metadata set, and renamed
 * over its final name only when complete, so a reader (or a crash) never
 * sees a partial file under the final name. A worker stopped by SIGTERM
 * removes its temp file, and the parent sweeps the directories of the run
 * for its prefix after an interrupt. With MPCP_TMPFILE the file is an
 * unnamed O_TMPFILE inode linked in at the end instead: nothing to clean up
 * after a kill, but on ext4 each such inode goes through the orphan list
 * (a global lock and a journal write), which measured about 1.5x slower for
 * small files than create + rename. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "mpcp.h"

#define PIECE (8u << 20)
#define XBUF (64u << 10)

static char *iobuf;
static char *xnames, *xval;
static volatile sig_atomic_t cur_tmp_fd = -1;
static char cur_tmp[128];

/* ThreadSanitizer cannot follow a thread started in a process forked from a
 * multi-threaded one (a pool worker; the parent runs the pool's callback
 * thread): TSan builds copy without the write-behind helper there. mpcp's own inline
 * copy of a single file still runs it under TSan. */
#if defined(__SANITIZE_THREAD__)
#define MPCP_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MPCP_TSAN 1
#endif
#endif
static bool wb_no_thread;

/* Pending progress, sent at most every 100 ms and at the end of each task:
 * the channel never carries a message per file. */
static struct {
  uint64_t files, bytes, mismatches, failed, same, same_bytes;
  double last;
  char text[MPCP_MSG_MAX - sizeof(mpcp_msg_t) - 64];
  size_t text_len;
} acc;
static bool quiet_bytes; /* while re-copying a verify mismatch */

/* Test hooks (environment, read once): MPCP_TEST_DELAY_MS holds every file
 * that long before it gets its final name, so a test can interrupt a copy in
 * the middle; MPCP_TEST_CORRUPT names a file whose first copy gets one byte
 * flipped, so --verify has something to find; MPCP_TEST_CRASH names a file
 * whose worker is killed (SIGKILL) while copying it (MPCP_TEST_CRASH_ONCE:
 * only on the first attempt, so the retry succeeds). */
static int test_delay_ms = -1;
static const char *test_corrupt, *test_crash, *test_crash_once;

static void test_hooks_init(void) {
  if (test_delay_ms >= 0)
    return;
  const char *d = getenv("MPCP_TEST_DELAY_MS");
  test_delay_ms = d ? atoi(d) : 0;
  test_corrupt = getenv("MPCP_TEST_CORRUPT");
  test_crash = getenv("MPCP_TEST_CRASH");
  test_crash_once = getenv("MPCP_TEST_CRASH_ONCE");
}

/* MPCP_TEST_CRASH kills every attempt at the file; MPCP_TEST_CRASH_ONCE only
 * the first (not a retry after a worker died). */
static void crash_hook(const char *name, uint32_t task_flags) {
  if ((test_crash && !strcmp(name, test_crash)) ||
      (test_crash_once && !(task_flags & MPCP_TF_RETRY) &&
       !strcmp(name, test_crash_once)))
    raise(SIGKILL);
}

static void on_term(int sig) {
  if (cur_tmp_fd >= 0 && cur_tmp[0])
    unlinkat(cur_tmp_fd, cur_tmp, 0);
  signal(sig, SIG_DFL);
  raise(sig);
}

void mpcp_worker_init(void) {
  mpcp_self_pid = getpid();
#ifdef MPCP_TSAN
  wb_no_thread = true;
#endif
  /* The parent decides what an interrupt means (it stops us with SIGTERM);
   * the terminal's SIGINT to the whole group must not kill workers mid-file. */
  signal(SIGINT, SIG_IGN);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  sigaction(SIGQUIT, &sa, NULL);
}

static void flush_text(void) {
  if (acc.text_len) {
    mpcp_msg_t m = {.kind = MPCP_M_TEXT};
    mpcp_send(&m, acc.text, acc.text_len);
    acc.text_len = 0;
  }
}

static void flush_progress(uint32_t kind, uint64_t id) {
  if (kind == MPCP_M_PROGRESS && !acc.files && !acc.bytes)
    return;
  mpcp_msg_t m = {.kind = kind,
                  .id = id,
                  .errors = (uint32_t)acc.failed,
                  .files = acc.files,
                  .bytes = acc.bytes,
                  .mismatches = acc.mismatches,
                  .same = acc.same,
                  .same_bytes = acc.same_bytes};
  mpcp_send(&m, NULL, 0);
  acc.files = acc.bytes = acc.mismatches = acc.failed = 0;
  acc.same = acc.same_bytes = 0;
  acc.last = mpcp_now();
}

static void wb_tick(uint64_t bytes);

static void note(uint64_t files, uint64_t bytes) {
  if (bytes)
    wb_tick(bytes);
  acc.files += files;
  if (!quiet_bytes)
    acc.bytes += bytes;
  double now = mpcp_now();
  if (now - acc.last >= 0.1) {
    flush_text();
    flush_progress(MPCP_M_PROGRESS, 0);
  }
}

/* One entry that failed: it counts as finished, and as failed. */
static void note_failed(void) {
  acc.failed++;
  note(1, 0);
}

static void vsay(bool error, const char *fmt, va_list ap) {
  char buf[1024];
  int n = mpcp_vformat(buf, sizeof buf, fmt, ap);
  flush_text();
  mpcp_msg_t m = {.kind = MPCP_M_ERROR, .errors = error ? 1 : 0};
  mpcp_send(&m, buf, (size_t)n);
}

/* An error line for the parent (counts toward exit status 1). */
static void werr(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void werr(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsay(true, fmt, ap);
  va_end(ap);
}

/* mpcp_say_fn of the workers. */
static void wsay(bool error, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void wsay(bool error, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsay(error, fmt, ap);
  va_end(ap);
}

static void verbose_line(const char *src, const char *dst) {
  char *line = mpcp_verbose_text(src, dst);
  if (!line)
    return;
  size_t n = strlen(line);
  if (n > sizeof acc.text)
    n = sizeof acc.text;
  if (acc.text_len + n > sizeof acc.text)
    flush_text();
  memcpy(acc.text + acc.text_len, line, n);
  acc.text_len += n;
  free(line);
}

/* ---- data ---------------------------------------------------------------- */

static int rw_range(int sfd, int dfd, uint64_t off, uint64_t len, bool whole,
                    uint64_t *copied) {
  if (!iobuf && !(iobuf = malloc(1u << 20)))
    return -ENOMEM;
  uint64_t done = 0;
  while (whole || done < len) {
    size_t want = 1u << 20;
    if (!whole && len - done < want)
      want = (size_t)(len - done);
    ssize_t n = pread(sfd, iobuf, want, (off_t)(off + done));
    if (n < 0) {
      if (errno == EINTR && !mpcp_stop_sig)
        continue;
      return -errno;
    }
    if (n == 0)
      break;
    for (ssize_t w = 0; w < n;) {
      ssize_t k = pwrite(dfd, iobuf + w, (size_t)(n - w),
                         (off_t)(off + done + (uint64_t)w));
      if (k < 0) {
        if (errno == EINTR)
          continue;
        return -errno - 100000;
      }
      w += k;
    }
    done += (uint64_t)n;
    note(0, (uint64_t)n);
    if (mpcp_stop_sig)
      return -EINTR; /* running inline in the parent: interrupted */
  }
  *copied += done;
  return 0;
}

/* sendfile from the source's page cache straight into the destination's:
 * one copy of the data in the kernel where pread/pwrite make two (across
 * filesystems, where copy_file_range is refused). The destination fd's
 * offset is used, so each worker opens its own. Falls back to rw_range
 * where sendfile is refused. */
static int send_range(mpcp_root_t *r, int sfd, int dfd, uint64_t off,
                      uint64_t len, bool whole, uint64_t *copied) {
  if ((r->no_clone & 4) || lseek(dfd, (off_t)off, SEEK_SET) < 0) {
    r->no_clone |= 4;
    return rw_range(sfd, dfd, off, len, whole, copied);
  }
  uint64_t done = 0;
  while (whole || done < len) {
    size_t want = PIECE;
    if (!whole && len - done < want)
      want = (size_t)(len - done);
    off_t in = (off_t)(off + done);
    ssize_t n = sendfile(dfd, sfd, &in, want);
    if (n < 0) {
      if (errno == EINTR && !mpcp_stop_sig)
        continue;
      if (done == 0 && (errno == EINVAL || errno == ENOSYS ||
                        errno == EOPNOTSUPP || errno == ESPIPE)) {
        r->no_clone |= 4;
        return rw_range(sfd, dfd, off, len, whole, copied);
      }
      int e = errno;
      char probe;
      if (pread(sfd, &probe, 1, (off_t)(off + done)) < 0)
        return -errno;
      return -e - 100000;
    }
    if (n == 0)
      break;
    done += (uint64_t)n;
    note(0, (uint64_t)n);
    if (mpcp_stop_sig)
      return -EINTR; /* running inline in the parent: interrupted */
  }
  *copied += done;
  return 0;
}

/* Copies [off, off+len) (or to EOF when whole) with copy_file_range, which
 * lets the filesystem share or offload the copy; falls back to pread/pwrite
 * where it is refused. A read error is returned as -errno, a write error as
 * -errno - 100000 so the message can name the right side. */
static int copy_range(mpcp_root_t *r, int sfd, int dfd, uint64_t off,
                      uint64_t len, bool whole, uint64_t *copied) {
  uint64_t done = 0;
  if (r->no_clone & 2)
    return send_range(r, sfd, dfd, off, len, whole, copied);
  for (;;) {
    size_t want;
    if (done < len) {
      uint64_t left = len - done;
      want = left > PIECE ? PIECE : (size_t)left + (whole ? 1 : 0);
    } else if (whole) {
      want = PIECE;
    } else {
      break;
    }
    loff_t in = (loff_t)(off + done), out = (loff_t)(off + done);
    ssize_t n = copy_file_range(sfd, &in, dfd, &out, want, 0);
    if (n < 0) {
      if (errno == EINTR && !mpcp_stop_sig)
        continue;
      if (done == 0 &&
          (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
           errno == EOPNOTSUPP || errno == EBADF || errno == ETXTBSY)) {
        r->no_clone |= 2;
        return send_range(r, sfd, dfd, off, len, whole, copied);
      }
      int e = errno;
      /* copy_file_range does not say which side failed: ask with a read. */
      char probe;
      if (pread(sfd, &probe, 1, in) < 0)
        return -errno;
      return -e - 100000;
    }
    if (n == 0)
      break;
    done += (uint64_t)n;
    note(0, (uint64_t)n);
    if (mpcp_stop_sig)
      return -EINTR;
    if (whole && done >= len && (size_t)n < want)
      break;
  }
  *copied += done;
  return 0;
}

/* ---- write-behind ----------------------------------------------------------
 * A big file copied whole is flushed while it is copied: a helper thread
 * calls fdatasync on the destination each time another mpcp_wb_step bytes
 * are in, so the disk writes one part while the next is being copied
 * instead of everything after the copy (a copy counts as done when its data
 * is on disk). The copy never waits for the helper, except at the end for a
 * flush already under way; what was copied after the last flush is left to
 * the kernel's write-back, as with any other file. A flush error is a write
 * error of the file (the helper's fdatasync would otherwise consume it). */
uint64_t mpcp_wb_step = MPCP_WB_STEP;

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t th;
  int fd;
  bool stop;
  int err;           /* the first fdatasync error (errno), else 0 */
  uint64_t progress; /* bytes copied, as told to the helper (under mu) */
} wb_t;

static wb_t *wb_cur; /* the copying thread's write-behind, or NULL */
static uint64_t wb_done, wb_told;

static void *wb_main(void *arg) {
  wb_t *w = arg;
  uint64_t synced = 0;
  pthread_mutex_lock(&w->mu);
  for (;;) {
    while (!w->stop && w->progress - synced < mpcp_wb_step)
      pthread_cond_wait(&w->cv, &w->mu);
    if (w->stop)
      break;
    uint64_t upto = w->progress;
    pthread_mutex_unlock(&w->mu);
    int rc = fdatasync(w->fd), e = errno;
    pthread_mutex_lock(&w->mu);
    if (rc < 0) {
      /* A filesystem without fsync is not an error: no more flushes. */
      if (e != EINVAL && e != ENOSYS && e != EOPNOTSUPP && e != EROFS)
        w->err = e;
      break;
    }
    synced = upto;
  }
  pthread_mutex_unlock(&w->mu);
  return NULL;
}

/* Called with every piece copied: wakes the helper once a step is in. */
static void wb_tick(uint64_t bytes) {
  if (!wb_cur)
    return;
  wb_done += bytes;
  if (wb_done - wb_told < mpcp_wb_step)
    return;
  wb_told = wb_done;
  pthread_mutex_lock(&wb_cur->mu);
  wb_cur->progress = wb_done;
  pthread_cond_signal(&wb_cur->cv);
  pthread_mutex_unlock(&wb_cur->mu);
}

/* Starts the helper for dfd; false (copy without it) if it cannot start.
 * The helper takes no signals: they stay with the copying thread. */
static bool wb_start(wb_t *w, int dfd) {
  memset(w, 0, sizeof *w);
  w->fd = dfd;
  if (pthread_mutex_init(&w->mu, NULL))
    return false;
  if (pthread_cond_init(&w->cv, NULL)) {
    pthread_mutex_destroy(&w->mu);
    return false;
  }
  pthread_attr_t at;
  sigset_t all, old;
  int rc = pthread_attr_init(&at);
  if (rc == 0) {
    pthread_attr_setstacksize(&at, 64u << 10);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&w->th, &at, wb_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&at);
  }
  if (rc) {
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    return false;
  }
  wb_done = wb_told = 0;
  wb_cur = w;
  return true;
}

/* Stops and joins the helper; returns its flush error (errno) or 0. */
static int wb_stop(wb_t *w) {
  wb_cur = NULL;
  pthread_mutex_lock(&w->mu);
  w->stop = true;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
  pthread_join(w->th, NULL);
  pthread_cond_destroy(&w->cv);
  pthread_mutex_destroy(&w->mu);
  return w->err;
}

static int copy_data(mpcp_root_t *r, int sfd, int dfd, uint64_t off,
                     uint64_t len, bool sparse, bool whole, uint64_t *copied);

int mpcp_copy_data(mpcp_root_t *r, int sfd, int dfd, uint64_t off, uint64_t len,
                   bool sparse, bool whole, uint64_t *copied) {
  if (whole && !sparse && len > 0 && !(r->no_clone & 1)) {
    if (ioctl(dfd, FICLONE, sfd) == 0) {
      *copied += len;
      note(0, len);
      return 0;
    }
    r->no_clone |= 1;
  }
  wb_t wb;
  bool behind = whole && mpcp_wb_step && len / 2 >= mpcp_wb_step && !wb_cur &&
                !wb_no_thread && wb_start(&wb, dfd);
  int rc = copy_data(r, sfd, dfd, off, len, sparse, whole, copied);
  if (behind) {
    int e = wb_stop(&wb);
    if (e && !rc)
      rc = -e - 100000;
  }
  return rc;
}

static int copy_data(mpcp_root_t *r, int sfd, int dfd, uint64_t off,
                     uint64_t len, bool sparse, bool whole, uint64_t *copied) {
  if (len >= PIECE)
    posix_fadvise(sfd, (off_t)off, (off_t)len, POSIX_FADV_SEQUENTIAL);
  if (!sparse)
    return copy_range(r, sfd, dfd, off, len, whole, copied);
  /* Sparse: copy only the data extents; holes stay holes (and count as
   * done, so progress is in logical bytes). */
  uint64_t pos = off, end = off + len;
  while (whole || pos < end) {
    off_t d = lseek(sfd, (off_t)pos, SEEK_DATA);
    if (d < 0) {
      if (errno == ENXIO) {
        if (end > pos)
          note(0, end - pos);
        break;
      }
      return copy_range(r, sfd, dfd, pos, whole ? 0 : end - pos, whole, copied);
    }
    if (!whole && (uint64_t)d >= end) {
      note(0, end - pos);
      break;
    }
    note(0, (uint64_t)d - pos);
    off_t h = lseek(sfd, d, SEEK_HOLE);
    if (h < 0)
      return -errno;
    uint64_t stop = (uint64_t)h;
    if (!whole && stop > end)
      stop = end;
    int rc =
        copy_range(r, sfd, dfd, (uint64_t)d, stop - (uint64_t)d, false, copied);
    if (rc)
      return rc;
    pos = stop;
  }
  return 0;
}

/* ---- metadata ------------------------------------------------------------ */

static const char acl_access[] = "system.posix_acl_access",
                  acl_default[] = "system.posix_acl_default";

/* Sets one xattr; a read-only inode (user.* needs write permission) is made
 * writable for the owner just long enough. */
static int set_xattr(int dfd, const char *name, const void *v, size_t len) {
  if (fsetxattr(dfd, name, v, len, 0) == 0)
    return 0;
  int e = errno;
  struct stat st;
  if (e == EACCES && fstat(dfd, &st) == 0 && !(st.st_mode & S_IWUSR) &&
      fchmod(dfd, (st.st_mode & 07777) | S_IWUSR) == 0) {
    int rc = fsetxattr(dfd, name, v, len, 0);
    e = errno;
    fchmod(dfd, st.st_mode & 07777);
    if (rc == 0)
      return 0;
  }
  return -e;
}

/* Copies every xattr (ACLs included). cp -a keeps quiet about the ones a
 * user may not set (security.*, trusted.*) or a filesystem does not take;
 * anything else is a warning. */
static void copy_xattrs(int sfd, int dfd, const char *disp, mpcp_say_fn say) {
  if (!xnames && !(xnames = malloc(XBUF)))
    return;
  if (!xval && !(xval = malloc(XBUF)))
    return;
  ssize_t n = flistxattr(sfd, xnames, XBUF);
  if (n <= 0)
    return;
  for (char *p = xnames; p < xnames + n; p += strlen(p) + 1) {
    ssize_t v = fgetxattr(sfd, p, xval, XBUF);
    if (v < 0)
      continue;
    int rc = set_xattr(dfd, p, xval, (size_t)v);
    if (rc && rc != -ENOTSUP && rc != -EPERM && rc != -EACCES)
      say(false, "mpcp: setting attribute '%s' for '%s': %s", p, disp,
          strerror(-rc));
  }
}

int mpcp_set_meta_fd(int fd, const mpcp_ent_t *e, int src_fd, unsigned flags,
                     const char *disp, mpcp_say_fn say) {
  int ret = 0;
  bool uid_kept = e->uid == mpcp_euid, gid_kept = e->gid == mpcp_egid;
  bool chowned = false;
  if ((flags & MPCP_MF_CHOWN) || !uid_kept || !gid_kept) {
    if (fchown(fd, e->uid, e->gid) == 0) {
      chowned = uid_kept = gid_kept = true;
    } else {
      int err = errno;
      /* As cp: a normal user keeps at least the group if a member of it. */
      if (mpcp_euid != 0 && fchown(fd, (uid_t)-1, e->gid) == 0)
        gid_kept = true;
      /* cp -a: an error (exit 1) as root, the file stays. */
      if (mpcp_euid == 0 || (err != EPERM && err != EINVAL)) {
        say(true, "mpcp: failed to preserve ownership for '%s': %s", disp,
            strerror(err));
        ret = -1;
      }
    }
  }
  mode_t mode = e->mode & 07777;
  /* POSIX and cp: setuid/setgid do not survive a change of owner. */
  if (!uid_kept || !gid_kept)
    mode &= (mode_t)~(S_ISUID | S_ISGID);
  /* cp as root: a file whose owner could not be set is not opened to the
   * group and others of the wrong owner. */
  if (ret < 0)
    mode &= 0700;
  if (src_fd >= 0) {
    copy_xattrs(src_fd, fd, disp, say);
    if (flags & MPCP_MF_DEFACL) {
      /* Apply the source's ACL or none, never one inherited here. */
      if (fgetxattr(src_fd, acl_access, NULL, 0) < 0)
        fremovexattr(fd, acl_access);
      if ((flags & MPCP_MF_DIR) && fgetxattr(src_fd, acl_default, NULL, 0) < 0)
        fremovexattr(fd, acl_default);
    }
  }
  if ((chowned || ret < 0 ||
       (flags & (MPCP_MF_DIR | MPCP_MF_CHMOD | MPCP_MF_DEFACL)) ||
       (e->mode & 07000)) &&
      fchmod(fd, mode) < 0) {
    say(true, "mpcp: preserving permissions for '%s': %s", disp,
        strerror(errno));
    ret = -1;
  }
  struct timespec ts[2] = {{e->atime_s, e->atime_ns},
                           {e->mtime_s, e->mtime_ns}};
  if (futimens(fd, ts) < 0)
    say(false, "mpcp: preserving times for '%s': %s", disp, strerror(errno));
  return ret;
}

/* ---- entries ------------------------------------------------------------- */

typedef struct {
  mpcp_root_t *root;
  const char *dir;
  int sdir, ddir;
  uint32_t flags;
} batch_t;

static char *disp(const batch_t *b, bool dst, const char *name) {
  return mpcp_join(dst ? b->root->dst_disp : b->root->src_disp, b->dir, name);
}

/* One entry copied: count it, and under -v print "src -> dst". */
static void entry_done(const batch_t *b, const char *name, const char *dname) {
  note(1, 0);
  if (mpcp_opt.verbose) {
    char *s = disp(b, false, name), *d = disp(b, true, dname);
    if (s && d)
      verbose_line(s, d);
    free(s);
    free(d);
  }
}

static void report(const batch_t *b, bool dst, const char *what,
                   const char *name, int err) {
  char *p = disp(b, dst, name);
  werr("mpcp: %s '%s': %s", what, p ? p : name, strerror(err));
  free(p);
}

static void report_warn(const batch_t *b, const char *what, const char *name,
                        int err) {
  char *p = disp(b, true, name);
  wsay(false, "mpcp: %s '%s': %s", what, p ? p : name, strerror(err));
  free(p);
}

/* Moves the finished temp entry over `dname`. */
static int commit_rename(const batch_t *b, const char *tmp, const char *dname) {
  if (renameat(b->ddir, tmp, b->ddir, dname) == 0)
    return 0;
  int e = errno;
  unlinkat(b->ddir, tmp, 0);
  return -e;
}

/* Creates an entry under dname, replacing what is there atomically. */
static int make_node(const batch_t *b, const mpcp_ent_t *e, const char *target,
                     const char *dname) {
  char tmp[128];
  const char *at = dname;
  for (int round = 0; round < 2; round++) {
    int rc = S_ISLNK(e->mode)
                 ? symlinkat(target, b->ddir, at)
                 : mknodat(b->ddir, at,
                           (e->mode & S_IFMT) |
                               (e->mode & (mpcp_opt.archive ? 07777 : 0777)),
                           (dev_t)e->rdev);
    if (rc == 0)
      return at == dname ? 0 : commit_rename(b, at, dname);
    if (errno != EEXIST || round == 1)
      return -errno;
    mpcp_temp_name(tmp, sizeof tmp);
    at = tmp;
  }
  return -EEXIST;
}

int mpcp_resume_same(int sdir, int ddir, const struct stat *st,
                     const struct stat *d, const char *name,
                     const char *dname) {
  if ((st->st_mode & S_IFMT) != (d->st_mode & S_IFMT))
    return 0;
  if (S_ISREG(st->st_mode)) {
    if (st->st_size != d->st_size)
      return 0;
    if (mpcp_opt.checksum)
      return 2;
    return st->st_mtim.tv_sec == d->st_mtim.tv_sec &&
           st->st_mtim.tv_nsec == d->st_mtim.tv_nsec;
  }
  if (S_ISLNK(st->st_mode)) {
    char a[4096], c[4096];
    ssize_t na = readlinkat(sdir, name, a, sizeof a);
    ssize_t nc = readlinkat(ddir, dname, c, sizeof c);
    return na >= 0 && na == nc && memcmp(a, c, (size_t)na) == 0;
  }
  if (S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode))
    return st->st_rdev == d->st_rdev;
  return 1;
}

/* --resume: an entry found unchanged. With -a its ownership, mode and times
 * are set where they differ (nothing is written when they match). */
static void resume_keep(const batch_t *b, const struct stat *st,
                        const struct stat *d, const char *dname) {
  acc.same++;
  if (S_ISREG(st->st_mode))
    acc.same_bytes += (uint64_t)st->st_size;
  note(1, 0);
  if (!mpcp_opt.archive)
    return;
  if ((st->st_uid != d->st_uid || st->st_gid != d->st_gid) &&
      fchownat(b->ddir, dname, st->st_uid, st->st_gid, AT_SYMLINK_NOFOLLOW) <
          0 &&
      (mpcp_euid == 0 || errno != EPERM))
    report(b, true, "failed to preserve ownership for", dname, errno);
  if (!S_ISLNK(st->st_mode) && ((st->st_mode ^ d->st_mode) & 07777) != 0 &&
      fchmodat(b->ddir, dname, st->st_mode & 07777, 0) < 0)
    report_warn(b, "preserving permissions for", dname, errno);
  if (st->st_mtim.tv_sec != d->st_mtim.tv_sec ||
      st->st_mtim.tv_nsec != d->st_mtim.tv_nsec) {
    struct timespec ts[2] = {st->st_atim, st->st_mtim};
    if (utimensat(b->ddir, dname, ts, AT_SYMLINK_NOFOLLOW) < 0)
      report_warn(b, "preserving times for", dname, errno);
  }
}

/* The destination as it is, for an entry about to be copied over it: cp's
 * refusals. Returns 0 to go on (*d valid if *exists), or -1 when reported. */
static int check_dest(const batch_t *b, const char *name, const char *dname,
                      const struct stat *src, struct stat *d, bool *exists) {
  *exists = fstatat(b->ddir, dname, d, AT_SYMLINK_NOFOLLOW) == 0;
  if (!*exists && errno != ENOENT) {
    /* A directory that cannot be searched: cp's wording. */
    report(b, true, "cannot stat", dname, errno);
    return -1;
  }
  if (!*exists)
    return 0;
  bool same = d->st_dev == src->st_dev && d->st_ino == src->st_ino;
  /* A symlink source copied onto the file it points to. */
  struct stat t;
  if (!same && S_ISLNK(src->st_mode) && !S_ISLNK(d->st_mode) &&
      fstatat(b->sdir, name, &t, 0) == 0)
    same = t.st_dev == d->st_dev && t.st_ino == d->st_ino;
  if (same) {
    char *s = disp(b, false, name), *p = disp(b, true, dname);
    werr("mpcp: '%s' and '%s' are the same file", s ? s : name,
         p ? p : dname);
    free(s);
    free(p);
    return -1;
  }
  if (S_ISDIR(d->st_mode)) {
    char *p = disp(b, true, dname);
    werr("mpcp: cannot overwrite directory '%s' with non-directory",
         p ? p : dname);
    free(p);
    return -1;
  }
  return 0;
}

static void copy_node(const batch_t *b, const mpcp_ent_t *e, const char *name,
                      const char *dname) {
  char stackbuf[4096];
  char *target = NULL;
  struct stat sst, dst;
  bool dexists;
  if (fstatat(b->sdir, name, &sst, AT_SYMLINK_NOFOLLOW) < 0) {
    report(b, false, "cannot stat", name, errno);
    note_failed();
    return;
  }
  if (check_dest(b, name, dname, &sst, &dst, &dexists) < 0) {
    note_failed();
    return;
  }
  if (dexists && mpcp_opt.resume &&
      mpcp_resume_same(b->sdir, b->ddir, &sst, &dst, name, dname) == 1) {
    resume_keep(b, &sst, &dst, dname);
    return;
  }
  if (S_ISLNK(e->mode)) {
    size_t cap = e->size > 0 ? e->size + 1 : sizeof stackbuf;
    target = cap <= sizeof stackbuf ? stackbuf : malloc(cap);
    if (!target) {
      report(b, false, "cannot read symbolic link", name, ENOMEM);
      note_failed();
      return;
    }
    ssize_t n = readlinkat(b->sdir, name, target, cap);
    if (n < 0 || (size_t)n >= cap) {
      report(b, false, "cannot read symbolic link", name,
             n < 0 ? errno : ENAMETOOLONG);
      goto out;
    }
    target[n] = '\0';
  }
  int rc = make_node(b, e, target, dname);
  if (rc) {
    report(b, true,
           rc == -EISDIR      ? "cannot overwrite directory"
           : S_ISLNK(e->mode) ? "cannot create symbolic link"
                              : "cannot create special file",
           dname, -rc);
    goto out;
  }
  if (mpcp_opt.archive) {
    if ((e->uid != mpcp_euid || e->gid != mpcp_egid ||
         (b->flags & MPCP_TF_SETGID_DIR)) &&
        fchownat(b->ddir, dname, e->uid, e->gid, AT_SYMLINK_NOFOLLOW) < 0 &&
        (mpcp_euid == 0 || (errno != EPERM && errno != EINVAL)))
      report(b, true, "failed to preserve ownership for", dname, errno);
    struct timespec ts[2] = {{e->atime_s, e->atime_ns},
                             {e->mtime_s, e->mtime_ns}};
    if (utimensat(b->ddir, dname, ts, AT_SYMLINK_NOFOLLOW) < 0)
      report_warn(b, "preserving times for", dname, errno);
  }
  entry_done(b, name, dname);
  if (target != stackbuf)
    free(target);
  return;
out:
  if (target != stackbuf)
    free(target);
  note_failed();
}

static int open_src(int dirfd, const char *name, uint32_t uid, bool follow) {
  int fl = O_RDONLY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW);
  if (uid == mpcp_euid || mpcp_euid == 0) {
    int fd = openat(dirfd, name, fl | O_NOATIME);
    if (fd >= 0 || errno != EPERM)
      return fd;
  }
  return openat(dirfd, name, fl);
}

/* Creates the unnamed (or temp-named) destination inode. Special bits are
 * set with the rest of the metadata, once ownership is known. */
static int create_dst(const batch_t *b, const mpcp_ent_t *e, char *tmp,
                      size_t tmplen) {
  mode_t perm = e->mode & 0777;
  tmp[0] = '\0';
  if (mpcp_use_tmpfile) {
    int fd = openat(b->ddir, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, perm);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL &&
                    errno != ENOENT))
      return fd;
    mpcp_use_tmpfile = false;
  }
  mpcp_temp_name(tmp, tmplen);
  memcpy(cur_tmp, tmp, strlen(tmp) + 1);
  cur_tmp_fd = b->ddir;
  return openat(b->ddir, tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, perm);
}

static unsigned meta_flags(const batch_t *b) {
  return ((b->flags & MPCP_TF_SETGID_DIR) ? MPCP_MF_CHOWN : 0) |
         ((b->flags & MPCP_TF_DEFACL) ? MPCP_MF_DEFACL : 0);
}

/* Plain read/write from the current offsets: for a FIFO or a device. */
static int stream_copy(int sfd, int dfd) {
  if (!iobuf && !(iobuf = malloc(1u << 20)))
    return -ENOMEM;
  for (;;) {
    ssize_t n = read(sfd, iobuf, 1u << 20);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    if (n == 0)
      return 0;
    for (ssize_t w = 0; w < n;) {
      ssize_t k = write(dfd, iobuf + w, (size_t)(n - w));
      if (k < 0 && errno == EINTR)
        continue;
      if (k < 0)
        return -errno - 100000;
      w += k;
    }
    note(0, (uint64_t)n);
  }
}

/* An existing destination that is not a plain regular file (a device, a
 * FIFO, or a symlink to an existing file) is opened and written into, as cp
 * does: it is never replaced. */
static void copy_into(const batch_t *b, const mpcp_ent_t *e, int sfd,
                      const char *name, const char *dname) {
  int dfd =
      openat(b->ddir, dname, O_WRONLY | O_TRUNC | O_NOCTTY | O_CLOEXEC);
  if (dfd < 0) {
    report(b, true, "cannot create regular file", dname, errno);
    note_failed();
    return;
  }
  int rc = stream_copy(sfd, dfd);
  if (rc) {
    if (rc <= -100000)
      report(b, true, "error writing", dname, -(rc + 100000));
    else
      report(b, false, "error reading", name, -rc);
    close(dfd);
    note_failed();
    return;
  }
  if (mpcp_opt.archive) {
    char *p = disp(b, true, dname);
    mpcp_set_meta_fd(dfd, e, sfd, meta_flags(b) | MPCP_MF_CHMOD,
                     p ? p : dname, wsay);
    free(p);
  }
  close(dfd);
  entry_done(b, name, dname);
}

/* Gives the finished inode its final name. */
static int commit_file(const batch_t *b, int dfd, const char *tmp,
                       const char *dname) {
  if (tmp[0]) {
    int rc = commit_rename(b, tmp, dname);
    cur_tmp_fd = -1;
    cur_tmp[0] = '\0';
    return rc;
  }
  char proc[64];
  for (int round = 0; round < 2; round++) {
    char t[128];
    const char *at = dname;
    if (round == 1) {
      mpcp_temp_name(t, sizeof t);
      at = t;
    }
    int rc;
    if (mpcp_euid == 0) {
      rc = linkat(dfd, "", b->ddir, at, AT_EMPTY_PATH);
    } else {
      snprintf(proc, sizeof proc, "/proc/self/fd/%d", dfd);
      rc = linkat(AT_FDCWD, proc, b->ddir, at, AT_SYMLINK_FOLLOW);
    }
    if (rc == 0)
      return round == 0 ? 0 : commit_rename(b, at, dname);
    if (errno != EEXIST)
      return -errno;
  }
  return -EEXIST;
}

static bool same_version(const struct stat *a, const struct stat *b) {
  return a->st_size == b->st_size && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
         a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static void stat_to_ent(mpcp_ent_t *e, const struct stat *st) {
  e->size = (uint64_t)st->st_size;
  e->mode = st->st_mode;
  e->uid = st->st_uid;
  e->gid = st->st_gid;
  e->atime_s = st->st_atim.tv_sec;
  e->atime_ns = (uint32_t)st->st_atim.tv_nsec;
  e->mtime_s = st->st_mtim.tv_sec;
  e->mtime_ns = (uint32_t)st->st_mtim.tv_nsec;
}

/* --resume --checksum: is the destination's content the source's? */
static bool same_content(const batch_t *b, int sfd, const char *dname) {
  int dfd = openat(b->ddir, dname, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0)
    return false;
  uint64_t hs[2], hd[2];
  bool same = mpcp_hash_fd(sfd, hs) == 0 && mpcp_hash_fd(dfd, hd) == 0 &&
              hs[0] == hd[0] && hs[1] == hd[1];
  close(dfd);
  lseek(sfd, 0, SEEK_SET);
  return same;
}

static void copy_reg(const batch_t *b, const mpcp_ent_t *e0, const char *name,
                     const char *dname) {
  char tmp[128];
  mpcp_ent_t e = *e0;
  uint64_t copied = 0;
  if (mpcp_opt.resume && !mpcp_opt.checksum && !(e.flags & MPCP_EF_FOLLOW)) {
    /* The walk's stat decides an unchanged file without opening it. */
    struct stat d, s;
    if (fstatat(b->ddir, dname, &d, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISREG(d.st_mode) && (uint64_t)d.st_size == e.size &&
        d.st_mtim.tv_sec == e.mtime_s &&
        (uint64_t)d.st_mtim.tv_nsec == e.mtime_ns) {
      memset(&s, 0, sizeof s);
      s.st_mode = e.mode;
      s.st_uid = e.uid;
      s.st_gid = e.gid;
      s.st_size = (off_t)e.size;
      s.st_atim = (struct timespec){e.atime_s, e.atime_ns};
      s.st_mtim = (struct timespec){e.mtime_s, e.mtime_ns};
      resume_keep(b, &s, &d, dname);
      return;
    }
  }
  int sfd = open_src(b->sdir, name, e.uid, e.flags & MPCP_EF_FOLLOW);
  struct stat s0, d;
  if (sfd < 0 || fstat(sfd, &s0) < 0) {
    report(b, false, "cannot open", name, errno);
    if (sfd >= 0)
      close(sfd);
    note_failed();
    return;
  }
  /* What is copied is the file as opened, not as the walk saw it. */
  stat_to_ent(&e, &s0);
  bool dexists;
  if (check_dest(b, name, dname, &s0, &d, &dexists) < 0)
    goto fail_src;
  if (dexists && mpcp_opt.resume && !(e.flags & MPCP_EF_FOLLOW)) {
    int same = mpcp_resume_same(b->sdir, b->ddir, &s0, &d, name, dname);
    if (same == 1 || (same == 2 && same_content(b, sfd, dname))) {
      resume_keep(b, &s0, &d, dname);
      close(sfd);
      return;
    }
  }
  if (dexists) {
    if (S_ISLNK(d.st_mode)) {
      struct stat t;
      if (fstatat(b->ddir, dname, &t, 0) < 0) {
        char *p = disp(b, true, dname);
        if (errno == ENOENT)
          werr("mpcp: not writing through dangling symlink '%s'",
               p ? p : dname);
        else
          werr("mpcp: cannot stat '%s': %s", p ? p : dname, strerror(errno));
        free(p);
        goto fail_src;
      }
      if (t.st_dev == s0.st_dev && t.st_ino == s0.st_ino) {
        char *s = disp(b, false, name), *p = disp(b, true, dname);
        werr("mpcp: '%s' and '%s' are the same file", s ? s : name,
             p ? p : dname);
        free(s);
        free(p);
        goto fail_src;
      }
      if (S_ISDIR(t.st_mode)) {
        report(b, true, "cannot overwrite directory", dname, EISDIR);
        goto fail_src;
      }
    }
    if (!S_ISREG(d.st_mode)) {
      copy_into(b, &e, sfd, name, dname);
      close(sfd);
      return;
    }
    /* Replaced by rename, but only where cp could have opened it. */
    if (mpcp_euid != 0 && faccessat(b->ddir, dname, W_OK, AT_EACCESS) < 0 &&
        errno == EACCES) {
      report(b, true, "cannot create regular file", dname, EACCES);
      goto fail_src;
    }
  }
  int dfd = create_dst(b, &e, tmp, sizeof tmp);
  if (dfd >= 0)
    crash_hook(name, b->flags);
  if (dfd < 0) {
    report(b, true, "cannot create regular file", dname, errno);
    goto fail_src;
  }
  /* A source that changes while it is read is copied again (twice at
   * most), then reported. */
  for (int attempt = 0;; attempt++) {
    int rc = mpcp_copy_data(b->root, sfd, dfd, 0, e.size,
                            e.flags & MPCP_EF_SPARSE, true, &copied);
    if (rc && mpcp_stop_sig)
      goto fail; /* inline, interrupted: the parent says so */
    if (rc) {
      if (rc <= -100000)
        report(b, true, "error writing", dname, -(rc + 100000));
      else
        report(b, false, "error reading", name, -rc);
      goto fail;
    }
    if (test_corrupt && !quiet_bytes && e.size && !strcmp(name, test_corrupt)) {
      unsigned char c = 0;
      if (pread(sfd, &c, 1, 0) == 1) {
        c ^= 0xff;
        if (pwrite(dfd, &c, 1, 0) != 1)
          c = 0;
      }
    }
    if ((e.flags & MPCP_EF_SPARSE) && ftruncate(dfd, (off_t)e.size) < 0) {
      report(b, true, "error writing", dname, errno);
      goto fail;
    }
    if (test_delay_ms > 0)
      usleep((useconds_t)test_delay_ms * 1000);
    struct stat s1;
    if (fstat(sfd, &s1) < 0 || same_version(&s0, &s1))
      break;
    if (attempt == 2) {
      char *p = disp(b, false, name);
      werr("mpcp: '%s': file changed as we read it", p ? p : name);
      free(p);
      break;
    }
    s0 = s1;
    stat_to_ent(&e, &s1);
    if (ftruncate(dfd, 0) < 0) {
      report(b, true, "error writing", dname, errno);
      goto fail;
    }
  }
  if (mpcp_opt.archive) {
    char *p = disp(b, true, dname);
    mpcp_set_meta_fd(dfd, &e, sfd, meta_flags(b), p ? p : dname, wsay);
    free(p);
  }
  if (mpcp_stop_sig)
    goto fail; /* inline, interrupted: no new name after the signal */
  int rc = commit_file(b, dfd, tmp, dname);
  if (rc) {
    report(b, true,
           rc == -EISDIR ? "cannot overwrite directory"
                         : "cannot create regular file",
           dname, -rc);
    goto fail;
  }
  close(dfd);
  close(sfd);
  entry_done(b, name, dname);
  return;
fail:
  close(dfd);
  if (tmp[0]) {
    unlinkat(b->ddir, tmp, 0);
    cur_tmp_fd = -1;
    cur_tmp[0] = '\0';
  }
fail_src:
  close(sfd);
  note_failed();
}

/* --verify: hash source and copy; a mismatch is copied again once. */
static void verify_reg(const batch_t *b, const mpcp_ent_t *e, const char *name,
                       const char *dname) {
  uint64_t hs[2], hd[2];
  for (int round = 0; round < 2; round++) {
    int sfd = open_src(b->sdir, name, e->uid, e->flags & MPCP_EF_FOLLOW);
    if (sfd < 0) {
      report(b, false, "verify: cannot open", name, errno);
      return;
    }
    int dfd = openat(b->ddir, dname, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
      report(b, true, "verify: cannot open", dname, errno);
      close(sfd);
      return;
    }
    int r1 = mpcp_hash_fd(sfd, hs), r2 = mpcp_hash_fd(dfd, hd);
    close(sfd);
    close(dfd);
    if (r1 || r2) {
      report(b, r1 == 0, "verify: error reading", r1 ? name : dname,
             -(r1 ? r1 : r2));
      return;
    }
    if (hs[0] == hd[0] && hs[1] == hd[1]) {
      note(1, 0);
      return;
    }
    if (round == 1)
      break;
    acc.mismatches++;
    quiet_bytes = true;
    copy_reg(b, e, name, dname);
    quiet_bytes = false;
    acc.files--; /* copy_reg counted the file once more */
  }
  char *p = disp(b, true, dname);
  werr("mpcp: verify: '%s' differs from its source after copying again",
       p ? p : dname);
  free(p);
}

/* ---- tasks -----------------------------------------------------------------
 */

static int open_dirs(batch_t *b, const mpcp_task_hdr_t *h) {
  b->root = &mpcp_roots[h->root];
  b->flags = h->flags;
  b->sdir = mpcp_open_rel(b->root->src_fd, b->dir, O_PATH | O_DIRECTORY, 0);
  if (b->sdir < 0) {
    report(b, false, "cannot access", NULL, errno);
    return -1;
  }
  b->ddir = mpcp_open_rel(b->root->dst_fd, b->dir, O_PATH | O_DIRECTORY, 0);
  if (b->ddir < 0) {
    report(b, true, "cannot access", NULL, errno);
    close(b->sdir);
    return -1;
  }
  return 0;
}

/* Removes ".mpcp-<pid>-..." entries unless that run's mpcp is still
 * running (the current run's own pid is alive, so its temps stay). */
void mpcp_remove_stale_temps(int dir) {
  int fd = openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR *d = fd < 0 ? NULL : fdopendir(fd);
  if (!d) {
    if (fd >= 0)
      close(fd);
    return;
  }
  struct dirent *de;
  while ((de = readdir(d))) {
    char *end;
    if (strncmp(de->d_name, ".mpcp-", 6) != 0)
      continue;
    long pid = strtol(de->d_name + 6, &end, 10);
    if (end == de->d_name + 6 || *end != '-' || pid <= 0)
      continue;
    char comm[64] = "", proc[64];
    snprintf(proc, sizeof proc, "/proc/%ld/comm", pid);
    int cfd = open(proc, O_RDONLY | O_CLOEXEC);
    if (cfd >= 0) {
      ssize_t n = read(cfd, comm, sizeof comm - 1);
      comm[n > 0 ? n : 0] = '\0';
      close(cfd);
    }
    if (!strncmp(comm, "mpcp", 4) && pid != (long)getpid())
      continue; /* a run in progress */
    unlinkat(dirfd(d), de->d_name, 0);
  }
  closedir(d);
}

static void run_batch(const mpcp_task_hdr_t *h, const char *p,
                      const char *end) {
  char dir[h->dir_len + 1];
  memcpy(dir, p, h->dir_len);
  dir[h->dir_len] = '\0';
  p += h->dir_len;
  batch_t b = {.dir = dir};
  bool ok = open_dirs(&b, h) == 0;
  if (ok && (h->flags & MPCP_TF_SWEEP) && h->kind == MPCP_T_BATCH)
    mpcp_remove_stale_temps(b.ddir);
  for (uint32_t i = 0; i < h->count && p + sizeof(mpcp_ent_t) <= end; i++) {
    mpcp_ent_t e;
    memcpy(&e, p, sizeof e);
    p += sizeof e;
    char name[e.name_len + 1], dname[e.dname_len + 1];
    memcpy(name, p, e.name_len);
    name[e.name_len] = '\0';
    p += e.name_len;
    memcpy(dname, p, e.dname_len);
    dname[e.dname_len] = '\0';
    p += e.dname_len;
    const char *dn = e.dname_len ? dname : name;
    if (!ok) {
      note_failed();
      continue;
    }
    if (h->kind == MPCP_T_VERIFY) {
      if (S_ISREG(e.mode))
        verify_reg(&b, &e, name, dn);
    } else if (S_ISREG(e.mode)) {
      copy_reg(&b, &e, name, dn);
    } else {
      copy_node(&b, &e, name, dn);
    }
  }
  if (ok) {
    close(b.sdir);
    close(b.ddir);
  }
}

static void run_chunk(const mpcp_task_hdr_t *h, const char *p) {
  char dir[h->dir_len + 1];
  memcpy(dir, p, h->dir_len);
  dir[h->dir_len] = '\0';
  p += h->dir_len;
  mpcp_chunk_t c;
  memcpy(&c, p, sizeof c);
  p += sizeof c;
  char name[c.name_len + 1], tmp[c.tmp_len + 1], dname[c.dname_len + 1];
  memcpy(name, p, c.name_len);
  name[c.name_len] = '\0';
  memcpy(tmp, p + c.name_len, c.tmp_len);
  tmp[c.tmp_len] = '\0';
  memcpy(dname, p + c.name_len + c.tmp_len, c.dname_len);
  dname[c.dname_len] = '\0';
  batch_t b = {.dir = dir};
  uint32_t failed = 1;
  char text[1024];
  int tl = 0;
  if (open_dirs(&b, h) == 0) {
    int sfd = open_src(b.sdir, name, 0, c.flags & MPCP_EF_FOLLOW);
    int dfd = openat(b.ddir, tmp, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
    /* Errors name the file the user knows (the parent prints the first of
     * a file's chunks only). */
    char *sp = disp(&b, false, name), *dp = disp(&b, true, dname);
    crash_hook(name, h->flags);
    if (sfd < 0) {
      tl = mpcp_format(text, sizeof text, "mpcp: cannot open '%s': %s", sp,
                    strerror(errno));
    } else if (dfd < 0) {
      tl = mpcp_format(text, sizeof text, "mpcp: cannot open '%s': %s", dp,
                    strerror(errno));
    } else {
      uint64_t copied = 0;
      int rc = mpcp_copy_data(b.root, sfd, dfd, c.offset, c.len,
                              c.flags & MPCP_EF_SPARSE, false, &copied);
      if (rc <= -100000)
        tl = mpcp_format(text, sizeof text, "mpcp: error writing '%s': %s", dp,
                      strerror(-(rc + 100000)));
      else if (rc)
        tl = mpcp_format(text, sizeof text, "mpcp: error reading '%s': %s", sp,
                      strerror(-rc));
      else
        failed = 0;
      if (test_delay_ms > 0)
        usleep((useconds_t)test_delay_ms * 1000);
    }
    free(sp);
    free(dp);
    if (sfd >= 0)
      close(sfd);
    if (dfd >= 0)
      close(dfd);
    close(b.sdir);
    close(b.ddir);
  }
  flush_progress(MPCP_M_PROGRESS, 0);
  if (tl < 0)
    tl = 0;
  if ((size_t)tl >= sizeof text)
    tl = sizeof text - 1;
  mpcp_msg_t m = {.kind = MPCP_M_CHUNK, .id = c.file_id, .errors = failed};
  mpcp_send(&m, text, (size_t)tl);
}

int mpcp_worker_task(const void *task, size_t len) {
  mpcp_task_hdr_t h;
  if (!mpcp_task_hdr_read(&h, task, len))
    return -EINVAL;
  const char *p = (const char *)task + sizeof h,
             *end = (const char *)task + len;
  test_hooks_init();
  acc.last = mpcp_now();
  if (h.kind == MPCP_T_CHUNK)
    run_chunk(&h, p);
  else
    run_batch(&h, p, end);
  flush_text();
  flush_progress(MPCP_M_DONE, h.id);
  return 0;
}
