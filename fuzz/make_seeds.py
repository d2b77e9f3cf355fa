#!/usr/bin/env python3
"""Write the small seed corpora of fuzz/corpus/ that are plain byte layouts
(pipe streams, pool result rings). The queue and manager seeds are images of
real objects: each fuzzer writes one when run with MP_FUZZ_SEED=<path>."""
import os
import struct
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(kind, name, data):
    os.makedirs(os.path.join(root, kind), exist_ok=True)
    with open(os.path.join(root, kind, name), "wb") as f:
        f.write(data)


def frame(payload):
    return struct.pack("<Q", len(payload)) + payload


# pipe: first byte = where the non-blocking run splits the stream (and
# bit 0: recv_into instead of recv), then the stream.
put("pipe", "small", b"\x80" + frame(b"hello") + frame(b"") + frame(b"x" * 100))
put("pipe", "large", b"\x41" + frame(b"y" * 70000) + frame(b"after"))
put("pipe", "too_big", b"\x10" + frame(b"z" * 66000) + frame(b"next"))
put("pipe", "truncated", b"\x33" + struct.pack("<Q", 5000) + b"abc")
put("pipe", "fd_header", b"\x01" + struct.pack("<Q", 1 << 63))

# pool_ring: head, tail, n, left, result_size, kind; then records of 64
# bytes: size, kind, id, seq, start, count, flags, status, fail_index, len,
# pad, ns.
def rrec(size, kind, start, count, length, flags=0, status=0, fail=0):
    return struct.pack("<IIQQQIIiIIIQ", size, kind, 0x1000, 1, start, count,
                       flags, status, fail, length, 0, 0)


recs = rrec(128, 4, 0, 4, 32) + b"r" * 64 + rrec(64, 1, 0, 0, 0) + rrec(64, 4, 4, 0, 0)
put("pool_ring", "map", struct.pack("<QQIIII", len(recs), 0, 8, 8, 8, 2) + recs)
recs = rrec(128, 4, 2, 2, 24) + b"s" * 64
put("pool_ring", "imap", struct.pack("<QQIIII", len(recs), 0, 8, 0, 8, 3) + recs)
recs = rrec(192, 4, 0, 1, 100, flags=1) + b"a" * 128 + rrec(64, 4, 0, 1, 0)
put("pool_ring", "apply", struct.pack("<QQIIII", len(recs), 0, 1, 1, 0, 1) + recs)
sys.exit(0)
