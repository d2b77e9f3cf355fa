/* Semaphore, Condition, Event, Barrier, and the named forms of every sync
 * primitive. Each waits on a futex word that changes whenever waiters
 * should look again; a waiter count lets the waking side skip the system
 * call when nobody sleeps. */
#include <string.h>

#include "sync_internal.h"

#define SPIN_ROUNDS 20

/* The public structs are part of the ABI: their sizes must not drift. */
_Static_assert(sizeof(mp_lock_t) == 16, "mp_lock_t size");
_Static_assert(sizeof(mp_rlock_t) == 16, "mp_rlock_t size");
_Static_assert(sizeof(mp_semaphore_t) == 16, "mp_semaphore_t size");
_Static_assert(sizeof(mp_cond_t) == 24, "mp_cond_t size");
_Static_assert(sizeof(mp_event_t) == 8, "mp_event_t size");
_Static_assert(sizeof(mp_barrier_t) == 48, "mp_barrier_t size");

#define AW(p) ((_Atomic uint32_t *)(p))

/* ---- named forms --------------------------------------------------------- */

#define MP__NAMED_COMMON(type, prefix, kind)                                   \
  int prefix##_open(type **obj, const char *name) {                            \
    return mp__named_open((void **)obj, kind, sizeof(type), name);             \
  }                                                                            \
  int prefix##_destroy(type *obj) {                                            \
    return mp__named_destroy(obj);                                             \
  }                                                                            \
  const char *prefix##_name(const type *obj) {                                 \
    return mp__named_name(obj);                                                \
  }

static int named_new(void **obj, uint32_t kind, size_t size,
                     const mp_sync_opts_t *opts) {
  return obj ? mp__named_create(obj, kind, size, opts) : MP_EINVAL;
}

static int named_done(void **obj, int init_result) {
  if (init_result < 0) {
    mp__named_abort(*obj);
    *obj = NULL;
    return init_result;
  }
  mp__named_publish(*obj);
  return 0;
}

int mp_lock_create(mp_lock_t **l, const mp_sync_opts_t *opts) {
  int r = named_new((void **)l, MP__KIND_LOCK, sizeof **l, opts);
  return r < 0 ? r : named_done((void **)l, mp_lock_init(*l));
}
MP__NAMED_COMMON(mp_lock_t, mp_lock, MP__KIND_LOCK)

int mp_rlock_create(mp_rlock_t **l, const mp_sync_opts_t *opts) {
  int r = named_new((void **)l, MP__KIND_RLOCK, sizeof **l, opts);
  return r < 0 ? r : named_done((void **)l, mp_rlock_init(*l));
}
MP__NAMED_COMMON(mp_rlock_t, mp_rlock, MP__KIND_RLOCK)

static int sem_create(mp_semaphore_t **s, unsigned value, bool bounded,
                      const mp_sync_opts_t *opts) {
  if (value > MP_SEM_VALUE_MAX)
    return MP_EINVAL;
  int r = named_new((void **)s, MP__KIND_SEM, sizeof **s, opts);
  if (r < 0)
    return r;
  r = bounded ? mp_bounded_semaphore_init(*s, value)
              : mp_semaphore_init(*s, value);
  return named_done((void **)s, r);
}

int mp_semaphore_create(mp_semaphore_t **s, unsigned value,
                        const mp_sync_opts_t *opts) {
  return sem_create(s, value, false, opts);
}

int mp_bounded_semaphore_create(mp_semaphore_t **s, unsigned value,
                                const mp_sync_opts_t *opts) {
  return sem_create(s, value, true, opts);
}
MP__NAMED_COMMON(mp_semaphore_t, mp_semaphore, MP__KIND_SEM)

int mp_cond_create(mp_cond_t **c, const mp_sync_opts_t *opts) {
  int r = named_new((void **)c, MP__KIND_COND, sizeof **c, opts);
  return r < 0 ? r : named_done((void **)c, mp_cond_init(*c));
}
MP__NAMED_COMMON(mp_cond_t, mp_cond, MP__KIND_COND)

int mp_event_create(mp_event_t **e, const mp_sync_opts_t *opts) {
  int r = named_new((void **)e, MP__KIND_EVENT, sizeof **e, opts);
  return r < 0 ? r : named_done((void **)e, mp_event_init(*e));
}
MP__NAMED_COMMON(mp_event_t, mp_event, MP__KIND_EVENT)

int mp_barrier_create(mp_barrier_t **b, unsigned parties,
                      const mp_sync_opts_t *opts) {
  if (parties == 0 || parties > INT32_MAX)
    return MP_EINVAL;
  int r = named_new((void **)b, MP__KIND_BARRIER, sizeof **b, opts);
  return r < 0 ? r : named_done((void **)b, mp_barrier_init(*b, parties));
}
MP__NAMED_COMMON(mp_barrier_t, mp_barrier, MP__KIND_BARRIER)

/* ---- Semaphore ----------------------------------------------------------- */

static int sem_init(mp_semaphore_t *s, unsigned value, unsigned max) {
  if (!s || value > MP_SEM_VALUE_MAX)
    return MP_EINVAL;
  memset(s, 0, sizeof *s);
  s->mp__value = value;
  s->mp__max = max;
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  return 0;
}

int mp_semaphore_init(mp_semaphore_t *s, unsigned value) {
  return sem_init(s, value, 0);
}

int mp_bounded_semaphore_init(mp_semaphore_t *s, unsigned value) {
  /* max 0 means unbounded, so a bounded semaphore of 0 is stored as the
   * impossible bound MP_SEM_VALUE_MAX + 1 and read back as 0. */
  return sem_init(s, value, value == 0 ? MP_SEM_VALUE_MAX + 1 : value);
}

static bool sem_try(mp_semaphore_t *s) {
  uint32_t v = atomic_load_explicit(AW(&s->mp__value), memory_order_relaxed);
  while (v > 0) {
    if (atomic_compare_exchange_weak_explicit(AW(&s->mp__value), &v, v - 1,
                                              memory_order_acquire,
                                              memory_order_relaxed))
      return true;
  }
  return false;
}

int mp_semaphore_acquire(mp_semaphore_t *s, int timeout_ms) {
  if (MP__UNLIKELY(!s || mp__check_timeout(timeout_ms) < 0))
    return MP_EINVAL;
  if (sem_try(s))
    return 0;
  if (timeout_ms == 0)
    return MP_ETIMEDOUT;
  mp__spin_while_eq(AW(&s->mp__value), 0, SPIN_ROUNDS);
  mp__deadline_t dl;
  mp__deadline_init(&dl, timeout_ms);
  for (;;) {
    if (sem_try(s))
      return 0;
    if (mp__deadline_passed(&dl))
      return MP_ETIMEDOUT;
    /* Bounded sleep: a permit whose wake-up went to a waiter killed before
     * taking it is found at the next look. */
    atomic_fetch_add(AW(&s->mp__waiters), 1);
    mp__rb_sleep(AW(&s->mp__value), 0, &dl);
    atomic_fetch_sub(AW(&s->mp__waiters), 1);
  }
}

int mp_semaphore_release(mp_semaphore_t *s) {
  if (!s)
    return MP_EINVAL;
  uint32_t max = s->mp__max;
  uint32_t bound = max > MP_SEM_VALUE_MAX ? 0 : max;
  uint32_t v = atomic_load_explicit(AW(&s->mp__value), memory_order_relaxed);
  do {
    if (max && v >= bound)
      return MP_EINVAL;
    if (v >= MP_SEM_VALUE_MAX)
      return MP_EOVERFLOW;
  } while (!atomic_compare_exchange_weak_explicit(AW(&s->mp__value), &v, v + 1,
                                                  memory_order_seq_cst,
                                                  memory_order_relaxed));
  if (atomic_load(AW(&s->mp__waiters)) > 0)
    mp__futex_wake(AW(&s->mp__value), 1);
  return 0;
}

int mp_semaphore_value(const mp_semaphore_t *s) {
  if (!s)
    return MP_EINVAL;
  return (int)__atomic_load_n(&s->mp__value, __ATOMIC_ACQUIRE);
}

/* ---- Condition ----------------------------------------------------------- */

int mp_cond_init(mp_cond_t *c) {
  if (!c)
    return MP_EINVAL;
  memset(c, 0, sizeof *c);
  return mp_rlock_init(&c->mp__lock);
}

int mp_cond_acquire(mp_cond_t *c, int timeout_ms) {
  return c ? mp_rlock_acquire(&c->mp__lock, timeout_ms) : MP_EINVAL;
}

int mp_cond_release(mp_cond_t *c) {
  return c ? mp_rlock_release(&c->mp__lock) : MP_EINVAL;
}

int mp_cond_consistent(mp_cond_t *c) {
  return c ? mp_rlock_consistent(&c->mp__lock) : MP_EINVAL;
}

mp_rlock_t *mp_cond_lock(mp_cond_t *c) {
  return c ? &c->mp__lock : NULL;
}

/* Waits with the lock released; dl is the overall deadline.
 *
 * The tokens word holds a notify count (high 16 bits) and the
 * notifications granted and not yet taken (low 16 bits). notify grants at
 * most one per registered waiter; a waiter takes one under the lock, and
 * only once a notify came after it registered, so a waiter that comes
 * later cannot take the wake-up of one that was there before. Sleeps are
 * bounded (mp__rb_sleep): a notifier killed between granting and waking
 * delays its sleepers, it cannot strand them; a signal handler that runs
 * meanwhile changes nothing. */
#define C_TOKENS 0xffffu
#define C_EPOCH_SHIFT 16

static int cond_wait_dl(mp_cond_t *c, const mp__deadline_t *dl) {
  mp_lock_t *k = &c->mp__lock.mp__l;
  _Atomic uint64_t *lw = mp__lock_word(k);
  _Atomic uint32_t *tw = AW(&c->mp__tokens);
  uint32_t depth = k->mp__count;
  uint32_t epoch = atomic_load(tw) >> C_EPOCH_SHIFT;
  atomic_fetch_add(AW(&c->mp__waiters), 1);
  k->mp__count = 0;
  mp__rb_release(lw);
  int r;
  for (;;) {
    uint32_t t = atomic_load(tw);
    bool granted = (t & C_TOKENS) && (t >> C_EPOCH_SHIFT) != epoch;
    if (!granted && !mp__deadline_passed(dl)) {
      mp__rb_sleep(tw, t, dl);
      continue;
    }
    int lr = mp__rb_acquire(lw, MP__RB_STICKY | MP__RB_THREAD, 0, MP_FOREVER);
    t = atomic_load(tw);
    if ((t & C_TOKENS) && (t >> C_EPOCH_SHIFT) != epoch) {
      atomic_store(tw, t - 1);
      r = 0;
    } else if (lr == MP_EOWNERDEAD || mp__deadline_passed(dl)) {
      r = MP_ETIMEDOUT;
    } else {
      /* Another waiter took the token: sleep again. */
      mp__rb_release(lw);
      continue;
    }
    atomic_fetch_sub(AW(&c->mp__waiters), 1);
    if (lr == MP_EOWNERDEAD)
      r = lr;
    break;
  }
  k->mp__count = depth;
  return r;
}

static int cond_check(mp_cond_t *c, int timeout_ms) {
  if (!c || mp__check_timeout(timeout_ms) < 0)
    return MP_EINVAL;
  return mp_rlock_is_owned(&c->mp__lock) == 1 ? 0 : MP_EPERM;
}

int mp_cond_wait(mp_cond_t *c, int timeout_ms) {
  int r = cond_check(c, timeout_ms);
  if (r < 0)
    return r;
  mp__deadline_t dl;
  mp__deadline_init(&dl, timeout_ms);
  return cond_wait_dl(c, &dl);
}

int mp_cond_wait_for(mp_cond_t *c, bool (*pred)(void *arg), void *arg,
                     int timeout_ms) {
  int r = cond_check(c, timeout_ms);
  if (r < 0)
    return r;
  if (!pred)
    return MP_EINVAL;
  mp__deadline_t dl;
  mp__deadline_init(&dl, timeout_ms);
  while (!pred(arg)) {
    if (timeout_ms == 0 || mp__deadline_passed(&dl))
      return MP_ETIMEDOUT;
    r = cond_wait_dl(c, &dl);
    if (r == MP_EOWNERDEAD)
      return r;
  }
  return 0;
}

int mp_cond_notify(mp_cond_t *c, int n) {
  int r = cond_check(c, 0);
  if (r < 0)
    return r;
  if (n < 0)
    return MP_EINVAL;
  if (n == 0)
    return 0;
  /* Under the lock: waiters register and take tokens under it too. */
  uint32_t w = atomic_load(AW(&c->mp__waiters));
  uint32_t t = atomic_load(AW(&c->mp__tokens));
  uint32_t have = t & C_TOKENS;
  uint32_t grant = w > have ? w - have : 0;
  if ((uint32_t)n < grant)
    grant = (uint32_t)n;
  if (grant > C_TOKENS - have)
    grant = C_TOKENS - have;
  if (grant == 0)
    return 0;
  uint32_t epoch = ((t >> C_EPOCH_SHIFT) + 1) & C_TOKENS;
  atomic_store(AW(&c->mp__tokens), epoch << C_EPOCH_SHIFT | (have + grant));
  mp__futex_wake(AW(&c->mp__tokens), (int)grant);
  return 0;
}

int mp_cond_notify_all(mp_cond_t *c) {
  return mp_cond_notify(c, INT32_MAX);
}

/* ---- Event --------------------------------------------------------------- */

int mp_event_init(mp_event_t *e) {
  if (!e)
    return MP_EINVAL;
  memset(e, 0, sizeof *e);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  return 0;
}

int mp_event_set(mp_event_t *e) {
  if (!e)
    return MP_EINVAL;
  if (atomic_exchange(AW(&e->mp__flag), 1) == 0 &&
      atomic_load(AW(&e->mp__waiters)) > 0)
    mp__futex_wake(AW(&e->mp__flag), INT32_MAX);
  return 0;
}

int mp_event_clear(mp_event_t *e) {
  if (!e)
    return MP_EINVAL;
  atomic_store(AW(&e->mp__flag), 0);
  return 0;
}

int mp_event_is_set(const mp_event_t *e) {
  if (!e)
    return MP_EINVAL;
  return __atomic_load_n(&e->mp__flag, __ATOMIC_ACQUIRE) != 0;
}

int mp_event_wait(mp_event_t *e, int timeout_ms) {
  if (MP__UNLIKELY(!e || mp__check_timeout(timeout_ms) < 0))
    return MP_EINVAL;
  if (atomic_load(AW(&e->mp__flag)))
    return 0;
  if (timeout_ms == 0)
    return MP_ETIMEDOUT;
  if (mp__spin_while_eq(AW(&e->mp__flag), 0, SPIN_ROUNDS))
    return 0;
  mp__deadline_t dl;
  mp__deadline_init(&dl, timeout_ms);
  for (;;) {
    /* Bounded sleeps: a setter killed after storing the flag and before
     * waking leaves the flag set, which the next look finds. */
    atomic_fetch_add(AW(&e->mp__waiters), 1);
    if (!atomic_load(AW(&e->mp__flag)))
      mp__rb_sleep(AW(&e->mp__flag), 0, &dl);
    atomic_fetch_sub(AW(&e->mp__waiters), 1);
    if (atomic_load(AW(&e->mp__flag)))
      return 0;
    if (mp__deadline_passed(&dl))
      return MP_ETIMEDOUT;
  }
}

/* ---- Barrier ------------------------------------------------------------- *
 * State is guarded by an internal lock of the robust core: a process killed
 * inside a barrier call leaves it to the next caller, who sees
 * MP_EOWNERDEAD and breaks the barrier instead of trusting half-updated
 * counts.
 *
 * A generation ends either complete (every party arrived) or broken (by
 * reset). A waiter that wakes after its generation ended learns which from
 * gen_broken, a bit per generation for the last 64; for one that slept
 * through more generations than that, the reset count it saw on arrival
 * decides: no reset since means complete. */

#define B_BROKEN 0x80000000u
#define B_RESETS 0x7fffffffu
#define B_LOCK_FLAGS 0

int mp_barrier_init(mp_barrier_t *b, unsigned parties) {
  if (!b || parties == 0 || parties > INT32_MAX)
    return MP_EINVAL;
  memset(b, 0, sizeof *b);
  b->mp__parties = parties;
  b->mp__timeout_ms = MP_FOREVER;
  return mp_lock_init(&b->mp__mu);
}

int mp_barrier_set_timeout(mp_barrier_t *b, int timeout_ms) {
  if (!b || mp__check_timeout(timeout_ms) < 0)
    return MP_EINVAL;
  __atomic_store_n(&b->mp__timeout_ms, timeout_ms, __ATOMIC_RELAXED);
  return 0;
}

int mp_barrier_timeout(const mp_barrier_t *b) {
  if (!b)
    return MP_EINVAL;
  return __atomic_load_n(&b->mp__timeout_ms, __ATOMIC_RELAXED);
}

static bool barrier_is_broken(const mp_barrier_t *b) {
  return __atomic_load_n(&b->mp__state, __ATOMIC_ACQUIRE) & B_BROKEN;
}

static void barrier_wake(mp_barrier_t *b) {
  atomic_fetch_add(AW(&b->mp__seq), 1);
  mp__futex_wake(AW(&b->mp__seq), INT32_MAX);
}

static void barrier_break_locked(mp_barrier_t *b) {
  atomic_fetch_or(AW(&b->mp__state), B_BROKEN);
  barrier_wake(b);
}

static _Atomic uint64_t *barrier_mu(mp_barrier_t *b) {
  return mp__lock_word(&b->mp__mu);
}

static void barrier_lock(mp_barrier_t *b) {
  if (mp__rb_acquire(barrier_mu(b), B_LOCK_FLAGS, 100, MP_FOREVER) ==
      MP_EOWNERDEAD)
    barrier_break_locked(b);
}

static void barrier_unlock(mp_barrier_t *b) {
  mp__rb_release(barrier_mu(b));
}

static void barrier_end_gen_locked(mp_barrier_t *b, bool broken) {
  uint64_t bit = 1ull << (b->mp__gen % 64);
  b->mp__gen_broken =
      broken ? (b->mp__gen_broken | bit) : (b->mp__gen_broken & ~bit);
  b->mp__gen++;
  b->mp__count = 0;
  barrier_wake(b);
}

/* Under the lock, for a waiter of generation gen (seen with `resets`
 * resets) that ended: did it end broken? */
static bool barrier_gen_was_broken(const mp_barrier_t *b, uint32_t gen,
                                   uint32_t resets) {
  uint32_t ended = b->mp__gen - gen; /* generations ended since (>= 1) */
  if (ended <= 64)
    return (b->mp__gen_broken >> (gen % 64)) & 1;
  uint32_t now = atomic_load(AW(&b->mp__state)) & B_RESETS;
  /* Only resets end a generation early; with none since arrival, ours
   * was complete. With some, and every later generation ending too, the
   * history is gone: report the reset. */
  return ((now - resets) & B_RESETS) != 0;
}

int mp_barrier_wait(mp_barrier_t *b, int timeout_ms) {
  if (b && timeout_ms == MP_BARRIER_DEFAULT)
    timeout_ms = __atomic_load_n(&b->mp__timeout_ms, __ATOMIC_RELAXED);
  if (!b || mp__check_timeout(timeout_ms) < 0)
    return MP_EINVAL;
  mp__deadline_t dl;
  mp__deadline_init(&dl, timeout_ms);
  barrier_lock(b);
  if (barrier_is_broken(b)) {
    barrier_unlock(b);
    return MP_ECANCELED;
  }
  uint32_t idx = b->mp__count++, gen = b->mp__gen;
  uint32_t resets = atomic_load(AW(&b->mp__state)) & B_RESETS;
  if (idx + 1 == b->mp__parties) {
    barrier_end_gen_locked(b, false);
    barrier_unlock(b);
    return (int)idx;
  }
  int r;
  for (;;) {
    uint32_t seq = atomic_load(AW(&b->mp__seq));
    barrier_unlock(b);
    /* Bounded: a process killed holding the lock is only noticed by
     * taking it, and a waker killed before its wake must not strand us. */
    if (timeout_ms != 0)
      mp__rb_sleep(AW(&b->mp__seq), seq, &dl);
    barrier_lock(b);
    if (b->mp__gen != gen) {
      r = barrier_gen_was_broken(b, gen, resets) ? MP_ECANCELED : (int)idx;
      break;
    }
    if (barrier_is_broken(b)) {
      r = MP_ECANCELED;
      break;
    }
    if (timeout_ms == 0 || mp__deadline_passed(&dl)) {
      barrier_break_locked(b);
      r = MP_ETIMEDOUT;
      break;
    }
  }
  barrier_unlock(b);
  return r;
}

int mp_barrier_abort(mp_barrier_t *b) {
  if (!b)
    return MP_EINVAL;
  barrier_lock(b);
  barrier_break_locked(b);
  barrier_unlock(b);
  return 0;
}

int mp_barrier_reset(mp_barrier_t *b) {
  if (!b)
    return MP_EINVAL;
  barrier_lock(b);
  /* Parties waiting now (or woken by an abort and not yet back) belong to
   * the old generation: it ends broken for them. */
  uint32_t st = atomic_load(AW(&b->mp__state));
  atomic_store(AW(&b->mp__state), ((st & B_RESETS) + 1) & B_RESETS);
  barrier_end_gen_locked(b, true);
  barrier_unlock(b);
  return 0;
}

int mp_barrier_broken(mp_barrier_t *b) {
  if (!b)
    return MP_EINVAL;
  return barrier_is_broken(b);
}

int mp_barrier_parties(const mp_barrier_t *b) {
  return b ? (int)b->mp__parties : MP_EINVAL;
}

int mp_barrier_n_waiting(mp_barrier_t *b) {
  if (!b)
    return MP_EINVAL;
  barrier_lock(b);
  int n = barrier_is_broken(b) ? 0 : (int)b->mp__count;
  barrier_unlock(b);
  return n;
}
