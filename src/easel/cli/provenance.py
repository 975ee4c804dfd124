"""``easel verify IMAGE`` and ``easel keys``: provenance of any image, and the signing identity."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

keys_app = typer.Typer(help="The signing identity for content credentials (local CA or the operator's).",
                       no_args_is_help=True)


def verify(
    image: Path = typer.Argument(..., help="Image file to check (PNG, JPEG, WebP …)."),
    all_checks: bool = typer.Option(False, "--all", help="Run all three checks even after one succeeds."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    model_dir: Path = typer.Option(None, "--model-dir", help="A model folder (Easel model or diffusers "
                                   "checkpoint): also say whether its weights are the ones the "
                                   "record names (model_sha256)."),
) -> None:
    """Say where IMAGE came from: content credentials, else watermark, else fingerprint.

    Reads the C2PA manifest and its validation state; if it is absent or broken, decodes the
    Easel watermark and looks its id up in the generation log; if that fails, compares the
    image's PDQ fingerprint with every logged output. Says plainly when nothing was found.

    Exit status: 0 when provenance was found, 1 when nothing was found.
    """
    from easel.config import get_settings
    from easel.provenance.origin import verification_origin
    from easel.provenance.verify import verify_image

    settings = get_settings()
    folder_digest = None
    if model_dir is not None:
        from easel.diffusion.identity import weights_digest

        folder_digest = weights_digest(model_dir, settings.home / "cache")  # bad folder: fail first
    result = verify_image(image, exhaustive=all_checks)
    weights = _weights_check(result, model_dir, folder_digest)
    origin = verification_origin(result, settings.db_url, model_dir, settings.home / "cache")
    if as_json:
        extra = {"weights": weights} if weights else {}
        typer.echo(json.dumps(dict(result.to_dict(), origin=origin, **extra), indent=2, default=str))
        _exit_nothing_found(result.found)
        return
    state = result.credentials_state or "none"
    typer.echo(f"content credentials: {state}")
    for failure in result.credentials_failures:
        typer.echo(f"  failure: {failure}")
    if result.watermark_id is not None or all_checks or result.found != "credentials":
        wm = result.watermark_id or "none"
        suffix = " (in the generation log)" if result.watermark_in_log else ""
        typer.echo(f"watermark:           {wm}{suffix if result.watermark_id else ''}")
    if result.fingerprint_id is not None:
        typer.echo(f"fingerprint:         {result.fingerprint_id} "
                   f"(PDQ distance {result.fingerprint_distance})")
    if result.exact_file:
        typer.echo("file:                byte-identical to a logged output")
    if result.found is None:
        typer.echo("nothing found: no valid content credentials, no Easel watermark, and no logged "
                   "output that looks like this image")
    else:
        typer.echo(f"found by {result.found}: generation {result.generation_id}")
        for key, value in (result.provenance or {}).items():
            if value not in (None, {}, ""):
                shown = json.dumps(value, default=str) if isinstance(value, dict | list) else value
                typer.echo(f"  {key}: {shown}")
    for note in result.notes:
        typer.echo(f"note: {note}")
    if weights:
        typer.echo(f"weights:             {weights['verdict']}")
    if origin:
        _print_origin(origin)
    _exit_nothing_found(result.found)


def _print_origin(origin: dict) -> None:
    """Where the model that made the image learned: its card's sets, this registry's dataset."""
    if origin.get("model_dir"):
        how = "its weights" if origin["matched_by"] == "weights" else "its model id"
        typer.echo(f"model:               {origin['model_dir']} (matched by {how})")
        if origin.get("sources"):
            typer.echo("trained on:")
            for source in origin["sources"]:
                typer.echo(f"  {source.get('attribution') or source.get('set_id')}"
                           + (f" ({source['items']} works)" if source.get("items") else ""))
    registry = origin.get("registry")
    if registry:
        artists = ", ".join(f"{a['name']} ({a['works']})" for a in registry["artists"])
        typer.echo(f"dataset in this registry: {registry['works']} works for {registry['purpose']} by "
                   f"{artists}")
    for note in origin.get("notes", []):
        typer.echo(f"note: {note}")


def _weights_check(result: Any, model_dir: Path | None, folder_digest: str | None) -> dict | None:
    """Whether ``model_dir``'s weights are the ones the record names (None without --model-dir).

    The verdict says what the record rests on: a manifest whose signer is not trusted is only a
    claim, and a fingerprint finds a logged image that looks like this one, not this file."""
    if model_dir is None:
        return None
    provenance = result.provenance or {}
    recorded = provenance.get("model_sha256")
    if not provenance:
        verdict, match = "not compared: no generation record was found", None
    elif not recorded:
        verdict, match = ("not compared: the record names no weights digest (an image logged "
                          "before the digest was recorded)"), None
    elif recorded == folder_digest:
        made = ("made the logged image this one looks like (found by fingerprint only)"
                if result.found == "fingerprint" else "made this image")
        verdict, match = f"match: {model_dir} holds the weights that {made}", True
    else:
        verdict, match = (f"differ: {model_dir} holds other weights ({str(folder_digest)[:12]}…) than "
                          f"the record names ({recorded[:12]}…)"), False
    if match is not None and result.found == "credentials" and result.credentials_state != "Trusted":
        verdict += " — as the manifest claims; its signer is not in the trust list"
    return {"model_dir": str(model_dir), "model_sha256": folder_digest, "match": match,
            "verdict": verdict}


def _exit_nothing_found(found: str | None) -> None:
    """Exit with status 1 when nothing was found (``typer.Exit`` codes are lost by ``main``)."""
    if not found:
        sys.exit(1)


@keys_app.command("show")
def keys_show() -> None:
    """Print the signing identity in force (making the local CA on first use) and its expiry."""
    from cryptography import x509

    from easel.config import get_settings
    from easel.provenance.keys import signing_identity

    identity = signing_identity()
    cert = x509.load_pem_x509_certificates(identity.cert_chain_pem.encode())[0]
    typer.echo(f"signer:     {cert.subject.rfc4514_string()}")
    typer.echo(f"issuer:     {cert.issuer.rfc4514_string()}")
    typer.echo(f"algorithm:  {identity.alg}")
    typer.echo(f"valid to:   {identity.not_after.date().isoformat()}")
    source = f"local CA in {get_settings().keys_dir}" if identity.local else "EASEL_SIGNING_CERT"
    typer.echo(f"source:     {source}")
    typer.echo(f"timestamps: {identity.tsa_url or 'none (manifests validate while the certificate does)'}")


def register(app: typer.Typer) -> None:
    """Add ``easel verify`` and ``easel keys``."""
    app.command("verify")(verify)
    app.add_typer(keys_app, name="keys")
