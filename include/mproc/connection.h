/* mproc: connections by address (Python's multiprocessing.connection
 * Listener and Client).
 *
 * A listener waits on a Unix-domain socket or a TCP port; a client connects
 * to its address. Both ends get an ordinary mp_conn_t (see pipe.h): whole
 * messages, the same framing, send/recv/poll/mp_wait as a Pipe. With an
 * authkey, both sides prove they know it before the connection is handed
 * out, as Python does: each sends the other 40 random bytes and checks the
 * HMAC-SHA256 of them under the key (OpenSSL's libcrypto), compared in
 * constant time; the key itself never travels. Authentication does not
 * encrypt: over a network, use TCP only on trusted links.
 *
 * The wire format is mproc's (pipe framing), not Python's: an mproc client
 * talks to an mproc listener, not to a Python one.
 *
 * Addresses (strings):
 *   "/path" or "unix:/path"     a Unix socket file (created by the listener,
 *                               mode 0600 unless opts.mode, removed at close)
 *   "@name" or "unix:@name"     a Linux abstract Unix socket (no file)
 *   "host:port", "tcp:host:port", "[v6addr]:port"
 *                               TCP; port 0 picks a free one (see
 *                               mp_listener_address)
 * Errors common to these calls: MP_EINVAL (NULL argument, malformed
 * address, bad timeout), MP_ENAMETOOLONG (socket path too long), and the
 * system's own (-errno: MP_EADDRINUSE, MP_ECONNREFUSED, MP_ENOENT, ...;
 * mp_strerror words each). */
#ifndef MPROC_CONNECTION_H
#define MPROC_CONNECTION_H

#include <stddef.h>

#include "common.h"
#include "error.h"
#include "pipe.h"

MP_BEGIN_DECLS

typedef struct mp_listener mp_listener_t;

typedef struct mp_listener_opts {
  /* Shared secret (any bytes, authkey_len of them); NULL: no
   * authentication (then clients must not give one either). */
  const void *authkey;
  size_t authkey_len;
  int backlog;      /* listen(2) backlog; 0: 64 */
  unsigned mode;    /* Unix socket file mode; 0: 0600 */
  int auth_timeout_ms; /* how long a peer may take to authenticate; 0: 20000 */
} mp_listener_opts_t;

typedef struct mp_client_opts {
  const void *authkey; /* as the listener's; NULL: no authentication */
  size_t authkey_len;
  int timeout_ms; /* connect and authenticate within this; 0: MP_FOREVER */
} mp_client_opts_t;

/* Listener(address, authkey=...): bind and listen. opts may be NULL (no
 * authentication). Returns 0 with *l set, or MP_EINVAL, MP_EADDRINUSE (the
 * address is taken; a Unix socket file that already exists is never
 * replaced), MP_EACCES, MP_ENOMEM, or another system error. */
MP_EXTERN int mp_listener_create(mp_listener_t **l, const char *address,
                                 const mp_listener_opts_t *opts);

/* listener.accept(): wait at most timeout_ms for a client, authenticate it
 * (when the listener has an authkey) and return its connection in *c
 * (free with mp_conn_destroy). Returns 0, MP_ETIMEDOUT (no client in time),
 * MP_EACCES (a client failed to authenticate: it was told so and
 * disconnected; call accept again for the next one), MP_ECONNRESET (the
 * client left during the handshake), MP_EINVAL, or a system error. */
MP_EXTERN int mp_listener_accept(mp_listener_t *l, mp_conn_t **c,
                                 int timeout_ms);

/* listener.address: the address clients should use, with the real port for
 * "host:0" ("127.0.0.1:41234"); owned by l. NULL for a NULL l. */
MP_EXTERN const char *mp_listener_address(const mp_listener_t *l);

/* The listening descriptor (readable when a client waits), owned by l, or
 * MP_EINVAL. */
MP_EXTERN int mp_listener_fileno(const mp_listener_t *l);

/* listener.close(): stop listening, remove a Unix socket file this listener
 * created (only in the process that created it, not in forked children),
 * free l. Returns 0, MP_EINVAL (NULL). Accepted connections stay open. */
MP_EXTERN int mp_listener_close(mp_listener_t *l);

/* Client(address, authkey=...): connect, and authenticate when an authkey is
 * given. opts may be NULL. Returns 0 with *c set (free with
 * mp_conn_destroy), or MP_ECONNREFUSED / MP_ENOENT (nobody listens there),
 * MP_EACCES (the listener has another key), MP_ETIMEDOUT, MP_ECONNRESET
 * (the listener closed during the handshake), MP_EINVAL, or a system
 * error. */
MP_EXTERN int mp_client_connect(mp_conn_t **c, const char *address,
                                const mp_client_opts_t *opts);

MP_END_DECLS

#endif
