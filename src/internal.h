/* mproc internal helpers (mp__ prefix): futex, time, fd utilities and
 * shared-memory segments. Not part of the public API. */
#ifndef MPROC_INTERNAL_H
#define MPROC_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
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
/* Descriptors riding on a Unix socket message (SCM_RIGHTS). set_fds puts n
 * descriptors into msg, using buf (CMSG_SPACE(n * sizeof(int)) bytes,
 * aligned for struct cmsghdr, n > 0) as its control data. take_fds copies
 * up to cap received descriptors into fds and closes the rest; returns how
 * many it copied. */
struct msghdr;
void mp__cmsg_set_fds(struct msghdr *msg, void *buf, const int *fds, size_t n);
size_t mp__cmsg_take_fds(struct msghdr *msg, int *fds, size_t cap);

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
/* Test-only hook, NULL in programs: draws mp__seg_create's random names
 * instead of mp__random_name, so a test can make one collide. */
extern int (*mp__test_random_name)(char *buf, size_t cap, const char *prefix);
/* Open an existing segment by name; its current size is read with fstat.
 * reserve 0 means map exactly the current size. MP_ENOENT if missing,
 * MP_EACCES if it belongs to another user or has group/other permission
 * bits (mp__seg_check_owner). */
int mp__seg_open(mp__seg_t *seg, const char *name, size_t reserve);
/* Owner check of an object opened by name (st from fstat on its fd): a
 * regular file or FIFO owned by the effective uid with no group or other
 * permission bits, else MP_EACCES. */
struct stat;
int mp__seg_check_owner(const struct stat *st);
/* Allocate every page of [off, off+len) of fd now (extending its size when
 * needed, never shrinking). 0, MP_ENOSPC (/dev/shm full), MP_ENOMEM, or
 * -errno. */
int mp__seg_reserve_range(int fd, uint64_t off, uint64_t len);
/* Grow the object to new_size (<= reserve), every page of the new range
 * allocated (MP_ENOSPC / MP_ENOMEM when the system has no room). Other mappings of the same
 * reservation see the new pages at once. */
int mp__seg_grow(mp__seg_t *seg, size_t new_size);
/* Unmap and close; the name stays. */
void mp__seg_close(mp__seg_t *seg);
/* Remove the name (and untrack it). */
int mp__seg_unlink(const char *name);
/* Canonical segment name "/x" from "x" or "/x" into buf (cap bytes).
 * MP_EINVAL (NULL, empty, "/" inside), MP_ENAMETOOLONG. */
int mp__seg_canon(char *buf, size_t cap, const char *name);

/* Segment tracker: names registered here are unlinked when this process
 * exits, including when it is killed with SIGKILL (a small watcher process
 * does it). Children forked later do not inherit the registrations. */
int mp__tracker_register(const char *name);
int mp__tracker_unregister(const char *name);
/* The tracker's watcher process (src/shm_tracker.c), 0 if none: for tests. */
pid_t mp__tracker_pid(void);

/* A fork-like child made with clone3(CLONE_PIDFD) and no exit signal (the
 * older clone call when clone3 is refused): 0 in the child, its pid in the
 * parent with *pidfd set, or -errno. The kernel counts it a "clone" child:
 * wait(2), waitpid(-1) and waitid(P_ALL) without __WALL never report it,
 * SIGCHLD SIG_IGN does not reap it and no SIGCHLD is sent; reap it with
 * waitid(P_PIDFD, ..., WEXITED | __WALL). The raw clone skips the C
 * library's fork handling (no atfork handler, locks of other threads stay
 * held, the thread id cached by the library is the parent's): the child
 * makes plain system calls, or the caller knows it has one thread. */
pid_t mp__clone_quiet(int *pidfd);

/* ---- queue ----------------------------------------------------------------
 * Check a queue header at base (obj_size bytes backed, mapped bytes of
 * address space) as mp_queue_open does: 0, MP_EINVAL (not a queue),
 * MP_EPROTO (a field outside what the creator could have written). */
int mp__queue_check(const void *base, size_t obj_size, size_t mapped);
/* Fuzzing aid: stamp a queue header's magic and version (so arbitrary
 * bytes reach the checks behind them) and free both locks (a lock held by
 * a live process is a wait, not a fault, and would only stall the fuzzer). */
void mp__queue_fuzz_prepare(void *base);

/* ---- process identity ----------------------------------------------------
 * Lock words hold an owner's pid (or thread id) with its start time beside
 * them, so waiters can tell a dead owner from a live one and from a new
 * process under a reused pid. (src/proc_identity.c) */

/* State letter, thread count and start time (clock ticks since boot) of
 * /proc/<id>/stat; id is a pid or a thread id. The state is 'K' when a
 * fatal signal is pending (the process is dying), 'E' when the thread is
 * inside exit (like a zombie, it is gone). Returns 0, MP_ENOENT (no
 * such process or thread), or another code when /proc cannot tell. */
int mp__proc_stat(uint32_t id, char *state, long *threads, uint64_t *start);
/* Start time of process or thread id (0 when /proc cannot tell); same
 * returns as mp__proc_stat. */
int mp__pid_start_time(uint32_t id, uint64_t *start);

/* This process's pid and this thread's id, and their start times (0 when
 * /proc cannot tell), cached: reset in forked children. */
uint32_t mp__self_pid(void);
uint64_t mp__self_pid_start(void);
uint32_t mp__self_tid(void);
uint64_t mp__self_tid_start(void);
/* This process's (thread_level: this thread's) identity as the robust
 * core's owner words hold it: the low 32 bits of its start time << 32 | its
 * id. Cached; reset in forked children. */
uint64_t mp__self_ident(bool thread_level);

/* What /proc says of a lock owner (a pid, or a thread id if thread_level).
 * Returns MP__OWNER_GONE when it certainly holds nothing any more: no such
 * process/thread, dying (a fatal signal pending), or dead and not yet
 * reaped. A process whose main thread
 * ended while other threads run shows a zombie leader but is alive; as a
 * thread, that main thread is gone. Returns MP__OWNER_EXISTS with *start
 * set when it exists (the caller decides whether the start time shows a
 * reused id), or a negative code when /proc cannot tell (count it alive). */
enum { MP__OWNER_EXISTS = 0, MP__OWNER_GONE = 1 };
int mp__owner_probe(uint32_t id, bool thread_level, uint64_t *start);

/* ---- spawner thread -------------------------------------------------------
 * The parent-death signal follows the thread that forked, so children asked
 * for by threads other than the main one are started by one internal thread
 * that lives as long as the process (src/spawner.c). Runs fn(arg) on it,
 * blocking until done, and returns fn's result, or a negative code if the
 * thread cannot be started. The thread blocks every signal: fn passes the
 * asking thread's mask on to the child itself. Requests are served one at a
 * time; fn must not call mp__spawner_run. */
int mp__spawner_run(int (*fn)(void *arg), void *arg);

#endif
