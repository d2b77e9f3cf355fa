/* mproc: Python's multiprocessing model in C for Linux.
 * The umbrella header: includes every part. */
#ifndef MPROC_H
#define MPROC_H

#include "mproc/common.h"
#include "mproc/error.h"
#include "mproc/version.h"

#endif
