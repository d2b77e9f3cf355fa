/* mproc: thread. */
#ifndef MPROC_THREAD_H
#define MPROC_THREAD_H

#include "common.h"
#include "error.h"

MP_BEGIN_DECLS

MP_END_DECLS

#endif
