/* Fuzz target: the parent's reading of a pool worker's result ring. The
 * input is the ring's first bytes, a published head and the shape of the
 * job the records claim to answer; records are parsed from tail 0 the way
 * the collector does, and every accepted record must lie inside the ring
 * and fit the job. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pool_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static _Alignas(64) uint8_t ring[MP__POOL_RING];
  struct {
    uint64_t head, tail;
    uint32_t n, left, result_size, kind;
  } in;
  if (size < sizeof in)
    return 0;
  memcpy(&in, data, sizeof in);
  data += sizeof in;
  size -= sizeof in;
  if (size > MP__POOL_RING)
    size = MP__POOL_RING;
  memset(ring, 0, sizeof ring);
  memcpy(ring, data, size);
  uint64_t tail = in.tail & ~(uint64_t)(MP__POOL_REC - 1);
  int kind = (int)(in.kind % 4);
  for (int guard = 0; tail != in.head; guard++) {
    if (guard > (int)(MP__POOL_RING / MP__POOL_REC))
      abort(); /* parsing never advanced: an endless collector loop */
    const mp__rrec_t *rr;
    if (mp__pool_rrec_parse(ring, tail, in.head, &rr) < 0)
      break;
    const uint8_t *end = (const uint8_t *)rr + rr->size;
    if ((const uint8_t *)rr < ring || end > ring + sizeof ring ||
        rr->size == 0 || rr->size > in.head - tail)
      abort();
    if (rr->kind != MP__K_SKIP &&
        mp__pool_rrec_fits(rr, kind, in.n, in.left, in.result_size) == 0 &&
        kind != J_APPLY) {
      /* What handle_result then touches must be inside the record and
       * inside the job's n results. */
      uint64_t per = in.result_size + (kind == J_IMAP ? 4 : 0);
      if (rr->start + rr->count > in.n ||
          (per && rr->count * per > rr->len) ||
          MP__POOL_REC + (uint64_t)rr->len > rr->size)
        abort();
    }
    tail += rr->size;
  }
  return 0;
}
