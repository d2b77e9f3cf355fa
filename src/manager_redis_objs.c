/* Queue, lock and event of a Redis manager.
 *
 * Keys of object <id> ("<prefix>o:<id>" = B): B:m its settings (and a
 * queue's closed flag and unfinished count).
 *   queue  B the messages; B:c the consumers; B:p:<cid> what consumer cid
 *          took and is not done with; B:l:<cid> its lease (PX lease_ms).
 *   lock   B the lease (holder's token, PX lease_ms); B:h the last holder
 *          that did not release (no expiry: a lease gone while it is set
 *          means that holder died); B:w a wake-up list for waiters.
 *   event  B the flag; B:w wake-ups; B:n waiters.
 * Each handle has its own connection, so a blocking call (BLMOVE, BLPOP, in
 * slices of at most 100 ms to notice close, deadlines and dead peers) never
 * holds up the manager's other calls. A consumer id / lock token is made per
 * handle and process: after fork the child is a new consumer or owner. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "internal.h"
#include "manager_redis.h"
#include "mproc/queue.h"

#ifdef MP_HAVE_HIREDIS

#define SLICE_MS 100
#define DEFAULT_LEASE_MS 30000
#define MSG_MAX ((size_t)512 << 20)

typedef struct robj {
  mp_manager_t *m;
  uint32_t id, kind;
  int lease_ms;
  mp__rconn_t conn;
  char base[256]; /* "<prefix>o:<id>" */
  pid_t pid;    /* process the id below belongs to */
  char cid[48]; /* consumer id / lock token */
  /* On the list of leases this process keeps (held_mu): */
  struct robj *held_next;
  uint64_t renewed_ns;
} robj_t;

struct mp_mqueue {
  robj_t o;
  size_t maxsize;
  bool joinable;
  bool registered; /* this process took messages through the handle */
  uint64_t last_reap_ns;
};

struct mp_mlock {
  robj_t o;
  bool held;
};

struct mp_mevent {
  robj_t o;
};

static void robj_ident(robj_t *o) {
  pid_t me = (pid_t)mp__self_pid();
  if (o->pid == me)
    return;
  uint64_t x = 0;
  if (getrandom(&x, sizeof x, 0) != (ssize_t)sizeof x)
    x = mp__now_ns();
  snprintf(o->cid, sizeof o->cid, "%d-%016" PRIx64, (int)me, x);
  o->pid = me;
}

static int robj_cmd(robj_t *o, redisReply **rp, int extra_ms, int argc,
                    const char **av, const size_t *lv) {
  return mp__rcmd(&o->conn, rp, extra_ms, argc, av, lv);
}

static int robj_eval(robj_t *o, redisReply **rp, int script, int nkeys,
                     int nargs, const char **av, const size_t *lv) {
  return mp__reval(&o->conn, rp, script, nkeys, nargs, av, lv);
}

/* ---- leases kept while waiting ---------------------------------------------
 * A lock held, or a consumer's taken messages, keep their lease through calls
 * on their handle. A process that holds one and blocks in another object's
 * wait (Python's `with lock: event.wait()`) makes no such call, so every
 * wait loop of this file renews the process's leases, each at most every
 * quarter lease. A process that runs longer than the lease without any call
 * still loses them: that is how a stuck holder is told from a live one, and
 * why no background thread renews for it. */
static pthread_mutex_t held_mu = PTHREAD_MUTEX_INITIALIZER;
static robj_t *held_list;
static pthread_once_t held_once = PTHREAD_ONCE_INIT;

static void held_atfork_child(void) {
  /* A forked child holds nothing; another thread may have held the mutex. */
  pthread_mutex_init(&held_mu, NULL);
  held_list = NULL;
}

static void held_install(void) {
  pthread_atfork(NULL, NULL, held_atfork_child);
}

static void held_add(robj_t *o) {
  pthread_once(&held_once, held_install);
  pthread_mutex_lock(&held_mu);
  robj_t *p = held_list;
  while (p && p != o) /* a short list; a flag would be wrong after fork */
    p = p->held_next;
  if (!p) {
    o->held_next = held_list;
    held_list = o;
  }
  o->renewed_ns = mp__now_ns();
  pthread_mutex_unlock(&held_mu);
}

static void held_del(robj_t *o) {
  pthread_once(&held_once, held_install);
  pthread_mutex_lock(&held_mu);
  for (robj_t **p = &held_list; *p; p = &(*p)->held_next) {
    if (*p == o) {
      *p = o->held_next;
      break;
    }
  }
  pthread_mutex_unlock(&held_mu);
}

static int held_renew_one(robj_t *o);

/* Called by every wait loop, between its slices. */
static void held_renew(void) {
  pthread_once(&held_once, held_install);
  pthread_mutex_lock(&held_mu);
  uint64_t now = mp__now_ns();
  for (robj_t **p = &held_list; *p;) {
    robj_t *o = *p;
    if (now - o->renewed_ns >= (uint64_t)o->lease_ms * 250000ull) {
      int r = held_renew_one(o);
      if (r == 0)
        o->renewed_ns = now;
      else if (r == MP_EPERM) { /* a lock lost: its release says so */
        *p = o->held_next;
        continue;
      }
    }
    p = &o->held_next;
  }
  pthread_mutex_unlock(&held_mu);
}

/* A reply that must be an integer. */
static int reply_int(redisReply *rp, long long *v) {
  int r = rp->type == REDIS_REPLY_INTEGER ? 0 : MP_EIO;
  if (r == 0)
    *v = rp->integer;
  freeReplyObject(rp);
  return r;
}

static int robj_simple(robj_t *o, int argc, const char **av) {
  redisReply *rp;
  int r = robj_cmd(o, &rp, 0, argc, av, NULL);
  if (r == 0)
    freeReplyObject(rp);
  return r;
}

/* Read the object's settings hash field into *v (absent: def). */
static int meta_get(robj_t *o, const char *field, long long def,
                    long long *v) {
  char key[RKEY_MAX];
  snprintf(key, sizeof key, "%s:m", o->base);
  const char *av[3] = {"HGET", key, field};
  redisReply *rp;
  int r = robj_cmd(o, &rp, 0, 3, av, NULL);
  if (r < 0)
    return r;
  *v = def;
  if (rp->type == REDIS_REPLY_STRING && rp->len > 0 && rp->len < 20) {
    char b[24], *e;
    memcpy(b, rp->str, rp->len);
    b[rp->len] = '\0';
    *v = strtoll(b, &e, 10);
    if (*e)
      r = MP_EIO;
  } else if (rp->type != REDIS_REPLY_NIL) {
    r = MP_EIO;
  }
  freeReplyObject(rp);
  return r;
}

/* Make a handle: a new object (opts) or an existing one (name). */
static int robj_make(robj_t *o, mp_manager_t *m, uint32_t kind,
                     const mp_mobj_opts_t *opts, const char *name,
                     const char *const *meta, int nmeta) {
  if (!m)
    return MP_EINVAL;
  if (!m->redis)
    return MP_ENOTSUP;
  memset(o, 0, sizeof *o);
  int r;
  if (name)
    r = mp__robj_find(m->redis, kind, name, false, 0, &o->id);
  else
    r = mp__robj_create(m->redis, kind, opts ? opts->name : NULL, meta, nmeta,
                        &o->id);
  if (r < 0)
    return r;
  if ((r = mp__rconn_init(&o->conn, &m->redis->cfg)) < 0)
    return r;
  o->m = m;
  o->kind = kind;
  robj_ident(o); /* made again only in a forked child */
  snprintf(o->base, sizeof o->base, "%so:%u", m->redis->prefix, o->id);
  long long lease = DEFAULT_LEASE_MS;
  if (name && (kind == MGR_KIND_QUEUE || kind == MGR_KIND_LOCK) &&
      (r = meta_get(o, "lease_ms", DEFAULT_LEASE_MS, &lease)) < 0) {
    mp__rconn_fini(&o->conn);
    return r;
  }
  if (!name && opts && opts->lease_ms > 0)
    lease = opts->lease_ms;
  o->lease_ms = lease > 0 && lease <= 86400000 ? (int)lease : DEFAULT_LEASE_MS;
  return 0;
}

static int check_opts(const mp_mobj_opts_t *opts) {
  return opts && (opts->lease_ms < 0 || (opts->flags & ~MP_QUEUE_JOINABLE))
             ? MP_EINVAL
             : 0;
}

/* ---- queue -----------------------------------------------------------------
 */

typedef struct {
  char main[RKEY_MAX], meta[RKEY_MAX], cons[RKEY_MAX], proc[RKEY_MAX],
      lease[RKEY_MAX];
} qkeys_t;

static void qkeys(mp_mqueue_t *q, qkeys_t *k) {
  robj_ident(&q->o);
  snprintf(k->main, sizeof k->main, "%s", q->o.base);
  snprintf(k->meta, sizeof k->meta, "%s:m", q->o.base);
  snprintf(k->cons, sizeof k->cons, "%s:c", q->o.base);
  snprintf(k->proc, sizeof k->proc, "%s:p:%s", q->o.base, q->o.cid);
  snprintf(k->lease, sizeof k->lease, "%s:l:%s", q->o.base, q->o.cid);
}

static int queue_make(mp_mqueue_t **out, mp_manager_t *m,
                      const mp_mobj_opts_t *opts, const char *name) {
  if (!out || check_opts(opts) < 0)
    return MP_EINVAL;
  mp_mqueue_t *q = calloc(1, sizeof *q);
  if (!q)
    return MP_ENOMEM;
  char maxs[24], lease[16];
  snprintf(maxs, sizeof maxs, "%zu", opts ? opts->maxsize : 0);
  snprintf(lease, sizeof lease, "%d",
           opts && opts->lease_ms > 0 ? opts->lease_ms : DEFAULT_LEASE_MS);
  const char *meta[6] = {"maxsize", maxs,
                         "joinable", opts && (opts->flags & MP_QUEUE_JOINABLE) ? "1" : "0",
                         "lease_ms", lease};
  int r = robj_make(&q->o, m, MGR_KIND_QUEUE, opts, name, meta, 6);
  long long v = 0;
  if (r == 0 && name) {
    if ((r = meta_get(&q->o, "maxsize", 0, &v)) == 0) {
      q->maxsize = v > 0 ? (size_t)v : 0;
      if ((r = meta_get(&q->o, "joinable", 0, &v)) == 0)
        q->joinable = v == 1;
    }
    if (r < 0)
      mp__rconn_fini(&q->o.conn);
  } else if (r == 0) {
    q->maxsize = opts ? opts->maxsize : 0;
    q->joinable = opts && (opts->flags & MP_QUEUE_JOINABLE);
  }
  if (r < 0) {
    free(q);
    return r;
  }
  *out = q;
  return 0;
}

int mp_mqueue_create(mp_mqueue_t **q, mp_manager_t *m,
                     const mp_mobj_opts_t *opts) {
  return queue_make(q, m, opts, NULL);
}

int mp_mqueue_open(mp_mqueue_t **q, mp_manager_t *m, const char *name) {
  if (!name)
    return MP_EINVAL;
  return queue_make(q, m, NULL, name);
}

static int sleep_step(mp__deadline_t *dl, int *step) {
  held_renew();
  int left = mp__deadline_remaining_ms(dl);
  if (left == 0)
    return MP_ETIMEDOUT;
  int ms = left < 0 || left > *step ? *step : left;
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
  if (*step < 50)
    *step *= 2;
  return 0;
}

int mp_mqueue_put_many(mp_mqueue_t *q, const struct iovec *msgs, size_t n,
                       int timeout_ms) {
  if (!q || !msgs || n == 0 || n > INT32_MAX / 2 ||
      mp__check_timeout(timeout_ms) < 0)
    return MP_EINVAL;
  for (size_t i = 0; i < n; i++) {
    if (!msgs[i].iov_base && msgs[i].iov_len)
      return MP_EINVAL;
    if (msgs[i].iov_len >= MSG_MAX)
      return MP_EMSGSIZE;
  }
  qkeys_t k;
  qkeys(q, &k);
  char maxs[24];
  snprintf(maxs, sizeof maxs, "%zu", q->maxsize);
  const char **av = malloc((n + 3) * sizeof *av);
  size_t *lv = malloc((n + 3) * sizeof *lv);
  if (!av || !lv) {
    free(av);
    free(lv);
    return MP_ENOMEM;
  }
  av[0] = k.main;
  av[1] = k.meta;
  av[2] = maxs;
  for (int i = 0; i < 3; i++)
    lv[i] = strlen(av[i]);
  for (size_t i = 0; i < n; i++) {
    av[3 + i] = msgs[i].iov_base ? msgs[i].iov_base : "";
    lv[3 + i] = msgs[i].iov_len;
  }
  mp__deadline_t dl;
  mp__deadline_init(&dl, timeout_ms);
  int step = 1, r;
  for (;;) {
    redisReply *rp;
    long long v;
    if ((r = robj_eval(&q->o, &rp, RS_QPUT, 2, (int)n + 1, av, lv)) < 0 ||
        (r = reply_int(rp, &v)) < 0)
      break;
    if (v == -1) {
      r = MP_ECLOSED;
      break;
    }
    if (v >= 0) {
      r = (int)n;
      break;
    }
    if (q->maxsize && n > q->maxsize) {
      r = MP_EFULL; /* can never fit */
      break;
    }
    if (sleep_step(&dl, &step) < 0) {
      r = MP_EFULL;
      break;
    }
  }
  free(av);
  free(lv);
  return r;
}

int mp_mqueue_put(mp_mqueue_t *q, const void *msg, size_t len, int timeout_ms) {
  if (!msg && len)
    return MP_EINVAL;
  struct iovec iov = {(void *)(msg ? msg : ""), len};
  int r = mp_mqueue_put_many(q, &iov, 1, timeout_ms);
  return r < 0 ? r : 0;
}

/* Give back the messages of consumers whose lease ran out. */
static int queue_reap(mp_mqueue_t *q, qkeys_t *k) {
  const char *av[3] = {k->main, k->cons, q->o.base};
  redisReply *rp;
  long long v;
  int r = robj_eval(&q->o, &rp, RS_QREAP, 2, 1, av, NULL);
  if (r == 0)
    r = reply_int(rp, &v);
  if (r == 0)
    q->last_reap_ns = mp__now_ns();
  return r;
}

static bool reap_due(mp_mqueue_t *q) {
  uint64_t every = (uint64_t)(q->o.lease_ms / 2 < 1000 ? q->o.lease_ms / 2
                                                        : 1000) *
                   1000000ull;
  return !q->last_reap_ns || mp__now_ns() - q->last_reap_ns >= every;
}

/* Copy a string reply into a malloc'd message. */
static int take_msg(const redisReply *e, struct iovec *m) {
  if (e->type != REDIS_REPLY_STRING)
    return MP_EIO;
  char *p = malloc(e->len + 1);
  if (!p)
    return MP_ENOMEM;
  memcpy(p, e->str, e->len);
  p[e->len] = '\0'; /* for convenience, not counted */
  m->iov_base = p;
  m->iov_len = e->len;
  return 0;
}

int mp_mqueue_get_many(mp_mqueue_t *q, struct iovec *msgs, size_t n,
                       int timeout_ms) {
  if (!q || !msgs || n == 0 || n > INT32_MAX ||
      mp__check_timeout(timeout_ms) < 0)
    return MP_EINVAL;
  qkeys_t k;
  qkeys(q, &k);
  char lease[16], ns[16], cid[48];
  snprintf(lease, sizeof lease, "%d", q->o.lease_ms);
  snprintf(ns, sizeof ns, "%zu", n > 10000 ? (size_t)10000 : n);
  snprintf(cid, sizeof cid, "%s", q->o.cid);
  mp__deadline_t dl;
  mp__deadline_init(&dl, timeout_ms);
  bool ack = !q->joinable;
  int r;
  for (;;) {
    if (reap_due(q) && (r = queue_reap(q, &k)) < 0)
      return r;
    const char *av[9] = {k.main, k.meta, k.cons, k.proc, k.lease,
                         cid,    lease,  ack ? "1" : "0", ns};
    redisReply *rp;
    if ((r = robj_eval(&q->o, &rp, RS_QGET, 5, 4, av, NULL)) < 0)
      return r;
    q->registered = true;
    held_add(&q->o);
    ack = false; /* the previous messages are done now */
    if (rp->type == REDIS_REPLY_INTEGER && rp->integer == -1) {
      freeReplyObject(rp);
      return MP_ECLOSED;
    }
    if (rp->type != REDIS_REPLY_ARRAY || rp->elements > n) {
      freeReplyObject(rp);
      return MP_EIO;
    }
    size_t got = 0;
    for (; got < rp->elements && r == 0; got++)
      r = take_msg(rp->element[got], &msgs[got]);
    freeReplyObject(rp);
    if (r < 0) {
      /* The messages stay in this consumer's processing list. */
      for (size_t i = 0; i + 1 < got; i++)
        free(msgs[i].iov_base);
      return r;
    }
    if (got)
      return (int)got;
    int left = mp__deadline_remaining_ms(&dl);
    if (left == 0)
      return MP_EEMPTY;
    int slice = left < 0 || left > SLICE_MS ? SLICE_MS : left;
    char secs[16];
    snprintf(secs, sizeof secs, "%d.%03d", slice / 1000, slice % 1000);
    /* The lease set just above covers what BLMOVE moves into proc. */
    held_renew();
    const char *bv[6] = {"BLMOVE", k.main, k.proc, "LEFT", "RIGHT", secs};
    if ((r = robj_cmd(&q->o, &rp, slice, 6, bv, NULL)) < 0)
      return r;
    if (rp->type == REDIS_REPLY_STRING) {
      r = take_msg(rp, &msgs[0]);
      freeReplyObject(rp);
      return r < 0 ? r : 1;
    }
    freeReplyObject(rp);
  }
}

int mp_mqueue_get(mp_mqueue_t *q, void **msg, size_t *len, int timeout_ms) {
  if (!msg || !len)
    return MP_EINVAL;
  struct iovec m;
  int r = mp_mqueue_get_many(q, &m, 1, timeout_ms);
  if (r < 0)
    return r;
  *msg = m.iov_base;
  *len = m.iov_len;
  return 0;
}

int mp_mqueue_qsize(mp_mqueue_t *q, size_t *n) {
  if (!q || !n)
    return MP_EINVAL;
  const char *av[2] = {"LLEN", q->o.base};
  redisReply *rp;
  long long v;
  int r = robj_cmd(&q->o, &rp, 0, 2, av, NULL);
  if (r == 0 && (r = reply_int(rp, &v)) == 0)
    *n = v < 0 ? 0 : (size_t)v;
  return r;
}

int mp_mqueue_close(mp_mqueue_t *q) {
  if (!q)
    return MP_EINVAL;
  char key[RKEY_MAX];
  snprintf(key, sizeof key, "%s:m", q->o.base);
  const char *av[4] = {"HSET", key, "closed", "1"};
  return robj_simple(&q->o, 4, av);
}

int mp_mqueue_task_done(mp_mqueue_t *q) {
  if (!q)
    return MP_EINVAL;
  if (!q->joinable)
    return MP_ENOTSUP;
  qkeys_t k;
  qkeys(q, &k);
  char lease[16];
  snprintf(lease, sizeof lease, "%d", q->o.lease_ms);
  const char *av[4] = {k.proc, k.meta, k.lease, lease};
  redisReply *rp;
  long long v;
  int r = robj_eval(&q->o, &rp, RS_QDONE, 3, 1, av, NULL);
  if (r == 0 && (r = reply_int(rp, &v)) == 0 && v != 1)
    r = MP_EINVAL;
  return r;
}

int mp_mqueue_join(mp_mqueue_t *q, int timeout_ms) {
  if (!q || mp__check_timeout(timeout_ms) < 0)
    return MP_EINVAL;
  if (!q->joinable)
    return MP_ENOTSUP;
  mp__deadline_t dl;
  mp__deadline_init(&dl, timeout_ms);
  int step = 1, r;
  for (;;) {
    long long v;
    if ((r = meta_get(&q->o, "unfinished", 0, &v)) < 0)
      return r;
    if (v <= 0)
      return 0;
    if (sleep_step(&dl, &step) < 0)
      return MP_ETIMEDOUT;
  }
}

int mp_mqueue_destroy(mp_mqueue_t *q) {
  if (!q)
    return MP_EINVAL;
  held_del(&q->o);
  if (q->registered && q->o.pid == (pid_t)mp__self_pid()) {
    qkeys_t k;
    qkeys(q, &k);
    const char *av[7] = {k.main, k.cons, k.proc, k.lease,
                         k.meta, q->o.cid, q->joinable ? "1" : "0"};
    redisReply *rp;
    if (robj_eval(&q->o, &rp, RS_QBYE, 5, 2, av, NULL) == 0)
      freeReplyObject(rp);
  }
  mp__rconn_fini(&q->o.conn);
  free(q);
  return 0;
}

/* ---- lock ------------------------------------------------------------------
 */

typedef struct {
  char lease[RKEY_MAX], held[RKEY_MAX], wake[RKEY_MAX];
} lkeys_t;

static void lkeys(mp_mlock_t *l, lkeys_t *k) {
  if (l->o.pid != (pid_t)mp__self_pid())
    l->held = false; /* a forked child holds nothing */
  robj_ident(&l->o);
  snprintf(k->lease, sizeof k->lease, "%s", l->o.base);
  snprintf(k->held, sizeof k->held, "%s:h", l->o.base);
  snprintf(k->wake, sizeof k->wake, "%s:w", l->o.base);
}

static int lock_make(mp_mlock_t **out, mp_manager_t *m,
                     const mp_mobj_opts_t *opts, const char *name) {
  if (!out || check_opts(opts) < 0)
    return MP_EINVAL;
  mp_mlock_t *l = calloc(1, sizeof *l);
  if (!l)
    return MP_ENOMEM;
  char lease[16];
  snprintf(lease, sizeof lease, "%d",
           opts && opts->lease_ms > 0 ? opts->lease_ms : DEFAULT_LEASE_MS);
  const char *meta[2] = {"lease_ms", lease};
  int r = robj_make(&l->o, m, MGR_KIND_LOCK, opts, name, meta, 2);
  if (r < 0) {
    free(l);
    return r;
  }
  *out = l;
  return 0;
}

int mp_mlock_create(mp_mlock_t **l, mp_manager_t *m,
                    const mp_mobj_opts_t *opts) {
  return lock_make(l, m, opts, NULL);
}

int mp_mlock_open(mp_mlock_t **l, mp_manager_t *m, const char *name) {
  if (!name)
    return MP_EINVAL;
  return lock_make(l, m, NULL, name);
}

static int lock_script(mp_mlock_t *l, int script, long long *v) {
  lkeys_t k;
  lkeys(l, &k);
  char lease[16];
  snprintf(lease, sizeof lease, "%d", l->o.lease_ms);
  const char *av[5] = {k.lease, k.held, k.wake, l->o.cid, lease};
  redisReply *rp;
  int r = robj_eval(&l->o, &rp, script, 3, 2, av, NULL);
  return r < 0 ? r : reply_int(rp, v);
}

int mp_mlock_acquire(mp_mlock_t *l, int timeout_ms) {
  if (!l || mp__check_timeout(timeout_ms) < 0)
    return MP_EINVAL;
  mp__deadline_t dl;
  mp__deadline_init(&dl, timeout_ms);
  int r;
  for (;;) {
    long long v;
    if ((r = lock_script(l, RS_LOCK_TRY, &v)) < 0)
      return r;
    if (v == 1 || v == 2) {
      l->held = true;
      held_add(&l->o);
      return v == 2 ? MP_EOWNERDEAD : 0;
    }
    if (v == -1)
      return MP_EDEADLK;
    int left = mp__deadline_remaining_ms(&dl);
    if (left == 0)
      return MP_ETIMEDOUT;
    int slice = left < 0 || left > SLICE_MS ? SLICE_MS : left;
    char secs[16], wake[RKEY_MAX];
    snprintf(secs, sizeof secs, "%d.%03d", slice / 1000, slice % 1000);
    snprintf(wake, sizeof wake, "%s:w", l->o.base);
    const char *av[3] = {"BLPOP", wake, secs};
    redisReply *rp;
    held_renew();
    if ((r = robj_cmd(&l->o, &rp, slice, 3, av, NULL)) < 0)
      return r;
    freeReplyObject(rp);
  }
}

int mp_mlock_renew(mp_mlock_t *l) {
  if (!l)
    return MP_EINVAL;
  long long v;
  int r = lock_script(l, RS_LOCK_RENEW, &v);
  if (r == 0 && v != 1) {
    held_del(&l->o);
    l->held = false;
    r = MP_EPERM;
  }
  return r;
}

int mp_mlock_release(mp_mlock_t *l) {
  if (!l)
    return MP_EINVAL;
  long long v;
  held_del(&l->o);
  int r = lock_script(l, RS_LOCK_RELEASE, &v);
  if (r == 0) {
    l->held = false;
    if (v != 1)
      r = MP_EPERM;
  }
  return r;
}

int mp_mlock_destroy(mp_mlock_t *l) {
  if (!l)
    return MP_EINVAL;
  if (l->held && l->o.pid == (pid_t)mp__self_pid())
    mp_mlock_release(l);
  held_del(&l->o);
  mp__rconn_fini(&l->o.conn);
  free(l);
  return 0;
}

/* Renew o's lease: a lock this process holds, or a consumer's lease key.
 * MP_EPERM when a lock's lease was lost meanwhile. */
static int held_renew_one(robj_t *o) {
  if (o->kind == MGR_KIND_LOCK) {
    long long v;
    int r = lock_script((mp_mlock_t *)o, RS_LOCK_RENEW, &v);
    return r < 0 ? r : v == 1 ? 0 : MP_EPERM;
  }
  char key[RKEY_MAX], ms[16];
  snprintf(key, sizeof key, "%s:l:%s", o->base, o->cid);
  snprintf(ms, sizeof ms, "%d", o->lease_ms);
  const char *av[3] = {"PEXPIRE", key, ms};
  return robj_simple(o, 3, av);
}

/* ---- event -----------------------------------------------------------------
 */

int mp_mevent_create(mp_mevent_t **out, mp_manager_t *m,
                     const mp_mobj_opts_t *opts) {
  if (!out || check_opts(opts) < 0)
    return MP_EINVAL;
  mp_mevent_t *e = calloc(1, sizeof *e);
  if (!e)
    return MP_ENOMEM;
  int r = robj_make(&e->o, m, MGR_KIND_EVENT, opts, NULL, NULL, 0);
  if (r < 0) {
    free(e);
    return r;
  }
  *out = e;
  return 0;
}

int mp_mevent_open(mp_mevent_t **out, mp_manager_t *m, const char *name) {
  if (!out || !name)
    return MP_EINVAL;
  mp_mevent_t *e = calloc(1, sizeof *e);
  if (!e)
    return MP_ENOMEM;
  int r = robj_make(&e->o, m, MGR_KIND_EVENT, NULL, name, NULL, 0);
  if (r < 0) {
    free(e);
    return r;
  }
  *out = e;
  return 0;
}

int mp_mevent_set(mp_mevent_t *e) {
  if (!e)
    return MP_EINVAL;
  char wake[RKEY_MAX], n[RKEY_MAX];
  snprintf(wake, sizeof wake, "%s:w", e->o.base);
  snprintf(n, sizeof n, "%s:n", e->o.base);
  const char *av[3] = {e->o.base, wake, n};
  redisReply *rp;
  int r = robj_eval(&e->o, &rp, RS_EV_SET, 3, 0, av, NULL);
  if (r == 0)
    freeReplyObject(rp);
  return r;
}

int mp_mevent_clear(mp_mevent_t *e) {
  if (!e)
    return MP_EINVAL;
  const char *av[2] = {"DEL", e->o.base};
  return robj_simple(&e->o, 2, av);
}

int mp_mevent_is_set(mp_mevent_t *e) {
  if (!e)
    return MP_EINVAL;
  const char *av[2] = {"EXISTS", e->o.base};
  redisReply *rp;
  long long v;
  int r = robj_cmd(&e->o, &rp, 0, 2, av, NULL);
  if (r == 0 && (r = reply_int(rp, &v)) == 0)
    r = v == 1;
  return r;
}

static void waiters_add(mp_mevent_t *e, const char *verb) {
  char n[RKEY_MAX];
  snprintf(n, sizeof n, "%s:n", e->o.base);
  const char *av[2] = {verb, n};
  robj_simple(&e->o, 2, av);
}

int mp_mevent_wait(mp_mevent_t *e, int timeout_ms) {
  if (!e || mp__check_timeout(timeout_ms) < 0)
    return MP_EINVAL;
  mp__deadline_t dl;
  mp__deadline_init(&dl, timeout_ms);
  int r = mp_mevent_is_set(e);
  if (r != 0)
    return r < 0 ? r : 0;
  if (timeout_ms == 0)
    return MP_ETIMEDOUT;
  waiters_add(e, "INCR");
  char wake[RKEY_MAX];
  snprintf(wake, sizeof wake, "%s:w", e->o.base);
  for (;;) {
    int left = mp__deadline_remaining_ms(&dl);
    if (left == 0) {
      r = MP_ETIMEDOUT;
      break;
    }
    int slice = left < 0 || left > SLICE_MS ? SLICE_MS : left;
    char secs[16];
    snprintf(secs, sizeof secs, "%d.%03d", slice / 1000, slice % 1000);
    const char *av[3] = {"BLPOP", wake, secs};
    redisReply *rp;
    held_renew();
    if ((r = robj_cmd(&e->o, &rp, slice, 3, av, NULL)) < 0)
      break;
    freeReplyObject(rp);
    if ((r = mp_mevent_is_set(e)) != 0) {
      if (r > 0)
        r = 0;
      break;
    }
  }
  waiters_add(e, "DECR");
  return r;
}

int mp_mevent_destroy(mp_mevent_t *e) {
  if (!e)
    return MP_EINVAL;
  mp__rconn_fini(&e->o.conn);
  free(e);
  return 0;
}

#else /* !MP_HAVE_HIREDIS */

int mp_mqueue_create(mp_mqueue_t **q, mp_manager_t *m,
                     const mp_mobj_opts_t *opts) {
  return q && m ? MP_ENOTSUP : MP_EINVAL;
}
int mp_mqueue_open(mp_mqueue_t **q, mp_manager_t *m, const char *name) {
  return q && m ? MP_ENOTSUP : MP_EINVAL;
}
int mp_mqueue_put(mp_mqueue_t *q, const void *msg, size_t len, int timeout_ms) {
  return MP_EINVAL;
}
int mp_mqueue_put_many(mp_mqueue_t *q, const struct iovec *msgs, size_t n,
                       int timeout_ms) {
  return MP_EINVAL;
}
int mp_mqueue_get(mp_mqueue_t *q, void **msg, size_t *len, int timeout_ms) {
  return MP_EINVAL;
}
int mp_mqueue_get_many(mp_mqueue_t *q, struct iovec *msgs, size_t n,
                       int timeout_ms) {
  return MP_EINVAL;
}
int mp_mqueue_qsize(mp_mqueue_t *q, size_t *n) {
  return MP_EINVAL;
}
int mp_mqueue_close(mp_mqueue_t *q) {
  return MP_EINVAL;
}
int mp_mqueue_task_done(mp_mqueue_t *q) {
  return MP_EINVAL;
}
int mp_mqueue_join(mp_mqueue_t *q, int timeout_ms) {
  return MP_EINVAL;
}
int mp_mqueue_destroy(mp_mqueue_t *q) {
  return MP_EINVAL;
}
int mp_mlock_create(mp_mlock_t **l, mp_manager_t *m,
                    const mp_mobj_opts_t *opts) {
  return l && m ? MP_ENOTSUP : MP_EINVAL;
}
int mp_mlock_open(mp_mlock_t **l, mp_manager_t *m, const char *name) {
  return l && m ? MP_ENOTSUP : MP_EINVAL;
}
int mp_mlock_acquire(mp_mlock_t *l, int timeout_ms) {
  return MP_EINVAL;
}
int mp_mlock_renew(mp_mlock_t *l) {
  return MP_EINVAL;
}
int mp_mlock_release(mp_mlock_t *l) {
  return MP_EINVAL;
}
int mp_mlock_destroy(mp_mlock_t *l) {
  return MP_EINVAL;
}
int mp_mevent_create(mp_mevent_t **e, mp_manager_t *m,
                     const mp_mobj_opts_t *opts) {
  return e && m ? MP_ENOTSUP : MP_EINVAL;
}
int mp_mevent_open(mp_mevent_t **e, mp_manager_t *m, const char *name) {
  return e && m ? MP_ENOTSUP : MP_EINVAL;
}
int mp_mevent_set(mp_mevent_t *e) {
  return MP_EINVAL;
}
int mp_mevent_clear(mp_mevent_t *e) {
  return MP_EINVAL;
}
int mp_mevent_is_set(mp_mevent_t *e) {
  return MP_EINVAL;
}
int mp_mevent_wait(mp_mevent_t *e, int timeout_ms) {
  return MP_EINVAL;
}
int mp_mevent_destroy(mp_mevent_t *e) {
  return MP_EINVAL;
}

#endif
