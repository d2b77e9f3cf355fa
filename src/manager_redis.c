/* Manager on Redis: addresses, connections (timeouts, AUTH, reconnect,
 * fork), scripts, the value encoding and the object directory. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "manager_redis.h"

#ifdef MP_HAVE_HIREDIS

/* ---- scripts -------------------------------------------------------------
 * Each one runs atomically in Redis. Object keys are "<prefix>o:<id>" plus a
 * suffix; the directory is "<prefix>dir" (name -> id), "<prefix>kinds"
 * (id -> kind) and "<prefix>nobj" (next id). */
/* Lua shared by several scripts. eq: equality of two encoded values as
 * the local manager has it (same type and content; a double equal by value
 * or by bits, so 0.0 equals -0.0 in either byte order). adj: Python's slice
 * bounds for a list of n items (start and stop clamped, the item count).
 * push: RPUSH a table in chunks (Lua's unpack has a stack limit). bcmp:
 * byte order of two strings (Lua's own < follows the server's locale). */
#define LUA_EQ                                                                 \
  "local function isz(s) return #s == 9 and (s == 'd\\0\\0\\0\\0\\0\\0\\0\\0' " \
  "or s == 'd\\0\\0\\0\\0\\0\\0\\0\\128' or s == 'd\\128\\0\\0\\0\\0\\0\\0\\0') " \
  "end local function eq(a, b) return a == b or (isz(a) and isz(b)) end "
#define LUA_ADJ                                                                \
  "local function clamp(x, n, st) if x < 0 then x = x + n if x < 0 then "     \
  "x = st < 0 and -1 or 0 end elseif x >= n then x = st < 0 and n - 1 or n " \
  "end return x end "                                                          \
  "local function adj(n, s, e, st) s = clamp(s, n, st) e = clamp(e, n, st) " \
  "local c = 0 if st < 0 then if e < s then "                                  \
  "c = math.floor((s - e - 1) / -st) + 1 end elseif s < e then "             \
  "c = math.floor((e - s - 1) / st) + 1 end return s, e, c end "
#define LUA_PUSH                                                               \
  "local function push(k, t) for i = 1, #t, 1000 do "                          \
  "redis.call('RPUSH', k, unpack(t, i, math.min(i + 999, #t))) end end "
#define LUA_BCMP                                                               \
  "local function bcmp(a, b) if a == b then return 0 end "                     \
  "local n, i = math.min(#a, #b), 1 while i <= n do "                          \
  "local j = math.min(i + 31, n) if a:sub(i, j) ~= b:sub(i, j) then "          \
  "for k = i, j do local x, y = a:byte(k), b:byte(k) "                         \
  "if x ~= y then return x < y and -1 or 1 end end end i = j + 1 end "         \
  "if #a < #b then return -1 elseif #a > #b then return 1 end return 0 end "

static const char *const scripts[RS_COUNT] = {
    /* RS_OBJ_CREATE: KEYS dir kinds nobj; ARGV kind name ("" none)
     * object-key-prefix [field value...] (the object's settings, written to
     * "<prefix>o:<id>:m" in the same step) */
    [RS_OBJ_CREATE] =
        "if ARGV[2] ~= '' and redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 "
        "then return -1 end "
        "local id = redis.call('INCR', KEYS[3]) - 1 "
        "if id > 4294967294 then return -2 end "
        "if #ARGV > 3 then redis.call('HSET', ARGV[3] .. id .. ':m', "
        "unpack(ARGV, 4)) end "
        "redis.call('HSET', KEYS[2], id, ARGV[1]) "
        "if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], ARGV[2], id) end "
        "return id",
    /* Dicts: KEYS hash (key -> value), zset (key -> insertion number),
     * counter. */
    [RS_DSET] = "if redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) == 1 then "
                "redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), "
                "ARGV[1]) end return 0",
    /* ARGV k1 v1 k2 v2 ...: one HSET per 500 items; only a chunk that
     * added keys (HSET's count) numbers them: INCRBY by the chunk's size and
     * ZADD NX, so a key already there keeps its number (numbers have gaps,
     * the order is insertion order) and re-setting known keys costs the
     * HSET alone. */
    [RS_DSET_MANY] =
        "for c = 1, #ARGV, 1000 do "
        "local e = math.min(c + 999, #ARGV) "
        "if redis.call('HSET', KEYS[1], unpack(ARGV, c, e)) > 0 then "
        "local m = (e - c + 1) / 2 "
        "local b = redis.call('INCRBY', KEYS[3], m) - m local z = {} "
        "for i = c, e, 2 do z[#z + 1] = b + (i - c + 2) / 2 "
        "z[#z + 1] = ARGV[i] end "
        "redis.call('ZADD', KEYS[2], 'NX', unpack(z)) end end return 0",
    [RS_DPOP] = "local v = redis.call('HGET', KEYS[1], ARGV[1]) "
                "if v then redis.call('HDEL', KEYS[1], ARGV[1]) "
                "redis.call('ZREM', KEYS[2], ARGV[1]) end return v",
    [RS_DITEMS] =
        "local ks = redis.call('ZRANGE', KEYS[2], 0, -1) local out = {} "
        "for i = 1, #ks, 1000 do "
        "local j = math.min(i + 999, #ks) "
        "local vs = redis.call('HMGET', KEYS[1], unpack(ks, i, j)) "
        "for x = 1, #vs do out[#out + 1] = ks[i + x - 1] "
        "out[#out + 1] = vs[x] or '' end end return out",
    /* ARGV delta key: the int's decimal text lets HINCRBY add exactly. */
    [RS_DADD] =
        "local v = redis.call('HGET', KEYS[1], ARGV[2]) "
        "if not v then redis.call('HSET', KEYS[1], ARGV[2], ARGV[1]) "
        "redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[2]) "
        "return ARGV[1] end "
        "local b = string.byte(v, 1) "
        "if b ~= 45 and (b == nil or b < 48 or b > 57) then "
        "return redis.error_reply('MPTYPE') end "
        "local r = redis.pcall('HINCRBY', KEYS[1], ARGV[2], ARGV[1]) "
        "if type(r) == 'table' and r.err then "
        "return redis.error_reply('MPRANGE') end "
        "return redis.call('HGET', KEYS[1], ARGV[2])",
    /* ARGV key desired [expected] */
    [RS_DCAS] =
        LUA_EQ "local v = redis.call('HGET', KEYS[1], ARGV[1]) "
        "if #ARGV == 2 then if v then return 0 end "
        "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) "
        "redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[1]) "
        "return 1 end "
        "if not v or not eq(v, ARGV[3]) then return 0 end "
        "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) return 1",
    /* KEYS hash zset -> {key, value}, or nil when empty: the last key in
     * insertion order. */
    [RS_DPOPITEM] =
        "local r = redis.call('ZRANGE', KEYS[2], -1, -1) "
        "if #r == 0 then return false end "
        "local v = redis.call('HGET', KEYS[1], r[1]) "
        "redis.call('HDEL', KEYS[1], r[1]) redis.call('ZREM', KEYS[2], r[1]) "
        "return {r[1], v or ''}",
    /* ARGV key default -> the value now there */
    [RS_DSETDEF] =
        "local v = redis.call('HGET', KEYS[1], ARGV[1]) if v then return v end "
        "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) "
        "redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[1]) "
        "return ARGV[2]",
    /* KEYS hash zset; ARGV pos (an insertion number) -> {key, number,
     * value} of the first key numbered after pos, or nil. */
    [RS_DNEXT] =
        "local r = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], "
        "'+inf', 'WITHSCORES', 'LIMIT', 0, 1) "
        "if #r == 0 then return false end "
        "return {r[1], r[2], redis.call('HGET', KEYS[1], r[1]) or ''}",
    /* Lists: KEYS list; ARGV index value. Index clamped as Python does. */
    [RS_LINSERT] =
        "local n = redis.call('LLEN', KEYS[1]) local i = tonumber(ARGV[1]) "
        "if i < 0 then i = i + n end if i < 0 then i = 0 end "
        "if i >= n then return redis.call('RPUSH', KEYS[1], ARGV[2]) end "
        "if i == 0 then return redis.call('LPUSH', KEYS[1], ARGV[2]) end "
        "local tail = redis.call('LRANGE', KEYS[1], i, -1) "
        "redis.call('LTRIM', KEYS[1], 0, i - 1) "
        "redis.call('RPUSH', KEYS[1], ARGV[2]) "
        "for j = 1, #tail, 1000 do redis.call('RPUSH', KEYS[1], "
        "unpack(tail, j, math.min(j + 999, #tail))) end return n + 1",
    /* ARGV index marker (a string no value encodes to) */
    [RS_LPOP] =
        "local n = redis.call('LLEN', KEYS[1]) local i = tonumber(ARGV[1]) "
        "if i < 0 then i = i + n end "
        "if i < 0 or i >= n then return false end "
        "if i == n - 1 then return redis.call('RPOP', KEYS[1]) end "
        "if i == 0 then return redis.call('LPOP', KEYS[1]) end "
        "local v = redis.call('LINDEX', KEYS[1], i) "
        "redis.call('LSET', KEYS[1], i, ARGV[2]) "
        "redis.call('LREM', KEYS[1], 1, ARGV[2]) return v",
    /* KEYS list; ARGV value -> how many items equal it */
    [RS_LCOUNT] =
        LUA_EQ "local c = 0 local n = redis.call('LLEN', KEYS[1]) "
        "for i = 0, n - 1, 1000 do "
        "for _, x in ipairs(redis.call('LRANGE', KEYS[1], i, i + 999)) do "
        "if eq(x, ARGV[1]) then c = c + 1 end end end return c",
    /* ARGV start stop value -> first index within l[start:stop], or -1 */
    [RS_LINDEX] =
        LUA_EQ LUA_ADJ "local n = redis.call('LLEN', KEYS[1]) "
        "local s, e = adj(n, tonumber(ARGV[1]), tonumber(ARGV[2]), 1) "
        "local i = s while i < e do "
        "local xs = redis.call('LRANGE', KEYS[1], i, math.min(i + 999, e - 1)) "
        "for j, x in ipairs(xs) do if eq(x, ARGV[3]) then return i + j - 1 "
        "end end i = i + 1000 end return -1",
    /* ARGV marker value -> 1 removed the first item equal to value, 0 none */
    [RS_LREMOVE] =
        LUA_EQ "local n = redis.call('LLEN', KEYS[1]) "
        "for i = 0, n - 1, 1000 do "
        "local xs = redis.call('LRANGE', KEYS[1], i, i + 999) "
        "for j, x in ipairs(xs) do if eq(x, ARGV[2]) then local k = i + j - 1 "
        "if k == 0 then redis.call('LPOP', KEYS[1]) else "
        "redis.call('LSET', KEYS[1], k, ARGV[1]) "
        "redis.call('LREM', KEYS[1], 1, ARGV[1]) end return 1 end end end "
        "return 0",
    [RS_LREVERSE] =
        LUA_PUSH "local xs = redis.call('LRANGE', KEYS[1], 0, -1) "
        "local n = #xs if n < 2 then return 0 end local out = {} "
        "for i = n, 1, -1 do out[#out + 1] = xs[i] end "
        "redis.call('DEL', KEYS[1]) push(KEYS[1], out) return 0",
    /* ARGV reverse ('1') byte-order ('<' or '>', the clients' doubles).
     * The same stable bottom-up merge sort and order as the local list:
     * numbers exactly by value (decimal texts compared as texts, a double
     * against a large int through its exact integer text; NaN compares
     * equal), str and bytes by their bytes; mixed kinds or None: MPTYPE,
     * the list unchanged. */
    [RS_LSORT] =
        LUA_BCMP LUA_PUSH
        "local xs = redis.call('LRANGE', KEYS[1], 0, -1) local n = #xs "
        "if n < 2 then return 0 end local v, kind0 = {}, nil "
        "for i = 1, n do local x = xs[i] local b = x:byte(1) local k, t, d "
        "if b == 84 or b == 70 then k = 1 t = b == 84 and '1' or '0' "
        "d = tonumber(t) "
        "elseif b == 100 then if #x ~= 9 then "
        "return redis.error_reply('MPBAD') end k = 1 "
        "d = struct.unpack(ARGV[2] .. 'd', x, 2) "
        "elseif b == 115 then k = 2 elseif b == 98 then k = 3 "
        "elseif b == 45 or (b and b >= 48 and b <= 57) then k = 1 t = x "
        "d = tonumber(x) if not d then return redis.error_reply('MPBAD') end "
        "else k = 0 end "
        "if k == 0 or (kind0 and k ~= kind0) then "
        "return redis.error_reply('MPTYPE') end "
        "kind0 = k v[i] = {x = x, t = t, d = d} end "
        "local function icmp(a, b) "
        "local na, nb = a:byte(1) == 45, b:byte(1) == 45 "
        "if na ~= nb then return na and -1 or 1 end local r "
        "if #a ~= #b then r = #a < #b and -1 or 1 else r = bcmp(a, b) end "
        "if na then r = -r end return r end "
        "local function cmp(p, q) "
        "if kind0 ~= 1 then return bcmp(p.x, q.x) end "
        "if p.t and q.t then return icmp(p.t, q.t) end "
        "if p.d < q.d then return -1 elseif p.d > q.d then return 1 "
        "elseif p.d ~= q.d then return 0 end "
        "if math.abs(p.d) < 9007199254740992 then return 0 end "
        "return icmp(p.t or string.format('%.0f', p.d), "
        "q.t or string.format('%.0f', q.d)) end "
        "local tv, rev, w = {}, ARGV[1] == '1', 1 "
        "while w < n do local lo = 1 while lo <= n do "
        "local mid, hi = math.min(lo + w, n + 1), math.min(lo + 2 * w, n + 1) "
        "local i, j, k = lo, mid, lo "
        "while i < mid and j < hi do local c = cmp(v[j], v[i]) local right "
        "if rev then right = c > 0 else right = c < 0 end "
        "if right then tv[k] = v[j] j = j + 1 else tv[k] = v[i] i = i + 1 end "
        "k = k + 1 end "
        "while i < mid do tv[k] = v[i] i = i + 1 k = k + 1 end "
        "while j < hi do tv[k] = v[j] j = j + 1 k = k + 1 end "
        "lo = lo + 2 * w end v, tv = tv, v w = w * 2 end "
        "local out = {} for i = 1, n do out[i] = v[i].x end "
        "redis.call('DEL', KEYS[1]) push(KEYS[1], out) return 0",
    /* ARGV start stop step -> the items of l[start:stop:step] */
    [RS_LSLICE] =
        LUA_ADJ "local n = redis.call('LLEN', KEYS[1]) "
        "local st = tonumber(ARGV[3]) "
        "local s, e, c = adj(n, tonumber(ARGV[1]), tonumber(ARGV[2]), st) "
        "if c == 0 then return {} end local last = s + (c - 1) * st "
        "local lo, hi = math.min(s, last), math.max(s, last) "
        "local xs = redis.call('LRANGE', KEYS[1], lo, hi) "
        "if st == 1 then return xs end local out = {} "
        "for k = 0, c - 1 do out[#out + 1] = xs[s + k * st - lo + 1] end "
        "return out",
    /* ARGV start stop step del values...: l[start:stop:step] = values (del
     * '0'), or del l[start:stop:step] (del '1'). A step other than 1 needs
     * as many values as the slice has items: MPTYPE, unchanged. */
    [RS_LSPLICE] =
        LUA_ADJ LUA_PUSH "local st = tonumber(ARGV[3]) "
        "local del, nv = ARGV[4] == '1', #ARGV - 4 "
        "local xs = redis.call('LRANGE', KEYS[1], 0, -1) local len = #xs "
        "local s, e, c = adj(len, tonumber(ARGV[1]), tonumber(ARGV[2]), st) "
        "if st == 1 and not del then if e < s then e = s end c = e - s "
        "elseif not del and nv ~= c then return redis.error_reply('MPTYPE') "
        "end local out = {} "
        "if st == 1 then for i = 1, s do out[#out + 1] = xs[i] end "
        "if not del then for i = 1, nv do out[#out + 1] = ARGV[4 + i] end end "
        "for i = s + c + 1, len do out[#out + 1] = xs[i] end "
        "elseif del then local gone = {} "
        "for k = 0, c - 1 do gone[s + k * st + 1] = true end "
        "for i = 1, len do if not gone[i] then out[#out + 1] = xs[i] end end "
        "else out = xs for k = 0, c - 1 do out[s + k * st + 1] = ARGV[5 + k] "
        "end end redis.call('DEL', KEYS[1]) push(KEYS[1], out) return #out",
    /* ARGV times: l *= times (<= 0 empties; MPNOMEM past 2^40 items) */
    [RS_LREPEAT] =
        LUA_PUSH "local t = tonumber(ARGV[1]) "
        "if t <= 0 then redis.call('DEL', KEYS[1]) return 0 end "
        "local xs = redis.call('LRANGE', KEYS[1], 0, -1) local n = #xs "
        "if t == 1 or n == 0 then return 0 end "
        "if t > math.floor(1099511627776 / n) then "
        "return redis.error_reply('MPNOMEM') end "
        "for r = 2, t do push(KEYS[1], xs) end return 0",
    /* Queues: KEYS main meta; ARGV maxsize msg... -> n, or -1 closed, -2
     * full. meta: closed, unfinished (joinable). */
    [RS_QPUT] =
        "if redis.call('HGET', KEYS[2], 'closed') == '1' then return -1 end "
        "local max = tonumber(ARGV[1]) local n = #ARGV - 1 "
        "if max > 0 and redis.call('LLEN', KEYS[1]) + n > max then "
        "return -2 end "
        "for i = 2, #ARGV, 1000 do redis.call('RPUSH', KEYS[1], "
        "unpack(ARGV, i, math.min(i + 999, #ARGV))) end "
        "redis.call('HINCRBY', KEYS[2], 'unfinished', n) return n",
    /* KEYS main meta consumers proc lease; ARGV cid lease_ms ack_previous n
     * -> {msgs...}, or -1 closed and empty. Registers the consumer (lease
     * set) even when nothing is taken, so a blocking BLMOVE into proc that
     * follows is covered by the lease. */
    [RS_QGET] =
        "if ARGV[3] == '1' then redis.call('DEL', KEYS[4]) end "
        "redis.call('SADD', KEYS[3], ARGV[1]) "
        "redis.call('SET', KEYS[5], '1', 'PX', ARGV[2]) "
        "local out = {} "
        "for i = 1, tonumber(ARGV[4]) do "
        "local v = redis.call('LMOVE', KEYS[1], KEYS[4], 'LEFT', 'RIGHT') "
        "if not v then break end out[#out + 1] = v end "
        "if #out == 0 and redis.call('HGET', KEYS[2], 'closed') == '1' then "
        "return -1 end return out",
    /* KEYS main consumers; ARGV key base ("<prefix>o:<id>") -> moved. A
     * consumer whose lease key is gone gives its messages back, oldest at
     * the front. */
    [RS_QREAP] =
        "local moved = 0 "
        "for _, c in ipairs(redis.call('SMEMBERS', KEYS[2])) do "
        "if redis.call('EXISTS', ARGV[1] .. ':l:' .. c) == 0 then "
        "local p = ARGV[1] .. ':p:' .. c "
        "while redis.call('LMOVE', p, KEYS[1], 'RIGHT', 'LEFT') do "
        "moved = moved + 1 end "
        "redis.call('SREM', KEYS[2], c) end end return moved",
    /* KEYS proc meta lease; ARGV lease_ms -> 1 done, 0 nothing held */
    [RS_QDONE] = "if not redis.call('LPOP', KEYS[1]) then return 0 end "
                 "redis.call('HINCRBY', KEYS[2], 'unfinished', -1) "
                 "redis.call('PEXPIRE', KEYS[3], ARGV[1]) return 1",
    /* KEYS main consumers proc lease meta; ARGV cid joinable: a consumer
     * leaves: a plain queue's held messages are done, a joinable queue's go
     * back (not marked done). */
    [RS_QBYE] =
        "local n = redis.call('LLEN', KEYS[3]) "
        "if ARGV[2] == '1' then "
        "while redis.call('LMOVE', KEYS[3], KEYS[1], 'RIGHT', 'LEFT') do end "
        "else redis.call('DEL', KEYS[3]) "
        "redis.call('HINCRBY', KEYS[5], 'unfinished', -n) end "
        "redis.call('DEL', KEYS[4]) redis.call('SREM', KEYS[2], ARGV[1]) "
        "return n",
    /* Locks: KEYS lease held wake; ARGV token lease_ms -> 1 acquired, 2
     * acquired after a dead holder, 0 busy, -1 held by this token. */
    [RS_LOCK_TRY] = "local cur = redis.call('GET', KEYS[1]) "
                    "if cur then if cur == ARGV[1] then return -1 end "
                    "return 0 end "
                    "local h = redis.call('GET', KEYS[2]) "
                    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) "
                    "redis.call('SET', KEYS[2], ARGV[1]) "
                    "if h and h ~= ARGV[1] then return 2 end return 1",
    [RS_LOCK_RENEW] = "if redis.call('GET', KEYS[1]) == ARGV[1] then "
                      "redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end "
                      "if not redis.call('GET', KEYS[1]) and "
                      "redis.call('GET', KEYS[2]) == ARGV[1] then "
                      "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) "
                      "return 1 end return 0",
    /* The holder whose lease ran out may still release if nobody took it. */
    [RS_LOCK_RELEASE] =
        "local cur = redis.call('GET', KEYS[1]) "
        "if cur == ARGV[1] or (not cur and redis.call('GET', KEYS[2]) == "
        "ARGV[1]) then redis.call('DEL', KEYS[1], KEYS[2]) "
        "redis.call('DEL', KEYS[3]) redis.call('RPUSH', KEYS[3], '1') "
        "redis.call('PEXPIRE', KEYS[3], 1000) return 1 end return 0",
    /* Events: KEYS flag wake waiters */
    [RS_EV_SET] = "redis.call('SET', KEYS[1], '1') "
                  "local n = tonumber(redis.call('GET', KEYS[3]) or '0') "
                  "redis.call('DEL', KEYS[2]) "
                  "for i = 1, math.min(n, 10000) do "
                  "redis.call('RPUSH', KEYS[2], '1') end "
                  "redis.call('PEXPIRE', KEYS[2], 5000) return 0",
};

static pthread_mutex_t sha_mu = PTHREAD_MUTEX_INITIALIZER;
static char shas[RS_COUNT][41];

/* ---- errors --------------------------------------------------------------
 */

static __thread char last_err[128];

const char *mp__rlast_error(void) {
  return last_err;
}

/* A failed context: which error, from hiredis' message (0.14 keeps no
 * errno of its own). */
static int ctx_err(const redisContext *c) {
  if (!c)
    return MP_ENOMEM;
  switch (c->err) {
  case REDIS_ERR_EOF:
    return MP_ECONNRESET;
  case REDIS_ERR_OOM:
    return MP_ENOMEM;
  case REDIS_ERR_PROTOCOL:
    return MP_EIO;
  default:
    break;
  }
  static const int errs[] = {ECONNREFUSED, ENOENT,     ETIMEDOUT, EAGAIN,
                             ECONNRESET,   EPIPE,      EACCES,    ENOTCONN,
                             EINPROGRESS,  EHOSTUNREACH, ENETUNREACH};
  for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
    if (strstr(c->errstr, strerror(errs[i]))) {
      switch (errs[i]) {
      case EAGAIN:
      case EINPROGRESS:
        return MP_ETIMEDOUT;
      case EPIPE:
      case ENOTCONN:
        return MP_ECONNRESET;
      case EHOSTUNREACH:
      case ENETUNREACH:
        return MP_ECONNREFUSED;
      default:
        return -errs[i];
      }
    }
  }
  if (c->err == REDIS_ERR_OTHER) /* name resolution */
    return strstr(c->errstr, "Name or service") || strstr(c->errstr, "name")
               ? MP_ENOENT
               : MP_ECONNREFUSED;
  return MP_ECONNRESET;
}

static int reply_err(const redisReply *rp) {
  size_t n = rp->len < sizeof last_err - 1 ? rp->len : sizeof last_err - 1;
  memcpy(last_err, rp->str ? rp->str : "", rp->str ? n : 0);
  last_err[rp->str ? n : 0] = '\0';
  if (!strncmp(last_err, "NOAUTH", 6) || !strncmp(last_err, "WRONGPASS", 9) ||
      !strncmp(last_err, "NOPERM", 6) ||
      strstr(last_err, "invalid password") ||
      strstr(last_err, "without any password"))
    return MP_EACCES;
  if (!strncmp(last_err, "OOM", 3))
    return MP_ENOMEM;
  if (!strncmp(last_err, "LOADING", 7) || !strncmp(last_err, "BUSY", 4))
    return MP_EAGAIN;
  if (!strncmp(last_err, "READONLY", 8))
    return MP_EROFS;
  return MP_EIO;
}

/* ---- connections ----------------------------------------------------------
 */

static struct timeval tv_ms(int ms) {
  struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
  return tv;
}

int mp__rconn_init(mp__rconn_t *cn, const mp__rcfg_t *cfg) {
  memset(cn, 0, sizeof *cn);
  cn->cfg = cfg;
  return -pthread_mutex_init(&cn->mu, NULL);
}

void mp__rconn_fini(mp__rconn_t *cn) {
  if (cn->c)
    redisFree(cn->c);
  cn->c = NULL;
  pthread_mutex_destroy(&cn->mu);
}

/* Send a formatted command with MSG_NOSIGNAL: hiredis writes with write(2),
 * and a server gone would raise SIGPIPE and kill the caller. A failed send
 * marks the context bad (err set) so that the caller drops it. */
static int send_all(redisContext *c, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      int e = w < 0 ? errno : EPIPE;
      c->err = REDIS_ERR_IO;
      snprintf(c->errstr, sizeof c->errstr, "%s", strerror(e));
      return ctx_err(c);
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* One command, one round trip: sent by us, the reply read by hiredis (its
 * output buffer stays empty, so redisGetReply only reads). */
static int raw_cmd(redisContext *c, redisReply **out, int argc,
                   const char **argv, const size_t *lens) {
  char *fmt;
  int len = redisFormatCommandArgv(&fmt, argc, argv, lens);
  if (len < 0)
    return MP_ENOMEM;
  int r = send_all(c, fmt, (size_t)len);
  redisFreeCommand(fmt);
  if (r < 0)
    return r;
  void *rv = NULL;
  if (redisGetReply(c, &rv) != REDIS_OK || !rv)
    return ctx_err(c);
  redisReply *rp = rv;
  if (rp->type == REDIS_REPLY_ERROR) {
    r = reply_err(rp);
    freeReplyObject(rp);
    return r;
  }
  *out = rp;
  return 0;
}

static int do_connect(mp__rconn_t *cn) {
  const mp__rcfg_t *cfg = cn->cfg;
  struct timeval ct = tv_ms(cfg->connect_ms);
  redisContext *c = cfg->path ? redisConnectUnixWithTimeout(cfg->path, ct)
                              : redisConnectWithTimeout(cfg->host, cfg->port,
                                                        ct);
  if (!c || c->err) {
    int r = ctx_err(c);
    if (c)
      redisFree(c);
    return r;
  }
  redisSetTimeout(c, tv_ms(cfg->command_ms));
  int r = 0;
  redisReply *rp = NULL;
  if (cfg->pass) {
    const char *av[3] = {"AUTH", cfg->user ? cfg->user : cfg->pass,
                         cfg->pass};
    size_t lv[3] = {4, strlen(av[1]), strlen(cfg->pass)};
    r = raw_cmd(c, &rp, cfg->user ? 3 : 2, av, lv);
    if (r == MP_EIO)
      r = MP_EACCES;
    if (rp)
      freeReplyObject(rp);
    rp = NULL;
  }
  if (r == 0 && cfg->db) {
    char db[16];
    snprintf(db, sizeof db, "%d", cfg->db);
    const char *av[2] = {"SELECT", db};
    size_t lv[2] = {6, strlen(db)};
    r = raw_cmd(c, &rp, 2, av, lv);
    if (r == MP_EIO)
      r = MP_EINVAL; /* no such database */
    if (rp)
      freeReplyObject(rp);
  }
  if (r < 0) {
    redisFree(c);
    return r;
  }
  cn->c = c;
  return 0;
}

static pthread_mutex_t fork_mu = PTHREAD_MUTEX_INITIALIZER;

/* Lock cn for this thread with a live connection of this process. */
static int conn_take(mp__rconn_t *cn) {
  pid_t me = (pid_t)mp__self_pid(); /* cached, reset at fork */
  pid_t owner = atomic_load_explicit(&cn->pid, memory_order_acquire);
  if (owner != me && owner != 0) {
    /* A forked child: the parent's socket is not ours (its other threads,
     * gone here, may even have held the mutex). Drop both, once. */
    pthread_mutex_lock(&fork_mu);
    if (atomic_load_explicit(&cn->pid, memory_order_acquire) != me) {
      pthread_mutex_init(&cn->mu, NULL);
      if (cn->c) {
        redisFree(cn->c); /* closes our copy of the fd only */
        cn->c = NULL;
      }
      atomic_store_explicit(&cn->pid, me, memory_order_release);
    }
    pthread_mutex_unlock(&fork_mu);
  }
  pthread_mutex_lock(&cn->mu);
  if (owner == 0)
    atomic_store_explicit(&cn->pid, me, memory_order_release);
  if (!cn->c) {
    int r = do_connect(cn);
    if (r < 0) {
      pthread_mutex_unlock(&cn->mu);
      return r;
    }
  }
  return 0;
}

/* After an I/O error the context is useless: the next call connects anew. */
static void conn_drop_if_bad(mp__rconn_t *cn) {
  if (cn->c && cn->c->err) {
    redisFree(cn->c);
    cn->c = NULL;
  }
}

int mp__rcmd(mp__rconn_t *cn, redisReply **out, int extra_ms, int argc,
             const char **argv, const size_t *lens) {
  last_err[0] = '\0'; /* only this command's error reply is matched */
  int r = conn_take(cn);
  if (r < 0)
    return r;
  if (extra_ms)
    redisSetTimeout(cn->c, tv_ms(cn->cfg->command_ms + extra_ms));
  r = raw_cmd(cn->c, out, argc, argv, lens);
  if (extra_ms && !cn->c->err)
    redisSetTimeout(cn->c, tv_ms(cn->cfg->command_ms));
  conn_drop_if_bad(cn);
  pthread_mutex_unlock(&cn->mu);
  return r;
}

static int script_sha(mp__rconn_t *cn, int s, char sha[41]) {
  pthread_mutex_lock(&sha_mu);
  memcpy(sha, shas[s], 41);
  pthread_mutex_unlock(&sha_mu);
  if (sha[0])
    return 0;
  redisReply *rp;
  const char *av[3] = {"SCRIPT", "LOAD", scripts[s]};
  size_t lv[3] = {6, 4, strlen(scripts[s])};
  int r = mp__rcmd(cn, &rp, 0, 3, av, lv);
  if (r < 0)
    return r;
  if (rp->type != REDIS_REPLY_STRING || rp->len != 40) {
    freeReplyObject(rp);
    return MP_EIO;
  }
  memcpy(sha, rp->str, 40);
  sha[40] = '\0';
  freeReplyObject(rp);
  pthread_mutex_lock(&sha_mu);
  memcpy(shas[s], sha, 41);
  pthread_mutex_unlock(&sha_mu);
  return 0;
}

int mp__reval_slots(mp__rconn_t *cn, redisReply **out, int script,
                    int nkeys, int argc, const char **av, size_t *lv) {
  char sha[41], nk[16];
  int r = script_sha(cn, script, sha);
  if (r < 0)
    return r;
  snprintf(nk, sizeof nk, "%d", nkeys);
  av[0] = "EVALSHA";
  lv[0] = 7;
  av[1] = sha;
  lv[1] = 40;
  av[2] = nk;
  lv[2] = strlen(nk);
  r = mp__rcmd(cn, out, 0, argc, av, lv);
  if (r == MP_EIO && !strncmp(last_err, "NOSCRIPT", 8)) {
    /* A restarted or flushed server: send the text (Redis caches it). */
    av[0] = "EVAL";
    lv[0] = 4;
    av[1] = scripts[script];
    lv[1] = strlen(scripts[script]);
    r = mp__rcmd(cn, out, 0, argc, av, lv);
  }
  return r;
}

int mp__reval(mp__rconn_t *cn, redisReply **out, int script, int nkeys,
              int nargs, const char **argv, const size_t *lens) {
  int argc = 3 + nkeys + nargs;
  const char *sav[16];
  size_t slv[16];
  const char **av = argc <= 16 ? sav : malloc((size_t)argc * sizeof *av);
  size_t *lv = argc <= 16 ? slv : malloc((size_t)argc * sizeof *lv);
  int r = av && lv ? 0 : MP_ENOMEM;
  for (int i = 0; r == 0 && i < nkeys + nargs; i++) {
    av[3 + i] = argv[i];
    lv[3 + i] = lens ? lens[i] : strlen(argv[i]);
  }
  if (r == 0)
    r = mp__reval_slots(cn, out, script, nkeys, argc, av, lv);
  if (argc > 16) {
    free(av);
    free(lv);
  }
  return r;
}

void mp__rkey(const mp__rmgr_t *r, char *buf, const char *fmt, ...) {
  size_t n = strlen(r->prefix);
  memcpy(buf, r->prefix, n);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf + n, RKEY_MAX - n, fmt, ap);
  va_end(ap);
}

/* ---- values --------------------------------------------------------------
 */

size_t mp__renc_size(const mp_val_t *v) {
  switch (v->type) {
  case MP_NIL:
  case MP_BOOL:
    return 1;
  case MP_INT:
    return 20; /* at most: "-9223372036854775808" */
  case MP_DOUBLE:
    return 9;
  case MP_STR:
  case MP_BYTES:
    return v->len + 1;
  default: /* references (nested containers): refused before encoding */
    break;
  }
  return 0;
}

size_t mp__renc_to(char *dst, const mp_val_t *v) {
  switch (v->type) {
  case MP_NIL:
    dst[0] = 'n';
    return 1;
  case MP_BOOL:
    dst[0] = v->u.b ? 'T' : 'F';
    return 1;
  case MP_INT: { /* decimal, without snprintf: an update encodes many */
    char t[24];
    size_t k = sizeof t;
    uint64_t u = v->u.i < 0 ? 0 - (uint64_t)v->u.i : (uint64_t)v->u.i;
    do {
      t[--k] = (char)('0' + u % 10);
      u /= 10;
    } while (u);
    if (v->u.i < 0)
      t[--k] = '-';
    memcpy(dst, t + k, sizeof t - k);
    return sizeof t - k;
  }
  case MP_DOUBLE:
    dst[0] = 'd';
    memcpy(dst + 1, &v->u.d, 8);
    return 9;
  case MP_STR:
  case MP_BYTES:
    dst[0] = v->type == MP_STR ? 's' : 'b';
    if (v->len)
      memcpy(dst + 1, v->u.p, v->len);
    return v->len + 1;
  default: /* references: as above */
    break;
  }
  return 0;
}

/* Canonical decimal int64 text: what mp__renc writes and HINCRBY keeps. */
static int dec_int(const char *p, size_t n, int64_t *out) {
  if (n == 0 || n > 20)
    return MP_EIO;
  size_t i = p[0] == '-';
  if (i == n || (p[i] == '0' && n > i + 1) || (i && p[1] == '0'))
    return MP_EIO;
  uint64_t acc = 0, lim = i ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  for (; i < n; i++) {
    if (p[i] < '0' || p[i] > '9')
      return MP_EIO;
    unsigned d = (unsigned)(p[i] - '0');
    if (acc > (lim - d) / 10)
      return MP_EIO;
    acc = acc * 10 + d;
  }
  *out = p[0] == '-' ? (int64_t)(0 - acc) : (int64_t)acc;
  return 0;
}

int mp__rdec(const char *p, size_t n, mp_val_t *out) {
  if (!p || n == 0)
    return MP_EIO;
  mp_val_t v = mp_val_nil();
  switch (p[0]) {
  case 'n':
    if (n != 1)
      return MP_EIO;
    break;
  case 'T':
  case 'F':
    if (n != 1)
      return MP_EIO;
    v = mp_val_bool(p[0] == 'T');
    break;
  case 'd':
    if (n != 9)
      return MP_EIO;
    v.type = MP_DOUBLE;
    memcpy(&v.u.d, p + 1, 8);
    break;
  case 's':
  case 'b':
    v.type = p[0] == 's' ? MP_STR : MP_BYTES;
    v.len = n - 1;
    v.u.p = p + 1;
    return mp__mval_copy(&v, out);
  default: {
    int64_t i;
    if (dec_int(p, n, &i) < 0)
      return MP_EIO;
    v = mp_val_int(i);
    break;
  }
  }
  *out = v;
  return 0;
}

/* ---- addresses -----------------------------------------------------------
 */

static char *pct_dup(const char *s, size_t n) {
  char *o = malloc(n + 1);
  size_t k = 0;
  if (!o)
    return NULL;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '%' && i + 2 < n &&
        isxdigit((unsigned char)s[i + 1]) &&
        isxdigit((unsigned char)s[i + 2])) {
      char h[3] = {s[i + 1], s[i + 2], 0};
      o[k++] = (char)strtol(h, NULL, 16);
      i += 2;
    } else {
      o[k++] = s[i];
    }
  }
  o[k] = '\0';
  return o;
}

static void cfg_free(mp__rcfg_t *c) {
  free(c->host);
  free(c->path);
  free(c->user);
  free(c->pass);
  memset(c, 0, sizeof *c);
}

static int parse_uint(const char *s, size_t n, long max, long *out) {
  if (n == 0 || n > 9)
    return MP_EINVAL;
  long v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return MP_EINVAL;
    v = v * 10 + (s[i] - '0');
  }
  if (v > max)
    return MP_EINVAL;
  *out = v;
  return 0;
}

/* [[user]:password@] */
static int parse_userinfo(const char **s, const char *end, mp__rcfg_t *c) {
  const char *at = memchr(*s, '@', (size_t)(end - *s));
  if (!at)
    return 0;
  const char *colon = memchr(*s, ':', (size_t)(at - *s));
  if (!colon) /* "password@" alone is ambiguous: require ":password@" */
    return MP_EINVAL;
  if (colon > *s && !(c->user = pct_dup(*s, (size_t)(colon - *s))))
    return MP_ENOMEM;
  if (!(c->pass = pct_dup(colon + 1, (size_t)(at - colon - 1))))
    return MP_ENOMEM;
  *s = at + 1;
  return 0;
}

static int parse_address(const char *a, const mp_manager_opts_t *o,
                         mp__rcfg_t *c) {
  memset(c, 0, sizeof *c);
  c->port = 6379;
  c->connect_ms = o && o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 2000;
  c->command_ms =
      o && o->command_timeout_ms > 0 ? o->command_timeout_ms : 10000;
  if ((o && (o->connect_timeout_ms < 0 || o->command_timeout_ms < 0)) ||
      strlen(a) > 4096)
    return MP_EINVAL;
  const char *end = a + strlen(a);
  long v;
  int r;
  if (!strncmp(a, "unix://", 7)) {
    const char *s = a + 7, *q = strchr(s, '?');
    const char *pend = q ? q : end;
    if ((r = parse_userinfo(&s, pend, c)) < 0)
      goto fail;
    if (*s != '/' || pend - s < 2) {
      r = MP_EINVAL;
      goto fail;
    }
    if (!(c->path = pct_dup(s, (size_t)(pend - s)))) {
      r = MP_ENOMEM;
      goto fail;
    }
    if (q) {
      if (strncmp(q, "?db=", 4) ||
          (r = parse_uint(q + 4, (size_t)(end - q - 4), 1 << 20, &v)) < 0) {
        r = MP_EINVAL;
        goto fail;
      }
      c->db = (int)v;
    }
    return 0;
  }
  if (strncmp(a, "redis://", 8)) {
    r = MP_EINVAL;
    goto fail;
  }
  const char *s = a + 8, *slash = strchr(s, '/');
  const char *hend = slash ? slash : end;
  if ((r = parse_userinfo(&s, hend, c)) < 0)
    goto fail;
  const char *colon = memchr(s, ':', (size_t)(hend - s));
  const char *host_end = colon ? colon : hend;
  if (host_end == s) {
    r = MP_EINVAL;
    goto fail;
  }
  if (colon) {
    if ((r = parse_uint(colon + 1, (size_t)(hend - colon - 1), 65535, &v)) <
            0 ||
        v == 0) {
      r = MP_EINVAL;
      goto fail;
    }
    c->port = (int)v;
  }
  if (!(c->host = pct_dup(s, (size_t)(host_end - s)))) {
    r = MP_ENOMEM;
    goto fail;
  }
  if (slash && slash + 1 < end) {
    if ((r = parse_uint(slash + 1, (size_t)(end - slash - 1), 1 << 20, &v)) <
        0)
      goto fail;
    c->db = (int)v;
  }
  return 0;
fail:
  cfg_free(c);
  return r;
}

/* ---- manager -------------------------------------------------------------
 */

static int check_rname(const char *name) {
  size_t n = strlen(name);
  if (n < 2 || name[0] != '/')
    return MP_EINVAL;
  if (n > 201)
    return MP_ENAMETOOLONG;
  for (size_t i = 1; i < n; i++)
    if (!isalnum((unsigned char)name[i]) && !strchr("_.-", name[i]))
      return MP_EINVAL;
  return 0;
}

#define META_VALUE "mproc-manager 1"

static int rmgr_new(mp_manager_t *m, const char *name,
                    const mp_manager_opts_t *opts, mp__rmgr_t **out) {
  char rnd[32];
  if (!name) {
    uint64_t x = 0;
    if (getrandom(&x, sizeof x, 0) != (ssize_t)sizeof x)
      x = mp__now_ns() ^ ((uint64_t)getpid() << 32);
    snprintf(rnd, sizeof rnd, "/mp-%016" PRIx64, x);
    name = rnd;
  }
  int r = check_rname(name);
  if (r < 0)
    return r;
  mp__rmgr_t *R = calloc(1, sizeof *R);
  if (!R)
    return MP_ENOMEM;
  if ((r = parse_address(opts->address, opts, &R->cfg)) < 0) {
    free(R);
    return r;
  }
  snprintf(R->name, sizeof R->name, "%s", name);
  snprintf(R->prefix, sizeof R->prefix, "mproc:%s:", name + 1);
  if ((r = mp__rconn_init(&R->conn, &R->cfg)) < 0) {
    cfg_free(&R->cfg);
    free(R);
    return r;
  }
  m->redis = R;
  *out = R;
  return 0;
}

static void rmgr_free(mp_manager_t *m) {
  mp__rmgr_t *R = m->redis;
  mp__rconn_fini(&R->conn);
  cfg_free(&R->cfg);
  free(R);
  m->redis = NULL;
}

int mp__rmgr_create(mp_manager_t *m, const mp_manager_opts_t *opts) {
  mp__rmgr_t *R;
  int r = rmgr_new(m, opts->name, opts, &R);
  if (r < 0)
    return r;
  char key[RKEY_MAX];
  mp__rkey(R, key, "meta");
  const char *av[4] = {"SET", key, META_VALUE, "NX"};
  redisReply *rp;
  if ((r = mp__rcmd(&R->conn, &rp, 0, 4, av, NULL)) == 0) {
    if (rp->type == REDIS_REPLY_NIL)
      r = MP_EEXIST;
    freeReplyObject(rp);
  }
  if (r < 0) {
    rmgr_free(m);
    return r;
  }
  R->creator = getpid();
  R->keep = (opts->flags & MP_MANAGER_KEEP) != 0;
  return 0;
}

int mp__rmgr_open(mp_manager_t *m, const char *name,
                  const mp_manager_opts_t *opts) {
  mp__rmgr_t *R;
  int r = rmgr_new(m, name, opts, &R);
  if (r < 0)
    return r;
  char key[RKEY_MAX];
  mp__rkey(R, key, "meta");
  const char *av[2] = {"GET", key};
  redisReply *rp;
  if ((r = mp__rcmd(&R->conn, &rp, 0, 2, av, NULL)) == 0) {
    if (rp->type == REDIS_REPLY_NIL)
      r = MP_ENOENT;
    else if (rp->type != REDIS_REPLY_STRING || rp->len != strlen(META_VALUE) ||
             memcmp(rp->str, META_VALUE, rp->len))
      r = MP_EINVAL;
    freeReplyObject(rp);
  }
  if (r < 0)
    rmgr_free(m);
  return r;
}

/* Delete every key of the manager (SCAN + UNLINK; meta last). */
static void delete_keys(mp__rmgr_t *R) {
  char pat[RKEY_MAX], cursor[32] = "0";
  mp__rkey(R, pat, "*");
  for (int rounds = 0; rounds < 1000000; rounds++) {
    const char *av[6] = {"SCAN", cursor, "MATCH", pat, "COUNT", "1000"};
    redisReply *rp;
    if (mp__rcmd(&R->conn, &rp, 0, 6, av, NULL) < 0)
      return;
    if (rp->type != REDIS_REPLY_ARRAY || rp->elements != 2 ||
        rp->element[0]->type != REDIS_REPLY_STRING ||
        rp->element[0]->len >= sizeof cursor ||
        rp->element[1]->type != REDIS_REPLY_ARRAY) {
      freeReplyObject(rp);
      return;
    }
    memcpy(cursor, rp->element[0]->str, rp->element[0]->len);
    cursor[rp->element[0]->len] = '\0';
    redisReply *ks = rp->element[1];
    if (ks->elements) {
      const char **kv = malloc((ks->elements + 1) * sizeof *kv);
      size_t *kl = malloc((ks->elements + 1) * sizeof *kl);
      if (kv && kl) {
        kv[0] = "UNLINK";
        kl[0] = 6;
        for (size_t i = 0; i < ks->elements; i++) {
          kv[i + 1] = ks->element[i]->str ? ks->element[i]->str : "";
          kl[i + 1] = ks->element[i]->str ? ks->element[i]->len : 0;
        }
        redisReply *dr;
        if (mp__rcmd(&R->conn, &dr, 0, (int)ks->elements + 1, kv, kl) == 0)
          freeReplyObject(dr);
      }
      free(kv);
      free(kl);
    }
    freeReplyObject(rp);
    if (!strcmp(cursor, "0"))
      return;
  }
}

const char *mp__rmgr_name(const mp_manager_t *m) {
  return m->redis->name;
}

void mp__rmgr_destroy(mp_manager_t *m) {
  mp__rmgr_t *R = m->redis;
  if (R->creator && R->creator == getpid() && !R->keep)
    delete_keys(R);
  rmgr_free(m);
}

/* ---- directory -----------------------------------------------------------
 */

int mp__robj_create(mp__rmgr_t *R, uint32_t kind, const char *name,
                    const char *const *meta, int nmeta, uint32_t *id) {
  int r = mp__mgr_check_name(name);
  if (r < 0)
    return r;
  char dir[RKEY_MAX], kinds[RKEY_MAX], nobj[RKEY_MAX], obj[RKEY_MAX], ks[16];
  mp__rkey(R, dir, "dir");
  mp__rkey(R, kinds, "kinds");
  mp__rkey(R, nobj, "nobj");
  mp__rkey(R, obj, "o:");
  snprintf(ks, sizeof ks, "%u", kind);
  const char *av[12] = {dir, kinds, nobj, ks, name ? name : "", obj};
  if (nmeta > 6)
    return MP_EINVAL;
  for (int i = 0; i < nmeta; i++)
    av[6 + i] = meta[i];
  redisReply *rp;
  if ((r = mp__reval(&R->conn, &rp, RS_OBJ_CREATE, 3, 3 + nmeta, av, NULL)) <
      0)
    return r;
  if (rp->type != REDIS_REPLY_INTEGER)
    r = MP_EIO;
  else if (rp->integer == -1)
    r = MP_EEXIST;
  else if (rp->integer < 0)
    r = MP_ENOMEM;
  else
    *id = (uint32_t)rp->integer;
  freeReplyObject(rp);
  return r;
}

/* A reply holding a decimal uint32. */
static int reply_u32(const redisReply *rp, uint32_t *out) {
  long long v;
  if (rp->type == REDIS_REPLY_INTEGER)
    v = rp->integer;
  else if (rp->type == REDIS_REPLY_STRING && rp->len > 0 && rp->len < 11) {
    char b[12];
    memcpy(b, rp->str, rp->len);
    b[rp->len] = '\0';
    char *e;
    v = strtoll(b, &e, 10);
    if (*e)
      return MP_EIO;
  } else {
    return MP_EIO;
  }
  if (v < 0 || v > UINT32_MAX)
    return MP_EIO;
  *out = (uint32_t)v;
  return 0;
}

int mp__robj_find(mp__rmgr_t *R, uint32_t kind, const char *name, bool by_id,
                  uint32_t id, uint32_t *out_id) {
  char key[RKEY_MAX], ids[16];
  redisReply *rp;
  int r;
  if (!by_id) {
    if (!name)
      return MP_EINVAL;
    if ((r = mp__mgr_check_name(name)) < 0)
      return r;
    mp__rkey(R, key, "dir");
    const char *av[3] = {"HGET", key, name};
    if ((r = mp__rcmd(&R->conn, &rp, 0, 3, av, NULL)) < 0)
      return r;
    if (rp->type == REDIS_REPLY_NIL)
      r = MP_ENOENT;
    else
      r = reply_u32(rp, &id);
    freeReplyObject(rp);
    if (r < 0)
      return r;
  }
  mp__rkey(R, key, "kinds");
  snprintf(ids, sizeof ids, "%u", id);
  const char *av[3] = {"HGET", key, ids};
  if ((r = mp__rcmd(&R->conn, &rp, 0, 3, av, NULL)) < 0)
    return r;
  uint32_t k = 0;
  if (rp->type == REDIS_REPLY_NIL)
    r = MP_ENOENT;
  else if ((r = reply_u32(rp, &k)) == 0 && k != kind)
    r = MP_EINVAL;
  freeReplyObject(rp);
  if (r == 0)
    *out_id = id;
  return r;
}

int mp__rhandle_make(mp_manager_t *m, uint32_t kind, const char *name, int how,
                     uint32_t id, mgr_handle_t **out) {
  mgr_handle_t *h = calloc(1, sizeof *h);
  if (!h)
    return MP_ENOMEM;
  int r = how == MGR_CREATE
              ? mp__robj_create(m->redis, kind, name, NULL, 0, &id)
              : mp__robj_find(m->redis, kind, name, how == MGR_BY_ID, id, &id);
  if (r < 0) {
    free(h);
    return r;
  }
  h->m = m;
  h->id = id;
  h->kind = kind;
  *out = h;
  return 0;
}

#else /* !MP_HAVE_HIREDIS */

int mp__rmgr_create(mp_manager_t *m, const mp_manager_opts_t *opts) {
  return MP_ENOTSUP;
}
int mp__rmgr_open(mp_manager_t *m, const char *name,
                  const mp_manager_opts_t *opts) {
  return MP_ENOTSUP;
}
void mp__rmgr_destroy(mp_manager_t *m) {}
const char *mp__rmgr_name(const mp_manager_t *m) {
  return "";
}
int mp__rhandle_make(mp_manager_t *m, uint32_t kind, const char *name, int how,
                     uint32_t id, mgr_handle_t **out) {
  return MP_ENOTSUP;
}

#endif
