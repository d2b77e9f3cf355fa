/* mproc: process. */
#ifndef MPROC_PROCESS_H
#define MPROC_PROCESS_H

#include "common.h"
#include "error.h"

MP_BEGIN_DECLS

MP_END_DECLS

#endif
