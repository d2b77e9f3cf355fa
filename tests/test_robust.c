/* Tests of the robust core (src/robust.c) through every primitive that
 * uses it: a live owner is never taken over, a dead one is taken over by
 * the next acquirer and by sleepers whatever signals do, and no sleeper
 * depends on a wake-up that a killed waker may never send. */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#include "manager_impl.h"
#include "runner.h"

static void *shared(size_t size) {
  void *p = NULL;
  ASSERT_OK(mp_raw_alloc(&p, size));
  return p;
}

/* Wait for pid to exit; a process still running after `guard_ms` is hung:
 * kill it and report 255. (The guard only separates "hangs" from "ends".) */
static int wait_exit_guard(pid_t pid, int guard_ms) {
  for (int waited = 0; waited < guard_ms; waited += 5) {
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid)
      return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    mpt_sleep_ms(5);
  }
  mpt_kill_reap(pid);
  return 255;
}

static uint32_t proc_start(pid_t pid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  ASSERT(f != NULL);
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')') + 2;
  for (int field = 3; field < 22; field++)
    p = strchr(p, ' ') + 1;
  return (uint32_t)strtoull(p, NULL, 10);
}

static uint32_t thread_start(pid_t tid) {
  return proc_start(tid);
}

/* Make *l look held by id (a pid or a thread id) started at `start`. */
static void forge_lock(mp_lock_t *l, uint32_t id, uint32_t start) {
  l->mp__word = (uint64_t)start << 32 | id;
}

/* ---- 1. a live owner is never taken over --------------------------------- */

/* The manager's lock held by a live process whose identity is what the
 * lock shows: a waiter must keep waiting, not take it over. (The old lock
 * wrote the start time after its compare-and-swap, and a waiter that saw
 * the previous owner's start time twice took a live owner's lock.) */
TEST(manager_lock_live_owner_kept) {
  mp__mlock_t *l = shared(sizeof *l);
  _Atomic int *got = shared(sizeof *got);
  pid_t holder = fork();
  if (holder == 0) {
    pause();
    _exit(0);
  }
  mpt_sleep_ms(20);
  uint32_t start = proc_start(holder);
  atomic_store(&l->word, (uint64_t)start << 32 | (uint32_t)holder);
  /* Stopped, as a preempted or traced owner may be for long. */
  ASSERT_EQ(kill(holder, SIGSTOP), 0);
  pid_t waiter = fork();
  if (waiter == 0) {
    mp__mlock_lock(l);
    atomic_store(got, 1);
    _exit(0);
  }
  mpt_sleep_ms(300);
  int taken = atomic_load(got);
  mpt_kill_reap(waiter);
  mpt_kill_reap(holder);
  ASSERT_EQ(taken, 0);
  mp_raw_free(got);
  mp_raw_free(l);
}

/* ---- 2. signals do not stop dead-owner detection ------------------------- */

typedef struct {
  mp_lock_t lock;
  mp_rlock_t rlock;
  mp_cond_t cond;
  mp_barrier_t barrier;
  mp_event_t ev;
  mp_semaphore_t sem;
  _Atomic int flag;
} prims_t;

enum { P_LOCK, P_RLOCK, P_COND, P_BARRIER };

/* A holder takes the primitive and dies (a zombie until reaped), then a
 * waiter blocks for good under a signal storm: it must get MP_EOWNERDEAD. */
static void dead_owner_under_storm(int kind, bool restart, bool reap_first) {
  prims_t *s = shared(sizeof *s);
  mp_lock_init(&s->lock);
  mp_rlock_init(&s->rlock);
  mp_cond_init(&s->cond);
  mp_barrier_init(&s->barrier, 2);
  pid_t holder = fork();
  if (holder == 0) {
    if (kind == P_LOCK)
      mp_lock_acquire(&s->lock, MP_FOREVER);
    else if (kind == P_RLOCK)
      mp_rlock_acquire(&s->rlock, MP_FOREVER);
    else if (kind == P_COND)
      mp_cond_acquire(&s->cond, MP_FOREVER);
    else
      mp_lock_acquire(&s->barrier.mp__mu, MP_FOREVER);
    atomic_store(&s->flag, 1);
    _exit(0);
  }
  if (reap_first)
    ASSERT_EQ(mpt_wait_exit(holder), 0);
  else /* held, then the holder exits: dying or a zombie from now on */
    while (!atomic_load(&s->flag))
      mpt_sleep_ms(1);
  pid_t waiter = fork();
  if (waiter == 0) {
    mpt_storm_start(1000, restart);
    int r;
    if (kind == P_LOCK)
      r = mp_lock_acquire(&s->lock, MP_FOREVER) == MP_EOWNERDEAD;
    else if (kind == P_RLOCK)
      r = mp_rlock_acquire(&s->rlock, MP_FOREVER) == MP_EOWNERDEAD;
    else if (kind == P_COND)
      r = mp_cond_acquire(&s->cond, MP_FOREVER) == MP_EOWNERDEAD;
    else
      r = mp_barrier_wait(&s->barrier, MP_FOREVER) == MP_ECANCELED;
    mpt_storm_stop();
    _exit(r ? 0 : 1);
  }
  int rc = wait_exit_guard(waiter, 10000);
  if (!reap_first)
    ASSERT_EQ(mpt_wait_exit(holder), 0);
  ASSERT_EQ(rc, 0);
  mp_raw_free(s);
}

TEST(signal_storm_lock_dead_owner) {
  dead_owner_under_storm(P_LOCK, false, false);
  dead_owner_under_storm(P_LOCK, true, true);
}

TEST(signal_storm_rlock_dead_owner) {
  dead_owner_under_storm(P_RLOCK, false, true);
  dead_owner_under_storm(P_RLOCK, true, false);
}

TEST(signal_storm_cond_dead_owner) {
  dead_owner_under_storm(P_COND, true, false);
}

TEST(signal_storm_barrier_dead_owner) {
  dead_owner_under_storm(P_BARRIER, false, false);
}

/* A sleeper already waiting when the holder dies, under a storm. */
TEST(signal_storm_sleeper_sees_death) {
  prims_t *s = shared(sizeof *s);
  mp_lock_init(&s->lock);
  pid_t holder = fork();
  if (holder == 0) {
    mp_lock_acquire(&s->lock, MP_FOREVER);
    atomic_store(&s->flag, 1);
    pause();
    _exit(0);
  }
  while (!atomic_load(&s->flag))
    mpt_sleep_ms(1);
  pid_t waiter = fork();
  if (waiter == 0) {
    mpt_storm_start(1000, false);
    int r = mp_lock_acquire(&s->lock, MP_FOREVER);
    mpt_storm_stop();
    _exit(r == MP_EOWNERDEAD ? 0 : 1);
  }
  mpt_sleep_ms(100);
  kill(holder, SIGKILL); /* not reaped: a zombie */
  int rc = wait_exit_guard(waiter, 10000);
  mpt_wait_exit(holder);
  ASSERT_EQ(rc, 0);
  mp_raw_free(s);
}

/* ---- 3. a setter killed between the flag and the wake -------------------- */

TEST(event_setter_killed_before_wake) {
  prims_t *s = shared(sizeof *s);
  mp_event_init(&s->ev);
  pid_t waiters[3];
  for (int i = 0; i < 3; i++) {
    waiters[i] = fork();
    if (waiters[i] == 0)
      _exit(mp_event_wait(&s->ev, MP_FOREVER) == 0 ? 0 : 1);
  }
  mpt_sleep_ms(100); /* asleep now */
  /* What a setter leaves when killed after its store: the flag, no wake. */
  __atomic_store_n(&s->ev.mp__flag, 1, __ATOMIC_SEQ_CST);
  int rc[3];
  for (int i = 0; i < 3; i++)
    rc[i] = wait_exit_guard(waiters[i], 10000);
  for (int i = 0; i < 3; i++)
    ASSERT_EQ(rc[i], 0);
  mp_raw_free(s);
}

/* The same for a notifier (Condition) and a releaser (Semaphore). */
TEST(semaphore_releaser_killed_before_wake) {
  prims_t *s = shared(sizeof *s);
  mp_semaphore_init(&s->sem, 0);
  pid_t w = fork();
  if (w == 0)
    _exit(mp_semaphore_acquire(&s->sem, MP_FOREVER) == 0 ? 0 : 1);
  mpt_sleep_ms(100);
  __atomic_store_n(&s->sem.mp__value, 1, __ATOMIC_SEQ_CST);
  ASSERT_EQ(wait_exit_guard(w, 10000), 0);
  mp_raw_free(s);
}

/* ---- 4. takeover at once -------------------------------------------------- */

/* A holder killed a moment ago (SIGKILL sent, exit maybe not even started):
 * a caller that only tries (timeout 0) already takes the lock over. 20
 * rounds, for Lock and for the manager's lock. */
TEST(takeover_at_once_after_kill) {
  prims_t *s = shared(sizeof *s);
  mp__mlock_t *ml = shared(sizeof *ml);
  for (int round = 0; round < 20; round++) {
    mp_lock_init(&s->lock);
    atomic_store(&s->flag, 0);
    pid_t holder = fork();
    if (holder == 0) {
      mp_lock_acquire(&s->lock, MP_FOREVER);
      mp__mlock_lock(ml);
      atomic_store(&s->flag, 1);
      for (;;)
        pause();
    }
    while (!atomic_load(&s->flag))
      mpt_sleep_ms(1);
    ASSERT_EQ(kill(holder, SIGKILL), 0);
    ASSERT_ERR(mp_lock_acquire(&s->lock, 0), MP_EOWNERDEAD);
    ASSERT(mp__mlock_lock(ml));
    mp__mlock_unlock(ml);
    ASSERT_OK(mp_lock_consistent(&s->lock));
    ASSERT_OK(mp_lock_release(&s->lock));
    ASSERT_EQ(mpt_wait_exit(holder), 128 + SIGKILL);
  }
  mp_raw_free(ml);
  mp_raw_free(s);
}

/* ---- 5. pid reuse, by the caller itself --------------------------------- */

TEST(lock_dead_owner_with_callers_pid) {
  mp_lock_t *l = shared(sizeof *l);
  mp_lock_init(l);
  forge_lock(l, (uint32_t)getpid(), proc_start(getpid()) + 7);
  pid_t c = fork();
  if (c == 0) /* the child's pid differs, so fork first and forge there */
    _exit(0);
  mpt_wait_exit(c);
  ASSERT_ERR(mp_lock_acquire(l, 2000), MP_EOWNERDEAD);
  ASSERT_OK(mp_lock_consistent(l));
  ASSERT_OK(mp_lock_release(l));
  ASSERT_OK(mp_lock_acquire(l, 0));
  ASSERT_OK(mp_lock_release(l));
  mp_raw_free(l);
}

TEST(rlock_dead_owner_with_callers_tid) {
  mp_rlock_t *l = shared(sizeof *l);
  mp_rlock_init(l);
  pid_t me = gettid();
  forge_lock(&l->mp__l, (uint32_t)me, thread_start(me) + 7);
  l->mp__l.mp__count = 5;
  ASSERT_EQ(mp_rlock_is_owned(l), 0);
  ASSERT_ERR(mp_rlock_release(l), MP_EPERM);
  ASSERT_ERR(mp_rlock_acquire(l, 2000), MP_EOWNERDEAD);
  ASSERT_OK(mp_rlock_consistent(l));
  /* Depth 1: one release frees it. */
  ASSERT_OK(mp_rlock_release(l));
  ASSERT_EQ(mp_rlock_is_owned(l), 0);
  ASSERT_EQ(mp_lock_locked(&l->mp__l), 0);
  mp_raw_free(l);
}

/* ---- 6. a signal does not end a Condition wait -------------------------- */

TEST(cond_wait_signal_is_not_notify) {
  prims_t *s = shared(sizeof *s);
  mp_cond_init(&s->cond);
  pid_t c = fork();
  if (c == 0) {
    mpt_storm_start(5000, false);
    mp_cond_acquire(&s->cond, MP_FOREVER);
    int r = mp_cond_wait(&s->cond, 300);
    int owned = mp_rlock_is_owned(mp_cond_lock(&s->cond));
    mp_cond_release(&s->cond);
    mpt_storm_stop();
    _exit(r == MP_ETIMEDOUT && owned == 1 && mpt_storm_alarms > 0 ? 0 : 1);
  }
  ASSERT_EQ(mpt_wait_exit(c), 0);
  mp_raw_free(s);
}

/* notify(1) with three waiters wakes one; the others stay asleep until
 * notified (no notification is invented by the periodic looks). */
TEST(cond_notify_counts) {
  prims_t *s = shared(sizeof *s);
  mp_cond_init(&s->cond);
  _Atomic int *woke = shared(sizeof *woke);
  pid_t w[3];
  for (int i = 0; i < 3; i++) {
    w[i] = fork();
    if (w[i] == 0) {
      mp_cond_acquire(&s->cond, MP_FOREVER);
      atomic_fetch_add(&s->flag, 1);
      int r = mp_cond_wait(&s->cond, MP_FOREVER);
      atomic_fetch_add(woke, 1);
      mp_cond_release(&s->cond);
      _exit(r == 0 ? 0 : 1);
    }
  }
  while (atomic_load(&s->flag) < 3)
    mpt_sleep_ms(1);
  mp_cond_acquire(&s->cond, MP_FOREVER);
  ASSERT_OK(mp_cond_notify(&s->cond, 1));
  mp_cond_release(&s->cond);
  while (atomic_load(woke) < 1)
    mpt_sleep_ms(1);
  mpt_sleep_ms(200); /* ten periodic looks */
  ASSERT_EQ(atomic_load(woke), 1);
  mp_cond_acquire(&s->cond, MP_FOREVER);
  ASSERT_OK(mp_cond_notify_all(&s->cond));
  mp_cond_release(&s->cond);
  for (int i = 0; i < 3; i++)
    ASSERT_EQ(mpt_wait_exit(w[i]), 0);
  ASSERT_EQ(atomic_load(woke), 3);
  mp_raw_free(woke);
  mp_raw_free(s);
}

/* ---- 7. join's wake-up ---------------------------------------------------- */

/* task_done calls racing the joiner's look: join must return once the last
 * one is in. Trials repeat the race; each join is given far longer than the
 * work takes but less than a lost wake-up used to cost. */
TEST(queue_join_not_missed) {
  mp_queue_opts_t o = {.flags = MP_QUEUE_JOINABLE};
  for (int trial = 0; trial < 10; trial++) {
    mp_queue_t *q;
    ASSERT_OK(mp_queue_create(&q, &o));
    for (int i = 0; i < 4; i++)
      ASSERT_OK(mp_queue_put(q, "x", 1, 0));
    pid_t c = fork();
    if (c == 0) {
      for (int i = 0; i < 4; i++) {
        void *m;
        size_t len;
        if (mp_queue_get(q, &m, &len, MP_FOREVER) != 0)
          _exit(1);
        free(m);
        mpt_sleep_ms(2);
        mp_queue_task_done(q);
      }
      _exit(0);
    }
    int r = mp_queue_join(q, 900);
    ASSERT_EQ(mpt_wait_exit(c), 0);
    ASSERT_OK(r);
    ASSERT_OK(mp_queue_destroy(q));
  }
}

/* ---- stress: CPU hog, 1 ms signal storm, SIGKILL at random moments ------- *
 * Workers are processes running `body` in a loop with a SIGALRM every 1 ms
 * (no SA_RESTART) while a CPU hog competes for the cores. With kills, the
 * parent SIGKILLs a random worker every few ms and starts a new one in its
 * slot. Nothing asserts time: the counts must be exact, and the runner's
 * timeout catches a hang. */

#define ST_WORKERS 4
#define ST_RUN_MS 1500

typedef struct {
  _Atomic int stop;
  _Atomic long acked[ST_WORKERS]; /* updates each worker saw complete */
  _Atomic long kills;
  _Atomic long violations; /* two holders at once */
  _Atomic long repairs;
} st_ctl_t;

typedef void (*st_body_fn)(void *arg, st_ctl_t *ctl, int slot);

static pid_t st_spawn(st_body_fn body, void *arg, st_ctl_t *ctl, int slot) {
  pid_t pid = fork();
  if (pid == 0) {
    mpt_storm_start(1000, false);
    srand((unsigned)getpid());
    while (!atomic_load(&ctl->stop))
      body(arg, ctl, slot);
    mpt_storm_stop();
    _exit(0);
  }
  ASSERT(pid > 0);
  return pid;
}

/* Called once stop is set, to wake workers that sleep until told. */
static void (*st_on_stop)(void *arg);

/* Run ST_WORKERS workers for ST_RUN_MS beside a hog; kill_every_ms > 0
 * kills a random one that often (and replaces it). */
static void st_run(st_body_fn body, void *arg, st_ctl_t *ctl,
                   int kill_every_ms) {
  pid_t hog = mpt_hog_start();
  pid_t w[ST_WORKERS];
  for (int i = 0; i < ST_WORKERS; i++)
    w[i] = st_spawn(body, arg, ctl, i);
  uint64_t end = mpt_now_ms() + ST_RUN_MS;
  unsigned seed = (unsigned)getpid();
  while (mpt_now_ms() < end) {
    if (kill_every_ms <= 0) {
      mpt_sleep_ms(20);
      continue;
    }
    usleep((useconds_t)(rand_r(&seed) % (unsigned)(2 * kill_every_ms * 1000)));
    int i = (int)(rand_r(&seed) % ST_WORKERS);
    mpt_kill_reap(w[i]);
    atomic_fetch_add(&ctl->kills, 1);
    w[i] = st_spawn(body, arg, ctl, i);
  }
  atomic_store(&ctl->stop, 1);
  if (st_on_stop)
    st_on_stop(arg);
  for (int i = 0; i < ST_WORKERS; i++)
    ASSERT_EQ(mpt_wait_exit(w[i]), 0);
  mpt_hog_stop(hog);
}

static long st_acked(st_ctl_t *ctl) {
  long n = 0;
  for (int i = 0; i < ST_WORKERS; i++)
    n += atomic_load(&ctl->acked[i]);
  return n;
}

/* Lock and RLock: a critical section that keeps a == b and marks who is
 * inside. A takeover rolls a half-done section forward. */
typedef struct {
  mp_lock_t lock;
  mp_rlock_t rlock;
  long a, b;
  _Atomic pid_t inside;
  bool rlock_mode;
} st_lock_t;

static void st_lock_body(void *arg, st_ctl_t *ctl, int slot) {
  st_lock_t *s = arg;
  int r = s->rlock_mode ? mp_rlock_acquire(&s->rlock, MP_FOREVER)
                        : mp_lock_acquire(&s->lock, MP_FOREVER);
  if (r == MP_EOWNERDEAD) {
    if (s->b != s->a) { /* killed between the two stores */
      s->b = s->a;
      atomic_fetch_add(&ctl->repairs, 1);
    }
    if (s->rlock_mode)
      mp_rlock_consistent(&s->rlock);
    else
      mp_lock_consistent(&s->lock);
  } else if (r != 0) {
    _exit(2);
  }
  if (s->rlock_mode && mp_rlock_acquire(&s->rlock, MP_FOREVER) != 0)
    _exit(3);
  pid_t me = getpid();
  atomic_store(&s->inside, me);
  s->a++;
  sched_yield();
  s->b++;
  if (atomic_load(&s->inside) != me)
    atomic_fetch_add(&ctl->violations, 1);
  if (s->rlock_mode) {
    mp_rlock_release(&s->rlock);
    mp_rlock_release(&s->rlock);
  } else {
    mp_lock_release(&s->lock);
  }
  atomic_fetch_add(&ctl->acked[slot], 1);
}

static void st_lock_check(bool rlock_mode, int kill_every_ms) {
  st_lock_t *s = shared(sizeof *s);
  st_ctl_t *ctl = shared(sizeof *ctl);
  mp_lock_init(&s->lock);
  mp_rlock_init(&s->rlock);
  s->rlock_mode = rlock_mode;
  st_run(st_lock_body, s, ctl, kill_every_ms);
  /* Take it once more: a worker killed holding it is repaired here. */
  int r = rlock_mode ? mp_rlock_acquire(&s->rlock, MP_FOREVER)
                     : mp_lock_acquire(&s->lock, MP_FOREVER);
  ASSERT(r == 0 || r == MP_EOWNERDEAD);
  if (r == MP_EOWNERDEAD && s->b != s->a)
    s->b = s->a;
  ASSERT_EQ(atomic_load(&ctl->violations), 0);
  ASSERT_EQ(s->a, s->b);
  long acked = st_acked(ctl), kills = atomic_load(&ctl->kills);
  /* Every acknowledged update is there; a killed worker may have made one
   * more than it acknowledged, never more. */
  ASSERT(s->a >= acked);
  ASSERT(s->a <= acked + kills);
  ASSERT(kills > 0);
  mp_raw_free(ctl);
  mp_raw_free(s);
}

TEST(stress_lock) {
  st_lock_check(false, 5);
}

TEST(stress_rlock) {
  st_lock_check(true, 5);
}

/* A worker killed every 1 ms on average: the lock must never stay with a
 * dead holder while everyone sleeps (the workers keep making progress and
 * the final acquire returns). */
TEST(stress_lock_kill_every_1ms) {
  st_lock_check(false, 1);
}

/* Semaphore and BoundedSemaphore: at most `value` holders at once, no
 * permit invented or lost (a dead holder keeps its permit, as documented,
 * so no kills here). */
typedef struct {
  mp_semaphore_t sem;
  _Atomic int holders;
  int max;
} st_sem_t;

static void st_sem_body(void *arg, st_ctl_t *ctl, int slot) {
  st_sem_t *s = arg;
  int r = mp_semaphore_acquire(&s->sem, 50);
  if (r == MP_ETIMEDOUT)
    return;
  if (r != 0)
    _exit(2);
  if (atomic_fetch_add(&s->holders, 1) + 1 > s->max)
    atomic_fetch_add(&ctl->violations, 1);
  sched_yield();
  atomic_fetch_sub(&s->holders, 1);
  if (mp_semaphore_release(&s->sem) != 0)
    _exit(3);
  atomic_fetch_add(&ctl->acked[slot], 1);
}

TEST(stress_semaphores) {
  for (int bounded = 0; bounded < 2; bounded++) {
    st_sem_t *s = shared(sizeof *s);
    st_ctl_t *ctl = shared(sizeof *ctl);
    s->max = 2;
    if (bounded)
      ASSERT_OK(mp_bounded_semaphore_init(&s->sem, 2));
    else
      ASSERT_OK(mp_semaphore_init(&s->sem, 2));
    st_run(st_sem_body, s, ctl, 0);
    ASSERT_EQ(atomic_load(&ctl->violations), 0);
    ASSERT_EQ(mp_semaphore_value(&s->sem), 2);
    ASSERT(st_acked(ctl) > 0);
    if (bounded)
      ASSERT_ERR(mp_semaphore_release(&s->sem), MP_EINVAL);
    mp_raw_free(ctl);
    mp_raw_free(s);
  }
}

/* Condition: a counter handed around by notify; each worker waits for its
 * turn (turn % workers == slot) under a storm. A lost wake-up would stall
 * the turn for good. */
typedef struct {
  mp_cond_t cond;
  long turn;
} st_cond_t;

typedef struct {
  st_cond_t *s;
  int slot;
} st_turn_t;

static bool st_my_turn(void *arg) {
  st_turn_t *t = arg;
  return t->s->turn % ST_WORKERS == t->slot ||
         atomic_load(&((st_ctl_t *)(t->s + 1))->stop);
}

static void st_cond_body(void *arg, st_ctl_t *ctl, int slot) {
  st_cond_t *s = arg;
  st_turn_t t = {s, slot};
  if (mp_cond_acquire(&s->cond, MP_FOREVER) != 0)
    _exit(2);
  int r = mp_cond_wait_for(&s->cond, st_my_turn, &t, MP_FOREVER);
  if (r != 0)
    _exit(3);
  if (!atomic_load(&ctl->stop) && s->turn % ST_WORKERS == slot) {
    s->turn++;
    atomic_fetch_add(&ctl->acked[slot], 1);
  }
  mp_cond_notify_all(&s->cond);
  mp_cond_release(&s->cond);
}

static void st_cond_wake(void *arg) {
  st_cond_t *s = arg;
  mp_cond_acquire(&s->cond, MP_FOREVER);
  mp_cond_notify_all(&s->cond);
  mp_cond_release(&s->cond);
}

TEST(stress_condition) {
  /* The control block right after the condition, so the predicate sees
   * the stop flag. */
  st_cond_t *s = shared(sizeof *s + sizeof(st_ctl_t));
  st_ctl_t *ctl = (st_ctl_t *)(s + 1);
  mp_cond_init(&s->cond);
  st_on_stop = st_cond_wake;
  st_run(st_cond_body, s, ctl, 0);
  st_on_stop = NULL;
  /* Wake the ones still waiting for a turn (they see stop). */
  ASSERT_EQ(s->turn, st_acked(ctl));
  ASSERT(s->turn > ST_WORKERS);
  mp_raw_free(s);
}

/* Event: a ring of events passed from worker to worker. */
typedef struct {
  mp_event_t ev[ST_WORKERS];
  _Atomic long passes;
} st_event_t;

static void st_event_body(void *arg, st_ctl_t *ctl, int slot) {
  st_event_t *s = arg;
  int r = mp_event_wait(&s->ev[slot], 100);
  if (r == MP_ETIMEDOUT)
    return;
  if (r != 0)
    _exit(2);
  mp_event_clear(&s->ev[slot]);
  atomic_fetch_add(&s->passes, 1);
  atomic_fetch_add(&ctl->acked[slot], 1);
  mp_event_set(&s->ev[(slot + 1) % ST_WORKERS]);
}

TEST(stress_event) {
  st_event_t *s = shared(sizeof *s);
  st_ctl_t *ctl = shared(sizeof *ctl);
  for (int i = 0; i < ST_WORKERS; i++)
    mp_event_init(&s->ev[i]);
  mp_event_set(&s->ev[0]);
  st_run(st_event_body, s, ctl, 0);
  /* One token went round: exactly one event is set at the end (or the
   * token is between a clear and the next set, which ended with stop). */
  int set = 0;
  for (int i = 0; i < ST_WORKERS; i++)
    set += mp_event_is_set(&s->ev[i]);
  ASSERT(set <= 1);
  ASSERT_EQ(atomic_load(&s->passes), st_acked(ctl));
  ASSERT(st_acked(ctl) > ST_WORKERS);
  mp_raw_free(ctl);
  mp_raw_free(s);
}

/* Barrier: every party passes every generation, none is broken. */
typedef struct {
  mp_barrier_t b;
  _Atomic long passed[ST_WORKERS];
} st_barrier_t;

static void st_barrier_body(void *arg, st_ctl_t *ctl, int slot) {
  st_barrier_t *s = arg;
  int r = mp_barrier_wait(&s->b, MP_FOREVER);
  if (r < 0)
    _exit(2);
  atomic_fetch_add(&s->passed[slot], 1);
  atomic_fetch_add(&ctl->acked[slot], 1);
  /* Stop together: leave after a generation in which stop was seen by the
   * last party. */
  if (atomic_load(&ctl->stop))
    _exit(0);
}

TEST(stress_barrier) {
  st_barrier_t *s = shared(sizeof *s);
  st_ctl_t *ctl = shared(sizeof *ctl);
  ASSERT_OK(mp_barrier_init(&s->b, ST_WORKERS));
  pid_t hog = mpt_hog_start();
  pid_t w[ST_WORKERS];
  for (int i = 0; i < ST_WORKERS; i++)
    w[i] = st_spawn(st_barrier_body, s, ctl, i);
  mpt_sleep_ms(ST_RUN_MS);
  /* Stop through the barrier itself: abort, then every party leaves. */
  atomic_store(&ctl->stop, 1);
  mpt_sleep_ms(50);
  ASSERT_OK(mp_barrier_abort(&s->b));
  for (int i = 0; i < ST_WORKERS; i++) {
    int rc = mpt_wait_exit(w[i]);
    ASSERT(rc == 0 || rc == 2); /* 2: left through the abort */
  }
  mpt_hog_stop(hog);
  /* All parties passed the same generations, give or take the last. */
  long lo = atomic_load(&s->passed[0]), hi = lo;
  for (int i = 1; i < ST_WORKERS; i++) {
    long p = atomic_load(&s->passed[i]);
    lo = p < lo ? p : lo;
    hi = p > hi ? p : hi;
  }
  ASSERT(hi - lo <= 1);
  ASSERT(lo > 0);
  mp_raw_free(ctl);
  mp_raw_free(s);
}

/* Queue: producers killed at random put uniquely numbered messages;
 * consumers (never killed: a consumer killed after taking a message loses
 * it, as documented) mark what they get. Nothing arrives twice; every
 * message whose put returned 0 arrives; a killed producer adds at most one
 * message it did not see acknowledged. A joiner waits throughout. */
#define STQ_MAX (1 << 16)
typedef struct {
  mp_queue_t *q;
  _Atomic uint32_t next[ST_WORKERS]; /* next number per slot */
  _Atomic uint8_t acked[ST_WORKERS][STQ_MAX];
  _Atomic uint8_t got[ST_WORKERS][STQ_MAX];
  _Atomic long received, dups;
} st_queue_t;

static void st_producer_body(void *arg, st_ctl_t *ctl, int slot) {
  st_queue_t *s = arg;
  uint32_t n = atomic_fetch_add(&s->next[slot], 1);
  if (n >= STQ_MAX) {
    mpt_sleep_ms(1);
    return;
  }
  uint32_t msg[2] = {(uint32_t)slot, n};
  int r = mp_queue_put(s->q, msg, sizeof msg, 100);
  if (r == MP_EFULL || r == MP_ECLOSED)
    return;
  if (r != 0)
    _exit(2);
  atomic_store(&s->acked[slot][n], 1);
  atomic_fetch_add(&ctl->acked[slot], 1);
}

static void st_consumer(st_queue_t *s) {
  for (;;) {
    uint32_t msg[2];
    size_t len;
    int r = mp_queue_get_into(s->q, msg, sizeof msg, &len, MP_FOREVER);
    if (r == MP_ECLOSED)
      return;
    if (r != 0 || len != sizeof msg || msg[0] >= ST_WORKERS ||
        msg[1] >= STQ_MAX)
      _exit(4);
    if (atomic_exchange(&s->got[msg[0]][msg[1]], 1))
      atomic_fetch_add(&s->dups, 1);
    atomic_fetch_add(&s->received, 1);
    mp_queue_task_done(s->q);
  }
}

TEST(stress_queue) {
  st_queue_t *s = shared(sizeof *s);
  st_ctl_t *ctl = shared(sizeof *ctl);
  mp_queue_opts_t o = {.maxsize = 64, .flags = MP_QUEUE_JOINABLE};
  ASSERT_OK(mp_queue_create(&s->q, &o));
  pid_t cons[2], joiner;
  for (int i = 0; i < 2; i++) {
    cons[i] = fork();
    if (cons[i] == 0) {
      mpt_storm_start(1000, false);
      st_consumer(s);
      mpt_storm_stop();
      _exit(0);
    }
  }
  joiner = fork();
  if (joiner == 0) {
    mpt_storm_start(1000, false);
    int r = 0;
    while (!atomic_load(&ctl->stop)) {
      r = mp_queue_join(s->q, 200);
      if (r != 0 && r != MP_ETIMEDOUT)
        break;
    }
    mpt_storm_stop();
    _exit(r == 0 || r == MP_ETIMEDOUT ? 0 : 1);
  }
  st_run(st_producer_body, s, ctl, 5);
  /* Every put is in: the queue drains, then closes. */
  ASSERT_OK(mp_queue_join(s->q, MP_FOREVER));
  ASSERT_OK(mp_queue_close(s->q));
  for (int i = 0; i < 2; i++)
    ASSERT_EQ(mpt_wait_exit(cons[i]), 0);
  ASSERT_EQ(mpt_wait_exit(joiner), 0);
  ASSERT_EQ(atomic_load(&s->dups), 0);
  long acked = 0, lost = 0, extra = 0;
  for (int p = 0; p < ST_WORKERS; p++)
    for (uint32_t i = 0; i < STQ_MAX; i++) {
      bool a = atomic_load(&s->acked[p][i]), g = atomic_load(&s->got[p][i]);
      acked += a;
      lost += a && !g;
      extra += g && !a;
    }
  /* A producer killed between its flag and its count leaves one flag more
   * than counted: at most one per kill. */
  long counted = st_acked(ctl);
  ASSERT(acked >= counted && acked - counted <= atomic_load(&ctl->kills));
  ASSERT(acked > 0);
  ASSERT_EQ(lost, 0);
  ASSERT(extra <= atomic_load(&ctl->kills));
  ASSERT_EQ(atomic_load(&s->received), acked + extra);
  ASSERT_OK(mp_queue_destroy(s->q));
  mp_raw_free(ctl);
  mp_raw_free(s);
}

/* Manager: workers add 1 to one key; each add that returned 0 is counted.
 * A live owner's lock is never taken (no add lost), a killed worker's
 * half-done add is rolled back or complete (at most one per kill). */
typedef struct {
  mp_manager_t *m;
  mp_dict_t *d;
} st_mgr_t;

static void st_mgr_body(void *arg, st_ctl_t *ctl, int slot) {
  st_mgr_t *s = arg;
  mp_val_t k = mp_val_str("n");
  if (mp_dict_add(s->d, &k, 1, NULL) != 0)
    _exit(2);
  atomic_fetch_add(&ctl->acked[slot], 1);
}

static void st_mgr_run(int kill_every_ms) {
  st_mgr_t s;
  st_ctl_t *ctl = shared(sizeof *ctl);
  ASSERT_OK(mp_manager_create(&s.m, NULL));
  ASSERT_OK(mp_dict_create(&s.d, s.m, NULL));
  mp_val_t k = mp_val_str("n"), zero = mp_val_int(0), v;
  ASSERT_OK(mp_dict_set(s.d, &k, &zero));
  st_run(st_mgr_body, &s, ctl, kill_every_ms);
  ASSERT_OK(mp_dict_get(s.d, &k, &v));
  ASSERT_EQ(v.type, MP_INT);
  long acked = st_acked(ctl), kills = atomic_load(&ctl->kills);
  ASSERT(v.u.i >= acked);
  ASSERT(v.u.i <= acked + kills);
  if (kills == 0)
    ASSERT_EQ(v.u.i, acked);
  ASSERT_OK(mp_dict_close(s.d));
  ASSERT_OK(mp_manager_destroy(s.m));
  mp_raw_free(ctl);
}

TEST(stress_manager_dict_add) {
  st_mgr_run(0);
}

TEST(stress_manager_dict_add_kills) {
  st_mgr_run(5);
}

/* Pool: map under a storm in the calling process, beside a hog. */
static int st_square(const void *item, void *result, void *ctx) {
  (void)ctx;
  int64_t x = *(const int64_t *)item;
  *(int64_t *)result = x * x;
  return 0;
}

TEST(stress_pool_map) {
  pid_t hog = mpt_hog_start();
  mp_pool_opts_t o = {.workers = 2};
  mp_pool_t *p;
  ASSERT_OK(mp_pool_create(&p, &o));
  mpt_storm_start(1000, false);
  enum { N = 2000 };
  static int64_t in[N], out[N];
  for (int i = 0; i < N; i++)
    in[i] = i;
  uint64_t end = mpt_now_ms() + ST_RUN_MS;
  int rounds = 0;
  while (mpt_now_ms() < end) {
    memset(out, 0, sizeof out);
    ASSERT_OK(mp_pool_map(p, st_square, in, N, sizeof in[0], out,
                          sizeof out[0], 0));
    for (int i = 0; i < N; i++)
      ASSERT_EQ(out[i], (int64_t)i * i);
    rounds++;
  }
  mpt_storm_stop();
  ASSERT(rounds > 0);
  ASSERT_OK(mp_pool_close(p));
  ASSERT_OK(mp_pool_join(p, MP_FOREVER));
  mp_pool_destroy(p);
  mpt_hog_stop(hog);
}
