/* Python's
 *
 *   with Pool(4) as pool:
 *       for y in pool.imap(double, range(1000), chunksize=16):
 *           total += y
 *
 * where double() raises for every multiple of 100. In Python the first
 * failure raises out of the loop; in C mp_imap_next returns a code per item,
 * so the loop decides: here it counts the failed items and goes on. The
 * loop ends on MP_ECLOSED (StopIteration) and stops on any other error, so
 * it can neither count a failed item's stale result nor spin forever. */
#include <stdint.h>
#include <stdio.h>

#include <mproc.h>

static int double_it(const void *item, void *result, void *ctx) {
  int64_t x = *(const int64_t *)item;
  if (x % 100 == 0)
    return 22; /* the task's own error code: the caller sees MP_ETASK */
  *(int64_t *)result = 2 * x;
  return 0;
}

int main(void) {
  enum { N = 1000 };
  static int64_t xs[N];
  for (int i = 0; i < N; i++)
    xs[i] = i;

  mp_pool_t *pool;
  int r = mp_pool_create(&pool, &(mp_pool_opts_t){.workers = 4});
  if (r < 0) {
    fprintf(stderr, "pool: %s\n", mp_strerror(r));
    return 1;
  }
  mp_imap_t *it;
  r = mp_pool_imap(pool, double_it, xs, N, sizeof *xs, sizeof(int64_t),
                   &(mp_imap_opts_t){.chunksize = 16}, &it);
  if (r < 0) {
    fprintf(stderr, "imap: %s\n", mp_strerror(r));
    mp_pool_destroy(pool);
    return 1;
  }
  int64_t total = 0, y;
  size_t index, failed = 0, ok = 0;
  for (;;) {
    r = mp_imap_next(it, &y, &index, MP_FOREVER);
    if (r == MP_ECLOSED) /* StopIteration: every item was returned */
      break;
    if (r == MP_ETASK || r == MP_EWORKERDIED) { /* this item failed */
      failed++;
      continue; /* y holds nothing for it; the next call moves on */
    }
    if (r < 0) { /* the iteration itself failed: stop */
      fprintf(stderr, "imap_next: %s\n", mp_strerror(r));
      break;
    }
    total += y;
    ok++;
  }
  mp_imap_destroy(it);
  mp_pool_close(pool);
  mp_pool_join(pool, MP_FOREVER);
  mp_pool_destroy(pool);
  printf("results: %zu, failed items: %zu, total: %lld\n", ok, failed,
         (long long)total);
  return r == MP_ECLOSED ? 0 : 1;
}
