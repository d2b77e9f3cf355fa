/* The spawner thread, shared by mp_process and mp_subprocess.
 *
 * Linux sends the parent-death signal when the *thread* that forked or
 * cloned the child exits, not the process: a child started by a short-lived
 * thread would be killed when that thread ends. So children asked for by
 * threads other than the main one are started by one internal thread that
 * lives as long as the process. It blocks every signal (no application
 * handler runs on it); callers pass the asking thread's signal mask on to
 * the child themselves. One request at a time. */
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>

#include "internal.h"

static pthread_mutex_t spawn_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t spawn_cv = PTHREAD_COND_INITIALIZER;
static pthread_once_t spawn_once = PTHREAD_ONCE_INIT;
static bool spawner_running;
static struct {
  int (*fn)(void *arg); /* the request; NULL when the slot is free */
  void *arg;
  int result;
  bool done;
} spawn_req;

static void *spawner_main(void *unused) {
  (void)unused;
  pthread_mutex_lock(&spawn_mu);
  for (;;) {
    while (!spawn_req.fn || spawn_req.done)
      pthread_cond_wait(&spawn_cv, &spawn_mu);
    spawn_req.result = spawn_req.fn(spawn_req.arg);
    spawn_req.done = true;
    pthread_cond_broadcast(&spawn_cv);
  }
  return NULL;
}

static void spawner_atfork_child(void) {
  /* The thread does not exist in a forked child (which may have been forked
   * by it, holding the mutex). */
  pthread_mutex_init(&spawn_mu, NULL);
  pthread_cond_init(&spawn_cv, NULL);
  spawner_running = false;
  spawn_req.fn = NULL;
}

static void spawner_register_atfork(void) {
  pthread_atfork(NULL, NULL, spawner_atfork_child);
}

static int spawner_start_locked(void) {
  if (spawner_running)
    return 0;
  pthread_once(&spawn_once, spawner_register_atfork);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t t;
  int r = pthread_create(&t, &attr, spawner_main, NULL);
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (r != 0)
    return -r;
  spawner_running = true;
  return 0;
}

int mp__spawner_run(int (*fn)(void *arg), void *arg) {
  pthread_mutex_lock(&spawn_mu);
  int r = spawner_start_locked();
  if (r == 0) {
    while (spawn_req.fn)
      pthread_cond_wait(&spawn_cv, &spawn_mu);
    spawn_req.fn = fn;
    spawn_req.arg = arg;
    spawn_req.done = false;
    pthread_cond_broadcast(&spawn_cv);
    while (!spawn_req.done || spawn_req.arg != arg)
      pthread_cond_wait(&spawn_cv, &spawn_mu);
    r = spawn_req.result;
    spawn_req.fn = NULL;
    pthread_cond_broadcast(&spawn_cv);
  }
  pthread_mutex_unlock(&spawn_mu);
  return r;
}
