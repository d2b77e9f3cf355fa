/* Shared memory segments (POSIX shm objects). Names are handed to the
 * segment tracker (src/shm_tracker.c), which removes them when this process
 * ends, however it ends. */
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

int mp__seg_canon(char *buf, size_t cap, const char *name) {
  if (!name || !*name)
    return MP_EINVAL;
  const char *p = name[0] == '/' ? name + 1 : name;
  size_t len = strlen(p);
  if (len == 0 || strchr(p, '/'))
    return MP_EINVAL;
  if (len + 2 > cap || len + 2 > MP__SEG_NAME_MAX)
    return MP_ENAMETOOLONG;
  buf[0] = '/';
  memcpy(buf + 1, p, len + 1);
  return 0;
}

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

int (*mp__test_random_name)(char *buf, size_t cap, const char *prefix);

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
    if ((r = mp__seg_canon(seg->name, sizeof seg->name, name)) < 0 ||
        (r = seg_path(path, sizeof path, seg->name)) < 0)
      return r;
  }
  int fd = -1;
  for (int draw = 0; fd < 0; draw++) {
    if (!name) {
      r = mp__test_random_name
              ? mp__test_random_name(seg->name, sizeof seg->name, "/mp-")
              : mp__random_name(seg->name, sizeof seg->name, "/mp-");
      if (r < 0)
        return r;
      /* A random name is registered before it exists, so no moment of a
       * kill can leave it behind (nobody else can hold it: a taken one
       * fails O_EXCL below and is forgotten again). */
      if (track && (r = mp__tracker_register(seg->name)) < 0)
        return r;
    }
    fd = shm_open(seg->name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0)
      break;
    r = -errno;
    if (!name && track)
      mp__tracker_unregister(seg->name);
    /* A random name that is taken: draw another, as many times as a
     * collision of 64 random bits could plausibly happen. */
    if (name || r != MP_EEXIST || draw >= 8)
      return r;
  }
  /* A name the caller chose may belong to another process until O_EXCL
   * succeeded: registered only now, so a kill before could never make our
   * tracker remove someone else's segment. */
  if (name && track && (r = mp__tracker_register(seg->name)) < 0) {
    shm_unlink(seg->name);
    mp__close(fd);
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
  char canon[MP__SEG_NAME_MAX];
  if (!seg || !name)
    return MP_EINVAL;
  if ((r = mp__seg_canon(canon, sizeof canon, name)) < 0 ||
      (r = seg_path(path, sizeof path, canon)) < 0)
    return r;
  name = canon;
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
  char path[MP__SEG_NAME_MAX + 16], canon[MP__SEG_NAME_MAX];
  int r;
  if ((r = mp__seg_canon(canon, sizeof canon, name)) < 0)
    return r;
  if ((r = seg_path(path, sizeof path, canon)) < 0)
    return MP_EINVAL;
  name = canon;
  /* Removed first, forgotten after: a kill in between leaves the tracker
   * a name that is already gone, never a name it no longer watches. */
  r = shm_unlink(name) < 0 ? -errno : 0;
  mp__tracker_unregister(name);
  return r;
}
