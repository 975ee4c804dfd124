"""Personal styles: consent-gated training, who may use a style, attribution, credits, withdrawal.

A tiny random base model and pictures the tests draw; the adapters train for a few steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from easel.cli.main import app
from easel.errors import BadInput, PermissionDenied
from easel.provenance.log import GenerationRecord
from easel.registry.store import registry_session
from easel.style.adapter import StyleTrainConfig
from easel.style.models import PersonalStyle, StyleCredit
from tests.style.conftest import Studio

FAST = StyleTrainConfig(steps=3, batch_size=4)
runner = CliRunner()


def _train(studio: Studio, artist: str = "alice", **kwargs: object):  # type: ignore[no-untyped-def]
    from easel.style.training import train_style

    return train_style(artist, model_dir=studio.model_dir, config=FAST, url=studio.url, progress=False,
                       **kwargs)  # type: ignore[arg-type]


def _generate(studio: Studio, style: str, *extra: str, n: int = 1):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["generate", "a cat", "--style", style, "-n", str(n), "--steps", "2",
                               "--model-dir", str(studio.model_dir), "--no-upscale", "--seed", "1",
                               "-o", str(studio.home / "out"), *extra])


def _credits(studio: Studio, artist: str) -> int:
    with registry_session(studio.url) as session:
        return session.scalar(select(func.count(StyleCredit.pk)).where(StyleCredit.artist_id == artist)) or 0


def test_another_artist_cannot_train_from_alices_works(studio: Studio) -> None:
    from easel.style.service import eligible_works, identify

    with registry_session(studio.url) as session, pytest.raises(PermissionDenied) as refused:
        eligible_works(session, "bob", studio.works["alice"][:2] + studio.works["bob"])
    assert studio.works["alice"][0] in refused.value.message
    assert "owned by 'alice'" in refused.value.message
    # and bob cannot act as alice: his key does not prove her identity
    with registry_session(studio.url) as session, pytest.raises(PermissionDenied):
        identify(session, "alice", studio.keys["bob"])
    result = runner.invoke(app, ["style", "train", "--artist", "alice", "--key", studio.keys["bob"],
                                 "--model-dir", str(studio.model_dir), "--steps", "2", "-q"])
    assert isinstance(result.exception, PermissionDenied)
    with registry_session(studio.url) as session:
        assert session.scalar(select(func.count(PersonalStyle.pk))) == 0


def test_works_without_train_style_are_refused_by_name_or_left_out(studio: Studio) -> None:
    from easel.registry.service import change_consent, get_artist
    from easel.style.service import eligible_works

    revoked = studio.works["alice"][1]
    with registry_session(studio.url) as session:
        change_consent(session, get_artist(session, "alice"), "revoke", ["train_style"], revoked)
    with registry_session(studio.url) as session:
        with pytest.raises(PermissionDenied) as refused:
            eligible_works(session, "alice", studio.works["alice"])
        assert revoked in refused.value.message and "revoked" in refused.value.message
        found = eligible_works(session, "alice")
        assert [w.id for w in found.works] == [w for w in studio.works["alice"] if w != revoked]
        assert list(found.skipped) == [revoked]
    with registry_session(studio.url) as session:  # bob has 3 works: opting one out leaves too few
        from easel.registry.service import set_optout

        set_optout(session, get_artist(session, "bob"), studio.works["bob"][0])
    with registry_session(studio.url) as session, pytest.raises(BadInput, match="at least"):
        eligible_works(session, "bob")


def test_adapter_manifest_and_base_model_check(studio: Studio, tmp_path: Path) -> None:
    from easel.diffusion.pipeline import load_pipeline
    from easel.diffusion.tiny import save_tiny_pipeline
    from easel.registry.models import Work
    from easel.style.adapter import ADAPTER_FILE, apply_style, base_identity, sha256_file

    trained = _train(studio, name="ink")
    manifest = json.loads((trained.adapter_dir / "style_manifest.json").read_text())
    assert trained.adapter_dir.is_relative_to(studio.home / "styles")
    assert manifest["ref"] == "artist:alice/ink" and manifest["style_tag"] == "alice ink style"
    assert "Alice" in manifest["attribution"]
    assert manifest["base_model"]["unet_sha256"] == base_identity(studio.model_dir)["unet_sha256"]
    assert manifest["adapter_sha256"] == sha256_file(trained.adapter_dir / ADAPTER_FILE)
    with registry_session(studio.url) as session:
        works = {w.id: w for w in session.scalars(select(Work).where(Work.owner_id == "alice"))}
        from easel.registry.policy import may_use

        for item in manifest["items"]:
            assert item["sha256"] == works[item["work_id"]].sha256
            assert item["consent_event_id"] == may_use(session, item["work_id"], "train_style").event_id
            assert len(item["pixels_sha256"]) == 64
    assert sorted(i["work_id"] for i in manifest["items"]) == sorted(studio.works["alice"])
    # the adapter changes the UNet; a different base model is refused
    pipe = load_pipeline(studio.model_dir, device="cpu")
    apply_style(pipe, trained.adapter_dir, studio.model_dir)
    assert any("lora" in n for n, _ in pipe.unet.named_parameters())
    import torch

    other = save_tiny_pipeline(tmp_path / "other")
    unet_file = other / "unet" / "diffusion_pytorch_model.safetensors"
    from safetensors.torch import load_file, save_file

    state = load_file(str(unet_file))
    first = next(iter(state))
    state[first] = state[first] + torch.ones_like(state[first])
    save_file(state, str(unet_file))
    with pytest.raises(BadInput, match="trained on base model"):
        apply_style(load_pipeline(other, device="cpu"), trained.adapter_dir, other)


def test_who_may_use_a_style_and_credits(studio: Studio) -> None:
    from easel.provenance.credentials import read_credentials

    _train(studio)
    # private: alice only; bob and anonymous are refused, and nothing is published or credited
    assert isinstance(_generate(studio, "artist:alice", "--as", "bob").exception, PermissionDenied)
    assert isinstance(_generate(studio, "artist:alice").exception, PermissionDenied)
    ok = _generate(studio, "artist:alice", "--as", "alice", n=2)
    assert ok.exit_code == 0, ok.output
    assert _credits(studio, "alice") == 2
    # shared with bob: bob may, carol may not
    shared = runner.invoke(app, ["style", "share", "artist:alice/default", "--with", "bob", "--as", "alice"])
    assert shared.exit_code == 0 and "shared with: bob" in shared.output
    assert _generate(studio, "artist:alice/default", "--as", "bob").exit_code == 0
    assert isinstance(_generate(studio, "artist:alice", "--as", "carol").exception, PermissionDenied)
    # bob may not change alice's style
    assert isinstance(runner.invoke(app, ["style", "visibility", "artist:alice", "public", "--as", "bob"])
                      .exception, PermissionDenied)
    # public + commercial: anyone, recorded as commercial
    assert runner.invoke(app, ["style", "visibility", "artist:alice", "public", "--commercial",
                               "--as", "alice"]).exit_code == 0
    assert _generate(studio, "artist:alice", "--as", "carol").exit_code == 0
    assert _generate(studio, "artist:alice").exit_code == 0
    # ledger: one credit per output, and the log and manifest name the artist
    assert _credits(studio, "alice") == 5
    listed = runner.invoke(app, ["ledger", "--artist", "alice"])
    assert "5 credit(s) to alice" in listed.output
    assert listed.output.count("non-commercial") == 3
    with registry_session(studio.url) as session:
        rows = list(session.scalars(select(GenerationRecord).where(GenerationRecord.style_artist == "alice")))
        credited = set(session.scalars(select(StyleCredit.generation_id)))
    assert len(rows) == 5 and {r.id for r in rows} == credited
    assert all(r.style == "artist:alice/default" and "Alice" in (r.style_attribution or "") for r in rows)
    creds = read_credentials(Path(rows[0].path).read_bytes())
    assert creds is not None and creds.intact
    assert "'artist': 'alice'" in str(creds.manifest) or '"artist": "alice"' in json.dumps(creds.manifest)


def test_revoking_train_style_withdraws_and_stops_generation_at_once(studio: Studio) -> None:
    from easel.provenance.credentials import read_credentials
    from easel.registry.service import change_consent, get_artist

    trained = _train(studio)
    assert _generate(studio, "artist:alice", "--as", "alice").exit_code == 0
    with registry_session(studio.url) as session:
        change_consent(session, get_artist(session, "alice"), "revoke", ["train_style"],
                       studio.works["alice"][2])
    assert not trained.adapter_dir.exists()  # deleted when the revocation committed
    refused = _generate(studio, "artist:alice", "--as", "alice")
    assert isinstance(refused.exception, PermissionDenied) and "withdrawn" in str(refused.exception)
    assert _credits(studio, "alice") == 1
    with registry_session(studio.url) as session:
        style = session.scalar(select(PersonalStyle))
        assert style is not None and style.status == "withdrawn"
        row = session.scalar(select(GenerationRecord).where(GenerationRecord.style_artist == "alice"))
    assert row is not None  # the past output's log row stays, and its credentials validate
    creds = read_credentials(Path(row.path).read_bytes())
    assert creds is not None and creds.intact


def test_delete_and_the_credit_ledger_is_append_only(studio: Studio) -> None:
    trained = _train(studio)
    assert _generate(studio, "artist:alice", "--as", "alice").exit_code == 0
    assert isinstance(runner.invoke(app, ["style", "delete", "artist:alice", "--as", "bob"]).exception,
                      PermissionDenied)
    assert trained.adapter_dir.exists()
    deleted = runner.invoke(app, ["style", "delete", "artist:alice/default", "--as", "alice"])
    assert deleted.exit_code == 0, deleted.output
    assert not trained.adapter_dir.exists()
    assert isinstance(_generate(studio, "artist:alice/default", "--as", "alice").exception, PermissionDenied)
    listed = runner.invoke(app, ["style", "list", "--artist", "alice"])
    assert "withdrawn" in listed.output and "deleted by alice" in listed.output
    from sqlalchemy.exc import DatabaseError

    for statement in ("UPDATE style_credits SET artist_id = 'mallory'", "DELETE FROM style_credits"):
        with pytest.raises(DatabaseError, match="append-only"), registry_session(studio.url) as session:
            session.execute(text(statement))
    assert _credits(studio, "alice") == 1


def test_artist_wide_optout_withdraws_the_style(studio: Studio) -> None:
    from easel.registry.service import get_artist, set_optout
    from easel.style.service import check_use

    trained = _train(studio)
    with registry_session(studio.url) as session:
        assert check_use(session, "artist:alice", "alice").style_id == trained.style_id
    with registry_session(studio.url) as session:
        set_optout(session, get_artist(session, "alice"))  # "No AI training" for all her works
    assert not trained.adapter_dir.exists()
    with registry_session(studio.url) as session, pytest.raises(PermissionDenied, match="opted out"):
        check_use(session, "artist:alice", "alice")
