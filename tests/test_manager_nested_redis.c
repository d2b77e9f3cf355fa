/* Nested containers and Namespace on a Redis manager: not there (yet), and
 * refused cleanly. */
#include "redis_server.h"

#include "mproc.h"
#include "runner.h"

TEST(redis_namespace_and_references_refused) {
  mp_manager_t *m;
  mp_manager_opts_t o = {.address = mpt_redis.addr};
  ASSERT_OK(mp_manager_create(&m, &o));
  mp_namespace_t *ns;
  ASSERT_ERR(mp_namespace_create(&ns, m, NULL), MP_ENOTSUP);
  ASSERT_ERR(mp_namespace_open(&ns, m, "ns"), MP_ENOTSUP);
  ASSERT_ERR(mp_namespace_open_id(&ns, m, 0), MP_ENOTSUP);
  mp_dict_t *d;
  mp_list_t *l;
  ASSERT_OK(mp_dict_create(&d, m, NULL));
  ASSERT_OK(mp_list_create(&l, m, NULL));
  mp_val_t k = mp_val_str("a"), vl = mp_val_list(l), vd = mp_val_dict(d);
  ASSERT_ERR(mp_dict_set(d, &k, &vl), MP_EINVAL);
  ASSERT_ERR(mp_list_append(l, &vd), MP_EINVAL);
  ASSERT_ERR(mp_list_extend(l, &vd, 1), MP_EINVAL);
  ASSERT_ERR(mp_list_insert(l, 0, &vd), MP_EINVAL);
  size_t n;
  ASSERT_OK(mp_dict_len(d, &n));
  ASSERT_EQ(n, 0);
  ASSERT_OK(mp_list_len(l, &n));
  ASSERT_EQ(n, 0);
  /* A local manager's container refuses a Redis object's handle. */
  mp_manager_t *local;
  mp_dict_t *ld;
  ASSERT_OK(mp_manager_create(&local, &(mp_manager_opts_t){.reserve = 1 << 24}));
  ASSERT_OK(mp_dict_create(&ld, local, NULL));
  ASSERT_ERR(mp_dict_set(ld, &k, &vl), MP_EINVAL);
  ASSERT_OK(mp_dict_close(ld));
  ASSERT_OK(mp_manager_destroy(local));
  ASSERT_OK(mp_dict_close(d));
  ASSERT_OK(mp_list_close(l));
  ASSERT_OK(mp_manager_destroy(m));
}
