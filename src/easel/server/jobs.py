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

Several ``easel serve`` processes may share one database. Each runner has a server id (host,
pid, start time) with a heartbeat row in ``servers``; a job row names the server that owns it.
A server runs the jobs it was sent (their live progress is in its memory), and a worker claims
each job atomically before running it (a conditional UPDATE from queued to running by its
owner), so a job is never started twice. Jobs whose owner is gone (no heartbeat for
``STALE_AFTER_SECONDS``, or stopped) are put back in the queue with no owner, and any live
server adopts them (``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL; the same conditional
UPDATE on SQLite, which has one writer at a time); jobs of live servers are never touched. A
server that stops hands its queued jobs back the same way, so none is lost.
"""

from __future__ import annotations

import copy
import io
import logging
import os
import secrets
import socket
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from easel.config import Settings
from easel.diffusion.defaults import SAMPLING, check_guidance
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
HEARTBEAT_SECONDS = 10.0
"""How often a server writes its heartbeat (one small UPDATE)."""
STALE_AFTER_SECONDS = 60.0
"""A server whose heartbeat is older than this is gone and its jobs are requeued: six missed
beats. A beat is one UPDATE from its own thread, so only a stopped (or frozen) process misses six;
a pipeline call holding the CPU does not delay it by more than a second or two (the tiny model's
calls, and torch, release the GIL)."""
ADOPT_POLL_SECONDS = 2.0
"""How often a server with an idle worker looks for ownerless queued jobs to adopt."""
MAX_JOB_ATTEMPTS = 3
"""A job started this many times whose server died each time fails instead of being requeued,
so one job that kills its server cannot take down every server in turn."""
SERVER_ROWS_KEPT = timedelta(days=1)
"""Rows of servers gone for longer than this are deleted."""


def make_server_id() -> str:
    """This process's server id: host, pid and start time (plus 4 random hex digits, so that
    two runners in one process differ)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{socket.gethostname()[:120]}:{os.getpid()}:{stamp}:{secrets.token_hex(2)}"


def _png(image: Any) -> bytes | None:
    if image is None:
        return None
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


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
    steps: int = SAMPLING.steps
    guidance: float = SAMPLING.guidance_scale
    strength: float = SAMPLING.strength
    init_image: Any = None  # PIL.Image.Image | None
    mask_image: Any = None
    upscale: bool = True
    include_prompt: bool = False
    visible_mark: bool = False
    # filled by ``check``
    full_prompt: str = ""
    style_tag: str | None = None
    personal: Any = None  # easel.style.service.StyleUse for a personal style ("artist:A[/name]")

    @property
    def mode(self) -> str:
        return "inpaint" if self.mask_image is not None else "img2img" if self.init_image is not None \
            else "txt2img"

    def batch_key(self) -> tuple[Any, ...] | None:
        """Requests with equal keys may share one pipeline call (None: this one runs alone)."""
        if self.mode != "txt2img" or is_personal(self.style):
            return None  # a personal style loads its adapter onto a copy of the pipeline: alone
        return (self.steps, float(self.guidance), self.upscale)

    def public(self) -> dict[str, Any]:
        """The request as stored on the job row (no image bytes)."""
        return {"prompt": self.prompt, "style": self.style, "n": self.n, "seed": self.seed,
                "steps": self.steps, "guidance": self.guidance, "strength": self.strength,
                "mode": self.mode, "upscale": self.upscale, "include_prompt": self.include_prompt,
                "visible_mark": self.visible_mark}

    @classmethod
    def from_row(cls, row: Job) -> GenerationRequest:
        """The request of a stored job (for a server that adopts it), images included."""
        from PIL import Image

        stored = dict(row.request or {})
        fields = {k: stored[k] for k in ("prompt", "style", "n", "seed", "steps", "guidance", "strength",
                                         "upscale", "include_prompt", "visible_mark") if k in stored}
        req = cls(**fields)
        if row.init_png is not None:
            req.init_image = Image.open(io.BytesIO(row.init_png)).convert("RGB")
        if row.mask_png is not None:
            req.mask_image = Image.open(io.BytesIO(row.mask_png)).convert("RGB")
        return req


def is_personal(style: str | None) -> bool:
    """Whether ``style`` names a personal style (``artist:A`` or ``artist:A/name``)."""
    return bool(style) and str(style).startswith("artist:")


def load_upload(data: bytes, what: str) -> Any:
    """Validate an uploaded init or mask image; ``BadInput`` naming the field if it is bad."""
    from easel.registry.validate import load_image

    try:
        return load_image(data, what).image
    except BadInput as exc:
        raise BadInput(f"{what}: {exc.message}", hint=exc.hint) from exc


def check_request(req: GenerationRequest, user_name: str | None = None, url: str | None = None,
                  base_unet_sha256: str | None = None) -> GenerationRequest:
    """Raise ``BadInput`` naming the field that is wrong; fill in the styled prompt.

    A personal style is checked with ``easel.style.service.check_use`` as ``user_name`` (its
    visibility, withdrawal and the consent of every work it learned from: ``PermissionDenied``
    or ``NotFound`` if it may not be used), and against the server's base model when
    ``base_unet_sha256`` is given."""
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
    check_guidance(req.guidance, "guidance")
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
    if is_personal(req.style):
        from easel.registry.store import registry_session
        from easel.style.generation import styled_prompt
        from easel.style.service import check_use

        with registry_session(url) as session:
            req.personal = check_use(session, str(req.style), user_name)
        if base_unet_sha256 is not None and req.personal.base_model_sha256 != base_unet_sha256:
            raise BadInput(f"style: {req.personal.ref} was trained on another base model "
                           f"({req.personal.base_model_id}) than this server's",
                           hint="the artist can retrain it on this server's model")
        req.full_prompt, req.style_tag = styled_prompt(req.prompt.strip(), req.personal), req.personal.ref
        return req
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

    def __init__(self, settings: Settings, pipeline_factory: PipelineFactory | None = None,
                 server_id: str | None = None, poll_seconds: float = ADOPT_POLL_SECONDS,
                 heartbeat_seconds: float = HEARTBEAT_SECONDS,
                 stale_after_seconds: float = STALE_AFTER_SECONDS) -> None:
        self.settings = settings
        self.server_id = server_id or make_server_id()
        self.poll_seconds = poll_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_after = timedelta(seconds=stale_after_seconds)
        self._stop_event = threading.Event()
        self._maintainer: threading.Thread | None = None
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
        self._finishing: set[str] = set()  # jobs whose final state is being written
        self._submit_lock = threading.Lock()
        self.model_id = ""
        self.model_sha256: str | None = None  # the weights' digest, for the provenance record
        self.dataset_id: str | None = None
        self.model_dir: Path | None = None
        self.started = False
        self._base_sha: str | None = None

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
        from easel.diffusion.identity import weights_digest

        self.model_sha256 = weights_digest(path, self.settings.home / "cache")
        return pipe

    def start(self) -> None:
        """Load the pipeline once (copies for extra workers), register this server, requeue the
        jobs of servers that are gone, start the workers and the heartbeat."""
        first = self._factory()
        if self._factory == self._load_default:
            from easel.diffusion.text_encoder import get_text_encoder

            get_text_encoder("cpu")  # the frozen text encoder too, so the first job is not slow
        self._pipelines = [first] + [copy.deepcopy(first) for _ in range(self.workers - 1)]
        if not self.model_id:
            self.model_id = "easel-model"
        self._register()
        self.requeue_orphans()
        for i, pipe in enumerate(self._pipelines):
            thread = threading.Thread(target=self._work, args=(pipe,), name=f"easel-job-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._stop_event.clear()
        self._maintainer = threading.Thread(target=self._maintain, name="easel-heartbeat", daemon=True)
        self._maintainer.start()
        self.started = True

    def stop(self, timeout: float = 30.0) -> None:
        """Hand queued jobs back to the shared queue, let running ones finish, join the workers,
        and mark this server stopped (so its unfinished jobs are requeued at once)."""
        from sqlalchemy import update

        from easel.registry.store import registry_session

        self._stop_event.set()
        if self._maintainer is not None:
            self._maintainer.join(timeout)
            self._maintainer = None
        with self._cv:
            self._stopping = True
            waiting = list(self._pending)
            self._pending.clear()
            self._cv.notify_all()
        if waiting:
            try:
                with registry_session(self.url) as session:
                    session.execute(update(Job).where(
                        Job.id.in_([h.id for h in waiting]), Job.state == "queued",
                        Job.server_id == self.server_id).values(server_id=None)
                        .execution_options(synchronize_session=False))
            except Exception:  # the database is gone too: the heartbeat will lapse instead
                log.exception("could not hand back %d queued job(s)", len(waiting))
        for handle in waiting:
            handle.cancel_event.set()  # not run here; another server (or the next start) runs it
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        self._mark_stopped()
        self.started = False

    def base_model_dir(self) -> Path:
        """The directory of the model the workers generate with."""
        from easel.diffusion.pipeline import resolve_model_dir

        return self.model_dir or resolve_model_dir(self.settings.model_dir)

    def base_unet_sha256(self) -> str | None:
        """The sha256 of the base model's UNet weights (what personal styles are bound to), once."""
        if self._base_sha is None:
            from easel.style.adapter import base_identity

            try:
                self._base_sha = base_identity(self.base_model_dir())["unet_sha256"]
            except EaselError:
                return None
        return self._base_sha

    def check(self, req: GenerationRequest, user_name: str) -> GenerationRequest:
        """``check_request`` for this server: its database and its base model."""
        sha = self.base_unet_sha256() if is_personal(req.style) else None
        return check_request(req, user_name, self.url, sha)

    def queued(self) -> int:
        """Jobs waiting for a worker."""
        with self._cv:
            return len(self._pending)

    # -- servers and the shared queue ------------------------------------------------
    def _register(self) -> None:
        from easel.registry.store import registry_session
        from easel.server.models import Server

        now = datetime.now(UTC)
        host, pid = self.server_id.split(":")[0], os.getpid()
        with registry_session(self.url) as session:
            row = session.get(Server, self.server_id)
            if row is None:
                session.add(Server(id=self.server_id, host=host, pid=pid, started_at=now, heartbeat_at=now))
            else:
                row.heartbeat_at, row.stopped_at = now, None

    def _mark_stopped(self) -> None:
        from sqlalchemy import update

        from easel.registry.store import registry_session
        from easel.server.models import Server

        try:
            with registry_session(self.url) as session:
                session.execute(update(Server).where(Server.id == self.server_id)
                                .values(stopped_at=datetime.now(UTC)))
        except Exception:
            log.exception("could not mark server %s stopped", self.server_id)

    def heartbeat(self) -> None:
        """Say this server is alive, and touch the jobs it owns."""
        from sqlalchemy import update

        from easel.registry.store import registry_session
        from easel.server.models import Server

        now = datetime.now(UTC)
        with registry_session(self.url) as session:
            session.execute(update(Server).where(Server.id == self.server_id).values(heartbeat_at=now))
            session.execute(update(Job).where(Job.server_id == self.server_id,
                                              Job.state.in_(("queued", "running")))
                            .values(heartbeat_at=now).execution_options(synchronize_session=False))

    def requeue_orphans(self) -> int:
        """Put back in the queue (with no owner) the unfinished jobs of servers that are gone;
        a job already started ``MAX_JOB_ATTEMPTS`` times fails instead. Jobs of live servers are
        left alone. Returns how many jobs were requeued or failed."""
        from sqlalchemy import and_, delete, or_, select, update

        from easel.registry.store import registry_session
        from easel.server.models import Server

        now = datetime.now(UTC)
        alive = select(Server.id).where(Server.heartbeat_at >= now - self.stale_after,
                                        Server.stopped_at.is_(None))
        orphaned = and_(Job.state.in_(("queued", "running")), or_(
            and_(Job.server_id.is_(None), Job.state == "running"),  # from before servers had ids
            and_(Job.server_id.is_not(None), Job.server_id.not_in(alive))))
        with registry_session(self.url) as session:
            failed = session.execute(update(Job).where(orphaned, Job.attempts >= MAX_JOB_ATTEMPTS).values(
                state="failed", server_id=None, finished_at=now,
                error=f"the job's server stopped while running it {MAX_JOB_ATTEMPTS} times")
                .execution_options(synchronize_session=False))
            moved = session.execute(update(Job).where(orphaned).values(
                state="queued", server_id=None, started_at=None, heartbeat_at=None)
                .execution_options(synchronize_session=False))
            session.execute(delete(Server).where(Server.heartbeat_at < now - SERVER_ROWS_KEPT))
            count = int(getattr(failed, "rowcount", 0) or 0) + int(getattr(moved, "rowcount", 0) or 0)
        if count:
            log.info("server %s requeued or failed %d job(s) of servers that are gone", self.server_id, count)
        return count

    def adopt(self) -> int:
        """Claim ownerless queued jobs for idle workers (oldest first); returns how many.

        On PostgreSQL the candidates are locked with ``FOR UPDATE SKIP LOCKED``, so servers
        adopting at the same moment take different jobs without waiting on each other; the
        UPDATE's own condition (still queued, still ownerless) makes the claim atomic on SQLite.
        """
        from sqlalchemy import select, update

        from easel.registry.store import registry_session

        with self._cv:
            free = self.workers - len(self._pending)
            if free <= 0 or self._stopping:
                return 0
        now = datetime.now(UTC)
        with registry_session(self.url) as session:
            ids = list(session.scalars(select(Job.id).where(Job.state == "queued", Job.server_id.is_(None))
                                       .order_by(Job.created_at).limit(free)
                                       .with_for_update(skip_locked=True)))
            if not ids:
                return 0
            won = []
            for job_id in ids:  # each claim is one conditional UPDATE: only the winner sees a row
                result = session.execute(update(Job).where(
                    Job.id == job_id, Job.state == "queued", Job.server_id.is_(None))
                    .values(server_id=self.server_id, heartbeat_at=now)
                    .execution_options(synchronize_session=False))
                if getattr(result, "rowcount", 0) == 1:
                    won.append(job_id)
            rows = list(session.scalars(select(Job).where(Job.id.in_(won)).order_by(Job.created_at)))
            names = {row[0]: row[1] for row in session.execute(
                select(User.id, User.username).where(User.id.in_({r.user_id for r in rows})))}
            session.expunge_all()
        handles = []
        for row in rows:
            handle = JobHandle(id=row.id, user_id=row.user_id, request=GenerationRequest(prompt=""),
                               created=row.created_at.timestamp())
            try:
                handle.request = self.check(GenerationRequest.from_row(row), names.get(row.user_id, ""))
            except Exception as exc:  # e.g. a style withdrawn since: the job fails, clearly
                with self._lock:
                    self._remember(handle)
                self._finish(handle, "failed", error=f"could not resume the job: {exc}")
                continue
            handles.append(handle)
        with self._lock:
            for handle in handles:
                self._remember(handle)
        with self._cv:
            self._pending.extend(handles)
            self._cv.notify_all()
        if handles:
            log.info("server %s adopted %d job(s)", self.server_id, len(handles))
        return len(handles)

    def _maintain(self) -> None:
        """The heartbeat thread: beat, requeue orphans, adopt ownerless jobs."""
        last_beat = 0.0
        while not self._stop_event.wait(self.poll_seconds if last_beat else 0.0):
            try:
                if time.monotonic() - last_beat >= self.heartbeat_seconds:
                    self.heartbeat()
                    self.requeue_orphans()
                    last_beat = time.monotonic()
                self.adopt()
            except Exception:  # the database may be briefly away: try again next round
                log.exception("server %s: heartbeat or adoption failed", self.server_id)

    # -- submitting and reading -------------------------------------------------------
    def submit(self, user: User, req: GenerationRequest) -> JobHandle:
        """Check, charge the quota, record and queue a job. Raises ``BadInput``, the quota's
        ``PermissionDenied`` or ``QueueFull``; in each case nothing is stored."""
        from easel.registry.store import registry_session
        from easel.server.accounts import check_quota

        self.check(req, user.username)
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
                                n_images=req.n, request=req.public(), result=[],
                                server_id=self.server_id, heartbeat_at=datetime.now(UTC),
                                init_png=_png(req.init_image), mask_png=_png(req.mask_image)))
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

    def cancel_stored(self, job_id: str) -> bool:
        """Cancel a queued job this server does not hold (queued on another server, or ownerless):
        its owner's claim then fails and it never runs. Running jobs on other servers cannot be
        stopped from here. Returns whether it was cancelled."""
        from sqlalchemy import update

        from easel.registry.store import registry_session

        with registry_session(self.url) as session:
            result = session.execute(update(Job).where(Job.id == job_id, Job.state == "queued").values(
                state="cancelled", error="cancelled", finished_at=datetime.now(UTC))
                .execution_options(synchronize_session=False))
            return getattr(result, "rowcount", 0) == 1

    # -- the worker --------------------------------------------------------------------
    def _bump(self, handle: JobHandle) -> None:
        handle.version += 1
        handle.history.append((handle.version, handle.snapshot()))

    def _finish(self, handle: JobHandle, state: str, error: str | None = None) -> None:
        from easel.registry.store import registry_session

        with self._lock:
            if handle.state in TERMINAL_STATES or handle.id in self._finishing:
                return
            self._finishing.add(handle.id)
        from sqlalchemy import update

        try:
            # The row first, then the live state: whoever sees the job finished (a poll, the event
            # stream) must find the database agreeing, e.g. a cancelled job no longer on the quota.
            with registry_session(self.url) as session:  # only while this server still owns the job
                session.execute(update(Job).where(Job.id == handle.id, Job.server_id == self.server_id)
                                .values(state=state, error=error, result=list(handle.result),
                                        finished_at=datetime.now(UTC))
                                .execution_options(synchronize_session=False))
        finally:
            with self._lock:
                handle.state = state
                handle.error = error
                self._finishing.discard(handle.id)
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

    def _claim(self, batch: list[JobHandle]) -> list[JobHandle]:
        """Mark the batch's jobs running, each only if it is still queued and still ours (one
        conditional UPDATE per job: atomic on SQLite and PostgreSQL alike). Returns the claimed
        ones; a job lost meanwhile (cancelled from another server, or requeued because this
        server's heartbeat lapsed) ends here, locally, with the state the database has."""
        from sqlalchemy import select, update

        from easel.registry.store import registry_session

        now = datetime.now(UTC)
        claimed: list[JobHandle] = []
        with registry_session(self.url) as session:
            for handle in batch:
                result = session.execute(update(Job).where(
                    Job.id == handle.id, Job.state == "queued", Job.server_id == self.server_id).values(
                    state="running", started_at=now, heartbeat_at=now, attempts=Job.attempts + 1)
                    .execution_options(synchronize_session=False))
                if getattr(result, "rowcount", 0) == 1:
                    claimed.append(handle)
            lost = [h for h in batch if h not in claimed]
            states = {row[0]: row[1] for row in session.execute(select(Job.id, Job.state).where(
                Job.id.in_([h.id for h in lost])))} if lost else {}
        for handle in lost:
            state = states.get(handle.id)
            with self._lock:
                if handle.state in TERMINAL_STATES:
                    continue
                if state in TERMINAL_STATES:
                    handle.state, handle.error = str(state), "cancelled" if state == "cancelled" else None
                else:
                    handle.state = "failed"
                    handle.error = f"another server took this job over; see GET /api/jobs/{handle.id}"
            self._bump(handle)
            handle.done_event.set()
        return claimed

    def _run(self, pipe: Any, batch: list[JobHandle]) -> None:
        """One pipeline call for the batch's images, then each job's images through the door."""
        from easel.audit.guard import publish_or_redraw_once
        from easel.provenance.publish import GenerationInfo, publish_image

        batch = self._claim(batch)
        if not batch:
            return
        with self._lock:
            for handle in batch:
                if handle.state == "queued":  # not cancelled in the meantime
                    handle.state = "running"
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
        personal = first.personal
        if personal is not None:  # asked again now (withdrawn meanwhile?), on a copy of the pipeline
            from easel.registry.store import registry_session
            from easel.style import generation
            from easel.style.service import check_use

            with registry_session(self.url) as session:
                personal = check_use(session, personal.ref, personal.user)
            pipe = copy.deepcopy(pipe)
            generation.apply(pipe, personal, self.base_model_dir())
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
            styled: dict[str, Any] = {"style": req.style_tag}
            if personal is not None:  # attribution in the manifest and log, a credit row per image
                from easel.style import generation

                params.update(generation.parameters(personal))
                styled = generation.publish_fields(personal)

            def publish(image: Any, seed: int, req: Any = req, params: dict = params,
                        styled: dict = styled) -> str:
                info = GenerationInfo(prompt=req.full_prompt, mode=req.mode, model_id=self.model_id,
                                      model_sha256=self.model_sha256,
                                      dataset_id=self.dataset_id, seed=seed,
                                      parameters=dict(params, width=image.width, height=image.height),
                                      include_prompt=req.include_prompt,
                                      visible_mark=req.visible_mark, **styled)
                return publish_image(image, info, out_dir, self.settings).generation_id

            def redraw(seed: int, req: Any = req) -> Any:
                return pipe([req.full_prompt], seeds=[seed], num_inference_steps=req.steps,
                            guidance_scale=req.guidance, image=req.init_image,
                            strength=req.strength, mask_image=req.mask_image,
                            upscale=req.upscale).images[0]

            def say(message: str, job: str = handle.id) -> None:
                log.info("job %s: %s", job, message)

            try:
                for image, seed in zip(images, job_seeds, strict=True):
                    # A near-copy is drawn once more from the next seed after the job's; a
                    # second one fails the job.
                    generation_id = publish_or_redraw_once(image, seed, seed + req.n, publish,
                                                           redraw, say)
                    handle.result.append(generation_id)
                    self._bump(handle)
            except EaselError as exc:  # e.g. the output guard refused this job's image twice
                self._finish(handle, "failed", error=str(exc))
                continue
            self._finish(handle, "done")
