/* Tests of the robust core (src/robust.c) through every primitive that
 * uses it: a live owner is never taken over, a dead one is taken over by
 * the next acquirer and by sleepers whatever signals do, and no sleeper
 * depends on a wake-up that a killed waker may never send. */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runner.h"
#ifdef MPT_OLD_LAYOUT
#include "manager_impl.h"
#else
#include "manager_impl.h"
#include "robust.h"
#endif

static void *shared(size_t size) {
  void *p = NULL;
  ASSERT_OK(mp_raw_alloc(&p, size));
  return p;
}

static int wait_exit(pid_t pid) {
  int st;
  while (waitpid(pid, &st, 0) < 0)
    ASSERT_EQ(errno, EINTR);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
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
  kill(pid, SIGKILL);
  wait_exit(pid);
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
#ifdef MPT_OLD_LAYOUT
  l->mp__word = id;
  l->mp__ident = (uint64_t)start << 32 | id;
#else
  l->mp__word = (uint64_t)start << 32 | id;
#endif
}

/* A signal storm: SIGALRM every `us` microseconds, handled (no
 * SA_RESTART unless restart). */
static volatile sig_atomic_t g_alarms;
static void on_alarm(int sig) {
  (void)sig;
  g_alarms++;
}

static void storm_start(int us, bool restart) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sa.sa_flags = restart ? SA_RESTART : 0;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGALRM, &sa, NULL), 0);
  struct itimerval it = {{0, us}, {0, us}};
  ASSERT_EQ(setitimer(ITIMER_REAL, &it, NULL), 0);
}

static void storm_stop(void) {
  struct itimerval it = {{0, 0}, {0, 0}};
  setitimer(ITIMER_REAL, &it, NULL);
  signal(SIGALRM, SIG_IGN);
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
#ifdef MPT_OLD_LAYOUT
  /* The window: word written, start time still the previous owner's. */
  atomic_store(&l->word, (uint32_t)holder);
  atomic_store(&l->owner_start, (uint64_t)start + 5);
#else
  atomic_store(&l->word, (uint64_t)start << 32 | (uint32_t)holder);
#endif
  pid_t waiter = fork();
  if (waiter == 0) {
    mp__mlock_lock(l);
    atomic_store(got, 1);
    _exit(0);
  }
  mpt_sleep_ms(300);
  int taken = atomic_load(got);
  kill(waiter, SIGKILL);
  wait_exit(waiter);
  kill(holder, SIGKILL);
  wait_exit(holder);
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
    _exit(0);
  }
  if (reap_first)
    ASSERT_EQ(wait_exit(holder), 0);
  else
    mpt_sleep_ms(50); /* the holder is a zombie now */
  pid_t waiter = fork();
  if (waiter == 0) {
    storm_start(1000, restart);
    int r;
    if (kind == P_LOCK)
      r = mp_lock_acquire(&s->lock, MP_FOREVER) == MP_EOWNERDEAD;
    else if (kind == P_RLOCK)
      r = mp_rlock_acquire(&s->rlock, MP_FOREVER) == MP_EOWNERDEAD;
    else if (kind == P_COND)
      r = mp_cond_acquire(&s->cond, MP_FOREVER) == MP_EOWNERDEAD;
    else
      r = mp_barrier_wait(&s->barrier, MP_FOREVER) == MP_ECANCELED;
    storm_stop();
    _exit(r ? 0 : 1);
  }
  int rc = wait_exit_guard(waiter, 10000);
  if (!reap_first)
    ASSERT_EQ(wait_exit(holder), 0);
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
    storm_start(1000, false);
    int r = mp_lock_acquire(&s->lock, MP_FOREVER);
    storm_stop();
    _exit(r == MP_EOWNERDEAD ? 0 : 1);
  }
  mpt_sleep_ms(100);
  kill(holder, SIGKILL); /* not reaped: a zombie */
  int rc = wait_exit_guard(waiter, 10000);
  wait_exit(holder);
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

/* ---- 5. pid reuse, by the caller itself --------------------------------- */

TEST(lock_dead_owner_with_callers_pid) {
  mp_lock_t *l = shared(sizeof *l);
  mp_lock_init(l);
  forge_lock(l, (uint32_t)getpid(), proc_start(getpid()) + 7);
  pid_t c = fork();
  if (c == 0) /* the child's pid differs, so fork first and forge there */
    _exit(0);
  wait_exit(c);
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
    storm_start(5000, false);
    mp_cond_acquire(&s->cond, MP_FOREVER);
    int r = mp_cond_wait(&s->cond, 300);
    int owned = mp_rlock_is_owned(mp_cond_lock(&s->cond));
    mp_cond_release(&s->cond);
    storm_stop();
    _exit(r == MP_ETIMEDOUT && owned == 1 && g_alarms > 0 ? 0 : 1);
  }
  ASSERT_EQ(wait_exit(c), 0);
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
    ASSERT_EQ(wait_exit(w[i]), 0);
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
    ASSERT_EQ(wait_exit(c), 0);
    ASSERT_OK(r);
    ASSERT_OK(mp_queue_destroy(q));
  }
}
