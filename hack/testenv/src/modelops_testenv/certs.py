"""Certificates and keys for a throw-away control plane.

What controller-runtime's envtest generates, written as PEM files: a serving CA and the
kube-apiserver serving certificate (localhost, 127.0.0.1), a client CA and the admin client
certificate (group ``system:masters``), the API server's client certificate towards kubelets, and
the service-account signing key pair. ECDSA P-256 keys keep generation in the milliseconds.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=7)


@dataclass(frozen=True)
class CertFiles:
    """Paths of the generated PEM files."""

    serving_ca: Path
    serving_ca_key: Path
    serving_cert: Path
    serving_key: Path
    client_ca: Path
    client_ca_key: Path
    admin_cert: Path
    admin_key: Path
    kubelet_client_cert: Path
    kubelet_client_key: Path
    sa_key: Path
    sa_pub: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def _ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    name = _name(common_name, "modelops-testenv")
    cert = (
        _builder(name, name, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName] | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = ca
    key = _key()
    builder = (
        _builder(subject, ca_cert.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)
    return path


# How pods reach the API server: the "kubernetes" Service's names and its cluster IP.
SERVICE_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


def _sans(names: list[str], ips: list[str]) -> list[x509.GeneralName]:
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    return sans + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]


def generate(directory: Path, ips: list[str] | None = None) -> CertFiles:
    """Write every certificate and key the control plane needs into ``directory``.

    The serving certificate names ``localhost``, the Service's names and ``ips`` (default
    ``127.0.0.1`` only; a real node adds the address pods use and the Service's cluster IP).
    """
    serving_ca = _ca("modelops-testenv-serving-ca")
    serving = _leaf(
        serving_ca,
        _name("localhost"),
        ExtendedKeyUsageOID.SERVER_AUTH,
        _sans(["localhost", *SERVICE_NAMES], ips or ["127.0.0.1"]),
    )
    client_ca = _ca("modelops-testenv-client-ca")
    admin = _leaf(client_ca, _name("admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH)
    # What kube-apiserver shows a kubelet for logs/exec; the kubelet asks RBAC about it.
    kubelet_client = _leaf(
        client_ca,
        _name("kube-apiserver-kubelet-client", "system:masters"),
        ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    sa_key = _key()
    sa_pub = sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    d = directory
    return CertFiles(
        serving_ca=_write(d / "serving-ca.crt", _cert_pem(serving_ca[0])),
        serving_ca_key=_write(d / "serving-ca.key", key_pem(serving_ca[1]), private=True),
        serving_cert=_write(d / "apiserver.crt", _cert_pem(serving[0])),
        serving_key=_write(d / "apiserver.key", key_pem(serving[1]), private=True),
        client_ca=_write(d / "client-ca.crt", _cert_pem(client_ca[0])),
        client_ca_key=_write(d / "client-ca.key", key_pem(client_ca[1]), private=True),
        admin_cert=_write(d / "admin.crt", _cert_pem(admin[0])),
        admin_key=_write(d / "admin.key", key_pem(admin[1]), private=True),
        kubelet_client_cert=_write(d / "kubelet-client.crt", _cert_pem(kubelet_client[0])),
        kubelet_client_key=_write(
            d / "kubelet-client.key", key_pem(kubelet_client[1]), private=True
        ),
        sa_key=_write(d / "sa.key", key_pem(sa_key), private=True),
        sa_pub=_write(d / "sa.pub", sa_pub),
    )


def _load_ca(cert: Path, key: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert = x509.load_pem_x509_certificate(cert.read_bytes())
    ca_key = serialization.load_pem_private_key(key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):  # pragma: no cover - we wrote it
        raise TypeError(f"{key} is not an EC key")
    return ca_cert, ca_key


def client_cert(files: CertFiles, user: str, groups: list[str]) -> tuple[bytes, bytes]:
    """A client certificate and key (PEM) for ``user`` in ``groups``, signed by the client CA."""
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, user)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    ca = _load_ca(files.client_ca, files.client_ca_key)
    cert, key = _leaf(ca, x509.Name(attrs), ExtendedKeyUsageOID.CLIENT_AUTH)
    return _cert_pem(cert), key_pem(key)


def serving_cert(files: CertFiles, name: str, ips: list[str]) -> tuple[bytes, bytes]:
    """A serving certificate and key (PEM) for ``name`` and ``ips``, signed by the serving CA
    (which the API server trusts for kubelets: ``--kubelet-certificate-authority``)."""
    ca = _load_ca(files.serving_ca, files.serving_ca_key)
    cert, key = _leaf(ca, _name(name), ExtendedKeyUsageOID.SERVER_AUTH, _sans([name], ips))
    return _cert_pem(cert), key_pem(key)
