"""Redaction: values of configured field names are replaced by a keyed hash before they
leave the process (tokens, passwords, card UIDs, idTags).

    hash_value(key, value) = "h1:" + hex(HMAC-SHA256(key, canonical bytes of value)[:16])

canonical bytes: UTF-8 for str, the bytes themselves for bytes, otherwise the msgpack
encoding with sorted map keys. The same value and key give the same text on CPython and
MicroPython, so the collector can link two records about the same card without seeing it.

Portable core: runs unchanged on CPython and MicroPython.
"""

import binascii

from firmware_shim import umsgpack
from firmware_shim.compat import hmac_sha256

__all__ = ["Redactor", "hash_value", "HASH_PREFIX"]

HASH_PREFIX = "h1:"
_MIN_KEY_BYTES = 16


def hash_value(key, value):
    if isinstance(value, str):
        data = value.encode("utf-8")
    elif isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    else:
        data = umsgpack.dumps(value, True)
    digest = hmac_sha256(key, data)
    return HASH_PREFIX + binascii.hexlify(digest[:16]).decode()


def _norm(name):
    """Field names match whatever their spelling: idTag, id_tag, ID-TAG are one name.

    A redaction that misses a field is a leak, so matching is deliberately generous: the
    OCPP guard hands the rules snake_case names (id_tag) while a device maker may have
    configured the wire's camelCase (idTag)."""
    return name.lower().replace("_", "").replace("-", "")


_MAX_DEPTH = 32
_TOO_DEEP = HASH_PREFIX + "too-deep"  # deeper than this is hashed away wholesale (fail closed)
_MAX_NAME_CACHE = 512


class Redactor:
    """Replace the values of `fields` (at any depth of maps) by hashes; names match
    regardless of case, underscores and hyphens."""

    def __init__(self, fields=(), key=None):
        fields = tuple(fields)
        for name in fields:
            if not isinstance(name, str) or not name:
                raise ValueError("redact_fields must hold non-empty str names, got %r" % (name,))
        if fields:
            if not isinstance(key, (bytes, bytearray)) or len(key) < _MIN_KEY_BYTES:
                raise ValueError("redact_key must be bytes of at least %d bytes when redact_fields is set" % _MIN_KEY_BYTES)
        self.fields = set(_norm(name) for name in fields)
        self._key = bytes(key) if key else b""
        self._match = {}  # raw key -> bool, bounded

    def matches(self, name):
        hit = self._match.get(name)
        if hit is None:
            hit = isinstance(name, str) and _norm(name) in self.fields
            if len(self._match) < _MAX_NAME_CACHE:
                self._match[name] = hit
        return hit

    def __bool__(self):
        return bool(self.fields)

    def apply(self, obj):
        """A copy of `obj` with matching map values hashed (`obj` is not modified)."""
        if not self.fields:
            return obj
        return self._walk(obj, 0)

    def _walk(self, obj, depth):
        if depth > _MAX_DEPTH:
            return _TOO_DEEP if isinstance(obj, (dict, list, tuple)) else obj
        if isinstance(obj, dict):
            out = {}
            for k in obj:
                v = obj[k]
                if v is not None and self.matches(k):
                    try:
                        out[k] = hash_value(self._key, v)
                    except umsgpack.PackError:
                        out[k] = HASH_PREFIX + "unencodable"
                else:
                    out[k] = self._walk(v, depth + 1)
            return out
        if isinstance(obj, (list, tuple)):
            return [self._walk(item, depth + 1) for item in obj]
        return obj
