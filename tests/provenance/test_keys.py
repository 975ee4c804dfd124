"""The local CA's certificates, and an operator's own signing identity."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier
from PIL import Image

from easel.config import get_settings
from easel.errors import BadInput
from easel.provenance.credentials import read_credentials
from easel.provenance.keys import C2PA_CLAIM_SIGNING_EKU, create_local_ca, signing_identity
from easel.provenance.publish import GenerationInfo, publish_image

INFO = GenerationInfo(prompt="p", mode="txt2img", model_id="m", dataset_id=None, seed=None, parameters={})


def test_local_ca_is_made_once_with_the_c2pa_profile(easel_home: Path) -> None:
    first = signing_identity()
    second = signing_identity()
    assert first.cert_chain_pem == second.cert_chain_pem and first.local
    leaf, ca = x509.load_pem_x509_certificates(first.cert_chain_pem.encode())
    assert leaf.issuer == ca.subject
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    ekus = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.EMAIL_PROTECTION in ekus and ObjectIdentifier(C2PA_CLAIM_SIGNING_EKU) in ekus
    years = (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days / 365
    assert years >= 20  # no time-stamp authority offline: the certificate must outlive the files
    assert (easel_home / "keys" / "signer.key").stat().st_mode & 0o077 == 0


def test_operator_identity_signs_and_is_trusted_only_when_anchored(
        easel_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    operator = tmp_path / "operator"
    create_local_ca(operator)  # stands in for a certificate from a real CA
    monkeypatch.setenv("EASEL_SIGNING_CERT", str(operator / "signer.pem"))
    monkeypatch.setenv("EASEL_SIGNING_KEY", str(operator / "signer.key"))
    image = Image.new("RGB", (96, 96), (40, 120, 200))
    out = publish_image(image, INFO, easel_home / "out")
    data = out.path.read_bytes()
    assert not (easel_home / "keys").exists()  # no local CA was made
    local_anchor = ""
    creds = read_credentials(data, local_anchor)
    assert creds is not None and creds.state == "Valid"
    anchored = read_credentials(data, (operator / "ca.pem").read_text())
    assert anchored is not None and anchored.state == "Trusted"
    monkeypatch.delenv("EASEL_SIGNING_KEY")
    with pytest.raises(BadInput, match="must be set together"):
        signing_identity(get_settings())
