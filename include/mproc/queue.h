/* mproc: queue. */
#ifndef MPROC_QUEUE_H
#define MPROC_QUEUE_H

#include "common.h"
#include "error.h"

MP_BEGIN_DECLS

MP_END_DECLS

#endif
