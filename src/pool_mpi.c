/* MPI backend, root side: MPI start-up and the handshake of all ranks, then
 * one communication thread that feeds the worker ranks.
 *
 * The pool above sees nw ordinary slots, each with a task ring and a result
 * ring. Nothing runs in a slot: the communication thread takes every task
 * record from every slot's task ring as it arrives and hands it to whichever
 * rank has room (each rank holds about two milliseconds of work, at least
 * two tasks, and asks for more as it answers), so idle ranks pull the work
 * and uneven tasks balance. A rank's results are written back into the
 * result ring of the slot the task came from, where the collector and the
 * waiting threads find them as they find a local worker's. Only this thread
 * calls MPI while the pool runs. */
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <dlfcn.h>

#include "pool_mpi.h"

#define MP__HOST 56

typedef struct {
  int32_t err;
  int32_t pid;
  char host[MP__HOST];
} hello_t;

typedef struct {
  int pid, pidfd;
  char host[MP__HOST];
  bool dead, stopped;
  size_t inflight;
  MPI_Request sreq;
  uint8_t *sbuf;
  size_t scap;
} rank_t;

typedef struct {
  mp__trec_t h; /* the task as the pool wrote it (id, seq, start, count) */
  int slot, rank;
  uint32_t next_free;
  bool used;
} flight_t;

#define NO_TOKEN UINT32_MAX

struct mp__mpi {
  MPI_Comm comm;
  int size;
  mp__mods_t mods;
  rank_t *rk;
  flight_t *fl;
  uint32_t fl_cap, fl_free;
  mp_pool_t *p;
  uint64_t *cursor; /* per slot: next task record to take */
  rwriter_t *rw;    /* per slot: its result ring */
  uint64_t avg_ns;
  unsigned next_slot, next_rank;
  uint8_t *rbuf;
  size_t rbuf_cap;
  pthread_t th;
  bool started, stop_sent;
  _Atomic int quit;
  uintptr_t last_fn; /* locate cache */
  uint32_t last_mod;
  uint64_t last_off;
};

/* ---- MPI start-up ------------------------------------------------------- */

static bool we_initialised;
/* A worker rank died (only seen with mpirun --enable-recovery, where the
 * job goes on): MPI_Finalize would wait for it forever in Open MPI's
 * closing fence, on this rank and on every worker rank. */
static _Atomic bool a_rank_died;

static void finalize_at_exit(void) {
  int fin = 0;
  MPI_Finalized(&fin);
  if (fin)
    return;
  if (atomic_load(&a_rank_died)) {
    /* End the job instead: the other ranks are stopped by mpirun and the
     * job's status says a rank was lost. */
    fflush(stdout);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
}

/* Initialise MPI unless the program did; check the thread level. */
static int mpi_init(void) {
  int inited = 0, fin = 0;
  MPI_Finalized(&fin);
  if (fin)
    return MP_ENOTSUP;
  MPI_Initialized(&inited);
  if (!inited) {
    int prov;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &prov) != MPI_SUCCESS)
      return MP_EIO;
    we_initialised = true;
    /* Finalised at exit, not at destroy: MPI cannot be initialised twice,
     * and a program may make several pools. */
    atexit(finalize_at_exit);
  }
  int prov = 0;
  MPI_Query_thread(&prov);
  return prov >= MPI_THREAD_SERIALIZED ? 0 : MP_ENOTSUP;
}

static void mpi_release(struct mp__mpi *m) {
  if (m->comm != MPI_COMM_NULL)
    MPI_Comm_free(&m->comm);
  mp__mods_free(&m->mods);
  if (m->rk) {
    for (int r = 0; r < m->size; r++) {
      if (m->rk[r].pidfd >= 0)
        close(m->rk[r].pidfd);
      free(m->rk[r].sbuf);
    }
  }
  free(m->rk);
  free(m->fl);
  free(m->cursor);
  free(m->rw);
  free(m->rbuf);
  free(m);
}

/* Open a pidfd for ranks on this host, to see them die (best effort). */
static void watch_rank(rank_t *rk, const char *my_host) {
  rk->pidfd = -1;
  if (rk->pid > 0 && strcmp(rk->host, my_host) == 0)
    rk->pidfd = (int)syscall(SYS_pidfd_open, rk->pid, 0);
}

/* Stop ranks that were never sent a task (from the caller's thread). */
static void stop_idle_ranks(struct mp__mpi *m) {
  int32_t how = MP__STOP_TERMINATE;
  for (int r = 1; r < m->size; r++)
    MPI_Send(&how, 1, MPI_INT32_T, r, MP__TAG_STOP, m->comm);
  for (int r = 1; r < m->size; r++)
    MPI_Recv(NULL, 0, MPI_BYTE, r, MP__TAG_STOPPED, m->comm,
             MPI_STATUS_IGNORE);
}

int mp__pool_mpi_open(const mp_pool_opts_t *o, struct mp__mpi **out, int *nw) {
  int err = mpi_init();
  if (err)
    return err;
  struct mp__mpi *m = calloc(1, sizeof *m);
  if (!m)
    return MP_ENOMEM;
  m->comm = MPI_COMM_NULL;
  m->fl_free = NO_TOKEN;
  /* Our own communicator: our messages never meet the program's. */
  if (MPI_Comm_dup(MPI_COMM_WORLD, &m->comm) != MPI_SUCCESS) {
    free(m);
    return MP_EIO;
  }
  MPI_Comm_set_errhandler(m->comm, MPI_ERRORS_RETURN);
  int rank;
  MPI_Comm_size(m->comm, &m->size);
  MPI_Comm_rank(m->comm, &rank);
  /* Every rank reaches the same verdict before anyone serves or returns. */
  if (m->size < 2 || m->size - 1 > 4096 ||
      (o->workers != 0 && o->workers != m->size - 1))
    err = MP_EINVAL;
  int lerr = mp__mods_load(&m->mods);
  uint8_t *tab = NULL;
  uint64_t tab_len = 0;
  if (!lerr && rank == 0) {
    size_t l;
    lerr = mp__mods_pack(&m->mods, &tab, &l);
    tab_len = l;
  }
  if (MPI_Bcast(&tab_len, 1, MPI_UINT64_T, 0, m->comm) != MPI_SUCCESS) {
    free(tab);
    mpi_release(m);
    return MP_EIO;
  }
  if (tab_len > MP__MPI_MAXMSG)
    tab_len = 0, lerr = MP_EIO;
  if (rank != 0 && tab_len && !(tab = malloc(tab_len)))
    lerr = MP_ENOMEM;
  /* A rank that could not allocate still takes part, into a small buffer
   * it then ignores (the verdict below stops everyone). */
  uint8_t dummy[1];
  if (tab_len &&
      MPI_Bcast(tab ? tab : dummy, tab ? (int)tab_len : 0, MPI_BYTE, 0,
                m->comm) != MPI_SUCCESS)
    lerr = MP_EIO;
  int32_t *map = NULL;
  size_t map_n = 0;
  if (!lerr && rank != 0)
    lerr = mp__mods_match(&m->mods, tab, tab_len, &map, &map_n);
  free(tab);
  if (!err)
    err = lerr;
  hello_t me = {.err = err, .pid = getpid()};
  if (gethostname(me.host, sizeof me.host - 1) != 0)
    strcpy(me.host, "?");
  hello_t *all = rank == 0 ? calloc((size_t)m->size, sizeof *all) : NULL;
  if (rank == 0 && !all)
    me.err = MP_ENOMEM; /* gathered into nothing: verdict below */
  int mrc = MPI_Gather(&me, sizeof me, MPI_BYTE, all, all ? (int)sizeof me : 0,
                       MPI_BYTE, 0, m->comm);
  int32_t verdict = me.err;
  if (mrc != MPI_SUCCESS)
    verdict = MP_EIO;
  if (rank == 0 && all)
    for (int r = 1; r < m->size && !verdict; r++)
      verdict = all[r].err;
  if (MPI_Bcast(&verdict, 1, MPI_INT32_T, 0, m->comm) != MPI_SUCCESS)
    verdict = MP_EIO;
  if (verdict) {
    free(all);
    free(map);
    mpi_release(m);
    return verdict;
  }
  if (rank != 0) {
    err = mp__pool_mpi_serve(m->comm, &m->mods, map, map_n, o, rank - 1);
    free(map);
    mpi_release(m);
    return err ? err : MP_EWORKERRANK;
  }
  m->rk = calloc((size_t)m->size, sizeof *m->rk);
  if (!m->rk) {
    free(all);
    stop_idle_ranks(m); /* they wait for tasks */
    mpi_release(m);
    return MP_ENOMEM;
  }
  for (int r = 0; r < m->size; r++) {
    m->rk[r].pid = all[r].pid;
    memcpy(m->rk[r].host, all[r].host, MP__HOST);
    m->rk[r].host[MP__HOST - 1] = '\0';
    m->rk[r].sreq = MPI_REQUEST_NULL;
    m->rk[r].pidfd = -1;
    if (r > 0)
      watch_rank(&m->rk[r], me.host);
  }
  m->rk[0].stopped = true; /* the root serves nothing */
  free(all);
  *nw = m->size - 1;
  *out = m;
  return 0;
}

/* ---- in-flight table ---------------------------------------------------- */

static uint32_t token_new(struct mp__mpi *m) {
  if (m->fl_free == NO_TOKEN) {
    uint32_t cap = m->fl_cap ? m->fl_cap * 2 : 256;
    flight_t *nf = realloc(m->fl, cap * sizeof *nf);
    if (!nf)
      return NO_TOKEN;
    for (uint32_t i = m->fl_cap; i < cap; i++) {
      nf[i].used = false;
      nf[i].next_free = i + 1 < cap ? i + 1 : NO_TOKEN;
    }
    m->fl = nf;
    m->fl_free = m->fl_cap;
    m->fl_cap = cap;
  }
  uint32_t t = m->fl_free;
  m->fl_free = m->fl[t].next_free;
  m->fl[t].used = true;
  return t;
}

static void token_free(struct mp__mpi *m, uint32_t t) {
  m->fl[t].used = false;
  m->fl[t].next_free = m->fl_free;
  m->fl_free = t;
}

/* ---- results into the slot rings ---------------------------------------- */

static void put_result(struct mp__mpi *m, int slot, const mp__trec_t *h,
                       const mp__wresult_t *wr, const void *pay) {
  size_t size = mp__pool_rec_size(wr->len);
  rwriter_t *rw = &m->rw[slot];
  mp__rrec_t *r = (mp__rrec_t *)(void *)mp__pool_rreserve(rw, size);
  memset(r, 0, sizeof *r);
  r->size = (uint32_t)size;
  r->kind = MP__K_RESULT;
  r->id = h->id;
  r->seq = h->seq;
  r->start = h->start;
  r->count = h->count;
  r->flags = wr->flags;
  r->status = wr->status;
  r->fail_index = wr->fail_index;
  r->len = wr->len;
  r->ns = wr->ns;
  if (wr->len)
    memcpy((uint8_t *)r + MP__POOL_REC, pay, wr->len);
  /* Published once per message (one wake-up of the pool, not one per
   * record), or sooner when much is written: the pool must be able to
   * drain before the ring fills. */
  rw->head += size;
  if (rw->head - atomic_load_explicit(&rw->ws->r_head, memory_order_relaxed) >
      MP__POOL_RING / 8)
    mp__pool_rpublish(rw, 0);
}

/* Publish what put_result wrote into every slot's ring. */
static void publish_all(struct mp__mpi *m) {
  for (int w = 0; w < m->p->nw; w++)
    if (m->rw[w].head !=
        atomic_load_explicit(&m->rw[w].ws->r_head, memory_order_relaxed))
      mp__pool_rpublish(&m->rw[w], 0);
}

/* A task that cannot be sent anywhere fails here with err. */
static void fail_local(struct mp__mpi *m, int slot, const mp__trec_t *h,
                       int err) {
  mp_pool_t *p = m->p;
  pthread_mutex_lock(&p->mu);
  if (!p->terminated)
    mp__pool_fail_task(p, h, err);
  if (p->w[slot].out)
    p->w[slot].out--;
  pthread_mutex_unlock(&p->mu);
}

static void describe(struct mp__mpi *m, const mp__trec_t *h, char *buf,
                     size_t n) {
  Dl_info di;
  char fname[96];
  uint32_t mod;
  uint64_t off;
  if (dladdr((void *)(uintptr_t)h->fn, &di) && di.dli_sname)
    snprintf(fname, sizeof fname, "%s", di.dli_sname);
  else if (mp__mods_locate(&m->mods, (void *)(uintptr_t)h->fn, &mod, &off) ==
           0) {
    const char *nm = m->mods.m[mod].name, *sl = strrchr(nm, '/');
    snprintf(fname, sizeof fname, "%s+0x%llx",
             *nm ? (sl ? sl + 1 : nm) : "program", (unsigned long long)off);
  } else {
    snprintf(fname, sizeof fname, "?");
  }
  if (h->kind == MP__K_APPLY)
    snprintf(buf, n, "apply %s", fname);
  else
    snprintf(buf, n, "map %s items %llu..%llu", fname,
             (unsigned long long)h->start,
             (unsigned long long)(h->start + h->count - 1));
}

/* Rank r is gone (or broke the protocol): name it and what it ran, fail
 * those tasks with MP_EWORKERDIED and send it nothing more. */
static void rank_lost(struct mp__mpi *m, int r, const char *why) {
  rank_t *rk = &m->rk[r];
  if (rk->dead)
    return;
  rk->dead = true;
  atomic_store(&a_rank_died, true);
  char task[160] = "nothing";
  size_t shown = 0;
  for (uint32_t t = 0; t < m->fl_cap; t++)
    if (m->fl[t].used && m->fl[t].rank == r && shown++ == 0)
      describe(m, &m->fl[t].h, task, sizeof task);
  fprintf(stderr,
          "mproc pool: MPI rank %d (pid %d on %s) %s while running %s%s\n", r,
          rk->pid, rk->host, why, task,
          shown > 1 ? " and more queued tasks" : "");
  /* Parts of a result already in the rings go first. */
  publish_all(m);
  mp__pool_collect_now(m->p);
  for (uint32_t t = 0; t < m->fl_cap; t++)
    if (m->fl[t].used && m->fl[t].rank == r) {
      fail_local(m, m->fl[t].slot, &m->fl[t].h, MP_EWORKERDIED);
      token_free(m, t);
    }
  rk->inflight = 0;
  if (rk->pidfd >= 0) {
    close(rk->pidfd);
    rk->pidfd = -1;
  }
}

/* Check and deliver one message of results from rank r. */
static void take_results(struct mp__mpi *m, int r, const uint8_t *b,
                         size_t n) {
  bool drop = m->stop_sent; /* terminated: the jobs are complete already */
  while (n) {
    mp__wresult_t wr;
    if (n < sizeof wr)
      goto bad;
    memcpy(&wr, b, sizeof wr);
    size_t padded = mp__wpad(wr.len);
    if (wr.len > MP__POOL_MAXPAY || padded > n - sizeof wr ||
        wr.token >= m->fl_cap || !m->fl[wr.token].used ||
        m->fl[wr.token].rank != r)
      goto bad;
    flight_t *f = &m->fl[wr.token];
    uint64_t cnt = f->h.count, rsz = f->h.result_size;
    bool more = wr.flags & MP__RF_MORE;
    if (wr.flags & ~(uint32_t)MP__RF_MORE)
      goto bad;
    if (f->h.kind == MP__K_APPLY) {
      if (wr.fail_index)
        goto bad;
    } else if (more || wr.fail_index >= cnt ||
               wr.len != cnt * rsz + (f->h.kind == MP__K_IMAP ? cnt * 4 : 0)) {
      goto bad;
    }
    if (!drop)
      put_result(m, f->slot, &f->h, &wr, b + sizeof wr);
    if (!more) {
      uint64_t ns = wr.ns < 10000000000ull ? wr.ns : 10000000000ull;
      m->avg_ns = m->avg_ns ? (m->avg_ns * 7 + ns) / 8 : ns + 1;
      token_free(m, wr.token);
      if (m->rk[r].inflight)
        m->rk[r].inflight--;
    }
    b += sizeof wr + padded;
    n -= sizeof wr + padded;
  }
  return;
bad:
  rank_lost(m, r, "sent a malformed result");
}

/* Receive every message waiting. Returns true if there was one. */
static bool receive_all(struct mp__mpi *m) {
  bool any = false;
  for (;;) {
    int flag = 0, count = 0;
    MPI_Message msg;
    MPI_Status st;
    if (MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, m->comm, &flag, &msg, &st) !=
            MPI_SUCCESS ||
        !flag)
      return any;
    any = true;
    MPI_Get_count(&st, MPI_BYTE, &count);
    int r = st.MPI_SOURCE;
    if (count < 0 || (size_t)count > MP__MPI_MAXMSG || r <= 0 ||
        r >= m->size) {
      MPI_Mrecv(NULL, 0, MPI_BYTE, &msg, MPI_STATUS_IGNORE); /* truncated */
      if (r > 0 && r < m->size)
        rank_lost(m, r, "sent an oversized message");
      continue;
    }
    if ((size_t)count > m->rbuf_cap) {
      uint8_t *nb = realloc(m->rbuf, (size_t)count);
      if (!nb) {
        MPI_Mrecv(NULL, 0, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
        rank_lost(m, r, "sent a message we had no memory for");
        continue;
      }
      m->rbuf = nb;
      m->rbuf_cap = (size_t)count;
    }
    if (MPI_Mrecv(m->rbuf, count, MPI_BYTE, &msg, MPI_STATUS_IGNORE) !=
        MPI_SUCCESS) {
      rank_lost(m, r, "failed to deliver a message");
      continue;
    }
    if (st.MPI_TAG == MP__TAG_RESULTS && !m->rk[r].dead) {
      take_results(m, r, m->rbuf, (size_t)count);
      publish_all(m);
    }
    else if (st.MPI_TAG == MP__TAG_STOPPED)
      m->rk[r].stopped = true;
  }
}

/* ---- feeding the ranks -------------------------------------------------- */

static bool slot_pending(struct mp__mpi *m, int w) {
  return atomic_load_explicit(&mp__pool_slot_words(m->p, w)->t_head,
                              memory_order_acquire) != m->cursor[w];
}

/* The next task record of any slot (round robin), or NULL; *slot set. */
static const mp__trec_t *next_task(struct mp__mpi *m, int *slot) {
  int nw = m->p->nw;
  for (int k = 0; k < nw; k++) {
    int w = (int)((m->next_slot + (unsigned)k) % (unsigned)nw);
    uint8_t *base = mp__pool_slot_tring(m->p, w);
    while (slot_pending(m, w)) {
      const mp__trec_t *t = (const mp__trec_t *)(const void *)(base + (
          m->cursor[w] & MP__POOL_RMASK));
      if (t->kind == MP__K_SKIP) {
        m->cursor[w] += t->size;
        continue;
      }
      m->next_slot = (unsigned)w + 1;
      *slot = w;
      return t;
    }
  }
  return NULL;
}

/* Give the record's ring space back to the pool. */
static void task_taken(struct mp__mpi *m, int w, const mp__trec_t *t) {
  m->cursor[w] += t->size;
  atomic_store_explicit(&mp__pool_slot_words(m->p, w)->t_tail, m->cursor[w],
                        memory_order_release);
}

static int locate(struct mp__mpi *m, uint64_t fn, uint32_t *mod,
                  uint64_t *off) {
  if (fn && fn == m->last_fn) {
    *mod = m->last_mod;
    *off = m->last_off;
    return 0;
  }
  int e = mp__mods_locate(&m->mods, (const void *)(uintptr_t)fn, mod, off);
  if (!e) {
    m->last_fn = (uintptr_t)fn;
    m->last_mod = *mod;
    m->last_off = *off;
  }
  return e;
}

/* Tasks a rank may hold: about 2 ms of work, at least 2. */
static size_t credit(struct mp__mpi *m) {
  if (!m->avg_ns)
    return 4;
  uint64_t c = 2000000 / m->avg_ns;
  return c < 2 ? 2 : c > 256 ? 256 : (size_t)c;
}

static bool live_ranks(struct mp__mpi *m) {
  for (int r = 1; r < m->size; r++)
    if (!m->rk[r].dead)
      return true;
  return false;
}

/* Pack up to `want` tasks for rank r and send them. */
static bool feed_rank(struct mp__mpi *m, int r, size_t want) {
  rank_t *rk = &m->rk[r];
  size_t len = 0, k = 0;
  int slot;
  const mp__trec_t *t;
  while (k < want && (t = next_task(m, &slot)) != NULL) {
    size_t need = sizeof(mp__wtask_t) + mp__wpad(t->len);
    if (len && len + need > MP__MPI_MAXMSG)
      break;
    uint32_t mod;
    uint64_t off;
    if (locate(m, t->fn, &mod, &off) != 0) {
      fail_local(m, slot, t, MP_EINVAL); /* not code of any module */
      task_taken(m, slot, t);
      continue;
    }
    uint32_t tok = token_new(m);
    if (tok == NO_TOKEN || len + need > rk->scap) {
      size_t cap = rk->scap ? rk->scap : 65536;
      while (cap < len + need)
        cap *= 2;
      uint8_t *nb = tok == NO_TOKEN ? NULL : realloc(rk->sbuf, cap);
      if (!nb) { /* out of memory: try again later */
        if (tok != NO_TOKEN)
          token_free(m, tok);
        break;
      }
      rk->sbuf = nb;
      rk->scap = cap;
    }
    flight_t *f = &m->fl[tok];
    f->h = *t;
    f->slot = slot;
    f->rank = r;
    mp__wtask_t wt = {.token = tok,
                      .kind = t->kind,
                      .module = mod,
                      .len = t->len,
                      .offset = off,
                      .count = t->count,
                      .item_size = t->item_size,
                      .result_size = t->result_size};
    memcpy(rk->sbuf + len, &wt, sizeof wt);
    memcpy(rk->sbuf + len + sizeof wt, (const uint8_t *)t + MP__POOL_REC,
           t->len);
    memset(rk->sbuf + len + sizeof wt + t->len, 0,
           mp__wpad(t->len) - t->len);
    len += need;
    k++;
    task_taken(m, slot, t);
  }
  if (!k)
    return false;
  rk->inflight += k;
  if (MPI_Isend(rk->sbuf, (int)len, MPI_BYTE, r, MP__TAG_TASKS, m->comm,
                &rk->sreq) != MPI_SUCCESS)
    rank_lost(m, r, "could not be sent tasks");
  return true;
}

static bool feed(struct mp__mpi *m) {
  bool any = false;
  if (!live_ranks(m)) {
    int slot;
    const mp__trec_t *t;
    while ((t = next_task(m, &slot)) != NULL) {
      fail_local(m, slot, t, MP_EWORKERDIED);
      task_taken(m, slot, t);
      any = true;
    }
    return any;
  }
  size_t cap = credit(m);
  for (int k = 1; k < m->size; k++) {
    int r = 1 + (int)((m->next_rank + (unsigned)k) % (unsigned)(m->size - 1));
    rank_t *rk = &m->rk[r];
    if (rk->dead || rk->inflight > cap / 2)
      continue;
    if (rk->sreq != MPI_REQUEST_NULL) {
      int done = 0;
      MPI_Test(&rk->sreq, &done, MPI_STATUS_IGNORE);
      if (!done)
        continue;
    }
    /* Half the credit per message: the rank answers a message when it
     * finished it, so it always holds the next one while we refill. */
    size_t want = cap - rk->inflight;
    if (want > (cap + 1) / 2)
      want = (cap + 1) / 2;
    if (feed_rank(m, r, want)) {
      any = true;
      m->next_rank = (unsigned)r;
    }
  }
  return any;
}

/* ---- the thread ---------------------------------------------------------- */

static bool check_deaths(struct mp__mpi *m) {
  struct pollfd pf[64];
  int who[64], n = 0;
  bool any = false;
  for (int r = 1; r < m->size; r++) {
    if (m->rk[r].pidfd < 0 || m->rk[r].dead || m->rk[r].stopped)
      continue;
    pf[n].fd = m->rk[r].pidfd;
    pf[n].events = POLLIN;
    who[n++] = r;
    if (n == 64 || r == m->size - 1) {
      if (poll(pf, (nfds_t)n, 0) > 0)
        for (int i = 0; i < n; i++)
          if (pf[i].revents) {
            rank_lost(m, who[i], "died");
            any = true;
          }
      n = 0;
    }
  }
  if (n && poll(pf, (nfds_t)n, 0) > 0)
    for (int i = 0; i < n; i++)
      if (pf[i].revents) {
        rank_lost(m, who[i], "died");
        any = true;
      }
  return any;
}

static void send_stop(struct mp__mpi *m, int32_t how) {
  for (int r = 1; r < m->size; r++)
    if (!m->rk[r].dead &&
        MPI_Send(&how, 1, MPI_INT32_T, r, MP__TAG_STOP, m->comm) !=
            MPI_SUCCESS)
      rank_lost(m, r, "could not be stopped");
}

static bool all_stopped(struct mp__mpi *m) {
  for (int r = 1; r < m->size; r++)
    if (!m->rk[r].dead && !m->rk[r].stopped)
      return false;
  return true;
}

static bool any_inflight(struct mp__mpi *m) {
  for (int r = 1; r < m->size; r++)
    if (m->rk[r].inflight)
      return true;
  return false;
}

/* True while a message to a rank is still going out. */
static bool sends_pending(struct mp__mpi *m) {
  bool any = false;
  for (int r = 1; r < m->size; r++) {
    if (m->rk[r].sreq == MPI_REQUEST_NULL || m->rk[r].dead)
      continue;
    int done = 0;
    MPI_Test(&m->rk[r].sreq, &done, MPI_STATUS_IGNORE);
    any |= !done;
  }
  return any;
}

/* Nothing to do: wait briefly for ranks (polling MPI, which has no fd), or,
 * with nothing in flight, sleep until the pool pushes a task (it wakes slot
 * 0's futex word: directly for slot 0, through mp__pool_mpi_kick for the
 * others) or asks to stop. */
static void idle_wait(struct mp__mpi *m, unsigned idle) {
  if (idle < 256) {
    sched_yield();
    return;
  }
  if (sends_pending(m)) {
    /* A big message goes out in fragments, each sent from inside an MPI
     * call of ours: sleeping now would stretch it by a sleep per fragment. */
    sched_yield();
    return;
  }
  if (m->stop_sent || any_inflight(m)) {
    unsigned shift = (idle - 256) / 32;
    long ns = 5000L << (shift > 8 ? 8 : shift); /* 5 us .. 1.3 ms */
    struct timespec ts = {0, ns};
    nanosleep(&ts, NULL);
    return;
  }
  mp_pool_t *p = m->p;
  for (int w = 0; w < p->nw; w++)
    atomic_store(&mp__pool_slot_words(p, w)->t_wait, 1);
  atomic_thread_fence(memory_order_seq_cst);
  bool work = atomic_load(&p->stopping) || atomic_load(&m->quit);
  for (int w = 0; w < p->nw && !work; w++)
    work = slot_pending(m, w);
  mp__wshm_t *w0 = mp__pool_slot_words(p, 0);
  if (!work) {
    mp__deadline_t dl;
    mp__deadline_init(&dl, 100); /* also watches for dead ranks */
    mp__futex_wait(&w0->t_wait, 1, &dl);
  }
  for (int w = 0; w < p->nw; w++)
    atomic_store(&mp__pool_slot_words(p, w)->t_wait, 0);
}

void mp__pool_mpi_kick(mp_pool_t *p) {
  mp__wshm_t *w0 = mp__pool_slot_words(p, 0);
  if (atomic_exchange(&w0->t_wait, 0))
    mp__futex_wake(&w0->t_wait, 1);
}

static void *comm_main(void *arg) {
  struct mp__mpi *m = arg;
  /* Our short sleeps while ranks work should be short (default slack:
   * 50 us). Only this thread's. */
  prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
  mp_pool_t *p = m->p;
  unsigned idle = 0, rounds = 0;
  for (;;) {
    bool act = receive_all(m);
    if (idle > 64 || (++rounds & 63) == 0)
      act |= check_deaths(m);
    int stopping = atomic_load(&p->stopping);
    if (atomic_load(&m->quit))
      stopping = 2;
    if (stopping && !m->stop_sent) {
      /* Terminated: the pool completed every job; drop what is queued. */
      int slot;
      const mp__trec_t *t;
      while ((t = next_task(m, &slot)) != NULL)
        task_taken(m, slot, t);
      m->stop_sent = true;
      send_stop(m, stopping == 1 ? MP__STOP_JOIN : MP__STOP_TERMINATE);
      act = true;
    }
    if (m->stop_sent) {
      if (all_stopped(m))
        break;
    } else {
      act |= feed(m);
    }
    if (act) {
      idle = 0;
      continue;
    }
    idle_wait(m, idle++);
  }
  for (int r = 1; r < m->size; r++)
    if (m->rk[r].sreq != MPI_REQUEST_NULL && !m->rk[r].dead)
      MPI_Wait(&m->rk[r].sreq, MPI_STATUS_IGNORE);
  for (int w = 0; w < p->nw; w++)
    atomic_store(&mp__pool_slot_words(p, w)->exiting, 1);
  uint64_t one = 1;
  if (write(p->doorbell, &one, sizeof one) < 0) {
  }
  return NULL;
}

int mp__pool_mpi_start(mp_pool_t *p) {
  struct mp__mpi *m = p->mpi;
  m->p = p;
  m->cursor = calloc((size_t)p->nw, sizeof *m->cursor);
  m->rw = calloc((size_t)p->nw, sizeof *m->rw);
  if (!m->cursor || !m->rw)
    return MP_ENOMEM;
  for (int w = 0; w < p->nw; w++) {
    mp__wshm_t *ws = mp__pool_slot_words(p, w);
    m->rw[w] = (rwriter_t){ws, p->ps, mp__pool_slot_tring(p, w) + MP__POOL_RING,
                           atomic_load(&ws->r_head), p->doorbell};
  }
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int e = pthread_create(&m->th, NULL, comm_main, m);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (e)
    return -e;
  m->started = true;
  return 0;
}

void mp__pool_mpi_free(mp_pool_t *p) {
  struct mp__mpi *m = p->mpi;
  p->mpi = NULL;
  if (m->started) {
    atomic_store(&m->quit, 1);
    mp__wshm_t *w0 = mp__pool_slot_words(p, 0);
    atomic_store(&w0->t_wait, 0);
    mp__futex_wake(&w0->t_wait, 1);
    pthread_join(m->th, NULL);
  } else if (m->rk) {
    stop_idle_ranks(m); /* created but never started */
  }
  mpi_release(m);
}
