"""TLS test material: a throw-away CA and certificates (made with
`cryptography` into a test's tmp_path) and SIP peers speaking over Python's
`ssl`: a client connection that frames SIP messages, and a UAS thread that
answers INVITE 200 / ACK / BYE 200 on every connection it accepts."""

from __future__ import annotations

import datetime
import ipaddress
import os
import queue
import socket
import ssl
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MAX_MESSAGE = 65_535
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


@dataclass
class CertFiles:
    cert: Path
    key: Path


class CertAuthority:
    """A CA whose certificates are written as PEM files under `directory`."""

    def __init__(self, directory: Path, name: str = "sipr test CA") -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(CA_KEY_USAGE, critical=True)
            .sign(self.key, hashes.SHA256())
        )
        safe = name.replace(" ", "_")
        self.pem = directory / f"{safe}.pem"
        self.pem.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        common_name: str,
        *,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = ("127.0.0.1",),
        client: bool = False,
        stem: str | None = None,
    ) -> CertFiles:
        """A leaf certificate for `common_name` (server, or client when asked)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        stem = stem or common_name.replace(" ", "_")
        files = CertFiles(self.directory / f"{stem}.crt", self.directory / f"{stem}.key")
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return files


def client_context(
    ca: Path, cert: CertFiles | None = None, *, max_version: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    """Verifies the server against `ca` (by IP, no host name check)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(ca)
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    if max_version is not None:
        # Let this OpenSSL offer old versions, so the refusal is the server's.
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            # Old protocol versions are deprecated: offering one is the point.
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            ctx.maximum_version = max_version
    return ctx


def split_message(buf: bytearray) -> bytes | None:
    """Takes one whole SIP message off the front of a stream buffer."""
    while buf[:2] == b"\r\n":
        del buf[:2]
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    length = 0
    for line in bytes(buf[:end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            length = int(value.strip())
    total = end + 4 + length
    if len(buf) < total:
        return None
    msg = bytes(buf[:total])
    del buf[:total]
    return msg


class SipConnection:
    """A client TLS (or TCP) connection reading whole SIP messages."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        # The peer closed the connection (or it failed): nothing more to read.
        self.closed = False

    @classmethod
    def open(
        cls,
        addr: tuple[str, int],
        ctx: ssl.SSLContext | None,
        server_hostname: str | None = None,
        timeout: float = 5.0,
    ) -> SipConnection:
        raw = socket.create_connection(addr, timeout=timeout)
        if ctx is None:
            return cls(raw)
        try:
            return cls(ctx.wrap_socket(raw, server_hostname=server_hostname))
        except Exception:
            raw.close()
            raise

    @property
    def local_port(self) -> int:
        return self.sock.getsockname()[1]

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, timeout: float = 5.0) -> bytes | None:
        """The next message, or None on timeout or a closed connection."""
        self.sock.settimeout(timeout)
        while True:
            msg = split_message(self.buf)
            if msg is not None:
                return msg
            try:
                chunk = self.sock.recv(MAX_MESSAGE)
            except TimeoutError:
                return None
            except (ssl.SSLError, OSError):
                chunk = b""
            if not chunk:
                self.closed = True
                return None
            self.buf += chunk

    def recv_final(self, timeout: float = 5.0) -> bytes | None:
        """Skips provisional responses; the first final one, or None."""
        while True:
            msg = self.recv(timeout)
            if msg is None or not msg.startswith(b"SIP/2.0 1"):
                return msg

    def close(self) -> None:
        self.sock.close()


def headers_of(msg: bytes) -> list[tuple[str, str]]:
    lines = msg.split(b"\r\n\r\n", 1)[0].decode(errors="replace").split("\r\n")[1:]
    return [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines)]


def response_to(request: bytes, status: int, reason: str, extra: str = "") -> bytes:
    """A response copying Via, From, To (tagged), Call-ID, CSeq, Record-Route."""
    keep = {"via", "v", "from", "f", "to", "t", "call-id", "i", "cseq", "record-route"}
    lines = [f"SIP/2.0 {status} {reason}"]
    for name, value in headers_of(request):
        if name.lower() not in keep:
            continue
        if name.lower() in ("to", "t") and ";tag=" not in value:
            value += ";tag=uas" + os.urandom(3).hex()
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n" + extra + "Content-Length: 0\r\n\r\n").encode()


@dataclass
class UasLog:
    """What a TlsUas received, per method, with the raw INVITEs."""

    methods: list[str] = field(default_factory=list)
    invites: list[bytes] = field(default_factory=list)
    responses: queue.Queue[bytes] = field(default_factory=queue.Queue)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, method: str) -> int:
        with self.lock:
            return self.methods.count(method)


def answer_requests(
    conn: SipConnection, log: UasLog, contact: str, stopping: threading.Event
) -> None:
    """Answers every request on `conn` 200 (INVITE with `contact`), ACK
    excepted, until `stopping` or the connection closes; responses go to
    `log.responses`."""
    while not stopping.is_set():
        msg = conn.recv(timeout=0.5)
        if msg is None:
            if conn.closed:
                return
            continue
        if msg.startswith(b"SIP/2.0 "):
            log.responses.put(msg)
            continue
        method = msg.split(b" ", 1)[0].decode()
        with log.lock:
            log.methods.append(method)
            if method == "INVITE":
                log.invites.append(msg)
        if method == "ACK":
            continue
        extra = f"Contact: {contact}\r\n" if method == "INVITE" else ""
        try:
            conn.send(response_to(msg, 200, "OK", extra))
        except OSError:
            return


class TlsClientUa:
    """A UA with no listener of its own: it connects to the proxy over TLS,
    and answers what arrives over that connection (as `answer_requests`)."""

    def __init__(self, addr: tuple[str, int], ctx: ssl.SSLContext, contact: str) -> None:
        self.conn = SipConnection.open(addr, ctx)
        self.log = UasLog()
        self.stopping = threading.Event()
        self.thread = threading.Thread(
            target=answer_requests, args=(self.conn, self.log, contact, self.stopping), daemon=True
        )
        self.thread.start()

    def request(self, data: bytes, timeout: float = 5.0) -> bytes | None:
        """Sends a request; its final response, or None."""
        self.conn.send(data)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                resp = self.log.responses.get(timeout=left)
            except queue.Empty:
                return None
            if not resp.startswith(b"SIP/2.0 1"):
                return resp
        return None

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.conn.close()


class TlsUas:
    """A UAS listening on TLS 127.0.0.1:port: 200 to INVITE and BYE (and
    anything else but ACK), on the connection the request came in on."""

    def __init__(self, cert: CertFiles, ctx: ssl.SSLContext | None = None) -> None:
        if ctx is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(cert.cert, cert.key)
        self.ctx = ctx
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.log = UasLog()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.conns: list[socket.socket] = []
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self.threads.append(accept)

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(raw,), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(5.0)
        try:
            sock = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        self.conns.append(sock)
        contact = f"<sip:uas@127.0.0.1:{self.port};transport=tls>"
        answer_requests(SipConnection(sock), self.log, contact, self.stopping)

    def stop(self) -> None:
        self.stopping.set()
        self.listener.close()
        for t in self.threads:
            t.join(timeout=5)
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
