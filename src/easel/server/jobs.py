"""Generation jobs: a bounded queue, a fixed number of workers, progress, cancellation.

``JobRunner`` owns the pipeline(s), loaded once when the server starts (one per worker: the
scheduler keeps per-call state, so one pipeline serves one job at a time). ``submit`` checks the
request and the quota *before* queuing, so a bad request never occupies a worker; a full queue
is refused with ``QueueFull`` (HTTP 429) instead of growing without bound. Each worker runs a
job's pipeline call, then hands every image to ``publish_image`` — the one door — and records
the generation ids on the job row. Queued text-to-image jobs with equal settings share one
pipeline call (up to ``MAX_BATCH_IMAGES`` images), which more than doubles throughput under
load. Progress and state changes bump ``JobHandle.version``, which the server-sent-events
route watches.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from easel.config import Settings
from easel.errors import BadInput, EaselError
from easel.server.models import TERMINAL_STATES, Job, User

log = logging.getLogger(__name__)

MAX_IMAGES_PER_JOB = 8
"""Images one job may ask for; bigger batches are several jobs (keeps one job's memory small)."""
MAX_STEPS = 100
MAX_BATCH_IMAGES = 8
"""Queued text-to-image jobs with the same steps, guidance and upscaling are run as one pipeline
call of up to this many images. Measured on the tiny pipeline (``easel.diffusion.tiny``, one
torch thread, 20 steps, guidance 3, busy 2-core machine): ``pipe(["fox face"] * 8, …)`` took
1.5 s against 3.5-4.5 s for 8 calls of one image. ``benchmarks/serve_load.py``: 0.5 images/s
with 10 clients before batching, 2.1 with 50 clients after (not a controlled comparison)."""
FINISHED_KEPT = 2000
"""Finished jobs kept in memory for progress look-ups; older ones are read from the database."""


class QueueFull(EaselError):
    """The job queue is full (HTTP 429 with Retry-After)."""


class JobCancelled(Exception):
    """Raised inside the pipeline's step callback when a job is cancelled."""


@dataclass
class GenerationRequest:
    """A checked generation request. Images are validated PIL images (RGB)."""

    prompt: str
    style: str | None = None
    n: int = 1
    seed: int | None = None
    steps: int = 20
    guidance: float = 3.0
    strength: float = 0.6
    init_image: Any = None  # PIL.Image.Image | None
    mask_image: Any = None
    upscale: bool = True
    include_prompt: bool = False
    visible_mark: bool = False
    # filled by ``check``
    full_prompt: str = ""
    style_tag: str | None = None

    @property
    def mode(self) -> str:
        return "inpaint" if self.mask_image is not None else "img2img" if self.init_image is not None \
            else "txt2img"

    def batch_key(self) -> tuple[Any, ...] | None:
        """Requests with equal keys may share one pipeline call (None: this one runs alone)."""
        if self.mode != "txt2img":
            return None
        return (self.steps, float(self.guidance), self.upscale)

    def public(self) -> dict[str, Any]:
        """The request as stored on the job row (no image bytes)."""
        return {"prompt": self.prompt, "style": self.style, "n": self.n, "seed": self.seed,
                "steps": self.steps, "guidance": self.guidance, "strength": self.strength,
                "mode": self.mode, "upscale": self.upscale, "include_prompt": self.include_prompt}


def load_upload(data: bytes, what: str) -> Any:
    """Validate an uploaded init or mask image; ``BadInput`` naming the field if it is bad."""
    from easel.registry.validate import load_image

    try:
        return load_image(data, what).image
    except BadInput as exc:
        raise BadInput(f"{what}: {exc.message}", hint=exc.hint) from exc


def check_request(req: GenerationRequest) -> GenerationRequest:
    """Raise ``BadInput`` naming the field that is wrong; fill in the styled prompt."""
    from easel.cli.generate import style_prompt
    from easel.diffusion.text_encoder import MAX_PROMPT_CHARS

    if not isinstance(req.prompt, str) or not req.prompt.strip():
        raise BadInput("prompt: say what to draw, e.g. \"fox face\"")
    if len(req.prompt) > MAX_PROMPT_CHARS:
        raise BadInput(f"prompt: {len(req.prompt)} characters is too long (at most {MAX_PROMPT_CHARS})")
    if not 1 <= req.n <= MAX_IMAGES_PER_JOB:
        raise BadInput(f"n: must be between 1 and {MAX_IMAGES_PER_JOB}, got {req.n}")
    if not 1 <= req.steps <= MAX_STEPS:
        raise BadInput(f"steps: must be between 1 and {MAX_STEPS}, got {req.steps}")
    if not 0.0 <= req.guidance <= 30.0:
        raise BadInput(f"guidance: must be between 0 and 30, got {req.guidance}")
    if req.seed is not None and not 0 <= req.seed < 2**31:
        raise BadInput(f"seed: must be between 0 and 2^31-1, got {req.seed}")
    if req.init_image is not None and not 0.0 < req.strength <= 1.0:
        raise BadInput(f"strength: must be in (0, 1], got {req.strength}")
    if req.mask_image is not None:
        if req.init_image is None:
            raise BadInput("mask: inpainting needs an init image too")
        if req.mask_image.size != req.init_image.size:
            raise BadInput(f"mask: size {req.mask_image.size} differs from the init image's "
                           f"{req.init_image.size}")
    req.full_prompt, req.style_tag = style_prompt(req.prompt.strip(), req.style or None)
    return req


@dataclass
class JobHandle:
    """A job's live state (the database row holds the durable copy)."""

    id: str
    user_id: str
    request: GenerationRequest
    state: str = "queued"
    step: int = 0
    total: int = 0
    result: list[str] = field(default_factory=list)
    error: str | None = None
    error_status: int = 400
    created: float = field(default_factory=time.time)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    done_event: threading.Event = field(default_factory=threading.Event)
    version: int = 0
    # Every change as (version, snapshot), so the event stream never skips a state however fast
    # the job runs (at most a few hundred entries: one per sampler step plus the states).
    history: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    @property
    def progress(self) -> float:
        if self.state == "done":
            return 1.0
        return self.step / self.total if self.total else 0.0

    def snapshot(self) -> dict[str, Any]:
        """What the API and the event stream report."""
        return {"id": self.id, "state": self.state, "progress": round(self.progress, 4),
                "step": self.step, "total": self.total, "mode": self.request.mode,
                "n_images": self.request.n, "result": list(self.result), "error": self.error}


PipelineFactory = Callable[[], Any]


class JobRunner:
    """The worker pool: ``start`` loads the pipelines, ``submit`` queues, ``stop`` drains."""

    def __init__(self, settings: Settings, pipeline_factory: PipelineFactory | None = None) -> None:
        self.settings = settings
        self.url = settings.db_url
        self.workers = settings.server_workers
        self.max_queue = settings.server_queue
        self._pending: deque[JobHandle] = deque()
        self._cv = threading.Condition()
        self._stopping = False
        self._factory = pipeline_factory or self._load_default
        self._pipelines: list[Any] = []
        self._threads: list[threading.Thread] = []
        self._jobs: OrderedDict[str, JobHandle] = OrderedDict()
        self._lock = threading.Lock()
        self._submit_lock = threading.Lock()
        self.model_id = ""
        self.dataset_id: str | None = None
        self.model_dir: Path | None = None
        self.started = False

    # -- life cycle -----------------------------------------------------------------
    def _load_default(self) -> Any:
        from easel.diffusion.model_card import read_model_card
        from easel.diffusion.pipeline import load_pipeline, resolve_model_dir

        path = resolve_model_dir(self.settings.model_dir)
        pipe = load_pipeline(path)
        card = read_model_card(path)
        self.model_dir = path
        self.model_id = str(card.get("model_id", path.name))
        self.dataset_id = card.get("dataset_id")
        return pipe

    def start(self) -> None:
        """Load the pipeline once (copies for extra workers), mark stale jobs, start workers."""
        first = self._factory()
        if self._factory == self._load_default:
            from easel.diffusion.text_encoder import get_text_encoder

            get_text_encoder("cpu")  # the frozen text encoder too, so the first job is not slow
        self._pipelines = [first] + [copy.deepcopy(first) for _ in range(self.workers - 1)]
        if not self.model_id:
            self.model_id = "easel-model"
        self._fail_stale_jobs()
        for i, pipe in enumerate(self._pipelines):
            thread = threading.Thread(target=self._work, args=(pipe,), name=f"easel-job-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self.started = True

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel waiting jobs, let running ones finish their step, join the workers."""
        with self._cv:
            self._stopping = True
            waiting = list(self._pending)
            self._pending.clear()
            self._cv.notify_all()
        for handle in waiting:
            handle.cancel_event.set()
            self._finish(handle, "cancelled", error="the server stopped")
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        self.started = False

    def queued(self) -> int:
        """Jobs waiting for a worker."""
        with self._cv:
            return len(self._pending)

    def _fail_stale_jobs(self) -> None:
        from sqlalchemy import update

        from easel.registry.store import registry_session

        with registry_session(self.url) as session:
            session.execute(update(Job).where(Job.state.in_(("queued", "running"))).values(
                state="failed", error="the server stopped before this job finished",
                finished_at=datetime.now(UTC)))

    # -- submitting and reading -------------------------------------------------------
    def submit(self, user: User, req: GenerationRequest) -> JobHandle:
        """Check, charge the quota, record and queue a job. Raises ``BadInput``, the quota's
        ``PermissionDenied`` or ``QueueFull``; in each case nothing is stored."""
        from easel.registry.store import registry_session
        from easel.server.accounts import check_quota

        check_request(req)
        handle = JobHandle(id=uuid.uuid4().hex, user_id=user.id, request=req)
        with self._submit_lock:  # quota check and insert together, so a burst cannot overdraw
            if self.queued() >= self.max_queue:
                raise QueueFull(f"the job queue is full ({self.max_queue} waiting)",
                                hint="retry in a few seconds")
            with registry_session(self.url) as session:
                db_user = session.get(User, user.id)
                assert db_user is not None
                check_quota(session, db_user, req.n, self.settings.server_daily_quota)
                session.add(Job(id=handle.id, user_id=user.id, state="queued", mode=req.mode,
                                n_images=req.n, request=req.public(), result=[]))
            with self._lock:
                self._remember(handle)
            with self._cv:
                self._pending.append(handle)
                self._cv.notify()
        return handle

    def _remember(self, handle: JobHandle) -> None:
        self._jobs[handle.id] = handle
        while len(self._jobs) > FINISHED_KEPT + self.max_queue + self.workers * MAX_BATCH_IMAGES:
            oldest_id, oldest = next(iter(self._jobs.items()))
            if oldest.state not in TERMINAL_STATES:
                break
            del self._jobs[oldest_id]

    def get(self, job_id: str) -> JobHandle | None:
        """The live handle of a recent job (None if unknown or long finished)."""
        with self._lock:
            return self._jobs.get(job_id)

    def active_for(self, user_id: str | None) -> list[JobHandle]:
        """Queued and running jobs (of one user, or all), oldest first."""
        with self._lock:
            return [h for h in self._jobs.values() if h.state in ("queued", "running")
                    and (user_id is None or h.user_id == user_id)]

    def cancel(self, handle: JobHandle) -> None:
        """Ask a job to stop: a queued job never runs, a running one stops at its next step."""
        if handle.state in TERMINAL_STATES:
            return
        handle.cancel_event.set()
        if handle.state == "queued":
            with self._cv:
                if handle in self._pending:
                    self._pending.remove(handle)  # frees its place in the queue at once
            self._finish(handle, "cancelled", error="cancelled")

    # -- the worker --------------------------------------------------------------------
    def _bump(self, handle: JobHandle) -> None:
        handle.version += 1
        handle.history.append((handle.version, handle.snapshot()))

    def _finish(self, handle: JobHandle, state: str, error: str | None = None) -> None:
        from easel.registry.store import registry_session

        with self._lock:
            if handle.state in TERMINAL_STATES:
                return
            handle.state = state
            handle.error = error
        with registry_session(self.url) as session:
            row = session.get(Job, handle.id)
            if row is not None:
                row.state, row.error, row.result = state, error, list(handle.result)
                row.finished_at = datetime.now(UTC)
        self._bump(handle)
        handle.done_event.set()

    def _take_batch(self) -> list[JobHandle] | None:
        """The next job and the queued jobs that can share its pipeline call (None: stop)."""
        with self._cv:
            while not self._pending and not self._stopping:
                self._cv.wait()
            if self._stopping:
                return None
            first = self._pending.popleft()
            batch = [first]
            key = first.request.batch_key()
            if key is not None:
                images = first.request.n
                for other in list(self._pending):
                    if other.request.batch_key() == key and images + other.request.n <= MAX_BATCH_IMAGES:
                        self._pending.remove(other)
                        batch.append(other)
                        images += other.request.n
            return batch

    def _work(self, pipe: Any) -> None:
        while True:
            taken = self._take_batch()
            if taken is None:
                return
            batch = [h for h in taken if not h.cancel_event.is_set() and h.state not in TERMINAL_STATES]
            for handle in taken:
                if handle not in batch:
                    self._finish(handle, "cancelled", error="cancelled")
            if not batch:
                continue
            try:
                self._run(pipe, batch)
            except JobCancelled:
                for handle in batch:
                    self._finish(handle, "cancelled", error="cancelled")
            except EaselError as exc:
                for handle in batch:
                    self._finish(handle, "failed", error=str(exc))
            except Exception as exc:  # a bug or resource failure: the jobs fail, the worker lives
                log.exception("jobs %s failed", ", ".join(h.id for h in batch))
                for handle in batch:
                    handle.error_status = 500
                    self._finish(handle, "failed", error=f"internal error: {type(exc).__name__}")

    def _run(self, pipe: Any, batch: list[JobHandle]) -> None:
        """One pipeline call for the batch's images, then each job's images through the door."""
        import secrets

        from easel.provenance.publish import GenerationInfo, publish_image
        from easel.registry.store import registry_session

        now = datetime.now(UTC)
        with self._lock:
            for handle in batch:
                if handle.state == "queued":  # not cancelled in the meantime
                    handle.state = "running"
        with registry_session(self.url) as session:
            for handle in batch:
                row = session.get(Job, handle.id)
                if row is not None:
                    row.state, row.started_at = "running", now
        for handle in batch:
            self._bump(handle)

        def on_step(step: int, total: int) -> None:
            for handle in batch:
                handle.step, handle.total = step, total
                self._bump(handle)
            if all(handle.cancel_event.is_set() for handle in batch):
                raise JobCancelled

        prompts: list[str] = []
        seeds: list[int] = []
        for handle in batch:
            req = handle.request
            base_seed = req.seed if req.seed is not None else secrets.randbits(30)
            prompts += [req.full_prompt] * req.n
            seeds += [base_seed + i for i in range(req.n)]
        first = batch[0].request
        output = pipe(prompts, seeds=seeds, num_inference_steps=first.steps,
                      guidance_scale=first.guidance, image=first.init_image, strength=first.strength,
                      mask_image=first.mask_image, upscale=first.upscale, callback=on_step)
        out_dir = self.settings.outputs_dir
        offset = 0
        for handle in batch:
            req = handle.request
            images = output.images[offset:offset + req.n]
            job_seeds = seeds[offset:offset + req.n]
            offset += req.n
            if handle.cancel_event.is_set():
                self._finish(handle, "cancelled", error="cancelled")
                continue
            params = dict(output.parameters, mode=req.mode)
            try:
                for image, seed in zip(images, job_seeds, strict=True):
                    info = GenerationInfo(prompt=req.full_prompt, mode=req.mode, model_id=self.model_id,
                                          dataset_id=self.dataset_id, seed=seed,
                                          parameters=dict(params, width=image.width, height=image.height),
                                          style=req.style_tag, include_prompt=req.include_prompt,
                                          visible_mark=req.visible_mark)
                    published = publish_image(image, info, out_dir, self.settings)
                    handle.result.append(published.generation_id)
                    self._bump(handle)
            except EaselError as exc:  # e.g. the output guard refused this job's image
                self._finish(handle, "failed", error=str(exc))
                continue
            self._finish(handle, "done")
