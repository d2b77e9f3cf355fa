/* Python tutorial example: Pipe: the child sends 1 and 2, the parent prints them and sends
 * 3 back, which the child prints. */
#include <stdio.h>

#include <mproc.h>

static mp_conn_t *parent_conn, *child_conn;

static int f(const void *arg, size_t len) {
  mp_conn_close(parent_conn); /* the child uses its own end only */
  int v = 1;
  mp_conn_send(child_conn, &v, sizeof v);
  v = 2;
  mp_conn_send(child_conn, &v, sizeof v);
  size_t n;
  if (mp_conn_recv_into(child_conn, &v, sizeof v, &n) == 0)
    printf("%d\n", v);
  mp_conn_close(child_conn);
  return 0;
}

int main(void) {
  mp_process_t *p;
  int r, v;
  size_t n;
  if ((r = mp_pipe(&parent_conn, &child_conn, true)) < 0 ||
      (r = mp_process_create(&p, f, NULL, 0, NULL)) < 0 ||
      (r = mp_process_start(p)) < 0) {
    fprintf(stderr, "pipe demo: %s\n", mp_strerror(r));
    return 1;
  }
  mp_conn_close(child_conn);
  for (int i = 0; i < 2; i++) {
    if ((r = mp_conn_recv_into(parent_conn, &v, sizeof v, &n)) < 0) {
      fprintf(stderr, "recv: %s\n", mp_strerror(r));
      return 1;
    }
    printf("%d\n", v);
    fflush(stdout);
  }
  v = 3;
  mp_conn_send(parent_conn, &v, sizeof v);
  mp_process_join(p, MP_FOREVER);
  mp_process_destroy(p);
  mp_conn_destroy(parent_conn);
  mp_conn_destroy(child_conn);
  return 0;
}
