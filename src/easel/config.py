"""Settings: one pydantic ``Settings`` object, read from the environment (``EASEL_*``).

``EASEL_HOME`` holds everything Easel writes: fetched sources, rendered corpora, the
database, indexes, keys and certificates, generated images. Nothing is written anywhere
else unless a command is told to.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from easel.errors import EaselError


def _default_home() -> Path:
    return Path(os.path.expanduser("~")) / ".easel"


class Settings(BaseSettings):
    """Easel's settings. Every field can be set with an ``EASEL_<NAME>`` variable."""

    model_config = SettingsConfigDict(env_prefix="EASEL_", extra="ignore")

    home: Path = Field(default_factory=_default_home, description="Where Easel keeps its state.")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default is a SQLite file under EASEL_HOME.",
    )
    model_dir: Path | None = Field(
        default=None,
        description="Model directory to generate with; default is the model shipped in the package.",
    )
    npm: str = Field(default="npm", description="The npm executable used by `easel corpus fetch`.")
    threads: int = Field(
        default=0, ge=0,
        description="CPU threads for torch; 0 keeps torch's default (one per core). On a machine "
        "whose cores are busy with other work set 1: measured here with a training run on the "
        "other core, `easel eval model` generated 1.7 images/s with one thread and 0.05 with two.",
    )
    # The web studio and HTTP API (`easel serve`, easel.server) -------------------------
    session_secret: SecretStr | None = Field(
        default=None, description="Secret for CSRF tokens; default: made on first run under "
        "EASEL_HOME/server/session_secret (never committed).")
    server_workers: int = Field(default=1, ge=1, le=16,
                                description="Generation jobs run at once (one pipeline each).")
    server_queue: int = Field(default=64, ge=1, le=10_000,
                              description="Jobs that may wait; more are refused with 429.")
    server_daily_quota: int = Field(default=200, ge=0,
                                    description="Images a non-operator user may generate per 24 h.")
    # Curation (`easel corpus curate`, easel.curation) ---------------------------------
    curation_safety_threshold: float = Field(
        default=0.8, gt=0.0, le=1.0,
        description="NudeNet score (highest over its *_EXPOSED classes) at or above which curation "
        "drops an item as sexual content. Measured with `benchmarks/curate_corpus.py --safety-sample "
        "300` (300 random corpus icons, none sexual): 2 scored at least 0.5 (twemoji upside-down "
        "face 0.69, noto orange circle 0.63: round shapes read as exposed skin), none 0.7; so 0.8, "
        "not NudeNet's usual 0.5. Its recall at 0.8 is not measured here (no such test images).")

    @field_validator("home", mode="before")
    @classmethod
    def _expand(cls, value: object) -> object:
        if isinstance(value, str):
            return Path(os.path.expanduser(value))
        return value

    # Derived locations -------------------------------------------------------------
    @property
    def sources_dir(self) -> Path:
        return self.home / "sources"

    @property
    def corpus_dir(self) -> Path:
        return self.home / "corpus"

    @property
    def outputs_dir(self) -> Path:
        return self.home / "outputs"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def db_url(self) -> str:
        """The database URL in force (SQLite under ``home`` unless set)."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'easel.db'}"

    def ensure_home(self) -> Path:
        """Create ``home`` if needed and check it is writable; raise a clear error if not."""
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            probe = self.home / ".write-probe"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise EaselError(
                f"EASEL_HOME {self.home} is not writable: {exc.strerror or exc}",
                hint="set EASEL_HOME to a directory you can write to",
            ) from exc
        return self.home


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once; tests call ``get_settings.cache_clear()``).

    A bad ``EASEL_*`` value is reported as one ``EaselError`` naming the variable.
    """
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(f"EASEL_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
                             for e in exc.errors())
        raise EaselError(f"bad setting: {problems}", hint="fix or unset that environment variable") from None
