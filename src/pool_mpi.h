/* MPI backend internals shared by src/pool_mpi*.c: the module table that
 * turns function pointers into (module, offset) pairs, and the wire format
 * between the root and the worker ranks.
 *
 * Every message is bytes of MPI_BYTE on a private duplicate of
 * MPI_COMM_WORLD. Each side treats what the other sent as untrusted: sizes
 * are probed before receiving (MP__MPI_MAXMSG at most), and every record's
 * length, count and token is bounded before use. */
#ifndef MPROC_POOL_MPI_H
#define MPROC_POOL_MPI_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "pool_internal.h"

/* ---- modules -------------------------------------------------------------
 * A task function is named by the index of its module in the root's table
 * (dl_iterate_phdr order) and its offset from the module's load address.
 * Modules are matched between ranks by their GNU build-id. */
typedef struct {
  char *name;       /* path as loaded ("" for the main program) */
  uintptr_t base;   /* load address (dlpi_addr) */
  uint64_t extent;  /* end of the highest PT_LOAD segment, from base */
  uint8_t id[64];   /* NT_GNU_BUILD_ID */
  uint32_t id_len;  /* 0: none */
} mp__mod_t;

typedef struct {
  mp__mod_t *m;
  size_t n;
} mp__mods_t;

int mp__mods_load(mp__mods_t *t);
void mp__mods_free(mp__mods_t *t);
/* Serialise the table for the other ranks (malloc'd, *len bytes). */
int mp__mods_pack(const mp__mods_t *t, uint8_t **out, size_t *len);
/* Match a peer's packed table against ours: map[i] is our module for the
 * peer's module i, or -1. Returns 0, MP_EBINARY (main programs or same-named
 * modules differ), MP_EIO (malformed table), MP_ENOMEM. *map is malloc'd,
 * *n its length. */
int mp__mods_match(const mp__mods_t *ours, const uint8_t *buf, size_t len,
                   int32_t **map, size_t *n);
/* (module index, offset) of a code address; MP_EINVAL if in no module. */
int mp__mods_locate(const mp__mods_t *t, const void *addr, uint32_t *mod,
                    uint64_t *off);

/* ---- wire ----------------------------------------------------------------
 */
enum {
  MP__TAG_TASKS = 101,   /* root -> rank: task records */
  MP__TAG_STOP = 102,    /* root -> rank: one int32, MP__STOP_* */
  MP__TAG_RESULTS = 103, /* rank -> root: result records */
  MP__TAG_STOPPED = 104  /* rank -> root: empty */
};
enum { MP__STOP_JOIN = 1, MP__STOP_TERMINATE = 2 };

/* Largest message either side sends or accepts: a batch of records, and at
 * least one record of the largest payload. */
#define MP__MPI_MAXMSG (4u << 20)
#define MP__MPI_FLUSH (256u << 10) /* a rank sends its results at this size */

typedef struct {
  uint32_t token; /* root's in-flight table index, echoed back */
  uint32_t kind;  /* MP__K_APPLY, MP__K_MAP, MP__K_IMAP */
  uint32_t module;
  uint32_t len; /* payload bytes that follow (padded to 8) */
  uint64_t offset;
  uint32_t count, item_size, result_size, pad;
} mp__wtask_t;

typedef struct {
  uint32_t token;
  uint32_t flags; /* MP__RF_MORE: more parts of this apply result follow */
  int32_t status; /* 0 or the task's (first failing item's) code */
  uint32_t fail_index;
  uint32_t len; /* payload bytes that follow (padded to 8) */
  uint32_t pad;
  uint64_t ns; /* run time */
} mp__wresult_t;

_Static_assert(sizeof(mp__wtask_t) == 40, "wire task");
_Static_assert(sizeof(mp__wresult_t) == 32, "wire result");

static inline size_t mp__wpad(size_t n) {
  return (n + 7) & ~(size_t)7;
}

/* The worker side: serve tasks from the root until told to stop. map is the
 * module map from the handshake. Returns 0 or an MPI failure (MP_EIO). */
int mp__pool_mpi_serve(MPI_Comm comm, const mp__mods_t *mods,
                       const int32_t *map, size_t map_n,
                       const mp_pool_opts_t *o, int index);

#endif
