/* Python tutorial example: "Parallel computing": split the numbers into chunks, sum the
 * squares of each chunk in a pool of 4 processes, add up the results.
 *
 *   numbers = [1..10]; pool = Pool(processes=4)
 *   chunk_size = len(numbers) // num_processes
 *   chunks = [numbers[i:i+chunk_size] for i in range(0, len(numbers),
 * chunk_size)] results = pool.map(square_sum, chunks); total_sum = sum(results)
 */
#include <stdint.h>
#include <stdio.h>

#include <mproc.h>

#define MAX_CHUNK 16

/* A chunk travels by value: map copies fixed-size items to the workers. */
typedef struct {
  int n;
  int64_t numbers[MAX_CHUNK];
} chunk_t;

static int square_sum(const void *item, void *result, void *ctx) {
  const chunk_t *c = item;
  int64_t s = 0;
  for (int i = 0; i < c->n; i++)
    s += c->numbers[i] * c->numbers[i];
  *(int64_t *)result = s;
  return 0;
}

int main(void) {
  int64_t numbers[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  int len = (int)(sizeof numbers / sizeof *numbers);
  int num_processes = 4;
  mp_pool_t *pool;
  mp_pool_opts_t opts = {.workers = num_processes};
  if (mp_pool_create(&pool, &opts))
    return 1;
  int chunk_size = len / num_processes;
  chunk_t chunks[MAX_CHUNK];
  int nchunks = 0;
  for (int i = 0; i < len; i += chunk_size) {
    chunk_t *c = &chunks[nchunks++];
    c->n = 0;
    for (int k = i; k < i + chunk_size && k < len; k++)
      c->numbers[c->n++] = numbers[k];
  }
  int64_t results[MAX_CHUNK];
  int e = mp_pool_map(pool, square_sum, chunks, (size_t)nchunks, sizeof *chunks,
                      results, sizeof *results, 0);
  if (e) {
    fprintf(stderr, "map: %s\n", mp_strerror(e));
    return 1;
  }
  int64_t total_sum = 0;
  for (int i = 0; i < nchunks; i++)
    total_sum += results[i];
  printf("Total square sum: %lld\n", (long long)total_sum);
  mp_pool_close(pool);
  mp_pool_join(pool, MP_FOREVER);
  mp_pool_destroy(pool);
  return 0;
}
