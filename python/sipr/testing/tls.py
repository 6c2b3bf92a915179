"""A throwaway certificate authority for TLS tests: a CA and the
certificates it issues, written to a temporary directory, with the SSL
contexts a test client or server needs. Needs `cryptography`
(`pip install sipr[testing]`)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import tempfile
from pathlib import Path


class TestCA:
    """`ca = TestCA(); cert, key = ca.issue("127.0.0.1")`: PEM files in
    `ca.directory`, valid for a day, signed by `ca.cert`."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: str | Path | None = None, name: str = "sipr test CA") -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self._tmp = None
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="sipr-ca-")
            directory = self._tmp.name
        self.directory = Path(directory)
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self._subject = subject
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert = self._write("ca.pem", self._cert)

    def _write(self, name: str, cert: object, key: object = None) -> Path:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        path = self.directory / name
        if key is not None:
            path.write_bytes(
                key.private_bytes(  # type: ignore[attr-defined]
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        else:
            assert isinstance(cert, x509.Certificate)
            path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def issue(self, *names: str, client: bool = False) -> tuple[Path, Path]:
        """A certificate for `names` (IP literals or DNS names): (cert, key) paths."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        names = names or ("127.0.0.1",)
        key = ec.generate_private_key(ec.SECP256R1())
        alt: list[x509.GeneralName] = []
        for n in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                alt.append(x509.DNSName(n))
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self._subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        stem = names[0].replace(":", "_").replace("*", "star")
        cert_path = self._write(f"{stem}.pem", cert)
        key_path = self._write(f"{stem}.key", None, key)
        return cert_path, key_path

    def client_context(self) -> ssl.SSLContext:
        """Verifies servers this CA issued for."""
        return ssl.create_default_context(cafile=str(self.cert))

    def server_context(self, *names: str) -> ssl.SSLContext:
        """Serves a certificate this CA issues for `names` now."""
        cert, key = self.issue(*names)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        return ctx

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
