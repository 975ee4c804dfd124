"""The seven emoji sets that stand in for artists, pinned by npm version and tarball sha256.

``fetch_sources`` brings them with ``npm pack NAME@VERSION`` into ``EASEL_HOME/sources``.
Each step writes into a temporary directory first and renames into place, so a failed
download or checksum leaves nothing half-written; a re-run fetches only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from easel.errors import BadInput, EaselError, NotFound

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IconSet:
    """One emoji set: an npm package that plays the part of one artist."""

    set_id: str
    package: str
    version: str
    sha256: str  # of the tarball `npm pack` writes, recorded when the version was pinned
    title: str
    rights_holder: str
    style_tag: str  # the words a prompt uses to ask for this style, e.g. "twemoji style"
    # Where `npm pack` takes it from when not the registry (a local package directory);
    # tests use this for a fixture set they write themselves.
    location: str | None = None

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}"

    def to_json(self) -> dict[str, str | None]:
        return dict(asdict(self))

    @classmethod
    def from_json(cls, data: dict) -> IconSet:
        fields = {k: data.get(k) for k in cls.__dataclass_fields__}
        return cls(**fields)  # type: ignore[arg-type]

    @property
    def tarball_name(self) -> str:
        return f"{self.package.lstrip('@').replace('/', '-')}-{self.version}.tgz"


ICON_SETS: tuple[IconSet, ...] = (
    IconSet("twemoji", "@iconify-json/twemoji", "1.2.5",
            "19046dff7d8707ce96212ec86468b36ac5f8e60409629dd13f809265c6d0ebb7",
            "Twemoji", "Twitter", "twemoji style"),
    IconSet("noto", "@iconify-json/noto", "1.2.9",
            "3e918d88fc945c0bb3d468dbace6f88caef67f01c9f0e7bcae0915a042e8f1ad",
            "Noto Emoji", "Google", "noto style"),
    IconSet("openmoji", "@iconify-json/openmoji", "1.2.29",
            "03181e2c156cab35cf4a62f1f7886bd971d59212e75ac3f189d5a4cae3930fc5",
            "OpenMoji", "OpenMoji", "openmoji style"),
    IconSet("fluent-emoji-flat", "@iconify-json/fluent-emoji-flat", "1.2.6",
            "7d064769dee690815f823bc5bcc511d957198caf9f5edd8dd9c1aa48a6aeb175",
            "Fluent Emoji Flat", "Microsoft", "fluent style"),
    IconSet("emojione", "@iconify-json/emojione", "1.2.3",
            "26a14f44284407e8bcde91799388dca2bfd91dbcd55a97f425524a1c5b73610e",
            "Emoji One", "Emoji One", "emojione style"),
    IconSet("fxemoji", "@iconify-json/fxemoji", "1.2.2",
            "f3e72b3c59d05e1db03b7e308d55c0d05bd7ba3f625a90da1b79313c12858eef",
            "Firefox OS Emoji", "Mozilla", "fxemoji style"),
    IconSet("streamline-emojis", "@iconify-json/streamline-emojis", "1.2.4",
            "5dac87c876b322500989828c5823143e0100d78881627a2e4081a4b897cbfdbc",
            "Streamline Emojis", "Streamline", "streamline style"),
)

SETS_BY_ID: dict[str, IconSet] = {s.set_id: s for s in ICON_SETS}

# Held out of the base model so that style personalization can be shown learning a style
# the base model never saw (DESIGN.md, "The embedded corpus").
HELD_OUT_SET = "streamline-emojis"


def resolve_sets(names: list[str] | None, sets: dict[str, IconSet] | None = None) -> list[IconSet]:
    """Turn user-given set ids into ``IconSet``s; ``None`` or empty means all of them."""
    table = SETS_BY_ID if sets is None else sets
    if not names:
        return list(table.values())
    unknown = [n for n in names if n not in table]
    if unknown:
        raise NotFound(
            f"unknown icon set {', '.join(repr(n) for n in unknown)}",
            hint=f"choose from: {', '.join(table)}",
        )
    return [table[n] for n in names]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def set_dir(sources_dir: Path, icon_set: IconSet) -> Path:
    """Where an extracted set lives: ``sources/<set_id>/package/{icons,info}.json``."""
    return sources_dir / icon_set.set_id


def is_fetched(sources_dir: Path, icon_set: IconSet) -> bool:
    marker = set_dir(sources_dir, icon_set) / "FETCHED.json"
    if not marker.exists():
        return False
    try:
        return json.loads(marker.read_text()).get("sha256") == icon_set.sha256
    except (OSError, ValueError):
        return False


def _npm_pack(npm: str, spec: str, dest: Path) -> Path:
    try:
        proc = subprocess.run(
            [npm, "pack", spec, "--silent", "--pack-destination", str(dest)],
            capture_output=True, text=True, timeout=600, check=False,
        )
    except FileNotFoundError as exc:
        raise EaselError(
            f"npm not found (looked for {npm!r})",
            hint="install Node.js and npm (Debian: apt-get install npm), or set EASEL_NPM",
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise EaselError(f"npm pack {spec} timed out after 600 s", hint="check the network") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit code {proc.returncode}"
        raise EaselError(f"npm pack {spec} failed: {last}", hint="check the network and npm config")
    tarballs = sorted(dest.glob("*.tgz"))
    if len(tarballs) != 1:
        raise EaselError(f"npm pack {spec} produced {len(tarballs)} tarballs, expected one")
    return tarballs[0]


def extract_set(tarball: Path, icon_set: IconSet, sources_dir: Path) -> Path:
    """Check the tarball's sha256 and unpack it atomically into the set's directory."""
    actual = sha256_file(tarball)
    if actual != icon_set.sha256:
        raise EaselError(
            f"checksum mismatch for {icon_set.spec}: got {actual[:16]}…, "
            f"expected {icon_set.sha256[:16]}…",
            hint="the download is corrupt or the registry served a different file; nothing was kept",
        )
    target = set_dir(sources_dir, icon_set)
    with tempfile.TemporaryDirectory(dir=sources_dir, prefix=f".{icon_set.set_id}-") as tmp:
        staging = Path(tmp) / "set"
        staging.mkdir()
        try:
            with tarfile.open(tarball, "r:gz") as tar:
                tar.extractall(staging, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise EaselError(f"cannot unpack {tarball.name}: {exc}") from exc
        if not (staging / "package" / "icons.json").exists():
            raise BadInput(f"{icon_set.spec} has no package/icons.json; is it an Iconify set?")
        shutil.copy2(tarball, staging / icon_set.tarball_name)
        (staging / "FETCHED.json").write_text(
            json.dumps({"spec": icon_set.spec, "sha256": actual, "set": icon_set.to_json()}, indent=2)
        )
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return target


def fetch_sources(
    sources_dir: Path, sets: list[IconSet], npm: str = "npm", force: bool = False
) -> list[tuple[IconSet, str]]:
    """Fetch each set unless already there. Returns ``(set, "fetched" | "present")`` pairs."""
    sources_dir.mkdir(parents=True, exist_ok=True)
    results: list[tuple[IconSet, str]] = []
    for icon_set in sets:
        if not force and is_fetched(sources_dir, icon_set):
            results.append((icon_set, "present"))
            continue
        with tempfile.TemporaryDirectory(dir=sources_dir, prefix=".download-") as tmp:
            log.info("npm pack %s", icon_set.spec)
            tarball = _npm_pack(npm, icon_set.location or icon_set.spec, Path(tmp))
            extract_set(tarball, icon_set, sources_dir)
        results.append((icon_set, "fetched"))
    return results


def load_set_json(sources_dir: Path, icon_set: IconSet) -> tuple[dict, dict]:
    """Return ``(icons.json, info.json)`` of a fetched set, or raise a clear error."""
    package = set_dir(sources_dir, icon_set) / "package"
    if not is_fetched(sources_dir, icon_set):
        raise NotFound(
            f"icon set {icon_set.set_id!r} is not fetched into {sources_dir}",
            hint="run `easel corpus fetch` first",
        )
    try:
        icons = json.loads((package / "icons.json").read_text())
        info = json.loads((package / "info.json").read_text())
    except (OSError, ValueError) as exc:
        raise EaselError(f"cannot read {icon_set.set_id} sources: {exc}",
                         hint="run `easel corpus fetch --force`") from exc
    return icons, info


def fetched_sets(sources_dir: Path) -> list[IconSet]:
    """The sets present under ``sources_dir`` (known ones first, in table order)."""
    found: list[IconSet] = []
    if not sources_dir.exists():
        return found
    for marker in sorted(sources_dir.glob("*/FETCHED.json")):
        try:
            data = json.loads(marker.read_text())
            icon_set = IconSet.from_json(data["set"])
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable %s", marker)
            continue
        if icon_set.sha256 == data.get("sha256"):
            found.append(icon_set)
    order = {s.set_id: i for i, s in enumerate(ICON_SETS)}
    found.sort(key=lambda s: (order.get(s.set_id, len(order)), s.set_id))
    return found
