/* Shared memory segments (POSIX shm objects) and the segment tracker.
 *
 * The tracker is a small watcher process, started on the first registration
 * in a process, that holds the read end of a pipe whose write end only this
 * process has (close-on-exec, and closed in forked children by an atfork
 * handler). Registrations and removals are fixed-size records written
 * atomically (< PIPE_BUF). When the pipe reports EOF the owner is gone,
 * however it ended, and the watcher unlinks every name still registered.
 * The watcher is double-forked so it is never the caller's child: it cannot
 * be reaped by, or show up in, the application's own wait calls. */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

static int seg_path(char *buf, size_t cap, const char *name) {
  /* name is "/xxx": the object lives at /dev/shm/xxx */
  size_t n = strlen(name);
  if (n < 2 || n >= MP__SEG_NAME_MAX || name[0] != '/' || strchr(name + 1, '/'))
    return MP_EINVAL;
  if (cap < n + 9)
    return MP_ENAMETOOLONG;
  memcpy(buf, "/dev/shm", 8);
  memcpy(buf + 8, name, n + 1);
  return 0;
}

int mp__seg_create(mp__seg_t *seg, const char *name, size_t size,
                   size_t reserve, bool track) {
  char path[MP__SEG_NAME_MAX + 16];
  int r;
  if (!seg || size == 0)
    return MP_EINVAL;
  if (reserve == 0)
    reserve = size;
  if (reserve < size)
    return MP_EINVAL;
  memset(seg, 0, sizeof *seg);
  seg->fd = -1;
  if (name) {
    if ((r = seg_path(path, sizeof path, name)) < 0)
      return r;
    strcpy(seg->name, name);
  } else if ((r = mp__random_name(seg->name, sizeof seg->name, "/mp-")) < 0) {
    return r;
  }
  /* Registered before the name exists, so no moment of a kill can leave
   * it behind. */
  if (track && (r = mp__tracker_register(seg->name)) < 0)
    return r;
  int fd = shm_open(seg->name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    r = -errno;
    if (track)
      mp__tracker_unregister(seg->name);
    return r;
  }
  /* shm_open applies the umask; 0600 is what we promise. */
  fchmod(fd, 0600);
  /* Every page allocated now (not a sparse ftruncate): a full /dev/shm
   * gives MP_ENOSPC here, never a SIGBUS when a page is first touched. */
  if ((r = mp__seg_reserve_range(fd, 0, size)) < 0)
    goto fail_untrack;
  void *base = mmap(NULL, reserve, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    r = -errno;
    goto fail_untrack;
  }
  seg->fd = fd;
  seg->base = base;
  seg->size = size;
  seg->reserve = reserve;
  seg->owner = track;
  return 0;
fail_untrack:
  shm_unlink(seg->name);
  if (track)
    mp__tracker_unregister(seg->name);
  mp__close(fd);
  return r;
}

int mp__seg_check_owner(const struct stat *st) {
  /* Only our own objects, private to us: anyone else who could write the
   * object could steer us through the offsets it holds. */
  if (!S_ISREG(st->st_mode) && !S_ISFIFO(st->st_mode))
    return MP_EACCES;
  if (st->st_uid != geteuid() || (st->st_mode & 077) != 0)
    return MP_EACCES;
  return 0;
}

int mp__seg_reserve_range(int fd, uint64_t off, uint64_t len) {
  if (len == 0)
    return 0;
  int r;
  while ((r = posix_fallocate(fd, (off_t)off, (off_t)len)) == EINTR) {
  }
  if (r == 0)
    return 0;
  if (r == ENOSPC || r == EFBIG)
    return MP_ENOSPC;
  if (r == ENOMEM)
    return MP_ENOMEM;
  return -r;
}

int mp__seg_open(mp__seg_t *seg, const char *name, size_t reserve) {
  char path[MP__SEG_NAME_MAX + 16];
  struct stat st;
  int r;
  if (!seg || !name)
    return MP_EINVAL;
  if ((r = seg_path(path, sizeof path, name)) < 0)
    return r;
  memset(seg, 0, sizeof *seg);
  seg->fd = -1;
  int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  if (fstat(fd, &st) < 0) {
    r = -errno;
    goto fail;
  }
  if ((r = mp__seg_check_owner(&st)) < 0)
    goto fail;
  if (st.st_size <= 0) {
    r = MP_EINVAL;
    goto fail;
  }
  if (reserve == 0)
    reserve = (size_t)st.st_size;
  if (reserve < (size_t)st.st_size) {
    r = MP_EINVAL;
    goto fail;
  }
  void *base = mmap(NULL, reserve, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    r = -errno;
    goto fail;
  }
  strcpy(seg->name, name);
  seg->fd = fd;
  seg->base = base;
  seg->size = (size_t)st.st_size;
  seg->reserve = reserve;
  seg->owner = false;
  return 0;
fail:
  mp__close(fd);
  return r;
}

int mp__seg_grow(mp__seg_t *seg, size_t new_size) {
  if (!seg || seg->fd < 0 || new_size > seg->reserve)
    return MP_EINVAL;
  if (new_size <= seg->size)
    return 0;
  /* Another process may have grown it already; never shrink. Every page
   * of the new range is allocated now: on a full /dev/shm this fails with
   * MP_ENOSPC instead of a SIGBUS when a page is first touched. A range
   * another process grew is reserved again (cheap: already allocated). */
  int r = mp__seg_reserve_range(seg->fd, seg->size, new_size - seg->size);
  if (r < 0)
    return r;
  seg->size = new_size;
  return 0;
}

void mp__seg_close(mp__seg_t *seg) {
  if (!seg)
    return;
  if (seg->base)
    munmap(seg->base, seg->reserve);
  if (seg->fd >= 0)
    mp__close(seg->fd);
  seg->base = NULL;
  seg->fd = -1;
}

int mp__seg_unlink(const char *name) {
  char path[MP__SEG_NAME_MAX + 16];
  int r;
  if (!name || (r = seg_path(path, sizeof path, name)) < 0)
    return MP_EINVAL;
  /* Removed first, forgotten after: a kill in between leaves the tracker
   * a name that is already gone, never a name it no longer watches. */
  r = shm_unlink(name) < 0 ? -errno : 0;
  mp__tracker_unregister(name);
  return r;
}

/* ---- tracker ------------------------------------------------------------ */

typedef struct {
  char op; /* '+' register, '-' unregister */
  char name[MP__SEG_NAME_MAX];
} tracker_rec_t;

static pthread_mutex_t tracker_mu = PTHREAD_MUTEX_INITIALIZER;
static int tracker_fd = -1;
static pid_t tracker_owner;
static pthread_once_t tracker_atfork_once = PTHREAD_ONCE_INIT;

static void tracker_atfork_child(void) {
  /* The child is a new owner: it must not hold the parent's pipe open. */
  if (tracker_fd >= 0)
    close(tracker_fd);
  tracker_fd = -1;
  tracker_owner = 0;
  pthread_mutex_unlock(&tracker_mu); /* taken by the prepare handler */
}

static void tracker_atfork_prepare(void) {
  pthread_mutex_lock(&tracker_mu);
}
static void tracker_atfork_parent(void) {
  pthread_mutex_unlock(&tracker_mu);
}

static void tracker_install_atfork(void) {
  pthread_atfork(tracker_atfork_prepare, tracker_atfork_parent,
                 tracker_atfork_child);
}

/* Runs in the watcher: only async-signal-safe calls (the owner may have
 * threads), and memory from mmap, not malloc. */
static void tracker_watch(int rfd) __attribute__((noreturn));
static void tracker_watch(int rfd) {
  size_t cap = 64, n = 0;
  tracker_rec_t *names = mmap(NULL, cap * sizeof *names, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, NULL); /* SIGKILL still ends it */
  setsid();
  for (;;) {
    tracker_rec_t rec;
    ssize_t got = read(rfd, &rec, sizeof rec);
    if (got < 0 && errno == EINTR)
      continue;
    if (got != (ssize_t)sizeof rec)
      break; /* EOF: the owner is gone */
    rec.name[MP__SEG_NAME_MAX - 1] = '\0';
    if (rec.op == '+') {
      if (n == cap) {
        void *p = mremap(names, cap * sizeof *names, 2 * cap * sizeof *names,
                         MREMAP_MAYMOVE);
        if (p == MAP_FAILED)
          continue;
        names = p;
        cap *= 2;
      }
      if (names != MAP_FAILED)
        names[n++] = rec;
    } else {
      for (size_t i = 0; i < n; i++) {
        if (strcmp(names[i].name, rec.name) == 0) {
          names[i] = names[--n];
          break;
        }
      }
    }
  }
  for (size_t i = 0; i < n; i++) {
    char path[MP__SEG_NAME_MAX + 16];
    if (seg_path(path, sizeof path, names[i].name) == 0)
      unlink(path);
  }
  _exit(0);
}

static int tracker_start_locked(void) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0)
    return -errno;
  /* Raw clone, not fork(): fork() would run our atfork handler, which takes
   * tracker_mu, held here. The children only make plain system calls. */
  pid_t mid = (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
  if (mid < 0) {
    int r = -errno;
    close(fds[0]);
    close(fds[1]);
    return r;
  }
  if (mid == 0) {
    /* Intermediate child: fork the watcher and leave, so the watcher is
     * reparented away from the caller. */
    pid_t w = (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (w == 0) {
      int rfd = fds[0];
      /* Keep no other fd open: an inherited pipe end would hide EOF from
       * its reader. stdio stays. */
      if (rfd != 3) {
        dup2(rfd, 3);
        rfd = 3;
      }
      syscall(SYS_close_range, 4, ~0U, 0);
      tracker_watch(rfd);
    }
    _exit(w < 0 ? 1 : 0);
  }
  close(fds[0]);
  int status;
  while (waitpid(mid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    close(fds[1]);
    return MP_EAGAIN;
  }
  tracker_fd = fds[1];
  tracker_owner = getpid();
  return 0;
}

static int tracker_send(char op, const char *name) {
  tracker_rec_t rec;
  memset(&rec, 0, sizeof rec);
  rec.op = op;
  if (strlen(name) >= sizeof rec.name)
    return MP_ENAMETOOLONG;
  strcpy(rec.name, name);
  pthread_once(&tracker_atfork_once, tracker_install_atfork);
  pthread_mutex_lock(&tracker_mu);
  int r = 0;
  if (tracker_fd < 0 || tracker_owner != getpid()) {
    if (op == '-')
      goto out; /* nothing registered by this process */
    if ((r = tracker_start_locked()) < 0)
      goto out;
  }
  /* A record is smaller than PIPE_BUF: written whole or not at all. */
  r = mp__write_full(tracker_fd, &rec, sizeof rec);
out:
  pthread_mutex_unlock(&tracker_mu);
  return r;
}

int mp__tracker_register(const char *name) {
  return name ? tracker_send('+', name) : MP_EINVAL;
}

int mp__tracker_unregister(const char *name) {
  return name ? tracker_send('-', name) : MP_EINVAL;
}
