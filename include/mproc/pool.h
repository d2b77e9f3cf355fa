/* mproc: pool. */
#ifndef MPROC_POOL_H
#define MPROC_POOL_H

#include "common.h"
#include "error.h"

MP_BEGIN_DECLS

MP_END_DECLS

#endif
