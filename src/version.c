#include "mproc/version.h"

unsigned int mp_version(void) {
  return MP_VERSION_HEX;
}

const char *mp_version_string(void) {
  return MP_VERSION_STRING;
}
