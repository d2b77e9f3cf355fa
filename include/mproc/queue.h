/* mproc: queue. Python's Queue, JoinableQueue and SimpleQueue as one
 * multi-producer multi-consumer queue of byte messages living in shared
 * memory.
 *
 * Python                          mproc
 *   Queue(maxsize)                  mp_queue_create with opts.maxsize
 *   JoinableQueue(maxsize)          the same with MP_QUEUE_JOINABLE
 *   SimpleQueue()                   mp_queue_create(&q, NULL): no size bound
 *   put / put_nowait                mp_queue_put(q, msg, len, ms / 0)
 *   get / get_nowait                mp_queue_get(q, &msg, &len, ms / 0)
 *   queue.Full / queue.Empty        MP_EFULL / MP_EEMPTY
 *
 * Messages are byte strings of 0 bytes up to the queue's capacity. A put
 * returns only once the message is in shared memory: an acknowledged message
 * is never lost, whatever happens to the producer afterwards. Order is FIFO
 * per producer (and globally: one lock orders all puts). Any number of
 * producers and consumers, processes and threads alike, may use one queue.
 *
 * Sharing: a queue created before fork() is used by the child through the
 * same mp_queue_t pointer (the mapping is inherited). An unrelated process
 * opens it with mp_queue_open(&q, name). The name is removed when the
 * creating process destroys the queue or exits, even by SIGKILL; processes
 * that have it open keep using it.
 *
 * Crashes: a producer or consumer killed at any moment (SIGKILL included),
 * inside put or get, never leaves the queue hung or unusable. Messages put
 * before the crash stay in the queue. A consumer killed inside get loses at
 * most the message it was taking (get_many: the batch it was taking), and
 * only if it was killed after the point where the message left the queue.
 * docs/queue.md has the details. */
#ifndef MPROC_QUEUE_H
#define MPROC_QUEUE_H

#include <stdbool.h>
#include <sys/uio.h>

#include "common.h"
#include "error.h"
#include "wait.h"

MP_BEGIN_DECLS

typedef struct mp_queue mp_queue_t;

/* Flags for mp_queue_opts_t.flags. */
enum {
  /* JoinableQueue: enables mp_queue_task_done and mp_queue_join. */
  MP_QUEUE_JOINABLE = 1 << 0,
};

/* Default byte capacity (address space reserved; memory is only used as the
 * backlog grows). */
#define MP_QUEUE_DEFAULT_CAPACITY ((size_t)64 << 20)
/* Largest accepted capacity. */
#define MP_QUEUE_MAX_CAPACITY ((size_t)1 << 40)
/* Longest name accepted by create/open, without the final NUL. */
#define MP_QUEUE_NAME_MAX 56

/* Options for mp_queue_create; all-zero (or opts NULL) gives the defaults.
 *   maxsize   most messages held at once; 0: bounded only by capacity
 *             (Python's maxsize <= 0).
 *   capacity  bytes of message storage; 0: MP_QUEUE_DEFAULT_CAPACITY. Each
 *             message uses its length rounded up to 8 plus 8 bytes; a single
 *             message of up to `capacity` bytes always fits in an empty
 *             queue. Larger messages get MP_EMSGSIZE.
 *   name      "name" or "/name" (the same queue; at most MP_QUEUE_NAME_MAX
 *             chars with the leading '/', no other '/'), or NULL for a
 *             random "/mp-<hex>" name. mp_queue_name gives "/name".
 *   flags     MP_QUEUE_* bits. */
typedef struct mp_queue_opts {
  size_t maxsize;
  size_t capacity;
  const char *name;
  unsigned flags;
} mp_queue_opts_t;

/* Create a queue in a new shared-memory segment (mode 0600, O_EXCL) and
 * return a handle in *q. The caller owns the handle (mp_queue_destroy).
 * Errors: MP_EINVAL (q NULL, bad name, capacity above MP_QUEUE_MAX_CAPACITY,
 * unknown flags), MP_EEXIST (name taken), MP_ENAMETOOLONG, MP_ENOMEM, or a
 * system error from creating the segment. Valid after fork: the child uses
 * the same handle. */
MP_EXTERN int mp_queue_create(mp_queue_t **q, const mp_queue_opts_t *opts);

/* Open an existing queue by name (from mp_queue_name) in this process; the
 * caller owns the new handle (mp_queue_destroy, which does not remove the
 * name). Only a queue owned by the effective uid with no group/other
 * permission bits is opened, and its header is checked against the object
 * before use. Errors: MP_EINVAL (q or name NULL, bad name, not a queue),
 * MP_ENOENT (no such queue), MP_EACCES (another user's, or group/other
 * bits set), MP_EPROTO (corrupt header), MP_ENOMEM. Later calls return
 * MP_EPROTO when a record or header field another process corrupted does
 * not fit the queue (nothing is changed; see docs/queue.md). */
MP_EXTERN int mp_queue_open(mp_queue_t **q, const char *name);

/* The queue's name ("/mp-..."), owned by the handle and valid until
 * mp_queue_destroy; NULL when q is NULL. */
MP_EXTERN const char *mp_queue_name(const mp_queue_t *q);

/* Copy msg[0..len) into the queue as one message. Blocks while the queue is
 * full (maxsize messages or not enough bytes), at most timeout_ms.
 * Returns 0 once the message is in the queue.
 * Errors: MP_EFULL (still full at the deadline, or at once with 0),
 * MP_ECLOSED (queue closed), MP_EMSGSIZE (len > capacity), MP_EINVAL (q NULL,
 * msg NULL with len > 0, bad timeout), MP_ENOSPC (no room in /dev/shm to
 * grow the ring). */
MP_EXTERN int mp_queue_put(mp_queue_t *q, const void *msg, size_t len,
                           int timeout_ms);

/* Take the oldest message. On success *msg is a malloc'd copy the caller
 * frees (never NULL, even for a 0-byte message) and *len its length.
 * Blocks while the queue is empty, at most timeout_ms.
 * Errors: MP_EEMPTY (still empty at the deadline, or at once with 0),
 * MP_ECLOSED (closed and nothing left), MP_ENOMEM (message left in the
 * queue), MP_EINVAL (NULL argument, bad timeout), MP_EIO (the segment holds
 * an impossible length: written by something else). */
MP_EXTERN int mp_queue_get(mp_queue_t *q, void **msg, size_t *len,
                           int timeout_ms);

/* Like mp_queue_get, but copies the message into buf[0..cap) and sets *len.
 * Errors as mp_queue_get, plus MP_ETOOSHORT: the oldest message is longer
 * than cap; it stays in the queue and *len is set to its length.
 * buf may be NULL when cap is 0. */
MP_EXTERN int mp_queue_get_into(mp_queue_t *q, void *buf, size_t cap,
                                size_t *len, int timeout_ms);

/* Put msgs[0..n) in order, taking the lock once for as many as fit.
 * Blocks while full, at most timeout_ms in all. Returns the number of
 * messages put: n, or fewer when the deadline passed or the queue was closed
 * after some were put (the first count are in the queue, the rest are not).
 * Errors (nothing put): MP_EFULL, MP_ECLOSED, MP_EMSGSIZE (any message longer
 * than capacity; checked before anything is put), MP_EINVAL (q or msgs NULL,
 * n == 0 or above INT32_MAX, an iov_base NULL with iov_len > 0, bad
 * timeout). */
MP_EXTERN int mp_queue_put_many(mp_queue_t *q, const struct iovec *msgs,
                                size_t n, int timeout_ms);

/* Take up to n messages at once. Blocks until at least one is there (at most
 * timeout_ms), then takes the oldest messages that are waiting, as many as
 * fit in buf[0..cap): message i is copied to msgs[i].iov_base (inside buf,
 * each starting at an offset that is a multiple of 8) with its length in
 * msgs[i].iov_len. Returns the number taken (1..n).
 * Errors: MP_EEMPTY, MP_ECLOSED (closed and empty), MP_ETOOSHORT (the oldest
 * message does not fit in cap: it stays, and msgs[0].iov_len is its length),
 * MP_EINVAL (NULL argument, n == 0 or above INT32_MAX, bad timeout). */
MP_EXTERN int mp_queue_get_many(mp_queue_t *q, void *buf, size_t cap,
                                struct iovec *msgs, size_t n, int timeout_ms);

/* Exact number of messages in the queue now, in *n. Errors: MP_EINVAL. */
MP_EXTERN int mp_queue_qsize(mp_queue_t *q, size_t *n);

/* 1 if the queue holds no message, 0 if it does; MP_EINVAL for NULL. */
MP_EXTERN int mp_queue_empty(mp_queue_t *q);

/* 1 if the queue holds maxsize messages (always 0 without maxsize; a put may
 * still block for lack of bytes), 0 otherwise; MP_EINVAL for NULL. */
MP_EXTERN int mp_queue_full(mp_queue_t *q);

/* Close the queue for everyone (Python 3.13's Queue.shutdown(), not
 * multiprocessing's per-process close()): later puts fail with MP_ECLOSED,
 * gets return what is left and then MP_ECLOSED, blocked callers wake up.
 * Closing twice is fine. Errors: MP_EINVAL. */
MP_EXTERN int mp_queue_close(mp_queue_t *q);

/* JoinableQueue: one message taken by a get has been handled. join returns
 * once every message ever put has been matched by a task_done.
 * Errors: MP_EINVAL (q NULL, or called more times than messages were
 * taken: Python's ValueError), MP_ENOTSUP (queue created without
 * MP_QUEUE_JOINABLE). */
MP_EXTERN int mp_queue_task_done(mp_queue_t *q);

/* JoinableQueue: block until every message put has been marked done with
 * mp_queue_task_done (at most timeout_ms). Returns 0.
 * Errors: MP_ETIMEDOUT, MP_ENOTSUP (not joinable), MP_EINVAL. A consumer
 * killed between get and task_done leaves its message unfinished, as in
 * Python: join then waits until its deadline. */
MP_EXTERN int mp_queue_join(mp_queue_t *q, int timeout_ms);

/* A descriptor that polls readable (POLLIN / EPOLLIN, level-triggered)
 * while the queue holds messages or is closed, for epoll, libuv and the
 * like. It may poll readable after another consumer took the last message:
 * get with timeout 0 and expect MP_EEMPTY. Do not read from, write to or
 * close it; it belongs to the handle, is valid until mp_queue_destroy and is
 * inherited by children forked afterwards. Costs: the first call makes every
 * user of this queue signal a FIFO when the queue turns non-empty or empty
 * (one small syscall per transition, none per message otherwise); queues
 * nobody polls pay nothing. Errors: MP_EINVAL, MP_EMFILE and other open(2)
 * errors. */
MP_EXTERN int mp_queue_fd(mp_queue_t *q, int *fd);

/* For mp_wait (include/mproc/wait.h): ready while a message is waiting or
 * the queue is closed. Uses mp_queue_fd; .fd is -1 when q is NULL or the
 * descriptor cannot be opened (mp_wait then returns MP_EINVAL). */
MP_EXTERN mp_waitable_t mp_queue_waitable(mp_queue_t *q);

/* Release this handle: unmap, close its descriptors, free it. When called in
 * the process that created the queue, also removes the name (processes that
 * have the queue open keep using it; new opens fail with MP_ENOENT). Messages
 * still in the queue are dropped once the last user is gone. Never call it
 * while another thread uses the handle. Returns 0, or MP_EINVAL for NULL. */
MP_EXTERN int mp_queue_destroy(mp_queue_t *q);

MP_END_DECLS

#endif
