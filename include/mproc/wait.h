/* mproc: waiting on several objects at once (Python's connection.wait). */
#ifndef MPROC_WAIT_H
#define MPROC_WAIT_H

#include <stdbool.h>

#include "common.h"
#include "error.h"

MP_BEGIN_DECLS

/* Something mp_wait can wait on. Each part that has waitable objects offers
 * a constructor (mp_process_waitable, mp_conn_waitable, mp_queue_waitable,
 * mp_result_waitable, ...) that fills one of these:
 *   fd      a descriptor that becomes readable (POLLIN) when the object may be
 *           ready;
 *   check   NULL when readability of fd is readiness; otherwise called with
 *           obj after fd polls readable (and once before sleeping) and
 *           returns true when the object is really ready (a queue's fd may
 *           stay readable while another consumer took the message);
 *   ready   set by mp_wait: true when the object is ready. */
typedef struct mp_waitable {
  int fd;
  bool (*check)(void *obj);
  void *obj;
  bool ready;
} mp_waitable_t;

/* Wait until at least one of objs[0..n) is ready or timeout_ms passes.
 * Returns the number of ready objects (their .ready is set), 0 on timeout
 * (Python returns an empty list), or MP_EINVAL (objs NULL with n > 0, an
 * object with fd < 0, bad timeout). */
MP_EXTERN int mp_wait(mp_waitable_t *objs, size_t n, int timeout_ms);

MP_END_DECLS

#endif
