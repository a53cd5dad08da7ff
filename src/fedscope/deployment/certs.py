"""Certificates for TLS between the SuperLink, the SuperNodes and ``flwr run``.

One run gets its own certificate authority (CA) and one SuperLink certificate signed by it.
The SuperNodes and the ``flwr`` CLI trust the CA (``--root-certificates`` /
``root-certificates``); the SuperLink presents its certificate, whose subjectAltName lists
every address the others dial: ``IP:127.0.0.1`` for the local launcher, plus the host
names and IP addresses of a real SuperLink machine.

Private keys are written with mode 0600 from the moment they exist (``os.open`` with the
mode, never chmod afterwards), so no other local user can read them even briefly.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "superlink.crt"
SERVER_KEY = "superlink.key"
KEY_MODE = 0o600


@dataclass(frozen=True)
class CertificateSet:
    """Where the files of one run's certificates are."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / CA_CERT  # public: every SuperNode and the flwr CLI get it

    @property
    def ca_key(self) -> Path:
        return self.directory / CA_KEY  # stays with whoever issues certificates

    @property
    def server_cert(self) -> Path:
        return self.directory / SERVER_CERT  # SuperLink machine only (public, but its own)

    @property
    def server_key(self) -> Path:
        return self.directory / SERVER_KEY  # SuperLink machine only, secret

    def exists(self) -> bool:
        return all(p.is_file() for p in (self.ca_cert, self.server_cert, self.server_key))


def generate_certificates(
    directory: Path,
    hosts: Sequence[str] = ("127.0.0.1",),
    valid_days: int = 30,
    common_name: str = "fedscope SuperLink",
) -> CertificateSet:
    """A fresh CA and a SuperLink certificate for ``hosts`` (IP addresses or DNS names).

    Existing files in ``directory`` are replaced. ``hosts`` must name every address the
    SuperNodes and ``flwr run`` use to reach the SuperLink: TLS checks the name dialled
    against the subjectAltName, and 127.0.0.1 is an IP entry, not a DNS name.
    """
    if not hosts:
        raise ValueError("at least one SuperLink host (IP address or DNS name) is needed")
    if valid_days < 1:
        raise ValueError(f"valid_days must be at least 1, got {valid_days}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    # A minute of slack: a SuperNode whose clock runs slightly behind must not see a
    # certificate "from the future".
    not_before = now - dt.timedelta(minutes=1)
    not_after = now + dt.timedelta(days=valid_days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedscope run CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(subject_alt_names(hosts)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    certs = CertificateSet(directory)
    _write_private_key(certs.ca_key, ca_key)
    _write_private_key(certs.server_key, server_key)
    certs.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    certs.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    return certs


def subject_alt_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """IP entries for addresses, DNS entries for names (duplicates dropped, order kept)."""
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for host in hosts:
        host = host.strip()
        if not host or host in seen:
            continue
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def certificate_hosts(cert_path: Path) -> list[str]:
    """The subjectAltName entries of a certificate, as strings (for checks and docs)."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in san.get_values_for_type(x509.IPAddress)] + list(
        san.get_values_for_type(x509.DNSName)
    )


def _write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.unlink(missing_ok=True)  # O_CREAT keeps an existing file's mode: start afresh
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_MODE)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
