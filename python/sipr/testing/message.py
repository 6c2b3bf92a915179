"""SIP messages as the test user agents see them: what arrived on the wire,
parsed just enough to assert on, and how they build what they send.

Deliberately small and independent of the Rust parser: a test that checks
the core's output with the core's own parser would not catch the core's
mistakes."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

#: RFC 3261 §7.3.3 compact forms, to their long names.
COMPACT = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "r": "refer-to",
    "o": "event",
}
_TAG = re.compile(r";\s*tag=([^;>\s,]+)", re.IGNORECASE)
_URI_IN_BRACKETS = re.compile(r"<([^>]*)>")


def new_token(prefix: str = "") -> str:
    return prefix + os.urandom(6).hex()


def new_branch() -> str:
    return "z9hG4bK" + os.urandom(8).hex()


def _canonical(name: str) -> str:
    low = name.strip().lower()
    return COMPACT.get(low, low)


@dataclass
class Message:
    """One SIP request or response: `status` is None for a request,
    `method` is the request's method (or the CSeq method of a response)."""

    first_line: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    raw: bytes = b""
    #: (transport, host, port) it came from or went to.
    peer: tuple[str, str, int] | None = field(default=None, compare=False)

    # -- reading ----------------------------------------------------------
    @property
    def is_request(self) -> bool:
        return not self.first_line.startswith("SIP/2.0 ")

    @property
    def status(self) -> int | None:
        if self.is_request:
            return None
        return int(self.first_line.split(" ", 2)[1])

    @property
    def reason(self) -> str:
        return "" if self.is_request else self.first_line.split(" ", 2)[2]

    @property
    def method(self) -> str:
        if self.is_request:
            return self.first_line.split(" ", 1)[0]
        return self.cseq[1]

    @property
    def uri(self) -> str:
        """The Request-URI of a request."""
        return self.first_line.split(" ")[1] if self.is_request else ""

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of header `name` (compact forms understood)."""
        want = _canonical(name)
        for key, value in self.headers:
            if _canonical(key) == want:
                return value
        return default

    def __getitem__(self, name: str) -> str:
        value = self.header(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: str) -> bool:
        return self.header(name) is not None

    def header_all(self, name: str) -> list[str]:
        """Every value of `name`, comma-separated lists split (except the
        headers whose values may hold commas: dates, auth)."""
        want = _canonical(name)
        out: list[str] = []
        for key, value in self.headers:
            if _canonical(key) != want:
                continue
            if want in ("www-authenticate", "proxy-authenticate", "authorization", "date"):
                out.append(value)
            else:
                out.extend(part.strip() for part in _split_commas(value) if part.strip())
        return out

    @property
    def call_id(self) -> str:
        return self["Call-ID"]

    @property
    def cseq(self) -> tuple[int, str]:
        number, method = self["CSeq"].split()
        return int(number), method

    @property
    def from_tag(self) -> str | None:
        return tag_of(self["From"])

    @property
    def to_tag(self) -> str | None:
        return tag_of(self["To"])

    @property
    def vias(self) -> list[str]:
        return self.header_all("Via")

    @property
    def branch(self) -> str | None:
        vias = self.vias
        if not vias:
            return None
        m = re.search(r";\s*branch=([^;,\s]+)", vias[0], re.IGNORECASE)
        return m.group(1) if m else None

    @property
    def contact_uri(self) -> str | None:
        contact = self.header("Contact")
        return uri_of(contact) if contact else None

    def __str__(self) -> str:
        return self.raw.decode(errors="replace") if self.raw else self.first_line

    # -- writing ----------------------------------------------------------
    def to_bytes(self) -> bytes:
        lines = [self.first_line]
        lines += [f"{k}: {v}" for k, v in self.headers if _canonical(k) != "content-length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def _split_commas(value: str) -> list[str]:
    """Splits a header value at commas outside <...> and quotes."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(value):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth -= 1
        elif ch == "," and depth == 0 and not quoted:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return parts


def tag_of(address: str) -> str | None:
    """The tag parameter of a From/To value (outside the <uri>)."""
    outside = _URI_IN_BRACKETS.sub("", address)
    m = _TAG.search(outside)
    return m.group(1) if m else None


def uri_of(address: str) -> str:
    """The URI of a name-addr (`"Bob" <sip:bob@h>;tag=x`) or addr-spec."""
    m = _URI_IN_BRACKETS.search(address)
    if m:
        return m.group(1)
    return address.split(";", 1)[0].strip()


def parse(data: bytes, peer: tuple[str, str, int] | None = None) -> Message:
    """One complete message (head and body); raises ValueError if it is none."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("no end of headers")
    lines = head.decode("utf-8", errors="replace").split("\r\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # folded continuation
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError(f"bad header line {line!r}")
        headers.append((name.strip(), value.strip()))
    return Message(lines[0], headers, body, data, peer)


def split_stream(buffer: bytearray) -> list[bytes]:
    """Takes the complete messages off the front of a stream buffer
    (Content-Length framing); CRLF keep-alives are dropped."""
    out: list[bytes] = []
    while True:
        while buffer[:2] == b"\r\n":
            del buffer[:2]
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return out
        length = 0
        for line in bytes(buffer[:end]).split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if _canonical(name.decode(errors="replace")) == "content-length":
                length = int(value.strip() or b"0")
        total = end + 4 + length
        if len(buffer) < total:
            return out
        out.append(bytes(buffer[:total]))
        del buffer[:total]
