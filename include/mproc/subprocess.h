/* mproc: subprocess. */
#ifndef MPROC_SUBPROCESS_H
#define MPROC_SUBPROCESS_H

#include "common.h"
#include "error.h"

MP_BEGIN_DECLS

MP_END_DECLS

#endif
