"""``vidtray server up --self-signed``: a private CA and a server certificate it signs, made with
``cryptography`` (a dependency of the ``server`` extra).

The CA's certificate (``ca.pem``) is what desktops pin (``[remote] ca_file``); its key never leaves the
server's ``tls/`` folder (0700, files 0600). The server certificate names this machine (host name, FQDN,
``localhost``, and every address of its network interfaces, plus any names given), so a desktop can use
whichever of them it reaches the server by. Both are kept and reused across restarts: a new CA would make
every desktop fetch the file again. The server certificate is made again when it expires within 30 days or
lacks a name it should carry.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vidtray.services.fsutil import atomic_write_bytes, private_dir

log = logging.getLogger("vidtray.server")

CA_DAYS = 3650
CERT_DAYS = 825  # what browsers and Apple accept for a server certificate
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path | None  # the CA to hand to desktops (None: a certificate the admin brought)


def machine_names(extra: Iterable[str] = ()) -> list[str]:
    """The names and addresses a desktop may reach this machine by, ``extra`` first."""
    names: list[str] = [n for n in extra if n]
    for name in (socket.gethostname(), socket.getfqdn(), "localhost", "127.0.0.1", "::1"):
        if name and name not in names:
            names.append(name)
    try:
        import psutil

        for addrs in psutil.net_if_addrs().values():
            for addr in addrs:
                if addr.family in (socket.AF_INET, socket.AF_INET6):
                    ip = addr.address.split("%")[0]
                    if ip not in names:
                        names.append(ip)
    except Exception as exc:  # the names above still work
        log.debug("cannot list network addresses: %s", exc)
    return names


def self_signed(tls_dir: Path, names: list[str]) -> TlsFiles:
    """The CA and server certificate in ``tls_dir`` for ``names``, made or renewed as needed."""
    private_dir(tls_dir)
    ca_pem, ca_key_file = tls_dir / "ca.pem", tls_dir / "ca.key"
    cert_pem, key_file = tls_dir / "server.pem", tls_dir / "server.key"
    if ca_pem.is_file() and ca_key_file.is_file():
        ca_cert = x509.load_pem_x509_certificate(ca_pem.read_bytes())
        loaded = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{ca_key_file} is not the EC key vidtray makes")
        ca_key = loaded
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _ca_certificate(ca_key, f"vidtray server CA ({socket.gethostname()})")
        _write_key(ca_key_file, ca_key)
        atomic_write_bytes(ca_pem, ca_cert.public_bytes(serialization.Encoding.PEM))
        # A new CA: the old server certificate is not signed by it.
        cert_pem.unlink(missing_ok=True)
    if not _still_good(cert_pem, key_file, names):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _server_certificate(key, ca_cert, ca_key, names)
        _write_key(key_file, key)
        atomic_write_bytes(cert_pem, cert.public_bytes(serialization.Encoding.PEM))
        log.info("made a server certificate for %s", ", ".join(names))
    return TlsFiles(cert=cert_pem, key=key_file, ca=ca_pem)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common[:64])])


def _ca_certificate(key: ec.EllipticCurvePrivateKey, common: str) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = _name(common)
    usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))


def _server_certificate(key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
                        ca_key: ec.EllipticCurvePrivateKey, names: list[str]) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(_name(names[0] if names else "vidtray"))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CERT_DAYS))
            .add_extension(x509.SubjectAlternativeName(_general_names(names)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))


def _general_names(names: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _still_good(cert_pem: Path, key_file: Path, names: list[str]) -> bool:
    if not (cert_pem.is_file() and key_file.is_file()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    have = {str(v) for v in san.get_values_for_type(x509.DNSName)}
    have |= {str(v) for v in san.get_values_for_type(x509.IPAddress)}
    wanted = {str(ipaddress.ip_address(n)) if _is_ip(n) else n for n in names}
    return wanted <= have and cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > RENEW_BEFORE


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    atomic_write_bytes(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
