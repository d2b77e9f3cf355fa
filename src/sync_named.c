/* Named sync objects: one small segment per object, a header then the
 * object. The process-local list maps an object's address back to its
 * segment, so the public API hands out plain object pointers and the same
 * functions work on init'ed and named objects. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sync_internal.h"

#define NAMED_MAGIC 0x6d70736eu /* "mpsn" */
#define OBJ_OFFSET 64
#define OPEN_WAIT_MS 1000

typedef struct {
  uint32_t magic;
  uint32_t kind;
  uint32_t size;
  uint32_t ready; /* futex: 1 once the creator initialized the object */
} named_hdr_t;

typedef struct named {
  struct named *next;
  mp__seg_t seg;
  pid_t creator; /* 0 when opened */
  bool keep;
} named_t;

static pthread_mutex_t named_mu = PTHREAD_MUTEX_INITIALIZER;
static named_t *named_list;
static pthread_once_t named_once = PTHREAD_ONCE_INIT;

static void named_prepare(void) {
  pthread_mutex_lock(&named_mu);
}
static void named_parent(void) {
  pthread_mutex_unlock(&named_mu);
}
static void named_child(void) {
  pthread_mutex_init(&named_mu, NULL);
}
static void named_install(void) {
  pthread_atfork(named_prepare, named_parent, named_child);
}

static void named_lock(void) {
  pthread_once(&named_once, named_install);
  pthread_mutex_lock(&named_mu);
}

static void *obj_of(const named_t *n) {
  return (char *)n->seg.base + OBJ_OFFSET;
}

int mp__sync_canon_name(char *buf, size_t cap, const char *name) {
  return mp__seg_canon(buf, cap, name);
}

int mp_sync_unlink(const char *name) {
  char canon[MP__SEG_NAME_MAX];
  int r = mp__sync_canon_name(canon, sizeof canon, name);
  return r < 0 ? r : mp__seg_unlink(canon);
}

int mp__sync_seg_create(mp__seg_t *seg, const char *name, size_t size,
                        bool keep) {
  char canon[MP__SEG_NAME_MAX];
  int r;
  if (name && (r = mp__sync_canon_name(canon, sizeof canon, name)) < 0)
    return r;
  return mp__seg_create(seg, name ? canon : NULL, size, 0, !keep);
}

int mp__named_create(void **obj, uint32_t kind, size_t size,
                     const mp_sync_opts_t *opts) {
  bool keep = opts && opts->keep;
  int r;
  named_t *n = calloc(1, sizeof *n);
  if (!n)
    return MP_ENOMEM;
  if ((r = mp__sync_seg_create(&n->seg, opts ? opts->name : NULL,
                               OBJ_OFFSET + size, keep)) < 0) {
    free(n);
    return r;
  }
  named_hdr_t *h = n->seg.base;
  h->magic = NAMED_MAGIC;
  h->kind = kind;
  h->size = (uint32_t)size;
  n->creator = getpid();
  n->keep = keep;
  named_lock();
  n->next = named_list;
  named_list = n;
  pthread_mutex_unlock(&named_mu);
  *obj = obj_of(n);
  return 0;
}

void mp__named_publish(void *obj) {
  named_hdr_t *h = (named_hdr_t *)(void *)((char *)obj - OBJ_OFFSET);
  __atomic_store_n(&h->ready, 1, __ATOMIC_RELEASE);
  mp__futex_wake((_Atomic uint32_t *)&h->ready, INT32_MAX);
}

static named_t *named_take(const void *obj) {
  named_lock();
  named_t **pp = &named_list;
  while (*pp && obj_of(*pp) != obj)
    pp = &(*pp)->next;
  named_t *n = *pp;
  if (n)
    *pp = n->next;
  pthread_mutex_unlock(&named_mu);
  return n;
}

static void named_free(named_t *n, bool unlink_name) {
  if (unlink_name)
    mp__seg_unlink(n->seg.name);
  mp__seg_close(&n->seg);
  free(n);
}

void mp__named_abort(void *obj) {
  named_t *n = named_take(obj);
  if (n)
    named_free(n, true);
}

int mp__named_open(void **obj, uint32_t kind, size_t size, const char *name) {
  char canon[MP__SEG_NAME_MAX];
  int r;
  if (!obj)
    return MP_EINVAL;
  if ((r = mp__sync_canon_name(canon, sizeof canon, name)) < 0)
    return r;
  named_t *n = calloc(1, sizeof *n);
  if (!n)
    return MP_ENOMEM;
  mp__deadline_t dl;
  mp__deadline_init(&dl, OPEN_WAIT_MS);
  /* An empty segment (MP_EINVAL) is one whose creator has not sized it
   * yet: give it a moment. */
  while ((r = mp__seg_open(&n->seg, canon, 0)) == MP_EINVAL &&
         !mp__deadline_passed(&dl))
    usleep(1000);
  if (r < 0) {
    free(n);
    return r;
  }
  named_hdr_t *h = n->seg.base;
  if (n->seg.size < OBJ_OFFSET + size || h->magic != NAMED_MAGIC ||
      h->kind != kind || h->size != size) {
    named_free(n, false);
    return MP_EINVAL;
  }
  /* The creator may still be initializing the object. */
  while (!__atomic_load_n(&h->ready, __ATOMIC_ACQUIRE)) {
    if (mp__futex_wait((_Atomic uint32_t *)&h->ready, 0, &dl) == MP_ETIMEDOUT) {
      named_free(n, false);
      return MP_EAGAIN;
    }
  }
  named_lock();
  n->next = named_list;
  named_list = n;
  pthread_mutex_unlock(&named_mu);
  *obj = obj_of(n);
  return 0;
}

int mp__named_destroy(const void *obj) {
  if (!obj)
    return 0;
  named_t *n = named_take(obj);
  if (!n)
    return MP_EINVAL;
  named_free(n, n->creator == getpid() && !n->keep);
  return 0;
}

const char *mp__named_name(const void *obj) {
  const char *name = NULL;
  if (!obj)
    return NULL;
  named_lock();
  for (named_t *n = named_list; n; n = n->next)
    if (obj_of(n) == obj)
      name = n->seg.name;
  pthread_mutex_unlock(&named_mu);
  return name;
}
