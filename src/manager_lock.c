/* The manager's lock: an owner word of the robust core (src/robust.h). It
 * needs no DEAD flag: every structure it guards repairs itself (undo log)
 * when taken over. */
#include "manager_impl.h"
#include "robust.h"

#define MLOCK_SPIN 100

bool mp__mlock_lock(mp__mlock_t *l) {
  return mp__rb_acquire(&l->word, 0, MLOCK_SPIN, MP_FOREVER) == MP_EOWNERDEAD;
}

void mp__mlock_unlock(mp__mlock_t *l) {
  mp__rb_release(&l->word);
}
