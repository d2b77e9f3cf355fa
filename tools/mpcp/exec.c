/* Executor: the copy runs in an mproc process pool; progress, errors and
 * -v lines come back on one mproc queue.
 *
 * Each task is one batch (or one chunk) serialized by walk.c and submitted
 * with mp_pool_apply_async; workers put small messages (mpcp_msg_t + text) on
 * the queue, at most one per 100 ms plus one per finished task, and the
 * parent reads them with a timeout so it can redraw the progress line ten
 * times a second. The pool's callbacks only matter when a worker dies in the
 * middle of a task: the error callback then posts the task's completion (and
 * an error line) on the same queue, so the parent sees every task finish
 * exactly once through one channel.
 *
 * Inline mode (a run whose walk produced one task, such as one file or one
 * small directory, and always in an MPCP_EXEC_SERIAL build): no pool and no
 * queue; the task runs in the parent when the walk ends (later tasks, such
 * as --verify's, when they are submitted), and its messages wait in a list
 * (progress is drawn from inside the copy). Starting a pool costs a tracker
 * and two worker processes, about as long as copying 100 MiB, for nothing
 * when there is one task. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpcp.h"

#include <mproc.h>

#include "mpi.h"
#include "walk.h"

static mp_pool_t *pool;
static mp_queue_t *queue;

/* A submitted task, kept until it completes: a batch whose worker died is
 * handed back to the parent to be retried entry by entry. */
typedef struct pending {
  struct pending *next;
  uint64_t id, file_id;
  uint32_t kind, count, flags;
  size_t len;
  char task[];
} pending_t;

static pthread_mutex_t dead_lock = PTHREAD_MUTEX_INITIALIZER;
static pending_t *dead;

static int task_fn(const void *arg, size_t len, mp_buf_t *result, void *ctx) {
  (void)result;
  (void)ctx;
  return mpcp_worker_task(arg, len);
}

static void worker_init(void *arg) {
  (void)arg;
  mpcp_worker_init();
}

static void on_done(const void *data, size_t len, void *user) {
  pending_t *p = user;
  if (mpcp_opt.mpi) /* messages come back with the result */
    mpcp_mpi_result(data, len, p->kind, p->id, p->file_id);
  free(user);
}

/* Runs in the pool's callback thread of the parent: turns a failed task into
 * messages on the queue, so the main thread sees every completion in one
 * place. */
static void on_error(int err, int task_code, const char *msg, void *user) {
  pending_t *p = user;
  (void)task_code;
  if (mpcp_opt.mpi)
    mpcp_mpi_failed(p->kind);
  if (err == MP_EWORKERDIED) {
    mpcp_msg_t died = {.kind = MPCP_M_DIED};
    mpcp_send(&died, NULL, 0);
  }
  if (err == MP_EWORKERDIED && !(p->flags & MPCP_TF_RETRY) &&
      (p->kind == MPCP_T_CHUNK || p->count > 1)) {
    /* A chunk is copied again by another worker; in a batch, which entry
     * killed it is unknown: each entry is retried on its own. Once on the
     * dead list, p belongs to the main thread (it may be freed at once). */
    uint64_t id = p->id;
    pthread_mutex_lock(&dead_lock);
    p->next = dead;
    dead = p;
    pthread_mutex_unlock(&dead_lock);
    mpcp_msg_t r = {.kind = MPCP_M_RETRY, .id = id};
    mpcp_send(&r, NULL, 0);
    mpcp_msg_t d = {.kind = MPCP_M_DONE, .id = id};
    mpcp_send(&d, NULL, 0);
    return;
  }
  if (err != MP_ECLOSED) {
    char text[1024];
    char *what = mpcp_task_path(p->task, p->len);
    int n =
        snprintf(text, sizeof text, "mpcp: a worker failed%s%s%s (%s%s%s)",
                 what ? " copying '" : "", what ? what : "", what ? "'" : "",
                 err == MP_ETASK ? "task error" : mp_strerror(err),
                 msg && *msg ? ": " : "", msg ? msg : "");
    free(what);
    if ((size_t)n >= sizeof text)
      n = (int)sizeof text - 1;
    if (p->kind == MPCP_T_CHUNK) {
      /* printed once per file by the parent */
      mpcp_msg_t c = {.kind = MPCP_M_CHUNK, .id = p->file_id, .errors = 1};
      mpcp_send(&c, text, n > 0 ? (size_t)n : 0);
    } else {
      mpcp_msg_t m = {.kind = MPCP_M_ERROR, .errors = 1};
      mpcp_send(&m, text, n > 0 ? (size_t)n : 0);
      mpcp_msg_t f = {.kind = MPCP_M_PROGRESS, .errors = p->count,
                      .files = p->count};
      mpcp_send(&f, NULL, 0);
    }
  } else if (p->kind == MPCP_T_CHUNK) {
    mpcp_msg_t c = {.kind = MPCP_M_CHUNK, .id = p->file_id, .errors = 1};
    mpcp_send(&c, NULL, 0);
  }
  mpcp_msg_t d = {.kind = MPCP_M_DONE, .id = p->id};
  mpcp_send(&d, NULL, 0);
  free(p);
}

bool mpcp_exec_take_dead(char **task, size_t *len) {
  pthread_mutex_lock(&dead_lock);
  pending_t *p = dead;
  if (p)
    dead = p->next;
  pthread_mutex_unlock(&dead_lock);
  if (!p)
    return false;
  *task = malloc(p->len);
  if (*task)
    memcpy(*task, p->task, p->len);
  *len = p->len;
  free(p);
  return *task != NULL;
}


/* ---- inline mode ----------------------------------------------------------- */
static bool inline_mode;
typedef struct node {
  struct node *next;
  size_t len;
  char data[];
} node_t;
static node_t *head, *tail;
static int inline_depth; /* a task running inline */

static void inline_send(const mpcp_msg_t *m, const char *text,
                        size_t text_len) {
  node_t *n = malloc(sizeof *n + sizeof *m + text_len);
  if (!n)
    return;
  n->next = NULL;
  n->len = sizeof *m + text_len;
  memcpy(n->data, m, sizeof *m);
  if (text_len)
    memcpy(n->data + sizeof *m, text, text_len);
  if (tail)
    tail->next = n;
  else
    head = n;
  tail = n;
  /* Progress of the running task: drawn now (the parent is the one
   * copying). A task's completion is read after it returns. */
  if (m->kind == MPCP_M_PROGRESS && inline_depth == 1) {
    inline_depth++;
    mpcp_pump(0);
    inline_depth--;
  }
}

static int inline_recv(void *buf) {
  if (!head)
    return 0;
  node_t *n = head;
  head = n->next;
  if (!head)
    tail = NULL;
  size_t len = n->len > MPCP_MSG_MAX ? MPCP_MSG_MAX : n->len;
  memcpy(buf, n->data, len);
  free(n);
  return (int)len;
}

static int inline_run(const void *task, size_t len) {
  inline_depth++;
  int rc = mpcp_worker_task(task, len);
  inline_depth--;
  return rc;
}

static _Atomic bool aborting;
static int want_workers;

/* The pool is started by the first task: a run with nothing to copy (a
 * --resume over an unchanged tree, -n over a full one) starts no process. */
int mpcp_exec_start(int nworkers) {
  want_workers = nworkers;
#ifdef MPCP_EXEC_SERIAL
  inline_mode = true;
#endif
  return 0;
}

static int start_pool(void) {
  int nworkers = want_workers;
  int rc = mp_queue_create(&queue, NULL);
  if (rc < 0)
    return rc;
  mp_pool_opts_t o = {.workers = nworkers, .initializer = worker_init};
  if (mpcp_opt.mpi) /* made at start-up, on every rank */
    rc = (pool = mpcp_mpi_take_pool()) ? 0 : -EINVAL;
  else
    rc = mp_pool_create(&pool, &o);
  if (rc < 0) {
    mp_queue_destroy(queue);
    queue = NULL;
  }
  return rc;
}

static int pool_submit(const void *task, size_t len);

/* The first task waits here until a second one comes (then the pool
 * starts) or the walk ends (then it runs inline: the whole run was one
 * task). The crash test hooks need a worker to kill. */
static char *held;
static size_t held_len;

static bool may_hold(void) {
  /* --mpi: the ranks are there already, and the walk goes through them. */
  return !mpcp_opt.mpi && !getenv("MPCP_TEST_CRASH") &&
         !getenv("MPCP_TEST_CRASH_ONCE");
}

int mpcp_exec_submit(const void *task, size_t len) {
  if (mpcp_mpi_worker) /* a walk on a worker rank */
    return mpcp_mpi_worker_submit(task, len);
  if (inline_mode)
    return inline_run(task, len);
  if (!pool) {
    if (!held && may_hold() && (held = malloc(len)) != NULL) {
      memcpy(held, task, len);
      held_len = len;
      return 0;
    }
    int rc = start_pool();
    if (rc < 0)
      return rc;
    if (held) {
      rc = pool_submit(held, held_len);
      free(held);
      held = NULL;
      if (rc < 0)
        return rc;
    }
  }
  return pool_submit(task, len);
}

void mpcp_exec_walk_done(void) {
  if (!held || pool)
    return;
  inline_mode = true;
  char *t = held;
  held = NULL;
  inline_run(t, held_len);
  free(t);
}

static int pool_submit(const void *task, size_t len) {
  mpcp_task_hdr_t h;
  memcpy(&h, task, sizeof h);
  pending_t *p = malloc(sizeof *p + len);
  if (!p)
    return -ENOMEM;
  memset(p, 0, sizeof *p);
  p->id = h.id;
  p->kind = h.kind;
  p->count = h.count;
  p->flags = h.flags;
  p->len = len;
  memcpy(p->task, task, len);
  if (h.kind == MPCP_T_CHUNK) {
    mpcp_chunk_t c;
    memcpy(&c, (const char *)task + sizeof h + h.dir_len, sizeof c);
    p->file_id = c.file_id;
  }
  mp_async_opts_t ao = {
      .callback = on_done, .error_callback = on_error, .user = p};
  void *wrapped = NULL;
  int rc = 0;
  if (mpcp_opt.mpi)
    rc = mpcp_mpi_wrap(task, len, &wrapped, &len);
  if (rc == 0)
    rc = mp_pool_apply_async(pool, mpcp_opt.mpi ? mpcp_mpi_task : task_fn,
                             wrapped ? wrapped : task, len, &ao, NULL);
  free(wrapped);
  if (rc < 0)
    free(p);
  return rc;
}

void mpcp_send(const mpcp_msg_t *m, const char *text, size_t text_len) {
  if (mpcp_mpi_worker) { /* into the task's result */
    mpcp_mpi_send(m, text, text_len);
    return;
  }
  if (inline_mode) {
    inline_send(m, text, text_len);
    return;
  }
  char buf[MPCP_MSG_MAX];
  if (text_len > sizeof buf - sizeof *m)
    text_len = sizeof buf - sizeof *m;
  memcpy(buf, m, sizeof *m);
  if (text_len)
    memcpy(buf + sizeof *m, text, text_len);
  /* Once the copy is being aborted nobody reads the queue any more: the
   * error callbacks of the cancelled tasks must not block on a full queue,
   * or mp_pool_join would wait for them forever. */
  mp_queue_put(queue, buf, sizeof *m + text_len,
               atomic_load(&aborting) ? 0 : MP_FOREVER);
}

int mpcp_exec_recv(void *buf, int timeout_ms) {
  if (inline_mode)
    return inline_recv(buf);
  if (!queue)
    return 0; /* nothing submitted yet, so nothing to wait for */
  size_t len = 0;
  int rc = mp_queue_get_into(queue, buf, MPCP_MSG_MAX, &len, timeout_ms);
  if (rc == MP_EEMPTY || rc == MP_EINTR)
    return 0;
  return rc < 0 ? rc : (int)len;
}

void mpcp_exec_stop(bool abort) {
  free(held); /* interrupted before the walk ended */
  held = NULL;
  if (!pool)
    return;
  if (abort) {
    atomic_store(&aborting, true);
    mp_pool_terminate(pool);
  }
  else
    mp_pool_close(pool);
  mp_pool_join(pool, MP_FOREVER);
  mp_pool_destroy(pool);
  pool = NULL;
  /* Completions posted by the error callbacks after terminate are dropped
   * with the queue. */
  mp_queue_destroy(queue);
  queue = NULL;
}


