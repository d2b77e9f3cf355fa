/* mproc: version. */
#ifndef MPROC_VERSION_H
#define MPROC_VERSION_H

#include "common.h"

#define MP_VERSION_MAJOR 0
#define MP_VERSION_MINOR 1
#define MP_VERSION_PATCH 0
#define MP_VERSION_HEX                                                         \
  ((MP_VERSION_MAJOR << 16) | (MP_VERSION_MINOR << 8) | (MP_VERSION_PATCH))
#define MP_VERSION_STRING "0.1.0"

MP_BEGIN_DECLS

/* The library's version as MP_VERSION_HEX, for a check at run time. */
MP_EXTERN unsigned int mp_version(void);
/* The library's version as "major.minor.patch". Never NULL. */
MP_EXTERN const char *mp_version_string(void);

MP_END_DECLS

#endif
