/* Tests of the sync part: Lock, RLock, Semaphore, Condition, Event, Barrier,
 * between threads and processes, dead holders, named objects. */
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runner.h"

static void *shared(size_t size) {
  void *p = NULL;
  ASSERT_OK(mp_raw_alloc(&p, size));
  return p;
}

/* ---- Lock ---------------------------------------------------------------- */

TEST(lock_basic) {
  mp_lock_t l;
  ASSERT_OK(mp_lock_init(&l));
  ASSERT_EQ(mp_lock_locked(&l), 0);
  ASSERT_OK(mp_lock_acquire(&l, MP_FOREVER));
  ASSERT_EQ(mp_lock_locked(&l), 1);
  ASSERT_ERR(mp_lock_acquire(&l, 0), MP_ETIMEDOUT);
  ASSERT_OK(mp_lock_release(&l));
  ASSERT_ERR(mp_lock_release(&l), MP_EPERM);
  ASSERT_OK(mp_lock_acquire(&l, 0));
  ASSERT_OK(mp_lock_release(&l));
}

TEST(lock_errors) {
  mp_lock_t l;
  ASSERT_ERR(mp_lock_init(NULL), MP_EINVAL);
  ASSERT_OK(mp_lock_init(&l));
  ASSERT_ERR(mp_lock_acquire(NULL, 0), MP_EINVAL);
  ASSERT_ERR(mp_lock_acquire(&l, -2), MP_EINVAL);
  ASSERT_ERR(mp_lock_release(NULL), MP_EINVAL);
  ASSERT_ERR(mp_lock_consistent(NULL), MP_EINVAL);
  ASSERT_ERR(mp_lock_consistent(&l), MP_EPERM);
  ASSERT_ERR(mp_lock_locked(NULL), MP_EINVAL);
  ASSERT_EQ(mp_lock_locked(&l), 0);
}

TEST(lock_timeout_lower_bound) {
  mp_lock_t *l = shared(sizeof *l);
  mp_lock_init(l);
  ASSERT_OK(mp_lock_acquire(l, MP_FOREVER));
  uint64_t t0 = mpt_now_ms();
  ASSERT_ERR(mp_lock_acquire(l, 150), MP_ETIMEDOUT);
  ASSERT(mpt_now_ms() - t0 >= 150);
  pid_t pid = fork();
  if (pid == 0) {
    uint64_t t1 = mpt_now_ms();
    int r = mp_lock_acquire(l, 120);
    _exit(r == MP_ETIMEDOUT && mpt_now_ms() - t1 >= 120 ? 0 : 1);
  }
  ASSERT_EQ(mpt_wait_exit(pid), 0);
  ASSERT_OK(mp_lock_release(l));
  mp_raw_free(l);
}

TEST(lock_release_by_other_process) {
  mp_lock_t *l = shared(sizeof *l);
  mp_lock_init(l);
  ASSERT_OK(mp_lock_acquire(l, MP_FOREVER));
  pid_t pid = fork();
  if (pid == 0)
    _exit(mp_lock_release(l) == 0 ? 0 : 1);
  ASSERT_EQ(mpt_wait_exit(pid), 0);
  ASSERT_OK(mp_lock_acquire(l, 0));
  ASSERT_OK(mp_lock_release(l));
  mp_raw_free(l);
}

typedef struct {
  mp_lock_t lock;
  long counter;
  int n;
} count_t;

static void count_loop(count_t *c) {
  for (int i = 0; i < c->n; i++) {
    if (mp_lock_acquire(&c->lock, MP_FOREVER) != 0)
      _exit(3);
    long v = c->counter;
    if ((i & 255) == 0)
      sched_yield();
    c->counter = v + 1;
    mp_lock_release(&c->lock);
  }
}

static void *count_thread(void *arg) {
  count_loop(arg);
  return NULL;
}

static int count_fn(const void *arg, size_t len) {
  count_t *c;
  memcpy(&c, arg, sizeof c);
  count_loop(c);
  return 0;
}

TEST(lock_counter_processes) {
  count_t *c = shared(sizeof *c);
  mp_lock_init(&c->lock);
  c->n = 20000;
  pid_t pids[4];
  for (int i = 0; i < 4; i++)
    if ((pids[i] = fork()) == 0) {
      count_loop(c);
      _exit(0);
    }
  for (int i = 0; i < 4; i++)
    ASSERT_EQ(mpt_wait_exit(pids[i]), 0);
  ASSERT_EQ(c->counter, 80000);
  mp_raw_free(c);
}

TEST(lock_counter_threads_and_processes) {
  /* Two processes with two threads each: the same lock serves both. */
  count_t *c = shared(sizeof *c);
  mp_lock_init(&c->lock);
  c->n = 10000;
  pid_t pids[2];
  for (int i = 0; i < 2; i++)
    if ((pids[i] = fork()) == 0) {
      pthread_t t[2];
      for (int k = 0; k < 2; k++)
        pthread_create(&t[k], NULL, count_thread, c);
      for (int k = 0; k < 2; k++)
        pthread_join(t[k], NULL);
      _exit(0);
    }
  for (int i = 0; i < 2; i++)
    ASSERT_EQ(mpt_wait_exit(pids[i]), 0);
  ASSERT_EQ(c->counter, 40000);
  /* And mp_thread in this process. */
  mp_thread_t *t[2];
  for (int k = 0; k < 2; k++) {
    ASSERT_OK(mp_thread_create(&t[k], count_fn, &c, sizeof c, NULL));
    ASSERT_OK(mp_thread_start(t[k]));
  }
  for (int k = 0; k < 2; k++) {
    ASSERT_OK(mp_thread_join(t[k], MP_FOREVER));
    mp_thread_destroy(t[k]);
  }
  ASSERT_EQ(c->counter, 60000);
  mp_raw_free(c);
}

/* A child takes the lock and dies holding it: the next acquire gets
 * MP_EOWNERDEAD with the lock held, until marked consistent. */
TEST(lock_owner_dead_rounds) {
  mp_lock_t *l = shared(sizeof *l);
  mp_lock_init(l);
  for (int round = 0; round < 30; round++) {
    pid_t pid = fork();
    if (pid == 0) {
      if (mp_lock_acquire(l, MP_FOREVER) != 0)
        _exit(1);
      raise(SIGKILL);
    }
    ASSERT_EQ(mpt_wait_exit(pid), 128 + SIGKILL);
    ASSERT_ERR(mp_lock_acquire(l, MP_FOREVER), MP_EOWNERDEAD);
    ASSERT_EQ(mp_lock_locked(l), 1);
    if (round % 2 == 0) {
      /* Not repaired: the next one is told too. */
      ASSERT_OK(mp_lock_release(l));
      ASSERT_ERR(mp_lock_acquire(l, 0), MP_EOWNERDEAD);
    }
    ASSERT_OK(mp_lock_consistent(l));
    ASSERT_OK(mp_lock_release(l));
    ASSERT_OK(mp_lock_acquire(l, 0));
    ASSERT_OK(mp_lock_release(l));
  }
  mp_raw_free(l);
}

/* Waiters already asleep when the holder is killed take over; so does a
 * waiter whose dead holder is its own unreaped (zombie) child. */
TEST(lock_owner_dead_sleeping_waiter) {
  typedef struct {
    mp_lock_t lock;
    mp_event_t held;
  } sh_t;
  sh_t *s = shared(sizeof *s);
  for (int round = 0; round < 5; round++) {
    mp_lock_init(&s->lock);
    mp_event_init(&s->held);
    pid_t holder = fork();
    if (holder == 0) {
      mp_lock_acquire(&s->lock, MP_FOREVER);
      mp_event_set(&s->held);
      pause();
      _exit(0);
    }
    ASSERT_OK(mp_event_wait(&s->held, MP_FOREVER));
    pid_t waiter = fork();
    if (waiter == 0) {
      int r = mp_lock_acquire(&s->lock, MP_FOREVER);
      if (r == MP_EOWNERDEAD)
        mp_lock_consistent(&s->lock);
      if (r == MP_EOWNERDEAD || r == 0)
        mp_lock_release(&s->lock);
      _exit(r == MP_EOWNERDEAD || r == 0 ? 0 : 1);
    }
    mpt_sleep_ms(50);
    kill(holder, SIGKILL);
    if (round % 2 == 0) {
      /* The holder stays a zombie while we wait: still dead. */
      int r = mp_lock_acquire(&s->lock, MP_FOREVER);
      ASSERT(r == 0 || r == MP_EOWNERDEAD);
      if (r == MP_EOWNERDEAD)
        mp_lock_consistent(&s->lock);
      mp_lock_release(&s->lock);
      ASSERT_EQ(mpt_wait_exit(holder), 128 + SIGKILL);
    } else {
      ASSERT_EQ(mpt_wait_exit(holder), 128 + SIGKILL);
    }
    ASSERT_EQ(mpt_wait_exit(waiter), 0);
    ASSERT_OK(mp_lock_acquire(&s->lock, MP_FOREVER));
    ASSERT_OK(mp_lock_release(&s->lock));
  }
  mp_raw_free(s);
}

/* Workers hammer a lock and are killed at random moments; the survivors and
 * the parent always get the lock back and nothing hangs. */
TEST(lock_kill_at_random) {
  count_t *c = shared(sizeof *c);
  mp_lock_init(&c->lock);
  c->n = 1 << 30;
  unsigned seed = (unsigned)getpid();
  for (int round = 0; round < 20; round++) {
    pid_t pids[3];
    for (int i = 0; i < 3; i++)
      if ((pids[i] = fork()) == 0) {
        for (;;) {
          int r = mp_lock_acquire(&c->lock, MP_FOREVER);
          if (r == MP_EOWNERDEAD)
            mp_lock_consistent(&c->lock);
          else if (r != 0)
            _exit(3);
          c->counter++;
          mp_lock_release(&c->lock);
        }
      }
    mpt_sleep_ms(5 + (int)(rand_r(&seed) % 20));
    for (int i = 0; i < 3; i++)
      ASSERT_EQ(mpt_kill_reap(pids[i]), 128 + SIGKILL);
    int r = mp_lock_acquire(&c->lock, MP_FOREVER);
    ASSERT(r == 0 || r == MP_EOWNERDEAD);
    if (r == MP_EOWNERDEAD)
      ASSERT_OK(mp_lock_consistent(&c->lock));
    ASSERT_OK(mp_lock_release(&c->lock));
  }
  ASSERT(c->counter > 0);
  mp_raw_free(c);
}

static uint32_t proc_start(pid_t pid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  ASSERT(f);
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *p = strrchr(buf, ')') + 2;
  for (int field = 3; field < 22; field++)
    p = strchr(p, ' ') + 1;
  return (uint32_t)strtoull(p, NULL, 10);
}

/* The holder's pid now belongs to another process (pid reuse): recorded
 * start time differs, so the lock is taken over. Same start time: alive. */
TEST(lock_pid_reuse_detected) {
  pid_t pid = fork();
  if (pid == 0) {
    pause();
    _exit(0);
  }
  mpt_sleep_ms(20);
  uint32_t start = proc_start(pid);
  mp_lock_t *l = shared(sizeof *l);
  mp_lock_init(l);
  l->mp__word = (uint64_t)start << 32 | (uint32_t)pid;
  uint64_t t0 = mpt_now_ms();
  ASSERT_ERR(mp_lock_acquire(l, 300), MP_ETIMEDOUT);
  ASSERT(mpt_now_ms() - t0 >= 300);
  l->mp__word = (uint64_t)(start + 7) << 32 | (uint32_t)pid;
  ASSERT_ERR(mp_lock_acquire(l, MP_FOREVER), MP_EOWNERDEAD);
  ASSERT_OK(mp_lock_consistent(l));
  ASSERT_OK(mp_lock_release(l));
  ASSERT_EQ(mpt_kill_reap(pid), 128 + SIGKILL);
  mp_raw_free(l);
}

/* ---- RLock --------------------------------------------------------------- */

static mp_rlock_t g_rlock;

static int rlock_other_thread(const void *arg, size_t len) {
  int r1 = mp_rlock_release(&g_rlock);
  int r2 = mp_rlock_acquire(&g_rlock, 50);
  int r3 = mp_rlock_is_owned(&g_rlock);
  return r1 == MP_EPERM && r2 == MP_ETIMEDOUT && r3 == 0 ? 0 : 1;
}

TEST(rlock_recursion_and_owner) {
  ASSERT_OK(mp_rlock_init(&g_rlock));
  ASSERT_EQ(mp_rlock_is_owned(&g_rlock), 0);
  ASSERT_ERR(mp_rlock_release(&g_rlock), MP_EPERM);
  for (int i = 0; i < 5; i++)
    ASSERT_OK(mp_rlock_acquire(&g_rlock, 0));
  ASSERT_EQ(mp_rlock_is_owned(&g_rlock), 1);
  mp_thread_t *t;
  ASSERT_OK(mp_thread_create(&t, rlock_other_thread, NULL, 0, NULL));
  ASSERT_OK(mp_thread_start(t));
  ASSERT_OK(mp_thread_join(t, MP_FOREVER));
  int code = -1;
  ASSERT_OK(mp_thread_exitcode(t, &code));
  ASSERT_EQ(code, 0);
  mp_thread_destroy(t);
  for (int i = 0; i < 4; i++)
    ASSERT_OK(mp_rlock_release(&g_rlock));
  ASSERT_EQ(mp_rlock_is_owned(&g_rlock), 1);
  ASSERT_OK(mp_rlock_release(&g_rlock));
  ASSERT_EQ(mp_rlock_is_owned(&g_rlock), 0);
  ASSERT_ERR(mp_rlock_release(&g_rlock), MP_EPERM);
  ASSERT_ERR(mp_rlock_init(NULL), MP_EINVAL);
  ASSERT_ERR(mp_rlock_acquire(NULL, 0), MP_EINVAL);
  ASSERT_ERR(mp_rlock_acquire(&g_rlock, -3), MP_EINVAL);
  ASSERT_ERR(mp_rlock_release(NULL), MP_EINVAL);
  ASSERT_ERR(mp_rlock_consistent(NULL), MP_EINVAL);
  ASSERT_ERR(mp_rlock_consistent(&g_rlock), MP_EPERM);
  ASSERT_ERR(mp_rlock_is_owned(NULL), MP_EINVAL);
}

static int rlock_take_and_exit(const void *arg, size_t len) {
  mp_rlock_acquire(&g_rlock, MP_FOREVER);
  mp_rlock_acquire(&g_rlock, MP_FOREVER);
  return 0; /* ends holding it */
}

TEST(rlock_owner_dead_thread_and_process) {
  mp_rlock_init(&g_rlock);
  mp_thread_t *t;
  ASSERT_OK(mp_thread_create(&t, rlock_take_and_exit, NULL, 0, NULL));
  ASSERT_OK(mp_thread_start(t));
  ASSERT_OK(mp_thread_join(t, MP_FOREVER));
  mp_thread_destroy(t);
  ASSERT_ERR(mp_rlock_acquire(&g_rlock, MP_FOREVER), MP_EOWNERDEAD);
  /* Depth starts at 1 after a takeover. */
  ASSERT_OK(mp_rlock_consistent(&g_rlock));
  ASSERT_OK(mp_rlock_release(&g_rlock));
  ASSERT_EQ(mp_rlock_is_owned(&g_rlock), 0);

  mp_rlock_t *l = shared(sizeof *l);
  mp_rlock_init(l);
  for (int round = 0; round < 10; round++) {
    pid_t pid = fork();
    if (pid == 0) {
      mp_rlock_acquire(l, MP_FOREVER);
      mp_rlock_acquire(l, MP_FOREVER);
      raise(SIGKILL);
    }
    ASSERT_EQ(mpt_wait_exit(pid), 128 + SIGKILL);
    ASSERT_ERR(mp_rlock_acquire(l, MP_FOREVER), MP_EOWNERDEAD);
    ASSERT_OK(mp_rlock_acquire(l, 0));
    ASSERT_OK(mp_rlock_consistent(l));
    ASSERT_OK(mp_rlock_release(l));
    ASSERT_OK(mp_rlock_release(l));
    ASSERT_EQ(mp_rlock_is_owned(l), 0);
  }
  mp_raw_free(l);
}

/* ---- Semaphore ----------------------------------------------------------- */

TEST(semaphore_basic) {
  mp_semaphore_t s;
  ASSERT_OK(mp_semaphore_init(&s, 2));
  ASSERT_EQ(mp_semaphore_value(&s), 2);
  ASSERT_OK(mp_semaphore_acquire(&s, 0));
  ASSERT_OK(mp_semaphore_acquire(&s, MP_FOREVER));
  ASSERT_EQ(mp_semaphore_value(&s), 0);
  ASSERT_ERR(mp_semaphore_acquire(&s, 0), MP_ETIMEDOUT);
  uint64_t t0 = mpt_now_ms();
  ASSERT_ERR(mp_semaphore_acquire(&s, 100), MP_ETIMEDOUT);
  ASSERT(mpt_now_ms() - t0 >= 100);
  for (int i = 0; i < 5; i++)
    ASSERT_OK(mp_semaphore_release(&s)); /* unbounded */
  ASSERT_EQ(mp_semaphore_value(&s), 5);
  ASSERT_ERR(mp_semaphore_init(NULL, 1), MP_EINVAL);
  ASSERT_ERR(mp_semaphore_init(&s, MP_SEM_VALUE_MAX + 1u), MP_EINVAL);
  ASSERT_ERR(mp_semaphore_acquire(NULL, 0), MP_EINVAL);
  ASSERT_ERR(mp_semaphore_acquire(&s, -7), MP_EINVAL);
  ASSERT_ERR(mp_semaphore_release(NULL), MP_EINVAL);
  ASSERT_ERR(mp_semaphore_value(NULL), MP_EINVAL);
  ASSERT_OK(mp_semaphore_init(&s, MP_SEM_VALUE_MAX));
  ASSERT_ERR(mp_semaphore_release(&s), MP_EOVERFLOW);
}

TEST(bounded_semaphore_over_release) {
  mp_semaphore_t s;
  ASSERT_OK(mp_bounded_semaphore_init(&s, 2));
  ASSERT_ERR(mp_semaphore_release(&s), MP_EINVAL);
  ASSERT_OK(mp_semaphore_acquire(&s, 0));
  ASSERT_OK(mp_semaphore_release(&s));
  ASSERT_ERR(mp_semaphore_release(&s), MP_EINVAL);
  ASSERT_EQ(mp_semaphore_value(&s), 2);
  ASSERT_OK(mp_bounded_semaphore_init(&s, 0));
  ASSERT_ERR(mp_semaphore_release(&s), MP_EINVAL);
  ASSERT_EQ(mp_semaphore_value(&s), 0);
  ASSERT_ERR(mp_bounded_semaphore_init(NULL, 1), MP_EINVAL);
}

/* At most `value` processes inside at once; blocked ones are woken. */
TEST(semaphore_processes) {
  typedef struct {
    mp_semaphore_t sem;
    int inside, max_inside;
    mp_lock_t mu;
  } sh_t;
  sh_t *s = shared(sizeof *s);
  mp_semaphore_init(&s->sem, 2);
  mp_lock_init(&s->mu);
  pid_t pids[5];
  for (int i = 0; i < 5; i++)
    if ((pids[i] = fork()) == 0) {
      for (int k = 0; k < 20; k++) {
        if (mp_semaphore_acquire(&s->sem, MP_FOREVER) != 0)
          _exit(1);
        mp_lock_acquire(&s->mu, MP_FOREVER);
        if (++s->inside > s->max_inside)
          s->max_inside = s->inside;
        mp_lock_release(&s->mu);
        mpt_sleep_ms(1);
        mp_lock_acquire(&s->mu, MP_FOREVER);
        s->inside--;
        mp_lock_release(&s->mu);
        mp_semaphore_release(&s->sem);
      }
      _exit(0);
    }
  for (int i = 0; i < 5; i++)
    ASSERT_EQ(mpt_wait_exit(pids[i]), 0);
  ASSERT(s->max_inside <= 2);
  ASSERT(s->max_inside >= 1);
  ASSERT_EQ(mp_semaphore_value(&s->sem), 2);
  mp_raw_free(s);
}

/* A process killed holding a permit does not give it back (documented). */
TEST(semaphore_dead_holder_keeps_permit) {
  mp_semaphore_t *s = shared(sizeof *s);
  mp_semaphore_init(s, 1);
  pid_t pid = fork();
  if (pid == 0) {
    mp_semaphore_acquire(s, MP_FOREVER);
    raise(SIGKILL);
  }
  ASSERT_EQ(mpt_wait_exit(pid), 128 + SIGKILL);
  ASSERT_EQ(mp_semaphore_value(s), 0);
  ASSERT_ERR(mp_semaphore_acquire(s, 50), MP_ETIMEDOUT);
  mp_raw_free(s);
}

/* ---- Condition ----------------------------------------------------------- */

typedef struct {
  mp_cond_t cond;
  int ready;
  int woken;
} cond_sh_t;

static bool ready_pred(void *arg) {
  return ((cond_sh_t *)arg)->ready != 0;
}

TEST(cond_wait_notify_processes) {
  cond_sh_t *s = shared(sizeof *s);
  ASSERT_OK(mp_cond_init(&s->cond));
  pid_t pids[3];
  for (int i = 0; i < 3; i++)
    if ((pids[i] = fork()) == 0) {
      mp_cond_acquire(&s->cond, MP_FOREVER);
      int r = mp_cond_wait_for(&s->cond, ready_pred, s, MP_FOREVER);
      s->woken++;
      mp_cond_release(&s->cond);
      _exit(r == 0 ? 0 : 1);
    }
  mpt_sleep_ms(50);
  ASSERT_OK(mp_cond_acquire(&s->cond, MP_FOREVER));
  s->ready = 1;
  ASSERT_OK(mp_cond_notify_all(&s->cond));
  ASSERT_OK(mp_cond_release(&s->cond));
  for (int i = 0; i < 3; i++)
    ASSERT_EQ(mpt_wait_exit(pids[i]), 0);
  ASSERT_EQ(s->woken, 3);
  mp_raw_free(s);
}

TEST(cond_notify_one) {
  cond_sh_t *s = shared(sizeof *s);
  mp_cond_init(&s->cond);
  pid_t pid = fork();
  if (pid == 0) {
    mp_cond_acquire(&s->cond, MP_FOREVER);
    /* Recursion depth is restored after the wait. */
    mp_cond_acquire(&s->cond, MP_FOREVER);
    s->ready = 1;
    int r = mp_cond_wait(&s->cond, MP_FOREVER);
    int owned = mp_rlock_is_owned(mp_cond_lock(&s->cond));
    mp_cond_release(&s->cond);
    int owned_after_one = mp_rlock_is_owned(mp_cond_lock(&s->cond));
    mp_cond_release(&s->cond);
    _exit(r == 0 && owned == 1 && owned_after_one == 1 ? 0 : 1);
  }
  for (;;) {
    mp_cond_acquire(&s->cond, MP_FOREVER);
    if (s->ready)
      break;
    mp_cond_release(&s->cond);
    mpt_sleep_ms(1);
  }
  /* The child is waiting (it set ready with the lock, then waited). */
  ASSERT_OK(mp_cond_notify(&s->cond, 1));
  ASSERT_OK(mp_cond_release(&s->cond));
  ASSERT_EQ(mpt_wait_exit(pid), 0);
  mp_raw_free(s);
}

TEST(cond_timeout_and_errors) {
  mp_cond_t c;
  ASSERT_OK(mp_cond_init(&c));
  ASSERT_ERR(mp_cond_wait(&c, 10), MP_EPERM);
  ASSERT_ERR(mp_cond_notify(&c, 1), MP_EPERM);
  ASSERT_ERR(mp_cond_notify_all(&c), MP_EPERM);
  ASSERT_ERR(mp_cond_wait_for(&c, ready_pred, NULL, 0), MP_EPERM);
  ASSERT_OK(mp_cond_acquire(&c, 0));
  uint64_t t0 = mpt_now_ms();
  ASSERT_ERR(mp_cond_wait(&c, 120), MP_ETIMEDOUT);
  ASSERT(mpt_now_ms() - t0 >= 120);
  ASSERT_EQ(mp_rlock_is_owned(mp_cond_lock(&c)), 1);
  cond_sh_t never = {0};
  t0 = mpt_now_ms();
  ASSERT_ERR(mp_cond_wait_for(&c, ready_pred, &never, 100), MP_ETIMEDOUT);
  ASSERT(mpt_now_ms() - t0 >= 100);
  never.ready = 1;
  ASSERT_OK(mp_cond_wait_for(&c, ready_pred, &never, 0));
  ASSERT_ERR(mp_cond_wait_for(&c, NULL, NULL, 0), MP_EINVAL);
  ASSERT_ERR(mp_cond_notify(&c, -1), MP_EINVAL);
  ASSERT_OK(mp_cond_notify(&c, 0));
  ASSERT_ERR(mp_cond_wait(&c, -5), MP_EINVAL);
  ASSERT_OK(mp_cond_release(&c));
  ASSERT_ERR(mp_cond_init(NULL), MP_EINVAL);
  ASSERT_ERR(mp_cond_wait(NULL, 0), MP_EINVAL);
  ASSERT_ERR(mp_cond_notify(NULL, 1), MP_EINVAL);
  ASSERT_ERR(mp_cond_acquire(NULL, 0), MP_EINVAL);
  ASSERT_ERR(mp_cond_release(NULL), MP_EINVAL);
  ASSERT_ERR(mp_cond_consistent(NULL), MP_EINVAL);
  ASSERT(mp_cond_lock(NULL) == NULL);
}

/* A process killed with the condition's lock held (after being woken from
 * a wait): the next acquirer gets MP_EOWNERDEAD; one killed while sleeping
 * in wait leaves nothing behind. */
TEST(cond_owner_dead) {
  cond_sh_t *s = shared(sizeof *s);
  mp_cond_init(&s->cond);
  for (int round = 0; round < 5; round++) {
    s->woken = 0;
    pid_t sleeper = fork();
    if (sleeper == 0) {
      mp_cond_acquire(&s->cond, MP_FOREVER);
      s->woken++;
      mp_cond_wait(&s->cond, MP_FOREVER);
      _exit(0);
    }
    pid_t dier = fork();
    if (dier == 0) {
      mp_cond_acquire(&s->cond, MP_FOREVER);
      s->woken++;
      mp_cond_wait(&s->cond, MP_FOREVER);
      raise(SIGKILL); /* woken, lock held */
    }
    /* Let both sleep, kill the first while it sleeps. */
    for (;;) {
      mp_cond_acquire(&s->cond, MP_FOREVER);
      /* Both counted under the lock, so both are inside wait now. */
      int ok = s->woken == 2;
      if (ok)
        break;
      mp_cond_release(&s->cond);
      mpt_sleep_ms(1);
    }
    mp_cond_release(&s->cond);
    ASSERT_EQ(mpt_kill_reap(sleeper), 128 + SIGKILL);
    ASSERT_OK(mp_cond_acquire(&s->cond, MP_FOREVER));
    ASSERT_OK(mp_cond_notify_all(&s->cond));
    ASSERT_OK(mp_cond_release(&s->cond));
    ASSERT_EQ(mpt_wait_exit(dier), 128 + SIGKILL);
    ASSERT_ERR(mp_cond_acquire(&s->cond, MP_FOREVER), MP_EOWNERDEAD);
    ASSERT_OK(mp_cond_consistent(&s->cond));
    ASSERT_OK(mp_cond_release(&s->cond));
  }
  mp_raw_free(s);
}

/* ---- Event --------------------------------------------------------------- */

TEST(event_basic) {
  mp_event_t e;
  ASSERT_OK(mp_event_init(&e));
  ASSERT_EQ(mp_event_is_set(&e), 0);
  ASSERT_ERR(mp_event_wait(&e, 0), MP_ETIMEDOUT);
  uint64_t t0 = mpt_now_ms();
  ASSERT_ERR(mp_event_wait(&e, 100), MP_ETIMEDOUT);
  ASSERT(mpt_now_ms() - t0 >= 100);
  ASSERT_OK(mp_event_set(&e));
  ASSERT_OK(mp_event_set(&e));
  ASSERT_EQ(mp_event_is_set(&e), 1);
  ASSERT_OK(mp_event_wait(&e, 0));
  ASSERT_OK(mp_event_wait(&e, MP_FOREVER));
  ASSERT_OK(mp_event_clear(&e));
  ASSERT_EQ(mp_event_is_set(&e), 0);
  ASSERT_ERR(mp_event_init(NULL), MP_EINVAL);
  ASSERT_ERR(mp_event_set(NULL), MP_EINVAL);
  ASSERT_ERR(mp_event_clear(NULL), MP_EINVAL);
  ASSERT_ERR(mp_event_is_set(NULL), MP_EINVAL);
  ASSERT_ERR(mp_event_wait(NULL, 0), MP_EINVAL);
  ASSERT_ERR(mp_event_wait(&e, -9), MP_EINVAL);
}

TEST(event_wakes_processes_and_threads) {
  mp_event_t *e = shared(sizeof *e);
  mp_event_init(e);
  pid_t pids[3];
  for (int i = 0; i < 3; i++)
    if ((pids[i] = fork()) == 0)
      _exit(mp_event_wait(e, MP_FOREVER) == 0 ? 0 : 1);
  mpt_sleep_ms(50);
  ASSERT_OK(mp_event_set(e));
  for (int i = 0; i < 3; i++)
    ASSERT_EQ(mpt_wait_exit(pids[i]), 0);
  mp_raw_free(e);
}

/* ---- Barrier ------------------------------------------------------------- */

TEST(barrier_rounds_processes) {
  typedef struct {
    mp_barrier_t b;
    int seen[3][4];
  } sh_t;
  sh_t *s = shared(sizeof *s);
  ASSERT_OK(mp_barrier_init(&s->b, 4));
  ASSERT_EQ(mp_barrier_parties(&s->b), 4);
  pid_t pids[3];
  for (int i = 0; i < 3; i++)
    if ((pids[i] = fork()) == 0) {
      for (int round = 0; round < 3; round++) {
        int idx = mp_barrier_wait(&s->b, MP_FOREVER);
        if (idx < 0 || idx > 3)
          _exit(1);
        __atomic_fetch_add(&s->seen[round][idx], 1, __ATOMIC_SEQ_CST);
      }
      _exit(0);
    }
  for (int round = 0; round < 3; round++) {
    int idx = mp_barrier_wait(&s->b, MP_FOREVER);
    ASSERT(idx >= 0 && idx <= 3);
    __atomic_fetch_add(&s->seen[round][idx], 1, __ATOMIC_SEQ_CST);
  }
  for (int i = 0; i < 3; i++)
    ASSERT_EQ(mpt_wait_exit(pids[i]), 0);
  for (int round = 0; round < 3; round++)
    for (int i = 0; i < 4; i++)
      ASSERT_EQ(s->seen[round][i], 1);
  ASSERT_EQ(mp_barrier_n_waiting(&s->b), 0);
  ASSERT_EQ(mp_barrier_broken(&s->b), 0);
  mp_raw_free(s);
}

TEST(barrier_abort_reset_timeout) {
  mp_barrier_t *b = shared(sizeof *b);
  ASSERT_OK(mp_barrier_init(b, 3));
  /* A timed-out wait breaks the barrier for the others. */
  pid_t pid = fork();
  if (pid == 0)
    _exit(mp_barrier_wait(b, MP_FOREVER) == MP_ECANCELED ? 0 : 1);
  while (mp_barrier_n_waiting(b) != 1)
    mpt_sleep_ms(1);
  uint64_t t0 = mpt_now_ms();
  ASSERT_ERR(mp_barrier_wait(b, 100), MP_ETIMEDOUT);
  ASSERT(mpt_now_ms() - t0 >= 100);
  ASSERT_EQ(mpt_wait_exit(pid), 0);
  ASSERT_EQ(mp_barrier_broken(b), 1);
  ASSERT_ERR(mp_barrier_wait(b, 0), MP_ECANCELED);
  ASSERT_OK(mp_barrier_reset(b));
  ASSERT_EQ(mp_barrier_broken(b), 0);
  /* abort wakes waiters with MP_ECANCELED. */
  pid = fork();
  if (pid == 0)
    _exit(mp_barrier_wait(b, MP_FOREVER) == MP_ECANCELED ? 0 : 1);
  while (mp_barrier_n_waiting(b) != 1)
    mpt_sleep_ms(1);
  ASSERT_OK(mp_barrier_abort(b));
  ASSERT_EQ(mpt_wait_exit(pid), 0);
  ASSERT_ERR(mp_barrier_wait(b, MP_FOREVER), MP_ECANCELED);
  /* reset while a party waits: it gets MP_ECANCELED, the barrier works. */
  ASSERT_OK(mp_barrier_reset(b));
  pid = fork();
  if (pid == 0)
    _exit(mp_barrier_wait(b, MP_FOREVER) == MP_ECANCELED ? 0 : 1);
  while (mp_barrier_n_waiting(b) != 1)
    mpt_sleep_ms(1);
  ASSERT_OK(mp_barrier_reset(b));
  ASSERT_EQ(mpt_wait_exit(pid), 0);
  ASSERT_EQ(mp_barrier_broken(b), 0);
  pid_t p2[2];
  for (int i = 0; i < 2; i++)
    if ((p2[i] = fork()) == 0)
      _exit(mp_barrier_wait(b, MP_FOREVER) >= 0 ? 0 : 1);
  ASSERT(mp_barrier_wait(b, MP_FOREVER) >= 0);
  for (int i = 0; i < 2; i++)
    ASSERT_EQ(mpt_wait_exit(p2[i]), 0);
  ASSERT_ERR(mp_barrier_init(b, 0), MP_EINVAL);
  ASSERT_ERR(mp_barrier_init(NULL, 1), MP_EINVAL);
  ASSERT_ERR(mp_barrier_wait(NULL, 0), MP_EINVAL);
  ASSERT_ERR(mp_barrier_wait(b, -4), MP_EINVAL);
  ASSERT_ERR(mp_barrier_abort(NULL), MP_EINVAL);
  ASSERT_ERR(mp_barrier_reset(NULL), MP_EINVAL);
  ASSERT_ERR(mp_barrier_broken(NULL), MP_EINVAL);
  ASSERT_ERR(mp_barrier_parties(NULL), MP_EINVAL);
  ASSERT_ERR(mp_barrier_n_waiting(NULL), MP_EINVAL);
  mp_raw_free(b);
}

/* A party killed before arriving: the others time out and the barrier is
 * broken, nobody hangs. One killed while holding the barrier's internal
 * lock breaks it for the next caller. */
/* Python's Barrier(timeout=): a default for waits given MP_BARRIER_DEFAULT,
 * stored in the barrier so other processes see it. */
TEST(barrier_default_timeout) {
  mp_barrier_t *b = shared(sizeof *b);
  ASSERT_OK(mp_barrier_init(b, 2));
  ASSERT_EQ(mp_barrier_timeout(b), MP_FOREVER);
  ASSERT_ERR(mp_barrier_set_timeout(NULL, 5), MP_EINVAL);
  ASSERT_ERR(mp_barrier_set_timeout(b, -5), MP_EINVAL);
  ASSERT_ERR(mp_barrier_set_timeout(b, MP_BARRIER_DEFAULT), MP_EINVAL);
  ASSERT_ERR(mp_barrier_timeout(NULL), MP_EINVAL);
  ASSERT_ERR(mp_barrier_wait(NULL, MP_BARRIER_DEFAULT), MP_EINVAL);
  ASSERT_ERR(mp_barrier_wait(b, -3), MP_EINVAL);
  ASSERT_OK(mp_barrier_set_timeout(b, 60));
  pid_t pid = fork();
  if (pid == 0)
    _exit(mp_barrier_timeout(b) == 60 ? 0 : 1);
  ASSERT_EQ(mpt_wait_exit(pid), 0);
  uint64_t t0 = mpt_now_ms();
  ASSERT_ERR(mp_barrier_wait(b, MP_BARRIER_DEFAULT), MP_ETIMEDOUT);
  ASSERT(mpt_now_ms() - t0 >= 60);
  ASSERT_EQ(mp_barrier_broken(b), 1);
  ASSERT_OK(mp_barrier_reset(b));
  /* An explicit timeout still wins over the default; with both parties
   * there the default never matters. */
  pid = fork();
  if (pid == 0)
    _exit(mp_barrier_wait(b, MP_BARRIER_DEFAULT) >= 0 ? 0 : 1);
  ASSERT(mp_barrier_wait(b, MP_FOREVER) >= 0);
  ASSERT_EQ(mpt_wait_exit(pid), 0);
  ASSERT_OK(mp_barrier_set_timeout(b, MP_FOREVER));
  ASSERT_EQ(mp_barrier_timeout(b), MP_FOREVER);
  mp_raw_free(b);
}

/* A party stopped inside its wait while its generation is ended by a reset
 * and 64 more generations pass: it must still learn its generation was
 * broken (a 64-entry history alone wraps). */
TEST(barrier_history_wraps_across_reset) {
  mp_barrier_t *b = shared(sizeof *b);
  ASSERT_OK(mp_barrier_init(b, 2));
  pid_t late = fork();
  if (late == 0)
    _exit(mp_barrier_wait(b, MP_FOREVER) == MP_ECANCELED ? 0 : 1);
  while (mp_barrier_n_waiting(b) != 1)
    mpt_sleep_ms(1);
  ASSERT_EQ(kill(late, SIGSTOP), 0);
  ASSERT_OK(mp_barrier_reset(b));
  /* 64 complete generations, this process and a helper as the parties. */
  pid_t helper = fork();
  if (helper == 0) {
    for (int i = 0; i < 64; i++)
      if (mp_barrier_wait(b, MP_FOREVER) < 0)
        _exit(1);
    _exit(0);
  }
  for (int i = 0; i < 64; i++)
    ASSERT(mp_barrier_wait(b, MP_FOREVER) >= 0);
  ASSERT_EQ(mpt_wait_exit(helper), 0);
  ASSERT_EQ(kill(late, SIGCONT), 0);
  ASSERT_EQ(mpt_wait_exit(late), 0);
  mp_raw_free(b);
}

TEST(barrier_dead_party) {
  mp_barrier_t *b = shared(sizeof *b);
  mp_barrier_init(b, 2);
  pid_t pid = fork();
  if (pid == 0)
    raise(SIGKILL);
  ASSERT_EQ(mpt_wait_exit(pid), 128 + SIGKILL);
  ASSERT_ERR(mp_barrier_wait(b, 100), MP_ETIMEDOUT);
  ASSERT_EQ(mp_barrier_broken(b), 1);
  ASSERT_OK(mp_barrier_reset(b));
  pid = fork();
  if (pid == 0) {
    mp_lock_acquire(&b->mp__mu, MP_FOREVER);
    raise(SIGKILL);
  }
  ASSERT_EQ(mpt_wait_exit(pid), 128 + SIGKILL);
  ASSERT_ERR(mp_barrier_wait(b, MP_FOREVER), MP_ECANCELED);
  ASSERT_EQ(mp_barrier_broken(b), 1);
  mp_raw_free(b);
}

/* ---- threads only -------------------------------------------------------- */

static mp_event_t g_ev;
static mp_semaphore_t g_sem;

static int ev_thread(const void *arg, size_t len) {
  if (mp_event_wait(&g_ev, MP_FOREVER) != 0)
    return 1;
  return mp_semaphore_release(&g_sem) == 0 ? 0 : 2;
}

TEST(primitives_between_threads) {
  mp_event_init(&g_ev);
  mp_semaphore_init(&g_sem, 0);
  mp_thread_t *t[4];
  for (int i = 0; i < 4; i++) {
    ASSERT_OK(mp_thread_create(&t[i], ev_thread, NULL, 0, NULL));
    ASSERT_OK(mp_thread_start(t[i]));
  }
  mpt_sleep_ms(20);
  ASSERT_OK(mp_event_set(&g_ev));
  for (int i = 0; i < 4; i++)
    ASSERT_OK(mp_semaphore_acquire(&g_sem, MP_FOREVER));
  for (int i = 0; i < 4; i++) {
    int code = -1;
    ASSERT_OK(mp_thread_join(t[i], MP_FOREVER));
    ASSERT_OK(mp_thread_exitcode(t[i], &code));
    ASSERT_EQ(code, 0);
    ASSERT_OK(mp_thread_destroy(t[i]));
  }
}

/* ---- named objects ------------------------------------------------------- */

TEST(named_open_by_name) {
  mp_lock_t *l;
  mp_event_t *e;
  mp_semaphore_t *s;
  ASSERT_OK(mp_lock_create(&l, NULL));
  ASSERT_OK(mp_event_create(&e, NULL));
  ASSERT_OK(mp_bounded_semaphore_create(&s, 1, NULL));
  char lname[64], ename[64], sname[64];
  snprintf(lname, sizeof lname, "%s", mp_lock_name(l));
  snprintf(ename, sizeof ename, "%s", mp_event_name(e));
  snprintf(sname, sizeof sname, "%s", mp_semaphore_name(s));
  ASSERT(strncmp(lname, "/mp-", 4) == 0);
  ASSERT(mpt_shm_exists(lname));
  ASSERT_OK(mp_lock_acquire(l, 0));
  pid_t pid = fork();
  if (pid == 0) {
    /* Opened by name, not through the inherited mapping. */
    mp_lock_t *l2;
    mp_event_t *e2;
    mp_semaphore_t *s2;
    if (mp_lock_open(&l2, lname) || mp_event_open(&e2, ename) ||
        mp_semaphore_open(&s2, sname + 1))
      _exit(1);
    if (l2 == l || mp_lock_locked(l2) != 1)
      _exit(2);
    if (mp_semaphore_release(s2) != MP_EINVAL)
      _exit(3);
    mp_lock_release(l2);
    mp_event_set(e2);
    mp_lock_destroy(l2);
    mp_event_destroy(e2);
    mp_semaphore_destroy(s2);
    _exit(0);
  }
  ASSERT_OK(mp_event_wait(e, MP_FOREVER));
  ASSERT_EQ(mpt_wait_exit(pid), 0);
  ASSERT_EQ(mp_lock_locked(l), 0);
  ASSERT_OK(mp_lock_destroy(l));
  ASSERT_OK(mp_event_destroy(e));
  ASSERT_OK(mp_semaphore_destroy(s));
  ASSERT(!mpt_shm_exists(lname));
  ASSERT(!mpt_shm_exists(ename));
  ASSERT(!mpt_shm_exists(sname));
}

TEST(named_every_kind) {
  mp_rlock_t *r, *r2;
  mp_cond_t *c, *c2;
  mp_barrier_t *b, *b2;
  mp_semaphore_t *s, *s2;
  ASSERT_OK(mp_rlock_create(&r, NULL));
  ASSERT_OK(mp_cond_create(&c, NULL));
  ASSERT_OK(mp_barrier_create(&b, 1, NULL));
  ASSERT_OK(mp_semaphore_create(&s, 3, NULL));
  ASSERT_OK(mp_rlock_open(&r2, mp_rlock_name(r)));
  ASSERT_OK(mp_cond_open(&c2, mp_cond_name(c)));
  ASSERT_OK(mp_barrier_open(&b2, mp_barrier_name(b)));
  ASSERT_OK(mp_semaphore_open(&s2, mp_semaphore_name(s)));
  ASSERT_OK(mp_rlock_acquire(r, 0));
  ASSERT_EQ(mp_rlock_is_owned(r2), 1);
  ASSERT_OK(mp_rlock_release(r2));
  ASSERT_OK(mp_cond_acquire(c2, 0));
  ASSERT_OK(mp_cond_notify(c, 1));
  ASSERT_OK(mp_cond_release(c));
  ASSERT_EQ(mp_barrier_wait(b2, 0), 0);
  ASSERT_EQ(mp_barrier_parties(b2), 1);
  ASSERT_EQ(mp_semaphore_value(s2), 3);
  /* Wrong kind for the name. */
  mp_event_t *e;
  ASSERT_ERR(mp_event_open(&e, mp_rlock_name(r)), MP_EINVAL);
  ASSERT_OK(mp_rlock_destroy(r2));
  ASSERT_OK(mp_cond_destroy(c2));
  ASSERT_OK(mp_barrier_destroy(b2));
  ASSERT_OK(mp_semaphore_destroy(s2));
  ASSERT_OK(mp_rlock_destroy(r));
  ASSERT_OK(mp_cond_destroy(c));
  ASSERT_OK(mp_barrier_destroy(b));
  ASSERT_OK(mp_semaphore_destroy(s));
}

TEST(named_errors_and_permissions) {
  char name[64];
  snprintf(name, sizeof name, "mp-test-%d", (int)getpid());
  mode_t old = umask(0);
  mp_sync_opts_t o = {.name = name};
  mp_lock_t *l, *l2;
  ASSERT_OK(mp_lock_create(&l, &o));
  umask(old);
  char path[128];
  snprintf(path, sizeof path, "/dev/shm/%s", name);
  struct stat st;
  ASSERT_EQ(stat(path, &st), 0);
  ASSERT_EQ(st.st_mode & 0777, 0600);
  ASSERT_STR_EQ(mp_lock_name(l) + 1, name);
  ASSERT_ERR(mp_lock_create(&l2, &o), MP_EEXIST);
  ASSERT_OK(mp_lock_destroy(l));
  ASSERT_ERR(mp_lock_open(&l2, name), MP_ENOENT);
  ASSERT_ERR(mp_lock_open(&l2, "/mp-no-such-lock-here"), MP_ENOENT);
  ASSERT_ERR(mp_lock_open(&l2, NULL), MP_EINVAL);
  ASSERT_ERR(mp_lock_open(&l2, ""), MP_EINVAL);
  ASSERT_ERR(mp_lock_open(&l2, "a/b"), MP_EINVAL);
  ASSERT_ERR(mp_lock_open(NULL, "x"), MP_EINVAL);
  char longname[200];
  memset(longname, 'a', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  ASSERT_ERR(mp_lock_open(&l2, longname), MP_ENAMETOOLONG);
  ASSERT_ERR(mp_lock_create(NULL, NULL), MP_EINVAL);
  ASSERT_ERR(mp_semaphore_create(NULL, 1, NULL), MP_EINVAL);
  mp_semaphore_t *s;
  ASSERT_ERR(mp_semaphore_create(&s, MP_SEM_VALUE_MAX + 1u, NULL), MP_EINVAL);
  mp_barrier_t *b;
  ASSERT_ERR(mp_barrier_create(&b, 0, NULL), MP_EINVAL);
  /* destroy of an init'ed object is refused. */
  mp_lock_t local;
  mp_lock_init(&local);
  ASSERT_ERR(mp_lock_destroy(&local), MP_EINVAL);
  ASSERT(mp_lock_name(&local) == NULL);
  ASSERT_OK(mp_lock_destroy(NULL));
  ASSERT_ERR(mp_sync_unlink(NULL), MP_EINVAL);
  ASSERT_ERR(mp_sync_unlink("/mp-no-such-thing-x"), MP_ENOENT);
  ASSERT_EQ(mpt_count_shm(), mpt_count_shm());
}

TEST(named_keep_and_killed_creator) {
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    mp_lock_t *l;
    mp_event_t *e;
    mp_sync_opts_t keep = {.keep = true};
    if (mp_lock_create(&l, NULL) || mp_event_create(&e, &keep))
      _exit(1);
    char names[128];
    snprintf(names, sizeof names, "%s %s\n", mp_lock_name(l), mp_event_name(e));
    mp_lock_acquire(l, MP_FOREVER);
    if (write(p[1], names, strlen(names)) < 0)
      _exit(2);
    pause();
    _exit(0);
  }
  close(p[1]);
  char buf[128] = {0};
  ASSERT(read(p[0], buf, sizeof buf - 1) > 0);
  close(p[0]);
  char lname[64], ename[64];
  ASSERT_EQ(sscanf(buf, "%63s %63s", lname, ename), 2);
  ASSERT(mpt_shm_exists(lname));
  mp_lock_t *l;
  ASSERT_OK(mp_lock_open(&l, lname));
  ASSERT_EQ(mpt_kill_reap(pid), 128 + SIGKILL);
  /* The tracker removes the name shortly after the creator's death. */
  for (int i = 0; i < 500 && mpt_shm_exists(lname); i++)
    mpt_sleep_ms(10);
  ASSERT(!mpt_shm_exists(lname));
  /* Our mapping still works, and the dead holder is detected. */
  ASSERT_ERR(mp_lock_acquire(l, MP_FOREVER), MP_EOWNERDEAD);
  ASSERT_OK(mp_lock_destroy(l));
  /* The kept one stays until unlinked. */
  mpt_sleep_ms(50);
  ASSERT(mpt_shm_exists(ename));
  ASSERT_OK(mp_sync_unlink(ename));
  ASSERT(!mpt_shm_exists(ename));
}

/* A process waiting on a Lock held elsewhere, or on an Event, sleeps: it
 * uses a small fraction of the CPU time it waits. */
TEST(waiting_uses_no_cpu) {
  typedef struct {
    mp_lock_t lock;
    mp_event_t ev;
  } sh_t;
  sh_t *s = shared(sizeof *s);
  mp_lock_init(&s->lock);
  mp_event_init(&s->ev);
  ASSERT_OK(mp_lock_acquire(&s->lock, MP_FOREVER));
  pid_t pid = fork();
  if (pid == 0) {
    int r1 = mp_lock_acquire(&s->lock, 800);
    int r2 = mp_event_wait(&s->ev, 800);
    _exit(r1 == MP_ETIMEDOUT && r2 == MP_ETIMEDOUT ? 0 : 1);
  }
  ASSERT_EQ(mpt_wait_exit(pid), 0);
  struct rusage ru;
  ASSERT_EQ(getrusage(RUSAGE_CHILDREN, &ru), 0);
  long cpu_ms = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
                (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
  /* 1.6 s of waiting; a spinning waiter would use all of it. */
  ASSERT(cpu_ms < 400);
  ASSERT_OK(mp_lock_release(&s->lock));
  mp_raw_free(s);
}

/* A bounded buffer on one Condition: 2 producer and 2 consumer processes,
 * no item lost or duplicated, no lost wake-up. */
typedef struct {
  mp_cond_t cond;
  int buf[8];
  int head, count, done;
  long sum;
} bb_t;

static bool bb_not_full(void *arg) {
  return ((bb_t *)arg)->count < 8;
}
static bool bb_not_empty(void *arg) {
  bb_t *b = arg;
  return b->count > 0 || b->done == 2;
}

TEST(cond_bounded_buffer) {
  bb_t *b = shared(sizeof *b);
  mp_cond_init(&b->cond);
  enum { N = 3000 };
  pid_t pids[4];
  for (int i = 0; i < 4; i++)
    if ((pids[i] = fork()) == 0) {
      if (i < 2) {
        for (int k = 1; k <= N; k++) {
          mp_cond_acquire(&b->cond, MP_FOREVER);
          if (mp_cond_wait_for(&b->cond, bb_not_full, b, MP_FOREVER) != 0)
            _exit(1);
          b->buf[(b->head + b->count++) % 8] = k;
          mp_cond_notify_all(&b->cond);
          mp_cond_release(&b->cond);
        }
        mp_cond_acquire(&b->cond, MP_FOREVER);
        b->done++;
        mp_cond_notify_all(&b->cond);
        mp_cond_release(&b->cond);
      } else {
        for (;;) {
          mp_cond_acquire(&b->cond, MP_FOREVER);
          if (mp_cond_wait_for(&b->cond, bb_not_empty, b, MP_FOREVER) != 0)
            _exit(1);
          if (b->count == 0) {
            mp_cond_release(&b->cond);
            break;
          }
          b->sum += b->buf[b->head];
          b->head = (b->head + 1) % 8;
          b->count--;
          mp_cond_notify_all(&b->cond);
          mp_cond_release(&b->cond);
        }
      }
      _exit(0);
    }
  for (int i = 0; i < 4; i++)
    ASSERT_EQ(mpt_wait_exit(pids[i]), 0);
  ASSERT_EQ(b->sum, 2L * N * (N + 1) / 2);
  mp_raw_free(b);
}

/* Timed acquires racing with releases: no wake-up is lost for good, the
 * count is exact, nothing hangs. */
static mp_lock_t g_tlock;
static long g_tcount;

static int timed_worker(const void *arg, size_t len) {
  int timeout = *(const int *)arg;
  for (int i = 0; i < 3000; i++) {
    int r;
    while ((r = mp_lock_acquire(&g_tlock, timeout)) == MP_ETIMEDOUT) {
    }
    if (r != 0)
      return 1;
    g_tcount++;
    mp_lock_release(&g_tlock);
  }
  return 0;
}

TEST(lock_timed_waiters_race) {
  mp_lock_init(&g_tlock);
  g_tcount = 0;
  int timeouts[4] = {0, 1, 2, MP_FOREVER};
  mp_thread_t *t[4];
  for (int i = 0; i < 4; i++) {
    ASSERT_OK(mp_thread_create(&t[i], timed_worker, &timeouts[i],
                               sizeof timeouts[i], NULL));
    ASSERT_OK(mp_thread_start(t[i]));
  }
  for (int i = 0; i < 4; i++) {
    int code = -1;
    ASSERT_OK(mp_thread_join(t[i], MP_FOREVER));
    ASSERT_OK(mp_thread_exitcode(t[i], &code));
    ASSERT_EQ(code, 0);
    mp_thread_destroy(t[i]);
  }
  ASSERT_EQ(g_tcount, 12000);
}

/* An Event whose setter is killed: waiters time out instead of hanging,
 * and the event keeps working. */
TEST(event_setter_killed) {
  mp_event_t *e = shared(sizeof *e);
  mp_event_init(e);
  pid_t setter = fork();
  if (setter == 0) {
    pause();
    mp_event_set(e);
    _exit(0);
  }
  pid_t waiter = fork();
  if (waiter == 0)
    _exit(mp_event_wait(e, 300) == MP_ETIMEDOUT ? 0 : 1);
  mpt_sleep_ms(20);
  ASSERT_EQ(mpt_kill_reap(setter), 128 + SIGKILL);
  ASSERT_EQ(mpt_wait_exit(waiter), 0);
  ASSERT_EQ(mp_event_is_set(e), 0);
  ASSERT_OK(mp_event_set(e));
  ASSERT_OK(mp_event_wait(e, 0));
  mp_raw_free(e);
}

/* Zeroed memory is a ready Lock, RLock, Condition, Event, Semaphore(0). */
TEST(zeroed_structs_are_ready) {
  static mp_lock_t l;
  static mp_rlock_t r;
  static mp_cond_t c;
  static mp_event_t e;
  static mp_semaphore_t s;
  ASSERT_OK(mp_lock_acquire(&l, 0));
  ASSERT_OK(mp_lock_release(&l));
  ASSERT_OK(mp_rlock_acquire(&r, 0));
  ASSERT_OK(mp_rlock_release(&r));
  ASSERT_OK(mp_cond_acquire(&c, 0));
  ASSERT_ERR(mp_cond_wait(&c, 1), MP_ETIMEDOUT);
  ASSERT_OK(mp_cond_release(&c));
  ASSERT_EQ(mp_event_is_set(&e), 0);
  ASSERT_EQ(mp_semaphore_value(&s), 0);
  ASSERT_OK(mp_semaphore_release(&s));
  ASSERT_OK(mp_semaphore_acquire(&s, 0));
}

/* A process whose main thread ended while another thread runs is alive: it
 * still holds its Lock. Once the process is gone, the lock is taken over. */
static void *sleep_thread(void *arg) {
  mpt_sleep_ms(*(int *)arg);
  _exit(0); /* the whole process, whatever helper threads it has */
}

TEST(lock_holder_main_thread_exited) {
  mp_lock_t *l = shared(sizeof *l);
  mp_lock_init(l);
  pid_t pid = fork();
  if (pid == 0) {
    static int ms = 700;
    pthread_t t;
    mp_lock_acquire(l, MP_FOREVER);
    pthread_create(&t, NULL, sleep_thread, &ms);
    pthread_exit(NULL);
  }
  while (!mp_lock_locked(l))
    mpt_sleep_ms(1);
  mpt_sleep_ms(50);
  ASSERT_ERR(mp_lock_acquire(l, 300), MP_ETIMEDOUT);
  ASSERT_ERR(mp_lock_acquire(l, MP_FOREVER), MP_EOWNERDEAD);
  ASSERT_EQ(mpt_wait_exit(pid), 0);
  ASSERT_OK(mp_lock_consistent(l));
  ASSERT_OK(mp_lock_release(l));
  mp_raw_free(l);
}
