/* Helpers for the benchmark programs bench/bench_<family>.c.
 *
 * Each program runs its family's workloads and prints one JSON object per
 * line on stdout; bench/run.py joins them with the Python peers' lines and
 * computes the ratios:
 *   {"workload": "pipe_roundtrip_64B", "unit": "us", "mproc": 5.1,
 *    "floor": 4.8, "higher_is_better": false, "target": 0, "floor_max": 1.2}
 * "floor" is null where there is none; "target" is the minimum ratio over the
 * peer (0: none); "floor_max" is the most mproc may be slower than the floor
 * (0: none). A line with "peer" and "peer_value" adds a peer measured by the
 * program itself (for example our own pipe beside the queue).
 *
 * argv[1], when given, selects one workload by name. BENCH_SCALE (a float,
 * default 1) scales iteration counts so CI can run them small. */
#ifndef MPROC_BENCH_H
#define MPROC_BENCH_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline uint64_t bench_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline long bench_scaled(long n) {
  const char *s = getenv("BENCH_SCALE");
  double f = s ? atof(s) : 1.0;
  if (f <= 0)
    f = 1.0;
  long r = (long)((double)n * f);
  return r < 1 ? 1 : r;
}

static inline bool bench_selected(int argc, char **argv, const char *name) {
  return argc < 2 || strcmp(argv[1], name) == 0;
}

/* floor < 0 means none. */
static inline void bench_emit(const char *workload, const char *unit,
                              double mproc, double floor, bool higher_is_better,
                              double target, double floor_max) {
  printf("{\"workload\": \"%s\", \"unit\": \"%s\", \"mproc\": %.6g, ", workload,
         unit, mproc);
  if (floor < 0)
    printf("\"floor\": null, ");
  else
    printf("\"floor\": %.6g, ", floor);
  printf("\"higher_is_better\": %s, \"target\": %g, \"floor_max\": %g}\n",
         higher_is_better ? "true" : "false", target, floor_max);
  fflush(stdout);
}

static inline void bench_emit_peer(const char *workload, const char *peer,
                                   double value) {
  printf("{\"workload\": \"%s\", \"peer\": \"%s\", \"peer_value\": %.6g}\n",
         workload, peer, value);
  fflush(stdout);
}

#endif
