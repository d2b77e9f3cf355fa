/* mproc: pipe. */
#ifndef MPROC_PIPE_H
#define MPROC_PIPE_H

#include "common.h"
#include "error.h"

MP_BEGIN_DECLS

MP_END_DECLS

#endif
