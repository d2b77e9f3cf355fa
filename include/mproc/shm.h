/* mproc: shm. */
#ifndef MPROC_SHM_H
#define MPROC_SHM_H

#include "common.h"
#include "error.h"

MP_BEGIN_DECLS

MP_END_DECLS

#endif
