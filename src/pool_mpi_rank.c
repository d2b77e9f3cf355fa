/* MPI backend, worker side: a rank other than the root runs the tasks the
 * root sends, inside mp_pool_create, until the root stops it.
 *
 * Messages from the root are queued as they arrive (checked between tasks,
 * so a stop is seen after the task that runs); results are sent in batches:
 * when nothing is left to run, every half millisecond, or at 256 KiB. */
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "pool_mpi.h"

typedef struct msg {
  struct msg *next;
  size_t len, off;
  uint8_t data[];
} msg_t;

typedef struct {
  MPI_Comm comm;
  const mp__mods_t *mods;
  const int32_t *map;
  size_t map_n;
  void *ctx;
  msg_t *head, *tail;
  int stop;
  mp_buf_t out, res;
  uint64_t last_flush;
  int err;
} srv_t;

static void flush(srv_t *s) {
  if (s->out.len &&
      MPI_Send(s->out.data, (int)s->out.len, MPI_BYTE, 0, MP__TAG_RESULTS,
               s->comm) != MPI_SUCCESS)
    s->err = MP_EIO;
  s->out.len = 0;
  s->last_flush = mp__now_ns();
}

/* Receive what the root sent; with block, wait for at least one message.
 * Returns false on an MPI failure. */
static bool receive(srv_t *s, bool block) {
  for (unsigned idle = 0;;) {
    int flag = 0, count = 0;
    MPI_Message m;
    MPI_Status st;
    if (MPI_Improbe(0, MPI_ANY_TAG, s->comm, &flag, &m, &st) != MPI_SUCCESS)
      return false;
    if (!flag) {
      if (!block)
        return true;
      /* MPI has no fd to sleep on: back off from yielding to short sleeps
       * (at most 1 ms) while waiting for work. */
      if (idle < 256) {
        sched_yield();
      } else {
        unsigned shift = (idle - 256) / 32;
        struct timespec ts = {0, 5000L << (shift > 8 ? 8 : shift)};
        nanosleep(&ts, NULL);
      }
      idle++;
      continue;
    }
    MPI_Get_count(&st, MPI_BYTE, &count);
    msg_t *q = NULL;
    if (count > 0 && (size_t)count <= MP__MPI_MAXMSG)
      q = malloc(sizeof *q + (size_t)count);
    if (!q) { /* malformed or no memory: take it off the line, drop it */
      MPI_Mrecv(NULL, 0, MPI_BYTE, &m, MPI_STATUS_IGNORE);
      if (st.MPI_TAG == MP__TAG_STOP)
        s->stop = MP__STOP_TERMINATE;
      block = false;
      continue;
    }
    if (MPI_Mrecv(q->data, count, MPI_BYTE, &m, MPI_STATUS_IGNORE) !=
        MPI_SUCCESS) {
      free(q);
      return false;
    }
    block = false;
    if (st.MPI_TAG == MP__TAG_STOP) {
      int32_t how = 0;
      if (count == sizeof how)
        memcpy(&how, q->data, sizeof how);
      s->stop = how == MP__STOP_JOIN ? MP__STOP_JOIN : MP__STOP_TERMINATE;
      free(q);
      continue;
    }
    if (st.MPI_TAG != MP__TAG_TASKS) {
      free(q);
      continue;
    }
    q->next = NULL;
    q->len = (size_t)count;
    q->off = 0;
    if (s->tail)
      s->tail->next = q;
    else
      s->head = q;
    s->tail = q;
  }
}

/* Append a result record; returns its payload area (len bytes) or NULL. */
static uint8_t *add_result(srv_t *s, uint32_t token, uint32_t flags,
                           int32_t status, uint32_t fail, size_t len,
                           uint64_t ns) {
  void *p;
  size_t need = sizeof(mp__wresult_t) + mp__wpad(len);
  if (mp_buf_reserve(&s->out, need, &p) != 0) {
    flush(s);
    if (mp_buf_reserve(&s->out, need, &p) != 0)
      return NULL;
  }
  mp__wresult_t wr = {.token = token,
                      .flags = flags,
                      .status = status,
                      .fail_index = fail,
                      .len = (uint32_t)len,
                      .ns = ns};
  memcpy(p, &wr, sizeof wr);
  memset((uint8_t *)p + sizeof wr + len, 0, mp__wpad(len) - len);
  mp_buf_commit(&s->out, need);
  return (uint8_t *)p + sizeof wr;
}

/* An error as the task's own: MP_ETASK at the root with this code and
 * message. */
static void task_failed(srv_t *s, const mp__wtask_t *t, int code,
                        const char *msg) {
  size_t len = strlen(msg) + 1;
  if (t->kind == MP__K_APPLY) {
    uint8_t *p = add_result(s, t->token, 0, code, 0, len, 0);
    if (p)
      memcpy(p, msg, len);
    return;
  }
  size_t rlen = (size_t)t->count * t->result_size +
                (t->kind == MP__K_IMAP ? (size_t)t->count * 4 : 0);
  uint8_t *p = add_result(s, t->token, 0, code, 0, rlen, 0);
  if (!p)
    return;
  memset(p, 0, rlen);
  if (t->kind == MP__K_IMAP)
    for (uint32_t i = 0; i < t->count; i++)
      memcpy(p + (size_t)t->count * t->result_size + i * 4, &code, 4);
}

static void run_apply(srv_t *s, const mp__wtask_t *t, uintptr_t fn,
                      const uint8_t *arg) {
  mp_task_fn f = (mp_task_fn)fn;
  s->res.len = 0;
  uint64_t t0 = mp__now_ns();
  int st = f(arg, t->len, &s->res, s->ctx);
  uint64_t ns = mp__now_ns() - t0;
  size_t off = 0;
  do {
    size_t part = s->res.len - off;
    if (part > MP__POOL_MAXPAY)
      part = MP__POOL_MAXPAY;
    bool more = off + part < s->res.len;
    uint8_t *p = add_result(s, t->token, more ? MP__RF_MORE : 0, st, 0, part,
                            ns);
    if (!p) {
      s->err = MP_ENOMEM;
      return;
    }
    memcpy(p, (const uint8_t *)s->res.data + off, part);
    off += part;
    if (more && s->out.len >= MP__MPI_FLUSH)
      flush(s);
  } while (off < s->res.len);
}

static void run_map(srv_t *s, const mp__wtask_t *t, uintptr_t fn,
                    const uint8_t *items) {
  mp_map_fn f = (mp_map_fn)fn;
  bool with_status = t->kind == MP__K_IMAP;
  size_t n = t->count, isz = t->item_size, rsz = t->result_size;
  size_t len = n * rsz + (with_status ? n * 4 : 0);
  uint8_t *out = add_result(s, t->token, 0, 0, 0, len, 0);
  if (!out) {
    s->err = MP_ENOMEM;
    return;
  }
  int32_t status = 0;
  uint32_t fail = 0;
  uint64_t t0 = mp__now_ns();
  for (size_t i = 0; i < n; i++) {
    int32_t st = f(items + i * isz, rsz ? out + i * rsz : NULL, s->ctx);
    if (st && !status) {
      status = st;
      fail = (uint32_t)i;
    }
    if (with_status)
      memcpy(out + n * rsz + i * 4, &st, 4);
  }
  /* The record header sits just before its payload. */
  mp__wresult_t *wr = (mp__wresult_t *)(void *)(out - sizeof *wr);
  wr->status = status;
  wr->fail_index = fail;
  wr->ns = mp__now_ns() - t0;
}

/* Run the next task record of the queue, after bounding it. Returns true
 * when that finished a message. */
static bool run_next(srv_t *s) {
  msg_t *q = s->head;
  size_t left = q->len - q->off;
  mp__wtask_t t;
  bool bad = left < sizeof t;
  if (!bad) {
    memcpy(&t, q->data + q->off, sizeof t);
    bad = mp__wpad(t.len) > left - sizeof t || t.len > MP__POOL_MAXPAY;
  }
  if (bad) { /* cannot find the next record: drop the rest */
    q->off = q->len;
  } else {
    const uint8_t *pay = q->data + q->off + sizeof t;
    q->off += sizeof t + mp__wpad(t.len);
    uint64_t isz = t.item_size, rsz = t.result_size, n = t.count;
    bool map_kind = t.kind == MP__K_MAP || t.kind == MP__K_IMAP;
    if (t.kind != MP__K_APPLY && !map_kind) {
      /* unknown kind: no way to answer in its shape; ignore */
    } else if (map_kind && (n == 0 || isz == 0 || n * isz != t.len ||
                            rsz > MP__POOL_MAXPAY ||
                            n * (rsz + 4) > MP__POOL_MAXPAY)) {
      if (n && n * (rsz + 4) <= MP__POOL_MAXPAY)
        task_failed(s, &t, MP_EINVAL, "malformed map task");
    } else if (t.module >= s->map_n || s->map[t.module] < 0) {
      task_failed(s, &t, MP_EBINARY,
                  "the task's module is not loaded on this rank");
    } else {
      const mp__mod_t *mod = &s->mods->m[s->map[t.module]];
      if (t.offset >= mod->extent)
        task_failed(s, &t, MP_EBINARY, "task function outside its module");
      else if (t.kind == MP__K_APPLY)
        run_apply(s, &t, mod->base + (uintptr_t)t.offset, pay);
      else
        run_map(s, &t, mod->base + (uintptr_t)t.offset, pay);
    }
  }
  if (q->off < q->len)
    return false;
  s->head = q->next;
  if (!s->head)
    s->tail = NULL;
  free(q);
  return true;
}

static void drop_queue(srv_t *s) {
  while (s->head) {
    msg_t *q = s->head;
    s->head = q->next;
    free(q);
  }
  s->tail = NULL;
}

int mp__pool_mpi_serve(MPI_Comm comm, const mp__mods_t *mods,
                       const int32_t *map, size_t map_n,
                       const mp_pool_opts_t *o, int index) {
  srv_t s = {.comm = comm, .mods = mods, .map = map, .map_n = map_n,
             .ctx = o->ctx};
  mp__pool_set_worker_index(index);
  /* Short waits for the root's next message should be short. */
  int slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
  prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
  if (o->initializer)
    o->initializer(o->initarg);
  s.last_flush = mp__now_ns();
  /* Look for messages when out of work, after each message and every half
   * millisecond (a stop): not between every two tiny tasks, as a probe
   * costs as much as such a task, and more where MPI yields the CPU. */
  bool look = true;
  uint64_t last_look = 0;
  while (!s.err) {
    if (!s.head || look || mp__now_ns() - last_look > 500000) {
      if (!receive(&s, !s.head && !s.stop)) {
        s.err = MP_EIO;
        break;
      }
      last_look = mp__now_ns();
    }
    if (s.stop == MP__STOP_TERMINATE)
      break;
    if (!s.head) {
      flush(&s);
      if (s.stop)
        break;
      continue;
    }
    bool done = run_next(&s);
    look = done;
    /* Answer each message as soon as it is done (the root sent the next
     * one meanwhile), and long messages every half millisecond. */
    if (done || s.out.len >= MP__MPI_FLUSH ||
        mp__now_ns() - s.last_flush > 500000)
      flush(&s);
  }
  drop_queue(&s);
  mp_buf_free(&s.out);
  mp_buf_free(&s.res);
  mp__pool_set_worker_index(-1);
  if (slack > 0)
    prctl(PR_SET_TIMERSLACK, (unsigned long)slack, 0, 0, 0);
  if (!s.err && MPI_Send(NULL, 0, MPI_BYTE, 0, MP__TAG_STOPPED, comm) !=
                    MPI_SUCCESS)
    s.err = MP_EIO;
  return s.err;
}
