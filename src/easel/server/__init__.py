"""The web studio and HTTP API: FastAPI over the same library as the CLI.

``create_app(settings)`` builds the app; ``easel serve`` runs it with uvicorn. The pipeline is
loaded once in the lifespan, generation runs as jobs in a bounded worker queue, and every image
leaves through ``easel.provenance.publish.publish_image``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from easel.config import Settings


def create_app(settings: Settings | None = None, **kwargs: Any) -> FastAPI:
    """Build the FastAPI app (see ``easel.server.app.create_app``)."""
    from easel.server.app import create_app as _create

    return _create(settings, **kwargs)


__all__ = ["create_app"]
