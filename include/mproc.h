/* mproc: Python's multiprocessing model in C for Linux.
 * The umbrella header: includes every part. */
#ifndef MPROC_H
#define MPROC_H

#include "mproc/common.h"
#include "mproc/error.h"
#include "mproc/version.h"
#include "mproc/wait.h"
#include "mproc/process.h"
#include "mproc/pipe.h"
#include "mproc/connection.h"
#include "mproc/shm.h"
#include "mproc/sync.h"
#include "mproc/thread.h"
#include "mproc/queue.h"
#include "mproc/pool.h"
#include "mproc/manager.h"
#include "mproc/subprocess.h"

#endif
