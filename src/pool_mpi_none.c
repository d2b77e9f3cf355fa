/* The MPI backend when mproc was built without MPI: MP_POOL_MPI gives
 * MP_ENOTSUP. The other entry points are never reached (p->mpi stays NULL). */
#include "pool_internal.h"

int mp__pool_mpi_open(const mp_pool_opts_t *o, struct mp__mpi **out, int *nw) {
  (void)o;
  (void)out;
  (void)nw;
  return MP_ENOTSUP;
}

int mp__pool_mpi_start(mp_pool_t *p) {
  (void)p;
  return MP_ENOTSUP;
}

void mp__pool_mpi_kick(mp_pool_t *p) {
  (void)p;
}

void mp__pool_mpi_free(mp_pool_t *p) {
  (void)p;
}
