/* Python tutorial example: "Queue": a child puts 11111 on a queue, the parent prints it.
 *
 *   def f(q): q.put(11111)
 *   q = multiprocessing.Queue()
 *   p = multiprocessing.Process(target=f, args=(q,)); p.start()
 *   print(q.get()) */
#include <stdint.h>
#include <stdio.h>

#include <mproc.h>

static int f(const void *arg, size_t len) {
  mp_queue_t *q = *(mp_queue_t *const *)arg; /* inherited across fork */
  int64_t v = 11111;
  return mp_queue_put(q, &v, sizeof v, MP_FOREVER) == 0 ? 0 : 1;
}

int main(void) {
  mp_queue_t *q;
  mp_process_t *p;
  int r;
  if ((r = mp_queue_create(&q, NULL)) < 0 ||
      (r = mp_process_create(&p, f, &q, sizeof q, NULL)) < 0 ||
      (r = mp_process_start(p)) < 0) {
    fprintf(stderr, "%s\n", mp_strerror(r));
    return 1;
  }
  int64_t v;
  size_t len;
  if ((r = mp_queue_get_into(q, &v, sizeof v, &len, MP_FOREVER)) == 0)
    printf("%lld\n", (long long)v);
  mp_process_join(p, MP_FOREVER);
  mp_process_destroy(p);
  mp_queue_destroy(q);
  return r == 0 ? 0 : 1;
}
