/* mproc: sync. */
#ifndef MPROC_SYNC_H
#define MPROC_SYNC_H

#include "common.h"
#include "error.h"

MP_BEGIN_DECLS

MP_END_DECLS

#endif
