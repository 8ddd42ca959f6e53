"""Helpers shared by the interop test files (the broker fixture lives in conftest.py)."""

import collections
import os


def payloads(tag, count=20):
    """Distinct bodies that exercise framing: short text, every byte value
    (newlines and NULs included), an incompressible body and a compressible
    one, both larger than a snappy chunk (64 KiB) and than one 16 KiB read."""
    bodies = [("%s-%03d" % (tag, i)).encode() for i in range(count)]
    bodies.append(tag.encode() + bytes(range(256)))
    bodies.append(tag.encode() + os.urandom(200 * 1024))
    bodies.append(tag.encode() + b"abcdefgh" * (40 * 1024))
    return bodies


def assert_same_bodies(received, sent):
    """Every body sent arrived exactly once (in any order)."""
    got, want = collections.Counter(received), collections.Counter(sent)
    missing = want - got
    extra = got - want
    assert not missing and not extra, "missing %d bodies %s, unexpected %d bodies %s" % (
        sum(missing.values()), [_short(b) for b in missing], sum(extra.values()), [_short(b) for b in extra])


def _short(body):
    return body[:40] + (b"...(%d bytes)" % len(body) if len(body) > 40 else b"")
