"""Bencode (BitTorrent BEP 3), the encoding of rtpengine's ng protocol:
strings are `LEN:bytes`, integers `iNe`, lists `l...e`, dictionaries
`d...e` with sorted byte-string keys. Decoding is bounded (depth, size)
and raises ValueError on anything malformed."""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 32


def encode(value: Any) -> bytes:
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Any, out: list[bytes]) -> None:
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, str):
        _encode(value.encode(), out)
    elif isinstance(value, (list, tuple)):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        keys = {(k.encode() if isinstance(k, str) else bytes(k)): v for k, v in value.items()}
        for k in sorted(keys):
            _encode(k, out)
            _encode(keys[k], out)
        out.append(b"e")
    else:
        raise TypeError(f"bencode: cannot encode {type(value).__name__}")


def decode(data: bytes) -> Any:
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise ValueError(f"bencode: {len(data) - end} trailing bytes")
    return value


def _decode(data: bytes, i: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise ValueError("bencode: nested too deep")
    if i >= len(data):
        raise ValueError("bencode: truncated")
    c = data[i : i + 1]
    if c == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1 : end]), end + 1
    if c == b"l":
        i += 1
        items = []
        while data[i : i + 1] != b"e":
            item, i = _decode(data, i, depth + 1)
            items.append(item)
        return items, i + 1
    if c == b"d":
        i += 1
        d: dict[bytes, Any] = {}
        while data[i : i + 1] != b"e":
            key, i = _decode(data, i, depth + 1)
            if not isinstance(key, bytes):
                raise ValueError("bencode: dictionary key is not a string")
            d[key], i = _decode(data, i, depth + 1)
        return d, i + 1
    if c.isdigit():
        colon = data.index(b":", i)
        n = int(data[i:colon])
        start = colon + 1
        if n < 0 or start + n > len(data):
            raise ValueError("bencode: string runs past the end")
        return data[start : start + n], start + n
    raise ValueError(f"bencode: unexpected byte {c!r} at {i}")
