"""``easel upscale IMAGE`` and ``easel train upscaler``: the learned ×4 upscaler."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from easel.config import get_settings
from easel.errors import BadInput, NotFound

#: Largest input side accepted. The network reads 64 px, so anything bigger is shrunk first;
#: past this size the input is surely not what the user meant to enlarge (and decoding it
#: costs memory), so it is refused rather than silently thrown away.
MAX_INPUT_SIDE = 4096
#: Smallest input side accepted: below this there is nothing to enlarge.
MIN_INPUT_SIDE = 8
#: Refuse files larger than this before even opening them (bytes).
MAX_INPUT_BYTES = 50 * 1024 * 1024


def open_input_image(path: Path):  # noqa: ANN201 - PIL type imported lazily
    """Open and check an image for upscaling; raises ``BadInput``/``NotFound`` with the reason."""
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise NotFound(f"no such file: {path}")
    if not path.is_file():
        raise BadInput(f"{path} is not a file", hint="give the path of a PNG, JPEG or WebP image")
    if path.stat().st_size > MAX_INPUT_BYTES:
        raise BadInput(f"{path} is {path.stat().st_size / 2**20:.0f} MiB; the limit is "
                       f"{MAX_INPUT_BYTES // 2**20} MiB", hint="the upscaler reads 64 px images")
    try:
        image = Image.open(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise BadInput(f"{path} is not an image Easel can read",
                       hint="give a PNG, JPEG or WebP file") from exc
    width, height = image.size
    if max(width, height) > MAX_INPUT_SIDE:
        raise BadInput(f"{path} is {width}×{height}; the largest side accepted is {MAX_INPUT_SIDE} px",
                       hint="the upscaler enlarges 64 px images to 256 px; shrink the image first")
    if min(width, height) < MIN_INPUT_SIDE:
        raise BadInput(f"{path} is {width}×{height}; each side must be at least {MIN_INPUT_SIDE} px")
    try:
        image.load()
    except (OSError, Image.DecompressionBombError) as exc:
        raise BadInput(f"{path} could not be decoded: {exc}") from exc
    return image


def upscale(
    image: Path = typer.Argument(..., help="Image to enlarge (PNG, JPEG, WebP …); best at 64×64."),
    out_dir: Path = typer.Option(None, "--out", "-o",
                                 help="Folder for the result; default: EASEL_HOME/outputs."),
    model: Path = typer.Option(None, "--model",
                               help="Upscaler folder (config.json + safetensors); default: the shipped one."),
) -> None:
    """Enlarge an image ×4 to 256×256 with the learned upscaler.

    The upscaler works on 64×64 RGB: other sizes are padded to a square on white and resized to
    64 px first (so a larger image loses detail). The result leaves through the provenance door
    (content credentials, watermark, generation log) like every Easel output.
    """
    import hashlib
    import time

    picture = open_input_image(image)  # before the heavy imports: bad input fails fast

    from easel.diffusion.upscaler import default_upscaler_dir, load_upscaler, upscale_images

    if picture.size != (64, 64):
        typer.echo(f"note: input is {picture.width}×{picture.height}; the upscaler reads 64×64, "
                   "so it is resized to 64 px first", err=True)
    from easel.diffusion.identity import weights_digest
    from easel.provenance.publish import GenerationInfo, publish_image

    model_dir = Path(model) if model else default_upscaler_dir()
    upscaler = load_upscaler(model_dir)
    start = time.perf_counter()
    result = upscale_images(upscaler, [picture])[0]
    seconds = time.perf_counter() - start
    info = GenerationInfo(
        prompt="", mode="upscale", model_id=upscaler_model_id(model_dir),
        model_sha256=weights_digest(model_dir),
        dataset_id=upscaler_dataset_id(model_dir), seed=None,
        parameters={"source_sha256": hashlib.sha256(image.read_bytes()).hexdigest(),
                    "source_size": list(picture.size), "input_size": [64, 64],
                    "output_size": list(result.size), "scale": int(upscaler.config.scale),
                    "seconds": round(seconds, 3)})
    published = publish_image(result, info, out_dir or get_settings().outputs_dir)
    typer.echo(str(published.path))


def upscaler_model_id(model_dir: Path) -> str:
    """How provenance names an upscaler: ``easel-upscaler`` for the shipped one, else its path."""
    from easel.diffusion.upscaler import default_upscaler_dir

    if model_dir.resolve() == default_upscaler_dir().resolve():
        from easel import __version__

        return f"easel-upscaler-{__version__}"
    return str(model_dir.resolve())


def upscaler_dataset_id(model_dir: Path) -> str | None:
    """The dataset id (256 px manifest hash) the upscaler was trained on, from ``training.json``."""
    info_path = model_dir / "training.json"
    if not info_path.is_file():
        return None
    try:
        datasets = json.loads(info_path.read_text()).get("datasets", {})
    except (OSError, ValueError):
        return None
    value = datasets.get("256px")
    return str(value) if value else None


def train_upscaler_cmd(
    corpus_64: Path = typer.Option(None, "--corpus-64",
                                   help="64 px corpus build (inputs); default: EASEL_HOME/corpus/64px."),
    corpus_256: Path = typer.Option(None, "--corpus-256",
                                    help="256 px corpus build (targets); default: EASEL_HOME/corpus/256px."),
    out: Path = typer.Option(None, "--out", "-o",
                             help="Model folder to write; default: EASEL_HOME/models/upscaler."),
    minutes: float = typer.Option(25.0, help="Training time budget, counted across resumes."),
    checkpoint_dir: Path = typer.Option(None, help="Checkpoint folder (resume point); "
                                        "default: EASEL_HOME/checkpoints/upscaler."),
    resume: bool = typer.Option(True, help="Continue from the checkpoint if there is one."),
    batch_size: int = typer.Option(16, help="Crops per optimisation step."),
    patch: int = typer.Option(32, help="Input crop side in px (target crops are 4× that)."),
    lr: float = typer.Option(2e-3, help="Peak Adam learning rate."),
    channels: int = typer.Option(32, help="Feature width of the network."),
    blocks: int = typer.Option(4, help="Residual blocks of the network."),
    edge_weight: float = typer.Option(0.1, help="Weight of the edge (gradient) L1 term."),
    eval_images: int = typer.Option(0, help="Val icons to measure PSNR on; 0 = all."),
    threads: int = typer.Option(1, help="CPU threads for torch."),
    seed: int = typer.Option(0, help="Random seed."),
    device: str = typer.Option(None, help="torch device; default: cuda if present, else cpu."),
) -> None:
    """Train the ×4 upscaler on the consented corpus (64 px renders → 256 px renders).

    Uses the train split of every set the base model may use (Streamline is held out),
    degrades the inputs like generated images, checkpoints as it goes (resumable), and at the
    end prints PSNR on val icons beside bicubic and Lanczos. Ctrl-Z pauses it (the pause does
    not count against --minutes); Ctrl-C saves the checkpoint and stops; the same command goes on.
    """
    from easel.diffusion.upscaler import TrainConfig, train_upscaler

    settings = get_settings()
    for name, value in (("--minutes", minutes), ("--batch-size", batch_size), ("--channels", channels),
                        ("--threads", threads)):
        if value <= 0:
            raise BadInput(f"{name} must be positive, got {value}")
    from easel.cli.train import consent_check

    cfg = TrainConfig(batch_size=batch_size, patch=patch, lr=lr, channels=channels, num_blocks=blocks,
                      edge_weight=edge_weight, eval_images=eval_images, threads=threads, seed=seed)
    low, high = corpus_64 or settings.corpus_dir / "64px", corpus_256 or settings.corpus_dir / "256px"
    for manifest in (low, high):  # the upscaler is part of the base model: same consent
        consent_check(manifest)
    result = train_upscaler(
        low, high,
        out or settings.home / "models" / "upscaler", minutes=minutes,
        checkpoint_dir=checkpoint_dir or settings.home / "checkpoints" / "upscaler",
        resume=resume, device=device, config=cfg)
    s = result.scores
    typer.echo(f"trained {result.steps} steps, {result.samples} crops, {result.train_seconds / 60:.1f} min")
    typer.echo(f"val PSNR on {s.images} icons (dB)   ours    bicubic  lanczos")
    for kind, scores in (("clean 64 px inputs", s.clean), ("degraded inputs", s.degraded)):
        typer.echo(f"  {kind:28s} {scores['ours']:7.2f} {scores['bicubic']:8.2f} {scores['lanczos']:8.2f}")
    typer.echo(f"network: {s.ms_per_image:.1f} ms per 256 px image")
    typer.echo(f"saved    {result.out_dir}")


def register_train(train_app: typer.Typer) -> None:
    """Add ``upscaler`` to the ``easel train`` group."""
    train_app.command("upscaler")(train_upscaler_cmd)


def register(app: typer.Typer) -> None:
    """Add the top-level ``easel upscale`` verb."""
    app.command("upscale")(upscale)


__all__ = ["open_input_image", "register", "register_train"]
