"""AUTOMATIC1111-compatible routes (the subset that makes sense for Easel).

Same paths, field names and response shape as A1111's ``/sdapi/v1`` (``images`` as base64 PNG,
``parameters`` echoing the request, ``info`` a JSON *string*), authenticated with an API key
or HTTP basic auth as A1111's ``--api-auth`` clients send. The requests run as ordinary jobs
in the same queue, and the PNGs are the published files: they carry our content credentials.
Differences, stated rather than hidden: images come at the model's native size (``width`` and
``height`` are recorded, not obeyed), ``negative_prompt`` is recorded but not used, and the one
sampler is Euler (rectified flow).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from easel.errors import BadInput, EaselError, PermissionDenied
from easel.server.api.routes.jobs import decode_b64_image
from easel.server.deps import CurrentUser, RunnerDep, SessionDep
from easel.server.jobs import GenerationRequest, JobHandle, JobRunner
from easel.server.schemas import A1111Img2Img, A1111Progress, A1111Response, A1111Txt2Img
from easel.server.services import image_path

router = APIRouter(prefix="/sdapi/v1", tags=["automatic1111"])
SAMPLERS = [{"name": "Euler", "aliases": ["euler", "k_euler", "flow_match_euler"], "options": {}}]
_SAMPLER_NAMES = {n.lower() for s in SAMPLERS for n in [str(s["name"]), *s["aliases"]]}  # type: ignore[misc]
WAIT_POLL_SECONDS = 0.05


class JobFailed(EaselError):
    """A generation that failed inside the worker (HTTP 500 for internal errors)."""


def model_hash(runner: JobRunner) -> str:
    """sha256 of the UNet weights file (or of model_index.json), computed once."""
    cached = getattr(runner, "_sd_hash", None)
    if cached:
        return str(cached)
    from easel.corpus.sources import sha256_file

    value = hashlib.sha256().hexdigest()  # of nothing, when there is no file to hash
    if runner.model_dir is not None:
        weights = runner.model_dir / "unet" / "diffusion_pytorch_model.safetensors"
        target = weights if weights.exists() else runner.model_dir / "model_index.json"
        if target.exists():
            value = sha256_file(target)
    runner._sd_hash = value  # type: ignore[attr-defined]
    return value


def model_title(runner: JobRunner) -> str:
    return f"{runner.model_id} [{model_hash(runner)[:10]}]"


def _options(request: Request) -> dict[str, Any]:
    runner: JobRunner = request.app.state.runner
    if not hasattr(request.app.state, "sd_options"):
        request.app.state.sd_options = {
            "sd_model_checkpoint": model_title(runner), "samples_format": "png",
            "CLIP_stop_at_last_layers": 1, "sd_vae": "Automatic",
            "easel_include_prompt": False, "easel_upscale": True,
        }
    return request.app.state.sd_options  # type: ignore[no-any-return]


def _style(styles: list[str]) -> str | None:
    if len(styles) > 1:
        raise BadInput("styles: Easel applies one style at a time")
    return styles[0] if styles else None


def _sampler(body: A1111Txt2Img) -> str:
    name = body.sampler_name or body.sampler_index or "Euler"
    if name.lower() not in _SAMPLER_NAMES:
        raise BadInput(f"sampler_name: {name!r} is not available", hint="GET /sdapi/v1/samplers lists "
                       "what this server has: Euler (rectified flow)")
    return "Euler"


async def _run(request: Request, user: Any, runner: JobRunner, db: SessionDep, body: A1111Txt2Img,
               req: GenerationRequest) -> A1111Response:
    sampler = _sampler(body)
    options = _options(request)
    req.include_prompt = bool(options.get("easel_include_prompt", False))
    req.upscale = bool(options.get("easel_upscale", True))
    db.close()  # hold no connection while submitting or waiting: waiting clients must not drain the pool
    handle = await run_in_threadpool(runner.submit, user, req)  # database work off the event loop
    while not handle.done_event.is_set():
        await asyncio.sleep(WAIT_POLL_SECONDS)
    if handle.state != "done":
        err = JobFailed(f"generation {handle.state}: {handle.error}")
        if handle.error_status >= 500:
            raise _Internal(err.message)
        raise err

    def collect() -> tuple[list[str], list[int]]:
        from easel.provenance.log import by_id

        try:
            images = [base64.b64encode(image_path(db, user, gid).read_bytes()).decode()
                      for gid in handle.result]
            seeds = [int(r.seed) for gid in handle.result if (r := by_id(db, gid)) and r.seed is not None]
        finally:
            db.close()
        return images, seeds

    images, seeds = await run_in_threadpool(collect)
    info = {
        "prompt": body.prompt, "all_prompts": [body.prompt] * req.n, "negative_prompt": body.negative_prompt,
        "all_negative_prompts": [body.negative_prompt] * req.n, "seed": seeds[0] if seeds else -1,
        "all_seeds": seeds, "subseed": -1, "all_subseeds": [-1] * req.n, "subseed_strength": 0,
        "width": body.width, "height": body.height, "sampler_name": sampler, "cfg_scale": body.cfg_scale,
        "steps": body.steps, "batch_size": body.batch_size, "restore_faces": False,
        "sd_model_name": runner.model_id, "sd_model_hash": model_hash(runner)[:10],
        "seed_resize_from_w": -1, "seed_resize_from_h": -1, "denoising_strength": req.strength
        if req.init_image is not None else None, "styles": body.styles,
        "job_timestamp": datetime.now(UTC).strftime("%Y%m%d%H%M%S"), "clip_skip": 1,
        "infotexts": [f"{body.prompt}\nSteps: {body.steps}, Sampler: {sampler}, CFG scale: "
                      f"{body.cfg_scale}, Seed: {s}, Model: {runner.model_id}" for s in seeds],
        "easel": {"generation_ids": list(handle.result), "job_id": handle.id,
                  "credentials": "C2PA manifest and watermark in each PNG; GET /api/images/<id>/credentials",
                  "note": "images are at the model's native size; negative_prompt is not used"},
    }
    return A1111Response(images=images if body.send_images else [],
                         parameters=body.model_dump(exclude={"init_images", "mask"}) | (
                             {"init_images": None, "mask": None} if isinstance(body, A1111Img2Img) else {}),
                         info=json.dumps(info))


class _Internal(EaselError):
    """Turned into HTTP 500 by the app's handler (see ``status_for``)."""

    http_status = 500


def _request(body: A1111Txt2Img) -> GenerationRequest:
    if not body.prompt.strip():
        raise BadInput("prompt: say what to draw, e.g. \"fox face\"")
    n = body.batch_size * body.n_iter
    if n > 8:
        raise BadInput(f"batch_size × n_iter: at most 8 images per call, got {n}")
    return GenerationRequest(prompt=body.prompt, style=_style(body.styles), n=n,
                             seed=None if body.seed < 0 else body.seed, steps=body.steps,
                             guidance=body.cfg_scale)


@router.post("/txt2img", response_model=A1111Response, summary="A1111 txt2img (waits for the images)")
async def txt2img(body: A1111Txt2Img, request: Request, user: CurrentUser, runner: RunnerDep,
                  db: SessionDep) -> A1111Response:
    return await _run(request, user, runner, db, body, _request(body))


@router.post("/img2img", response_model=A1111Response,
             summary="A1111 img2img / inpaint (init_images[0], optional mask)")
async def img2img(body: A1111Img2Img, request: Request, user: CurrentUser, runner: RunnerDep,
                  db: SessionDep) -> A1111Response:
    if len(body.init_images) != 1:
        raise BadInput(f"init_images: give exactly one image, got {len(body.init_images)}")
    req = _request(body)
    req.init_image = decode_b64_image(body.init_images[0], "init_images[0]")
    req.mask_image = decode_b64_image(body.mask, "mask")
    req.strength = body.denoising_strength
    return await _run(request, user, runner, db, body, req)


@router.get("/sd-models", summary="The model this server generates with")
def sd_models(user: CurrentUser, runner: RunnerDep) -> list[dict[str, Any]]:
    digest = model_hash(runner)
    return [{"title": model_title(runner), "model_name": runner.model_id, "hash": digest[:10],
             "sha256": digest, "filename": str(runner.model_dir or runner.model_id), "config": None}]


@router.get("/samplers", summary="The samplers this server has")
def samplers(user: CurrentUser) -> list[dict[str, Any]]:
    return SAMPLERS


@router.get("/progress", response_model=A1111Progress, summary="Progress of your current job")
def progress(user: CurrentUser, runner: RunnerDep) -> A1111Progress:
    active = runner.active_for(None if user.role == "operator" else user.id)
    running = [h for h in active if h.state == "running"]
    current: JobHandle | None = running[0] if running else (active[0] if active else None)
    if current is None:
        return A1111Progress(progress=0.0, eta_relative=0.0, state={
            "skipped": False, "interrupted": False, "job": "", "job_count": 0, "job_timestamp": "0",
            "job_no": 0, "sampling_step": 0, "sampling_steps": 0})
    elapsed = max(0.0, datetime.now(UTC).timestamp() - current.created)
    frac = current.progress
    eta = elapsed / frac - elapsed if frac > 0 else 0.0
    return A1111Progress(progress=frac, eta_relative=round(eta, 3), state={
        "skipped": False, "interrupted": current.cancel_event.is_set(), "job": current.id,
        "job_count": len(active), "job_timestamp": str(int(current.created)), "job_no": 0,
        "sampling_step": current.step, "sampling_steps": current.total})


@router.post("/interrupt", summary="Cancel your running and queued jobs")
def interrupt(user: CurrentUser, runner: RunnerDep) -> dict[str, Any]:
    active = runner.active_for(user.id)
    for handle in active:
        runner.cancel(handle)
    return {"cancelled": [h.id for h in active]}


@router.get("/options", summary="Server options (A1111 names, plus easel_* ones)")
def get_options(request: Request, user: CurrentUser) -> dict[str, Any]:
    return dict(_options(request))


@router.post("/options", summary="Change options (operators; others may only re-send current values)")
def set_options(body: dict[str, Any], request: Request, user: CurrentUser) -> dict[str, Any]:
    options = _options(request)
    unknown = sorted(set(body) - set(options))
    if unknown:
        raise BadInput(f"unknown option(s): {', '.join(unknown)}",
                       hint=f"known: {', '.join(sorted(options))}")
    changes = {k: v for k, v in body.items() if options[k] != v}
    if not changes:
        return {}
    if user.role != "operator":
        raise PermissionDenied("only an operator may change server options")
    if "sd_model_checkpoint" in changes:
        runner: JobRunner = request.app.state.runner
        if changes["sd_model_checkpoint"] not in (model_title(runner), runner.model_id):
            raise BadInput(f"sd_model_checkpoint: this server has one model, {model_title(runner)!r}",
                           hint="start `easel serve` with EASEL_MODEL_DIR to use another")
        changes.pop("sd_model_checkpoint")
    for key, value in changes.items():
        if not isinstance(value, type(options[key])):
            raise BadInput(f"{key}: expected {type(options[key]).__name__}, got {type(value).__name__}")
        options[key] = value
    return {}
