/* Pool internals shared by src/pool*.c.
 *
 * One MAP_SHARED anonymous mapping holds, per worker, a task ring (parent
 * writes, worker reads) and a result ring (worker writes, parent reads): both
 * single-producer single-consumer byte rings of 64-byte aligned records, with
 * positions as ever-growing byte offsets, so a crash can never leave a ring
 * half-updated. A worker publishes its result before it advances its task
 * tail, and notes the sequence number of the task it runs (cur_seq): after a
 * death the parent knows exactly whether the task at the tail finished, died
 * with the worker or never started. Sleeping sides set a flag and futex-wait
 * (workers) or poll an eventfd (the parent's collector); the other side makes
 * a syscall only when that flag is set. */
#ifndef MPROC_POOL_INTERNAL_H
#define MPROC_POOL_INTERNAL_H

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "internal.h"
#include "mproc/pool.h"

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

/* What mp_pool_worker_index returns in this thread (-1: none). */
void mp__pool_set_worker_index(int index);
/* Bytes a record with paylen payload bytes takes in a ring. */
size_t mp__pool_rec_size(size_t paylen);
/* Run tasks from the slot's rings until told to stop or maxtasks (0: no
 * limit) tasks ran. */
void mp__pool_worker_loop(mp__wshm_t *ws, mp__pshm_t *ps, uint8_t *tring,
                          uint8_t *rring, int doorbell, int index,
                          unsigned maxtasks, void *ctx);

#endif
