/* Fork server: placeholder until implemented. */
#include "internal.h"
#include "process_internal.h"

int mp__forkserver_spawn(mp_process_fn fn, const void *arg, size_t len,
                         const char *name, const char *ident, bool outlive,
                         pid_t *pid, int *pidfd, int *statusfd) {
  return MP_ENOSYS;
}

void mp__forkserver_atfork_child(void) {}

int mp_forkserver_start(void) {
  return MP_ENOSYS;
}
int mp_forkserver_stop(void) {
  return 0;
}
