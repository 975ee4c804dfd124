"""Easel: a consent-first AI art studio.

Nothing heavy is imported here, so that ``easel --help`` answers at once.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]


def __getattr__(name: str) -> object:
    """Lazy access to model classes by name, as diffusers' loader expects of a library.

    A saved pipeline's ``model_index.json`` names components as ``["easel", "EaselUpscaler"]``;
    diffusers resolves that with ``getattr(easel, "EaselUpscaler")``. Importing lazily keeps
    ``import easel`` (and ``easel --help``) free of torch.
    """
    if name == "EaselUpscaler":
        from easel.diffusion.upscaler import EaselUpscaler

        return EaselUpscaler
    if name == "EaselPipeline":
        from easel.diffusion.pipeline import EaselPipeline

        return EaselPipeline
    raise AttributeError(f"module 'easel' has no attribute {name!r}")
