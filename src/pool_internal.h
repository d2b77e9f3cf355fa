/* Pool internals shared by src/pool*.c.
 *
 * One MAP_SHARED mapping (anonymous for forked workers, a memfd passed to
 * fork-server workers) holds, per worker, a task ring (parent writes, worker
 * reads) and a result ring (worker writes, parent reads): both
 * single-producer single-consumer byte rings of 64-byte aligned records, with
 * positions as ever-growing byte offsets, so a crash can never leave a ring
 * half-updated. A worker publishes its result before it advances its task
 * tail, and notes the sequence number of the task it runs (cur_seq): after a
 * death the parent knows exactly whether its oldest unanswered task died
 * with the worker or never started. A worker process can write everything
 * in the mapping, so the parent goes by its own copies of the tasks it
 * wrote (mp__tshadow_t) and only checks the worker's words and records
 * against them. Sleeping sides set a flag and futex-wait
 * (workers) or poll an eventfd (the parent's collector); the other side makes
 * a syscall only when that flag is set. */
#ifndef MPROC_POOL_INTERNAL_H
#define MPROC_POOL_INTERNAL_H

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "internal.h"
#include "mproc/pool.h"
#include "mproc/process.h"

#define MP__POOL_RING (2u << 20) /* bytes per ring; power of two */
#define MP__POOL_RMASK (MP__POOL_RING - 1)
#define MP__POOL_REC 64                     /* record alignment and header */
#define MP__POOL_MAXPAY (MP__POOL_RING / 4) /* largest payload per record */

enum {
  MP__K_SKIP = 1,
  MP__K_APPLY = 2,
  MP__K_MAP = 3,
  MP__K_RESULT = 4,
  MP__K_IMAP = 5 /* a map chunk whose result carries every item's status */
};
enum { MP__RF_MORE = 1 };

typedef struct {
  uint32_t size; /* whole record, multiple of MP__POOL_REC */
  uint32_t kind;
  uint64_t id;  /* parent job address, echoed back */
  uint64_t seq; /* per worker slot, from 1 */
  uint64_t fn;  /* function address: workers run the parent's image */
  uint64_t start;
  uint32_t count; /* map items */
  uint32_t item_size;
  uint32_t result_size;
  uint32_t len; /* payload bytes */
} mp__trec_t;

typedef struct {
  uint32_t size;
  uint32_t kind;
  uint64_t id;
  uint64_t seq;
  uint64_t start;
  uint32_t count;
  uint32_t flags; /* MP__RF_MORE: more parts follow */
  int32_t status; /* 0 or the task's code */
  uint32_t fail_index;
  uint32_t len;
  uint32_t pad;
  uint64_t ns; /* run time, for the dispatch cap */
} mp__rrec_t;

_Static_assert(sizeof(mp__trec_t) <= MP__POOL_REC, "task header");
_Static_assert(MP__POOL_MAXPAY == MP_POOL_MAX_ARG, "documented limit");
_Static_assert(sizeof(mp__rrec_t) <= MP__POOL_REC, "result header");

typedef struct {
  alignas(64) _Atomic uint64_t t_head; /* parent */
  _Atomic uint32_t t_wait;             /* worker sleeps for tasks */
  _Atomic uint32_t stop;
  alignas(64) _Atomic uint64_t t_tail; /* worker */
  _Atomic uint64_t cur_seq;
  _Atomic uint32_t exiting;
  alignas(64) _Atomic uint64_t r_head; /* worker */
  alignas(64) _Atomic uint64_t r_tail; /* parent */
  _Atomic uint32_t r_wait;             /* worker sleeps for space */
} mp__wshm_t;

typedef struct {
  alignas(64) _Atomic uint32_t parent_wait; /* collector sleeps */
  /* Parent threads blocked in get/next/apply sleep on useq (a futex) and
   * collect results themselves when woken: one wake-up instead of two. */
  alignas(64) _Atomic uint32_t ucollect; /* threads waiting (spin or sleep) */
  _Atomic uint32_t uwait;                /* of which sleeping */
  _Atomic uint32_t useq;
} mp__pshm_t;

/* Writer of one result ring (a worker, or the MPI communication thread). */
typedef struct {
  mp__wshm_t *ws;
  mp__pshm_t *ps;
  uint8_t *base;
  uint64_t head;
  int doorbell;
} rwriter_t;
/* Room for a record of size bytes (waits for the parent to drain), then
 * publish it (wakes the parent if it sleeps). */
uint8_t *mp__pool_rreserve(rwriter_t *rw, size_t size);
void mp__pool_rpublish(rwriter_t *rw, size_t size);

/* What mp_pool_worker_index returns in this thread (-1: none). */
void mp__pool_set_worker_index(int index);
/* The result record at tail of a result ring (ring: MP__POOL_RING bytes)
 * whose writer published head: a whole record between tail and head that
 * does not run past the ring's end, its payload inside it. *out points at
 * it. 0 or MP_EPROTO (written by no worker: the worker is corrupt). */
int mp__pool_rrec_parse(const uint8_t *ring, uint64_t tail, uint64_t head,
                        const mp__rrec_t **out);
/* Whether a result record fits the job it names: for an apply (kind
 * J_APPLY) nothing more; for a map (J_MAP) items [start, start+count) lie
 * within the n items, count within the `left` still due and the payload
 * holds count results of result_size bytes; for an imap (J_IMAP) the same
 * with a status word per item, and items below n (the items handed out).
 * 0 or MP_EPROTO. */
int mp__pool_rrec_fits(const mp__rrec_t *rr, int kind, size_t n, size_t left,
                       size_t result_size);
/* The live job whose address is id, or NULL: ids come back from rings
 * other processes can write. Under mu. */
struct job *mp__pool_job_find(mp_pool_t *p, uint64_t id);

/* Worker w's result ring and its control block (tests). */
uint8_t *mp__pool_rring(mp_pool_t *p, int w);
mp__wshm_t *mp__pool_wshm(mp_pool_t *p, int w);

/* Bytes a record with paylen payload bytes takes in a ring. */
size_t mp__pool_rec_size(size_t paylen);
/* Run tasks from the slot's rings until told to stop or maxtasks (0: no
 * limit) tasks ran. */
void mp__pool_worker_loop(mp__wshm_t *ws, mp__pshm_t *ps, uint8_t *tring,
                          uint8_t *rring, int doorbell, int index,
                          unsigned maxtasks, void *ctx);

/* ---- parent side (pool.c, pool_imap.c) ------------------------------------
 */

enum { J_APPLY = 1, J_MAP = 2, J_IMAP = 3 };

typedef struct job {
  int kind;
  _Atomic int refs;
  struct job *lprev, *lnext; /* live list: jobs with work outstanding */
  /* Live jobs are also hashed by address: a job id read back from a ring
   * is looked up there, never dereferenced as it is. */
  struct job *hnext, **hpprev;
} job_t;

#define MP__POOL_JHASH 4096 /* buckets of the live-job hash; power of two */

struct mp_result {
  job_t j;
  _Atomic uint32_t state; /* 0 pending, 1 collected (callback due), 2 ready */
  _Atomic uint32_t waiters;
  _Atomic int efd;
  mp_pool_t *pool; /* holds a reference on it (mp__pool_unref) */
  int err, task_code;
  mp_buf_t data; /* result bytes, or the task's message */
  mp_async_opts_t cb;
  /* map */
  uint8_t *results;
  size_t result_size, n, left, fail_index;
  int fail_code, fail_err;
  struct mp_result *cb_next;
};

struct mp_imap {
  job_t j;
  mp_pool_t *pool;
  mp_map_fn fn;
  size_t item_size, result_size, chunksize, cap;
  bool ordered, input_done, terminated;
  int input_err;
  const uint8_t *items;
  size_t n;
  mp_input_fn input;
  void *input_user;
  size_t next_in, next_out, unreturned, pending_chunks;
  /* ordered: slot = index % cap; unordered: a FIFO of completed items */
  uint8_t *sstate;
  int *serr, *scode;
  size_t *sindex;
  uint8_t *sres;
  size_t fhead, ftail;
  uint8_t *stage;
  _Atomic uint32_t seq;
};

typedef struct backlog {
  struct backlog *next;
  mp__trec_t h;
  uint8_t payload[];
} backlog_t;

/* A task the parent wrote into a worker's task ring, as it wrote it: the
 * worker can write its ring too, so settling a slot, checking its results
 * and moving its tasks elsewhere go by these copies, never by the ring. */
typedef struct {
  mp__trec_t h;
  uint64_t pos; /* ring position of its record */
} mp__tshadow_t;

typedef struct {
  pid_t pid;
  int pidfd;          /* fork server: the status fd of proc, owned by proc */
  mp_process_t *proc; /* fork-server worker; NULL otherwise */
  pthread_t th;
  bool alive;   /* tasks may be routed to it; written under mu */
  bool corrupt; /* one of its rings failed a check: it is stopped, and its
                 * unanswered tasks fail (under mu) */
  bool killed;  /* collector: the corrupt worker was told to go */
  bool need_spawn; /* collector: a replacement is due at respawn_at */
  uint64_t t_head, next_seq, done_seq;
  uint64_t tail_seen;      /* its task-ring tail when last checked */
  _Atomic uint64_t r_tail; /* written under mu, read unlocked as a hint */
  size_t out;              /* tasks in its ring not yet answered */
  /* Local pools: those `out` tasks, oldest first (a power-of-two ring of
   * sh_cap entries from sh_first). The MPI backend keeps none. */
  mp__tshadow_t *sh;
  size_t sh_cap, sh_first;
  uint64_t spawned_ns, spawned_done;
  unsigned fail_streak; /* replacements that died before any task */
  uint64_t respawn_at;  /* collector: when to try the next fork */
  unsigned respawn_delay_us, respawn_tries;
  uint64_t ring_checked_ns; /* collector: last check of a live worker */
} wpar_t;

struct mp_pool {
  int nw;
  mp_pool_opts_t opts;
  uint8_t *map;
  size_t map_len;
  int memfd; /* fork server: the rings, passed to every worker; else -1 */
  mp__pshm_t *ps;
  pthread_mutex_t mu;
  pthread_cond_t idle_cv;
  wpar_t *w;
  struct pollfd *pfd; /* collector's poll set: doorbell + pidfds */
  int *pw;            /* worker of each pfd entry (-1: doorbell) */
  backlog_t *bl_head, *bl_tail;
  job_t live;
  size_t live_count;
  job_t **jhash; /* MP__POOL_JHASH buckets of live jobs */
  unsigned rr;
  uint64_t avg_ns;
  bool closed, terminated, joined, stopping_sent;
  _Atomic int stopping; /* 1: let workers finish, 2: kill them */
  int doorbell;
  _Atomic int ufd;
  pthread_t collector, cbthread;
  _Atomic uint32_t collector_done;
  pthread_mutex_t cbmu;
  pthread_cond_t cbcv;
  mp_result_t *cbh, *cbt;
  bool cbquit;
  pid_t parent_pid;
  sigset_t child_mask;
  _Atomic uint32_t started;
  int start_err;
  struct mp__mpi *mpi; /* MPI backend (pool_mpi.c); NULL otherwise */
  /* The struct outlives mp_pool_destroy while results or iterators hold
   * references; destroy frees everything else once no thread is inside a
   * wait on them (users) and marks it gone. */
  _Atomic int refs;
  _Atomic uint32_t users, gone;
};

/* Shared by pool.c and pool_imap.c; "under mu" means with pool->mu held. */
void mp__pool_live_add(mp_pool_t *p, job_t *j);    /* under mu; takes a ref */
void mp__pool_live_remove(mp_pool_t *p, job_t *j); /* under mu */
void mp__pool_job_unref(job_t *j);
void mp__pool_notify_waiters(mp_pool_t *p);
void mp__pool_collect_begin(mp_pool_t *p);
void mp__pool_collect_end(mp_pool_t *p);
bool mp__pool_collect_now(mp_pool_t *p);
int mp__pool_wait_until(mp_pool_t *p, bool (*cond)(void *), void *arg,
                        const mp__deadline_t *dl);
size_t mp__pool_piece_items(size_t isz, size_t rsz);
int mp__pool_dispatch_map(mp_pool_t *p, job_t *j, uint32_t kind, mp_map_fn fn,
                          const uint8_t *items, size_t start, size_t count,
                          size_t isz, size_t rsz, size_t *queued);
void mp__pool_fail_task(mp_pool_t *p, const mp__trec_t *t, int err);
void mp__pool_imap_chunk_done(mp_pool_t *p, mp_imap_t *im, size_t start,
                              size_t count, const uint8_t *res,
                              const int32_t *sts, int err);
void mp__pool_imap_free(mp_imap_t *im);
/* A result or iterator holds the pool's struct: taken when it is made,
 * dropped when it is freed. */
void mp__pool_ref(mp_pool_t *p);
void mp__pool_unref(mp_pool_t *p);
/* A thread about to wait on a result or iterator of p: false if p is
 * destroyed (then every job of it is complete); else p stays usable until
 * mp__pool_leave. */
bool mp__pool_enter(mp_pool_t *p);
void mp__pool_leave(mp_pool_t *p);

/* ---- MPI backend (pool_mpi*.c; pool_mpi_none.c without MPI) -------------
 * mp__pool_mpi_open runs on every rank inside mp_pool_create: it initialises
 * MPI if needed and checks that all ranks run the same binary. On a worker
 * rank it then serves tasks until the root stops it and returns
 * MP_EWORKERRANK; on the root it returns 0 with *nw the worker count. The
 * root's slots are virtual: one communication thread (started by
 * mp__pool_mpi_start once the rings exist) takes the tasks from every slot's
 * task ring, hands them to idle ranks and writes their results back into the
 * ring of the slot the task came from, so the rest of the pool works
 * unchanged. mp__pool_mpi_kick wakes that thread (a task was pushed while it
 * slept); mp__pool_mpi_free stops the ranks (if not done yet) and frees. */
/* Slot w's words and task ring (its result ring follows the task ring). */
mp__wshm_t *mp__pool_slot_words(mp_pool_t *p, int w);
uint8_t *mp__pool_slot_tring(mp_pool_t *p, int w);
int mp__pool_mpi_open(const mp_pool_opts_t *o, struct mp__mpi **out, int *nw);
int mp__pool_mpi_start(mp_pool_t *p);
void mp__pool_mpi_kick(mp_pool_t *p);
void mp__pool_mpi_free(mp_pool_t *p);

/* Test-only, 0 in programs: that many worker forks fail with MP_EAGAIN
 * (a fork that fails for a while, as under RLIMIT_NPROC). */
extern _Atomic int mp__test_pool_fork_failures;

#endif
