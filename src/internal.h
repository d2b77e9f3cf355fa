/* mproc internal helpers (mp__ prefix): futex, time, fd utilities and
 * shared-memory segments. Not part of the public API. */
#ifndef MPROC_INTERNAL_H
#define MPROC_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "mproc/error.h"

#define MP__LIKELY(x) __builtin_expect(!!(x), 1)
#define MP__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define MP__CACHELINE 64

/* ---- time ---------------------------------------------------------------
 * Deadlines are absolute CLOCK_MONOTONIC times. */
typedef struct {
  struct timespec ts;
  bool forever; /* timeout_ms == MP_FOREVER */
} mp__deadline_t;

/* 0 if timeout_ms is MP_FOREVER or >= 0, else MP_EINVAL. */
int mp__check_timeout(int timeout_ms);
/* Fill *d from timeout_ms (which must have passed mp__check_timeout). */
void mp__deadline_init(mp__deadline_t *d, int timeout_ms);
/* Milliseconds left, rounded up (0 when passed); -1 when forever. */
int mp__deadline_remaining_ms(const mp__deadline_t *d);
bool mp__deadline_passed(const mp__deadline_t *d);
uint64_t mp__now_ns(void); /* CLOCK_MONOTONIC in nanoseconds */

/* ---- futex ---------------------------------------------------------------
 * Shared (not private) futexes: they work across processes on MAP_SHARED
 * memory as well as between threads. */

/* Sleep while *addr == val, until woken or the deadline (NULL: forever).
 * Returns 0 (woken or value changed: recheck), MP_ETIMEDOUT or MP_EINTR. */
int mp__futex_wait(_Atomic uint32_t *addr, uint32_t val,
                   const mp__deadline_t *deadline);
/* Wake up to n waiters (INT32_MAX: all). Returns the number woken. */
int mp__futex_wake(_Atomic uint32_t *addr, int n);

/* Spin a bounded number of rounds while *addr == val, with a pause
 * instruction. Returns true if the value changed while spinning. */
bool mp__spin_while_eq(_Atomic uint32_t *addr, uint32_t val, int rounds);
void mp__cpu_relax(void);

/* ---- fds ----------------------------------------------------------------- */
int mp__set_cloexec(int fd, bool on);
int mp__set_nonblock(int fd, bool on);
/* Write/read exactly len bytes, retrying on EINTR and short transfers.
 * read_full returns MP_ECLOSED on EOF before any byte, MP_EIO on EOF midway. */
int mp__write_full(int fd, const void *buf, size_t len);
int mp__read_full(int fd, void *buf, size_t len);
/* Close, keeping errno. */
void mp__close(int fd);

/* ---- random names -------------------------------------------------------- */
/* Write "<prefix><16 random hex chars>" into buf (cap >= strlen(prefix)+17).
 * Randomness from getrandom(2). */
int mp__random_name(char *buf, size_t cap, const char *prefix);

/* ---- shared memory segments ---------------------------------------------
 * A POSIX shm object (/dev/shm/<name>, names start with "/mp-") mapped
 * MAP_SHARED. `reserve` bytes of address space are mapped up front; the
 * object's size may be grown later (mp__seg_grow) up to the reservation, and
 * pages are only backed as they are touched. */
#define MP__SEG_NAME_MAX 64
typedef struct {
  char name[MP__SEG_NAME_MAX]; /* "/mp-...", "" for anonymous */
  int fd;                      /* -1 once closed */
  void *base;                  /* mapping of `reserve` bytes */
  size_t size;                 /* current object size */
  size_t reserve;              /* mapped length */
  bool owner;                  /* created here: tracked for unlink */
} mp__seg_t;

/* Create a new segment. name NULL: a random "/mp-<hex>" name. O_EXCL, 0600.
 * reserve 0 means reserve == size. Tracked for removal at process exit
 * (also after SIGKILL) unless track is false. */
int mp__seg_create(mp__seg_t *seg, const char *name, size_t size,
                   size_t reserve, bool track);
/* Open an existing segment by name; its current size is read with fstat.
 * reserve 0 means map exactly the current size. MP_ENOENT if missing. */
int mp__seg_open(mp__seg_t *seg, const char *name, size_t reserve);
/* Grow the object to new_size (<= reserve). Other mappings of the same
 * reservation see the new pages at once. */
int mp__seg_grow(mp__seg_t *seg, size_t new_size);
/* Unmap and close; the name stays. */
void mp__seg_close(mp__seg_t *seg);
/* Remove the name (and untrack it). */
int mp__seg_unlink(const char *name);

/* Segment tracker: names registered here are unlinked when this process
 * exits, including when it is killed with SIGKILL (a small watcher process
 * does it). Children forked later do not inherit the registrations. */
int mp__tracker_register(const char *name);
int mp__tracker_unregister(const char *name);

#endif
