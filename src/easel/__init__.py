"""Easel: a consent-first AI art studio.

Nothing heavy is imported here, so that ``easel --help`` answers at once.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
