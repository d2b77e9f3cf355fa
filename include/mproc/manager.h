/* mproc: manager. */
#ifndef MPROC_MANAGER_H
#define MPROC_MANAGER_H

#include "common.h"
#include "error.h"

MP_BEGIN_DECLS

MP_END_DECLS

#endif
