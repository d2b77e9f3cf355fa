/* Executor: runs tasks and carries messages back (serial bring-up). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mpcp.h"

typedef struct node {
  struct node *next;
  size_t len;
  char data[];
} node_t;
static node_t *head, *tail;

int mpcp_exec_start(int nworkers) {
  (void)nworkers;
  return 0;
}

int mpcp_exec_submit(const void *task, size_t len) {
  return mpcp_worker_task(task, len);
}

void mpcp_send(const mpcp_msg_t *m, const char *text, size_t text_len) {
  node_t *n = malloc(sizeof *n + sizeof *m + text_len);
  if (!n)
    return;
  n->next = NULL;
  n->len = sizeof *m + text_len;
  memcpy(n->data, m, sizeof *m);
  if (text_len)
    memcpy(n->data + sizeof *m, text, text_len);
  if (tail)
    tail->next = n;
  else
    head = n;
  tail = n;
}

int mpcp_exec_recv(void *buf, int timeout_ms) {
  (void)timeout_ms;
  if (!head)
    return 0;
  node_t *n = head;
  head = n->next;
  if (!head)
    tail = NULL;
  size_t len = n->len > MPCP_MSG_MAX ? MPCP_MSG_MAX : n->len;
  memcpy(buf, n->data, len);
  free(n);
  return (int)len;
}

void mpcp_exec_stop(bool abort) {
  (void)abort;
}
