"""TLS for the local TorchServe: the certificate and key it serves, and the client context that
verifies them.

With `serve.tls=true` and no `serve.tls_cert`/`serve.tls_key`, a self-signed certificate for
127.0.0.1 and localhost is generated into the runtime directory (key 0600) and kept across
restarts; forgeml's clients trust exactly that certificate.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

from forgeml.errors import ForgeError
from forgeml.io import write_private, write_text

SELF_SIGNED_DAYS = 365
SELF_SIGNED_NAMES = ("localhost",)
SELF_SIGNED_ADDRESSES = ("127.0.0.1", "::1")


def certificate_pair(serve, runtime: Path) -> tuple[Path, Path]:
    """(certificate, private key) the server uses: the configured pair, or a self-signed one."""
    if serve.tls_cert or serve.tls_key:
        if not (serve.tls_cert and serve.tls_key):
            raise ForgeError("set both serve.tls_cert and serve.tls_key, or neither (self-signed)")
        pair = Path(serve.tls_cert).resolve(), Path(serve.tls_key).resolve()
        for key, path in zip(("serve.tls_cert", "serve.tls_key"), pair, strict=True):
            if not path.is_file():
                raise ForgeError(f"{key}={path}: no such file")
        return pair
    cert, key = runtime / "tls" / "cert.pem", runtime / "tls" / "key.pem"
    if not (cert.is_file() and key.is_file()):
        write_self_signed(cert, key)
    return cert, key


def write_self_signed(cert: Path, key: Path) -> None:
    """A fresh RSA key (0600; TorchServe reads RSA keys only) and a certificate for the loopback
    names, valid SELF_SIGNED_DAYS."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forgeml local TorchServe")])
    now = datetime.datetime.now(datetime.timezone.utc)
    alternative_names = [x509.DNSName(n) for n in SELF_SIGNED_NAMES] + [
        x509.IPAddress(ipaddress.ip_address(a)) for a in SELF_SIGNED_ADDRESSES
    ]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private_key, hashes.SHA256())
    )
    key.parent.mkdir(parents=True, exist_ok=True)
    # TorchServe reads PKCS#8 keys
    key_bytes = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(key, key_bytes)
    write_text(cert, certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"))


def client_context(certificate: str | Path) -> ssl.SSLContext:
    """A context that trusts exactly the server's certificate (as its own trust anchor) and
    checks the host name against it."""
    context = ssl.create_default_context(cafile=str(certificate))
    # a CA-issued leaf given as serve.tls_cert is trusted on its own, without its chain
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context
