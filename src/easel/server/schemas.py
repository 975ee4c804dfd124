"""Request and response bodies, in families (``UserCreate``/``UserPublic``, ``WorkPublic`` …).

The A1111-compatible bodies keep that API's field names (``cfg_scale``, ``batch_size``,
``init_images``) so existing clients work unchanged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from easel.diffusion.defaults import SAMPLING


class ErrorBody(BaseModel):
    """Every 4xx/5xx: what was wrong and what to do."""

    error: str
    hint: str | None = None
    status: int


# Accounts -----------------------------------------------------------------------------------
class UserCreate(BaseModel):
    username: str = Field(min_length=2, max_length=64, examples=["alice"])
    password: str = Field(min_length=8, max_length=256)
    role: str = Field(default="creator", description="artist or creator")
    display_name: str | None = Field(default=None, max_length=200)


class LoginBody(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=256)


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    username: str
    role: str
    artist_id: str | None
    created_at: datetime


class Me(UserPublic):
    images_last_day: int
    daily_quota: int | None = Field(description="None: unlimited (operators)")


class ApiKeyCreate(BaseModel):
    label: str = Field(default="", max_length=100)


class ApiKeyPublic(BaseModel):
    id: str
    label: str
    key: str | None = Field(default=None, description="Shown once, when the key is made.")
    created_at: datetime


class LoginPublic(BaseModel):
    user: UserPublic
    csrf_token: str


# Works and consent ------------------------------------------------------------------------
class WorkPublic(BaseModel):
    id: str
    title: str
    owner_id: str
    license_spdx: str
    attribution: str
    media_type: str
    width: int
    height: int
    sha256: str
    created_at: datetime
    consent: dict[str, bool] = Field(default_factory=dict, description="purpose → allowed now")


class IngestVerdict(BaseModel):
    accepted: bool
    summary: str
    work: WorkPublic | None = None


class ConsentChange(BaseModel):
    action: str = Field(description="grant, revoke, optout or optin")
    purposes: list[str] = Field(default_factory=list)


class ConsentEventPublic(BaseModel):
    id: str
    seq: int
    kind: str
    work_id: str | None
    purposes: list[str]
    basis: str
    created_at: datetime


# Jobs ------------------------------------------------------------------------------------------
class JobCreate(BaseModel):
    prompt: str = Field(max_length=1000, examples=["fox face"])
    style: str | None = Field(default=None, examples=["twemoji"])
    n: int = Field(default=1, ge=1, le=8)
    seed: int | None = Field(default=None, ge=0, lt=2**31)
    steps: int = Field(default=SAMPLING.steps, ge=1, le=100)
    guidance: float = Field(default=SAMPLING.guidance_scale, ge=0, le=SAMPLING.max_guidance)
    strength: float = Field(default=SAMPLING.strength, gt=0, le=1)
    init_image: str | None = Field(default=None, description="base64 image for img2img")
    mask_image: str | None = Field(default=None, description="base64 mask (white = repaint)")
    upscale: bool = True
    include_prompt: bool = False


class JobPublic(BaseModel):
    id: str
    state: str
    progress: float
    step: int = 0
    total: int = 0
    mode: str
    n_images: int
    result: list[str]
    error: str | None = None


class StyleChoice(BaseModel):
    """A style the caller may generate with: pass ``value`` as a job's ``style``."""

    value: str = Field(examples=["twemoji", "artist:alice/default"])
    label: str
    personal: bool = Field(description="a personal style: credited to its artist, checked at every use")


class ImagePublic(BaseModel):
    generation_id: str
    url: str
    mode: str
    model_id: str
    seed: int | None
    style: str | None
    created_at: datetime
    watermarked: bool
    signed: bool


class VerifyPublic(BaseModel):
    found: str | None
    generation_id: str | None
    credentials_state: str | None
    credentials_failures: list[str]
    watermark_id: str | None
    fingerprint_id: str | None
    fingerprint_distance: int | None
    exact_file: bool
    provenance: dict[str, Any] | None
    notes: list[str]
    # what the record's model learned from, where this server holds it (easel.provenance.origin)
    origin: dict[str, Any] | None = None


# AUTOMATIC1111 -------------------------------------------------------------------------------
class A1111Txt2Img(BaseModel):
    """``POST /sdapi/v1/txt2img``: A1111's field names; unknown fields are ignored as A1111 does."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] = Field(default_factory=list)
    seed: int = -1
    sampler_name: str | None = None
    sampler_index: str | None = None
    batch_size: int = Field(default=1, ge=1, le=8)
    n_iter: int = Field(default=1, ge=1, le=8)
    steps: int = Field(default=20, ge=1, le=100)
    cfg_scale: float = Field(default=7.0, ge=0, le=30)
    width: int = Field(default=512, ge=8, le=4096)
    height: int = Field(default=512, ge=8, le=4096)
    send_images: bool = True
    save_images: bool = False
    override_settings: dict[str, Any] = Field(default_factory=dict)


class A1111Img2Img(A1111Txt2Img):
    """``POST /sdapi/v1/img2img``: adds ``init_images``, ``denoising_strength`` and ``mask``."""

    init_images: list[str] = Field(default_factory=list)
    denoising_strength: float = Field(default=0.75, gt=0, le=1)
    mask: str | None = None
    inpainting_fill: int = 0
    include_init_images: bool = False


class A1111Response(BaseModel):
    images: list[str]
    parameters: dict[str, Any]
    info: str


class A1111Progress(BaseModel):
    progress: float
    eta_relative: float
    state: dict[str, Any]
    current_image: str | None = None
    textinfo: str | None = None
