/* mproc: process and thread pools (Python's Pool, ThreadPool, AsyncResult).
 *
 * One API, two backends: MP_POOL_PROCESSES (forked workers; tasks and results
 * travel through one shared-memory segment) and MP_POOL_THREADS (threads of
 * the caller; same rings, same semantics). Argument bytes are always copied,
 * so a task behaves the same on both backends.
 *
 * Threads of a pool in the parent:
 *   - a collector thread reads results, completes result handles, watches the
 *     workers (pidfds) and replaces dead ones;
 *   - one callback thread ("the result thread") runs every callback and error
 *     callback, one at a time, in completion order, exactly once per task. A
 *     slow callback delays only the callbacks queued behind it (and the
 *     readiness of their results): collection, other results and the workers
 *     go on.
 *
 * Crashes: a worker that dies while running a task (SIGKILL, a segfault,
 * _exit) completes that task with MP_EWORKERDIED (error callback called) and
 * is replaced; every other task still runs. Workers exit when the process
 * that owns the pool dies.
 *
 * Fork: a pool handle belongs to the process that created it. A child forked
 * by the caller must not use it (not even destroy it); worker processes are
 * handled by the pool itself. Every handle here is thread-safe unless noted. */
#ifndef MPROC_POOL_H
#define MPROC_POOL_H

#include <stdbool.h>

#include "common.h"
#include "error.h"
#include "wait.h"

MP_BEGIN_DECLS

/* ---- result bytes ---------------------------------------------------------
 * A growable byte buffer. A task writes its result (or, on error, its message)
 * into the mp_buf_t it is given; the caller of mp_pool_apply receives one.
 * Zero-initialise (or MP_BUF_INIT) before first use; free with mp_buf_free.
 * `data` is malloc'd and owned by the buffer. */
typedef struct mp_buf {
  void *data;
  size_t len;
  size_t cap;
} mp_buf_t;

#define MP_BUF_INIT                                                            \
  { NULL, 0, 0 }

/* Replace the contents with len bytes from data (data may be NULL when len is
 * 0). Returns 0, MP_EINVAL (b NULL, data NULL with len > 0) or MP_ENOMEM
 * (contents unchanged). */
MP_EXTERN int mp_buf_set(mp_buf_t *b, const void *data, size_t len);

/* Append len bytes. Returns 0, MP_EINVAL or MP_ENOMEM (contents unchanged). */
MP_EXTERN int mp_buf_append(mp_buf_t *b, const void *data, size_t len);

/* Make room for len more bytes and point *out at them; the caller writes
 * them and then calls mp_buf_commit(b, len). Returns 0, MP_EINVAL, MP_ENOMEM.
 */
MP_EXTERN int mp_buf_reserve(mp_buf_t *b, size_t len, void **out);
MP_EXTERN int mp_buf_commit(mp_buf_t *b, size_t len); /* MP_EINVAL past cap */

/* Replace the contents with a printf-formatted, NUL-terminated string (len
 * counts the NUL). Returns 0, MP_EINVAL or MP_ENOMEM. */
MP_EXTERN int mp_buf_printf(mp_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Free the data and reset to empty. Returns 0 or MP_EINVAL (b NULL). */
MP_EXTERN int mp_buf_free(mp_buf_t *b);

/* Largest argument of apply/apply_async, and largest map item or result. */
#define MP_POOL_MAX_ARG (512u * 1024u)

/* ---- tasks ----------------------------------------------------------------
 * A pool task (Python's func(*args)): arg/len are a copy of the bytes given to
 * apply/apply_async; the result goes into *result (initially empty); ctx is
 * mp_pool_opts_t.ctx. Return 0 on success or any nonzero code of the task's
 * own choosing: the caller then gets MP_ETASK with that code, and whatever is
 * in *result is the error message (see mp_task_error). */
typedef int (*mp_task_fn)(const void *arg, size_t len, mp_buf_t *result,
                          void *ctx);

/* A map function over fixed-size items (Python's map/starmap func): read
 * item_size bytes at item, write result_size bytes at result. Return 0 or a
 * nonzero code of its own (the map then fails with MP_ETASK). */
typedef int (*mp_map_fn)(const void *item, void *result, void *ctx);

/* For a task: set *result to the formatted message and return code, so a task
 * can end with `return mp_task_error(result, 2, "no such file %s", p);`.
 * code 0 is turned into -1 (an error must stay an error). */
MP_EXTERN int mp_task_error(mp_buf_t *result, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Inside a task, map function or initializer: the worker's index in
 * [0, workers), stable across a replacement of that worker. Outside a pool
 * worker: MP_EINVAL. */
MP_EXTERN int mp_pool_worker_index(void);

/* ---- pool -------------------------------------------------------------- */
typedef struct mp_pool mp_pool_t;
typedef struct mp_result mp_result_t;
typedef struct mp_imap mp_imap_t;

typedef enum {
  MP_POOL_PROCESSES = 0, /* Python's Pool */
  MP_POOL_THREADS = 1,   /* Python's multiprocessing.pool.ThreadPool */
  /* MPI ranks (mpi4py's MPICommExecutor): every rank of `mpirun -n N prog`
   * calls mp_pool_create; rank 0 gets the pool, the N-1 others serve its
   * tasks inside mp_pool_create and return MP_EWORKERRANK once rank 0
   * destroyed the pool. See docs/pool.md, "Pools on MPI ranks". */
  MP_POOL_MPI = 2
} mp_pool_backend_t;

/* Options; zero-initialised means every default. */
typedef struct mp_pool_opts {
  /* 0 (zeroed options): the number of CPUs usable by this process, as
   * Python's Pool() without processes= (MPI: the other ranks; else it must
   * equal their number). Unlike Pool(processes=0), an explicit 0 is not an
   * error: in C it cannot be told from "not set". Negative or above 4096:
   * MP_EINVAL. */
  int workers;
  mp_pool_backend_t backend; /* processes (default) or threads */
  /* Run once in each worker (also in each replacement) before its first
   * task, with initarg (a pointer of the parent: valid in forked workers;
   * with MP_START_FORKSERVER it must point to memory that existed when the
   * fork server started, e.g. static data, as must ctx). */
  void (*initializer)(void *initarg);
  void *initarg;
  /* Python's maxtasksperchild: a worker exits and is replaced after this many
   * tasks (a map chunk counts as one task); 0 (zeroed options): never, as
   * Python's None. Above INT_MAX (e.g. a -1 stored here): MP_EINVAL.
   * Threads: the worker thread is replaced the same way (the initializer
   * runs again). */
  unsigned maxtasksperchild;
  /* MP_START_FORK (default): workers are forks of the collector thread.
   * MP_START_FORKSERVER: workers are forked by the fork server (started by
   * mp_pool_create unless already running; call mp_forkserver_start early,
   * before the program starts threads), so they inherit no thread state,
   * no descriptor opened after the server started nor any close-on-exec
   * one, and only the memory the program had when the server started. They
   * are the server's children, not the caller's. Ignored by the thread
   * backend. */
  mp_start_method_t start_method;
  void *ctx; /* passed to every task and map function */
} mp_pool_opts_t;

/* Create a pool and start its workers. Returns 0 with *pool set, or
 * MP_EINVAL (pool NULL, workers < 0 or > 4096, maxtasksperchild > INT_MAX,
 * bad backend or start method),
 * MP_ENOMEM, or a system error from fork/mmap/thread creation or the fork
 * server (nothing is left behind but a fork server it started). Destroy
 * with mp_pool_destroy.
 * MPI backend, on every rank: MP_EWORKERRANK on the worker ranks once the
 * root destroyed the pool (the rank served tasks meanwhile; *pool is not
 * set), MP_EBINARY when the ranks run different binaries (build-ids differ),
 * MP_EINVAL (a single rank, or workers neither 0 nor the number of other
 * ranks), MP_ENOTSUP (built without MPI, or MPI initialised by the program
 * below MPI_THREAD_SERIALIZED), MP_EIO (an MPI call failed). */
MP_EXTERN int mp_pool_create(mp_pool_t **pool, const mp_pool_opts_t *opts);

/* Number of workers. Returns it (> 0) or MP_EINVAL. */
MP_EXTERN int mp_pool_size(mp_pool_t *pool);

/* Callbacks of an asynchronous call (Python's callback / error_callback).
 * Both run in the pool's callback thread, exactly once per call in total:
 * callback on success with the result bytes (for map_async: the results array
 * and n * result_size), error_callback otherwise with err (MP_ETASK,
 * MP_EWORKERDIED, MP_ECLOSED), the task's own code (0 unless MP_ETASK) and
 * its message (never NULL, maybe ""). Pointers are valid during the call only.
 * A callback may submit new work but must not call join or destroy. */
typedef void (*mp_done_cb)(const void *data, size_t len, void *user);
typedef void (*mp_error_cb)(int err, int task_code, const char *msg,
                            void *user);

typedef struct mp_async_opts {
  mp_done_cb callback;
  mp_error_cb error_callback;
  void *user;
} mp_async_opts_t;

/* Run fn(arg, len) in a worker and wait for it (Python's apply). arg bytes are
 * copied. On 0, *result holds the result bytes (result may be NULL to drop
 * them). Errors: MP_EINVAL (pool or fn NULL, arg NULL with len > 0),
 * MP_ECLOSED (pool closed or terminated), MP_ETASK (the task failed:
 * *task_code gets its code when task_code is not NULL, *result its message),
 * MP_EWORKERDIED, MP_EMSGSIZE (len > MP_POOL_MAX_ARG), MP_ENOMEM, MP_EDEADLK
 * (called from this pool's callback thread, where it would wait for
 * itself). */
MP_EXTERN int mp_pool_apply(mp_pool_t *pool, mp_task_fn fn, const void *arg,
                            size_t len, mp_buf_t *result, int *task_code);

/* Submit fn(arg, len) (Python's apply_async). arg bytes are copied before the
 * call returns. out may be NULL: the pool then frees the result itself after
 * the callbacks ran. Returns 0 (*out set if given), MP_EINVAL, MP_ECLOSED,
 * MP_EMSGSIZE (len > MP_POOL_MAX_ARG), MP_ENOMEM; on error nothing was
 * submitted and no callback will run. Results have no size limit. */
MP_EXTERN int mp_pool_apply_async(mp_pool_t *pool, mp_task_fn fn,
                                  const void *arg, size_t len,
                                  const mp_async_opts_t *opts,
                                  mp_result_t **out);

/* Python's map: results[i] = fn(items[i]) for i in [0, n), items and results
 * being arrays of item_size / result_size bytes (result_size may be 0 and
 * results NULL). chunksize 0: ceil(n / (4 * workers)), as Python. Items are
 * copied to the workers chunk by chunk; results are written in input order.
 * Returns 0, MP_EINVAL (NULL pool/fn, items NULL with n > 0, item_size 0,
 * results NULL with result_size > 0), MP_ECLOSED, MP_ETASK (some item's fn
 * failed: the other results are still written), MP_EWORKERDIED, MP_ENOMEM,
 * MP_EMSGSIZE (item_size or result_size + 4 above MP_POOL_MAX_ARG),
 * MP_EDEADLK (from this pool's callback thread). n == 0 returns 0 at once.
 * Items of a chunk travel in pieces of at most MP_POOL_MAX_ARG bytes (of
 * items, and of results): a bigger chunk is several tasks for
 * maxtasksperchild. */
MP_EXTERN int mp_pool_map(mp_pool_t *pool, mp_map_fn fn, const void *items,
                          size_t n, size_t item_size, void *results,
                          size_t result_size, size_t chunksize);

/* Python's map_async: as mp_pool_map but returns at once; items are copied
 * before it returns; results must stay valid until the result is ready (or
 * until mp_pool_terminate/destroy returned). mp_result_get gives no bytes;
 * callback gets (results, n * result_size). Errors as mp_pool_apply_async. */
MP_EXTERN int mp_pool_map_async(mp_pool_t *pool, mp_map_fn fn,
                                const void *items, size_t n, size_t item_size,
                                void *results, size_t result_size,
                                size_t chunksize, const mp_async_opts_t *opts,
                                mp_result_t **out);

/* Python's starmap: `args` is an array of n argument structs (arg_size bytes
 * each, the C spelling of Python's tuples of arguments) and fn receives a
 * pointer to one struct; results as mp_pool_map. Same errors. */
MP_EXTERN int mp_pool_starmap(mp_pool_t *pool, mp_map_fn fn, const void *args,
                              size_t n, size_t arg_size, void *results,
                              size_t result_size, size_t chunksize);
MP_EXTERN int mp_pool_starmap_async(mp_pool_t *pool, mp_map_fn fn,
                                    const void *args, size_t n, size_t arg_size,
                                    void *results, size_t result_size,
                                    size_t chunksize,
                                    const mp_async_opts_t *opts,
                                    mp_result_t **out);

/* ---- imap -----------------------------------------------------------------
 * Lazy input for imap: write the next item (item_size bytes) at *item and
 * return 1, return 0 at the end of the input, or a negative code to stop the
 * iteration with that error. Called only from the thread calling
 * mp_pool_imap, mp_pool_imap_unordered or mp_imap_next, never concurrently. */
typedef int (*mp_input_fn)(void *item, void *user);

typedef struct mp_imap_opts {
  size_t chunksize;    /* 0: 1, as Python */
  size_t max_inflight; /* items read but not yet returned; 0: default */
  mp_input_fn input;   /* when set, items come from here (items ignored) */
  void *input_user;
} mp_imap_opts_t;

/* Python's imap: an iterator of fn(item) in input order. Items come from the
 * array items[0..n) or, lazily, from opts->input; at most max_inflight items
 * (default max(256, 4 * workers * chunksize)) are read ahead, so an endless
 * input works. An input that fails at item k: the k items before it are
 * still returned, then its error, then MP_ECLOSED. Returns 0 with *it set, MP_EINVAL, MP_ECLOSED, MP_ENOMEM.
 * The iterator is used from one thread at a time. */
MP_EXTERN int mp_pool_imap(mp_pool_t *pool, mp_map_fn fn, const void *items,
                           size_t n, size_t item_size, size_t result_size,
                           const mp_imap_opts_t *opts, mp_imap_t **it);

/* Python's imap_unordered: the same, results in completion order. */
MP_EXTERN int mp_pool_imap_unordered(mp_pool_t *pool, mp_map_fn fn,
                                     const void *items, size_t n,
                                     size_t item_size, size_t result_size,
                                     const mp_imap_opts_t *opts,
                                     mp_imap_t **it);

/* Next result (Python's next(it, timeout)): writes result_size bytes at
 * result (may be NULL) and the item's input index at *index (may be NULL).
 * Returns 0, MP_ECLOSED at the end (Python's StopIteration), MP_ETIMEDOUT,
 * MP_ETASK / MP_EWORKERDIED for a failed item (*index set; the iteration goes
 * on with the next call), an input function's own error, MP_EINVAL.
 * MP_ECLOSED too once the pool is destroyed (the iterator may outlive it,
 * and must still be destroyed). */
MP_EXTERN int mp_imap_next(mp_imap_t *it, void *result, size_t *index,
                           int timeout_ms);

/* Free the iterator; items still running are dropped when done. Returns 0 or
 * MP_EINVAL. */
MP_EXTERN int mp_imap_destroy(mp_imap_t *it);

/* ---- results (Python's AsyncResult) -------------------------------------- */

/* Wait for the result (Python's get(timeout)). On 0, *data and *len (either may
 * be NULL) point at the result bytes, owned by r and valid until
 * mp_result_destroy. Errors: MP_EINVAL (r NULL, bad timeout), MP_ETIMEDOUT,
 * MP_ETASK (see mp_result_task_error), MP_EWORKERDIED, MP_ECLOSED (the pool
 * was terminated before the task completed). */
MP_EXTERN int mp_result_get(mp_result_t *r, int timeout_ms, const void **data,
                            size_t *len);

/* Wait until ready. Returns 0, MP_ETIMEDOUT or MP_EINVAL. */
MP_EXTERN int mp_result_wait(mp_result_t *r, int timeout_ms);

/* 1 if ready, 0 if not, MP_EINVAL (r NULL). */
MP_EXTERN int mp_result_ready(mp_result_t *r);

/* 1 if ready and successful, 0 if ready and failed, MP_EINVAL if not ready
 * yet (Python's ValueError) or r NULL. */
MP_EXTERN int mp_result_successful(mp_result_t *r);

/* After MP_ETASK: the task's own code and message (NUL-terminated, owned by
 * r; "" when none). Either pointer may be NULL. Returns 0, or MP_EINVAL when
 * r is NULL or did not fail with MP_ETASK. */
MP_EXTERN int mp_result_task_error(mp_result_t *r, int *task_code,
                                   const char **msg);

/* A waitable for mp_wait, poll or epoll: its fd (an eventfd made on first
 * call, owned by r) becomes and stays readable once r is ready. fd is -1 on
 * failure (r NULL, no fds). */
MP_EXTERN mp_waitable_t mp_result_waitable(mp_result_t *r);

/* Release the handle. A pending task still runs (its callbacks too); its
 * result is then dropped. Returns 0 or MP_EINVAL. */
MP_EXTERN int mp_result_destroy(mp_result_t *r);

/* ---- lifecycle ------------------------------------------------------------
 */

/* A pool-wide completion fd (an eventfd owned by the pool, made on first
 * call): it is incremented each time a result becomes ready, so an event loop
 * can poll it, read it to reset, and then check its results. Returns the fd
 * (>= 0) or MP_EINVAL / a system error. */
MP_EXTERN int mp_pool_fd(mp_pool_t *pool);

/* Python's close: no new work (submits give MP_ECLOSED); submitted tasks
 * still run. Returns 0 or MP_EINVAL. Idempotent. */
MP_EXTERN int mp_pool_close(mp_pool_t *pool);

/* Python's terminate: stop the workers now (processes are killed; threads
 * stop after their current task) and complete every pending result with
 * MP_ECLOSED (error callbacks called), so no get waits forever. Returns 0 or
 * MP_EINVAL. Idempotent. */
MP_EXTERN int mp_pool_terminate(mp_pool_t *pool);

/* Python's join: after close, wait until every task completed and the workers
 * exited; after terminate, until the workers are gone. Returns 0,
 * MP_ETIMEDOUT, or MP_EINVAL (pool NULL, bad timeout, pool neither closed nor
 * terminated, called from a callback). */
MP_EXTERN int mp_pool_join(mp_pool_t *pool, int timeout_ms);

/* Terminate if needed, join, and free the pool (Python's `with Pool()` exit).
 * Results not yet destroyed stay valid (completed) until mp_result_destroy.
 * Threads blocked in mp_result_wait/get or mp_imap_next on its results and
 * iterators return (their jobs complete with MP_ECLOSED, as by terminate);
 * destroy frees the pool once they have left it. Other calls on the pool
 * handle must not race it. Returns 0 or MP_EINVAL. Must not be called from
 * a callback. */
MP_EXTERN int mp_pool_destroy(mp_pool_t *pool);

MP_END_DECLS

#endif
