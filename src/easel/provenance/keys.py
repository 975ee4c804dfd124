"""The signing identity for content credentials: a local CA made on first run, or the operator's.

On first use Easel makes, under ``EASEL_HOME/keys``:

* ``ca.pem`` / ``ca.key`` — a local certificate authority (ECDSA P-256, 30 years);
* ``signer.pem`` / ``signer.key`` — a signing certificate issued by it (ECDSA P-256, 25 years)
  with what C2PA's certificate profile asks of a signer: X.509 v3, not a CA, key usage
  ``digitalSignature`` (critical), extended key usage ``emailProtection`` + C2PA's
  ``c2pa-kp-claimSigning`` (1.3.6.1.4.1.62558.2.1), subject and authority key identifiers.

There is no timestamp authority offline, so a manifest validates only while the signing
certificate does: hence the long lives, and ``verify`` prints the expiry date.

An operator points Easel at a real identity with ``EASEL_SIGNING_CERT`` (PEM chain, signer
first), ``EASEL_SIGNING_KEY`` (PEM private key), optionally ``EASEL_SIGNING_ALG`` (default
``es256``), ``EASEL_TSA_URL`` (an RFC 3161 time-stamp authority) and ``EASEL_TRUST_ANCHORS``
(PEM file of extra CAs that ``verify`` trusts besides the local one).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from easel.config import Settings, get_settings
from easel.errors import BadInput, EaselError

CA_LIFETIME_DAYS = 365 * 30
SIGNER_LIFETIME_DAYS = 365 * 25
C2PA_CLAIM_SIGNING_EKU = "1.3.6.1.4.1.62558.2.1"
"""C2PA's own extended key usage for claim signing (C2PA 2.x certificate profile)."""


class SigningSettings(BaseSettings):
    """The operator's signing identity (``EASEL_SIGNING_*``); empty means the local CA."""

    model_config = SettingsConfigDict(env_prefix="EASEL_", extra="ignore")

    signing_cert: Path | None = Field(default=None, description="PEM certificate chain, signer first.")
    signing_key: Path | None = Field(default=None, description="PEM private key of the signer.")
    signing_alg: str = Field(default="es256", description="es256 | es384 | es512 | ps256 | ed25519 …")
    tsa_url: str | None = Field(default=None, description="RFC 3161 time-stamp authority URL.")
    trust_anchors: Path | None = Field(default=None, description="Extra CA certificates to trust (PEM).")


@dataclass(frozen=True)
class SigningIdentity:
    """PEM text of the chain and key, the algorithm, and the CAs ``verify`` trusts."""

    cert_chain_pem: str
    private_key_pem: str
    alg: str
    tsa_url: str | None
    trust_anchors_pem: str
    not_after: dt.datetime
    local: bool


def _name(common_name: str):  # type: ignore[no-untyped-def]
    from cryptography.x509 import Name, NameAttribute
    from cryptography.x509.oid import NameOID

    return Name([NameAttribute(NameOID.COMMON_NAME, common_name),
                 NameAttribute(NameOID.ORGANIZATION_NAME, "Easel (local)")])


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    os.chmod(path, 0o600)


def create_local_ca(keys_dir: Path) -> None:
    """Make the local CA and the signing certificate in ``keys_dir`` (overwrites them)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

    keys_dir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Easel Local Content Credentials CA")
    no_usage = dict(content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False)
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + dt.timedelta(days=CA_LIFETIME_DAYS))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, key_cert_sign=True, crl_sign=True,
                                       **no_usage), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("Easel Content Credentials Signer"))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=SIGNER_LIFETIME_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                         **no_usage), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION,
                                                  ObjectIdentifier(C2PA_CLAIM_SIGNING_EKU)]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    plain = serialization.NoEncryption()
    _write_private(keys_dir / "ca.key", ca_key.private_bytes(pem, pkcs8, plain))
    _write_private(keys_dir / "signer.key", key.private_bytes(pem, pkcs8, plain))
    (keys_dir / "ca.pem").write_bytes(ca.public_bytes(pem))
    # the chain C2PA embeds: signer first, then the issuing CA
    (keys_dir / "signer.pem").write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))


def _not_after(chain_pem: str) -> dt.datetime:
    from cryptography import x509

    return x509.load_pem_x509_certificates(chain_pem.encode())[0].not_valid_after_utc


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise BadInput(f"cannot read the {what} {path}: {exc.strerror or exc}",
                       hint=f"check EASEL_{what.upper().replace(' ', '_')}") from exc


def signing_identity(settings: Settings | None = None) -> SigningIdentity:
    """The identity in force: the operator's if ``EASEL_SIGNING_CERT``/``_KEY`` are set, else the
    local CA's signer (made on first call)."""
    settings = settings or get_settings()
    operator = SigningSettings()
    extra_anchors = _read(operator.trust_anchors, "trust anchors") if operator.trust_anchors else ""
    if operator.signing_cert or operator.signing_key:
        if not (operator.signing_cert and operator.signing_key):
            raise BadInput("EASEL_SIGNING_CERT and EASEL_SIGNING_KEY must be set together",
                           hint="unset both to sign with the local CA")
        chain = _read(operator.signing_cert, "signing cert")
        key = _read(operator.signing_key, "signing key")
        return SigningIdentity(chain, key, operator.signing_alg.lower(), operator.tsa_url,
                               extra_anchors, _not_after(chain), local=False)
    keys_dir = settings.keys_dir
    if not (keys_dir / "signer.pem").exists():
        settings.ensure_home()
        create_local_ca(keys_dir)
    chain = (keys_dir / "signer.pem").read_text()
    try:
        anchors = (keys_dir / "ca.pem").read_text() + extra_anchors
    except OSError as exc:
        raise EaselError(f"the local CA certificate {keys_dir / 'ca.pem'} is missing",
                         hint="delete EASEL_HOME/keys to make a new local CA") from exc
    return SigningIdentity(chain, (keys_dir / "signer.key").read_text(), "es256", operator.tsa_url,
                           anchors, _not_after(chain), local=True)


def trust_anchors_pem(settings: Settings | None = None) -> str:
    """PEM of the CAs ``verify`` trusts: the local CA (if one was made) and ``EASEL_TRUST_ANCHORS``."""
    settings = settings or get_settings()
    operator = SigningSettings()
    parts = []
    local_ca = settings.keys_dir / "ca.pem"
    if local_ca.exists():
        parts.append(local_ca.read_text())
    if operator.trust_anchors:
        parts.append(_read(operator.trust_anchors, "trust anchors"))
    return "".join(parts)
