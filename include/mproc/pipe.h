/* mproc: pipes and connections (Python's Pipe, Connection).
 *
 * A connection carries whole messages of 0 bytes up to 2^40 - 1 bytes (tested
 * up to 1 GiB) in order; each send is received by exactly one recv.
 * Duplex pipes are a unix stream socketpair; one-way pipes are a pipe(2).
 *
 * Fork: connections are inherited by children forked after their creation,
 * which is how they are meant to be shared. Each end should be used by one
 * process only, and each process should close (mp_conn_close) the ends it
 * does not use: the peer only sees MP_ECLOSED once every copy of the other
 * end is closed. A connection buffers data it has read ahead; a child forked
 * while data is buffered gets a copy of that data too, so do not read from
 * one end in two processes. A connection is not thread-safe: use one handle
 * from one thread at a time (as Python's Connection). */
#ifndef MPROC_PIPE_H
#define MPROC_PIPE_H

#include <stdbool.h>

#include "common.h"
#include "error.h"
#include "wait.h"

MP_BEGIN_DECLS

typedef struct mp_conn mp_conn_t;

/* Create a pair of connected connections. duplex: both can send and receive
 * (a socketpair). Not duplex: *a only receives and *b only sends (a pipe),
 * as Python's Pipe(duplex=False). Both descriptors are close-on-exec.
 * Returns 0, MP_EINVAL (a or b NULL), MP_EMFILE / MP_ENFILE, MP_ENOMEM. The
 * caller owns both and frees each with mp_conn_destroy. */
MP_EXTERN int mp_pipe(mp_conn_t **a, mp_conn_t **b, bool duplex);

/* Make a connection of an existing descriptor: one end of a socketpair
 * (duplex) or of a pipe (receive-only for a read end, send-only for a write
 * end), as made by mp_pipe on either side. For a descriptor handed to a
 * fork-server child (mp_process_pass_fd) or received with mp_conn_recv_fd.
 * The connection owns fd from then on (closed by close/destroy). Returns 0,
 * MP_EINVAL (c NULL, fd < 0, not a socket or a pipe), MP_EBADF (fd not
 * open), MP_ENOMEM. */
MP_EXTERN int mp_conn_from_fd(mp_conn_t **c, int fd);

/* Send one message of len bytes (buf may be NULL when len is 0). Blocks until
 * the whole message is handed to the kernel. Small messages cost one system
 * call. Returns 0, MP_EINVAL (c NULL, buf NULL with len > 0), MP_EMSGSIZE
 * (len >= 2^40), MP_EBADF (receive-only end), MP_ECLOSED (c was closed),
 * MP_EPIPE (the peer closed its end; never raises SIGPIPE). A message that
 * failed midway (EPIPE, a signal handler's error) leaves the stream
 * unusable. */
MP_EXTERN int mp_conn_send(mp_conn_t *c, const void *buf, size_t len);

/* Receive the next message, blocking until it arrives. *buf is a malloc'd
 * copy the caller frees (never NULL on success, also for 0 bytes), *len its
 * size. Returns 0, MP_EINVAL (NULL argument; the next message is a
 * descriptor: use mp_conn_recv_fd), MP_EBADF (send-only end), MP_ECLOSED (c
 * closed, or the peer closed and no message is left: Python's EOFError),
 * MP_EIO (peer closed in the middle of a message), MP_EMSGSIZE (the
 * message is larger than mp_conn_set_max_message allows) or MP_ENOMEM (no
 * memory for it): in both cases the message is skipped (its bytes are
 * discarded as they arrive) and the next call returns the one after it.
 * MP_EPROTO: the stream announced a length no sender writes (>= 2^40); it
 * cannot be resynchronised, close it. MP_EAGAIN on a non-blocking
 * descriptor with no whole message yet: bytes already read stay buffered
 * in c (also midway through a large message), so a later call continues
 * where this one stopped. */
MP_EXTERN int mp_conn_recv(mp_conn_t *c, void **buf, size_t *len);

/* Receive the next message into buf (cap bytes). *len is set to the
 * message's size. Returns 0, MP_ETOOSHORT (cap < size: *len is the size
 * needed, the message stays for the next call, Python's BufferTooShort),
 * and the errors of mp_conn_recv (MP_ENOMEM here only when a non-blocking
 * descriptor ran dry midway and the part read could not be kept: the
 * message is skipped). */
MP_EXTERN int mp_conn_recv_into(mp_conn_t *c, void *buf, size_t cap,
                                size_t *len);

/* Largest message mp_conn_recv and mp_conn_recv_into accept on c (the
 * default, MP_CONN_MAX_MESSAGE, is what the framing allows). A peer that
 * announces more gets its message skipped with MP_EMSGSIZE: with a bound,
 * a peer cannot make the receiver allocate more than max bytes at once.
 * Returns 0, MP_EINVAL (c NULL, max > MP_CONN_MAX_MESSAGE). */
#define MP_CONN_MAX_MESSAGE (((size_t)1 << 40) - 1)
MP_EXTERN int mp_conn_set_max_message(mp_conn_t *c, size_t max);

/* Whether there is something to receive: returns 1 (a message, or the end
 * of the stream, which recv reports as MP_ECLOSED), 0 when nothing came
 * within timeout_ms (0: just check, MP_FOREVER: wait), MP_EINVAL (c NULL,
 * bad timeout), MP_EBADF (send-only end), MP_ECLOSED (c closed). */
MP_EXTERN int mp_conn_poll(mp_conn_t *c, int timeout_ms);

/* Hand an open descriptor to the other side (SCM_RIGHTS); the caller keeps
 * its own fd. It travels in order with the messages, and the receiver takes
 * it with mp_conn_recv_fd. Only duplex connections (socketpairs) can carry
 * descriptors: on a one-way pipe both calls return MP_ENOTSUP. Returns 0,
 * MP_EINVAL (c NULL, fd < 0), MP_EBADF (fd not open), MP_ENOTSUP,
 * MP_ECLOSED, MP_EPIPE. */
MP_EXTERN int mp_conn_send_fd(mp_conn_t *c, int fd);

/* Receive a descriptor sent with mp_conn_send_fd (close-on-exec; the caller
 * owns it). Returns 0, MP_EINVAL (NULL argument; the next message is data,
 * which stays), MP_ENOTSUP (one-way pipe), MP_EBADF (send-only end),
 * MP_ECLOSED, MP_EIO. */
MP_EXTERN int mp_conn_recv_fd(mp_conn_t *c, int *fd);

/* The underlying descriptor (for poll/epoll loops), owned by c. Returns it,
 * MP_EINVAL (c NULL) or MP_ECLOSED. Data may be buffered inside c while the
 * fd is not readable: use mp_conn_poll or mp_wait, which know about it. */
MP_EXTERN int mp_conn_fileno(const mp_conn_t *c);

/* Close the descriptor (and any received descriptor not yet taken). The
 * handle stays valid: further calls return MP_ECLOSED. Returns 0,
 * MP_EINVAL (NULL); closing twice is fine. */
MP_EXTERN int mp_conn_close(mp_conn_t *c);

/* Close if needed and free the handle. Returns 0 (also for NULL). */
MP_EXTERN int mp_conn_destroy(mp_conn_t *c);

/* A waitable for mp_wait: ready when mp_conn_recv would not block (a message
 * or end of stream), including data already buffered in c. fd is -1 for a
 * NULL, closed or send-only connection. Valid until close. */
MP_EXTERN mp_waitable_t mp_conn_waitable(mp_conn_t *c);

MP_END_DECLS

#endif
