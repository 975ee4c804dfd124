"""``easel serve``: the web studio and HTTP API (FastAPI under uvicorn)."""

from __future__ import annotations

import typer


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default; put a TLS "
                             "proxy in front before binding a public address)."),
    port: int = typer.Option(8000, help="TCP port."),
    workers: int = typer.Option(None, "--jobs", help="Generation jobs run at once "
                                "(default EASEL_SERVER_WORKERS, 1)."),
    threads: int = typer.Option(None, help="torch threads for generation (default: torch's)."),
    add_operator: str = typer.Option(None, "--add-operator", metavar="USERNAME",
                                     help="Create an operator account (password from "
                                     "EASEL_OPERATOR_PASSWORD or a prompt) and exit."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Serve the web studio and the HTTP API (OpenAPI at /docs, A1111 routes under /sdapi/v1).

    The model (EASEL_MODEL_DIR or the shipped one) is loaded once at start-up; generation runs
    as jobs in a bounded queue (EASEL_SERVER_QUEUE) with EASEL_SERVER_WORKERS at a time.
    """
    import os

    from easel.config import get_settings
    from easel.errors import BadInput

    settings = get_settings()
    if add_operator:
        from easel.registry.store import registry_session
        from easel.server.accounts import create_user

        password = os.environ.get("EASEL_OPERATOR_PASSWORD") or typer.prompt(
            "password", hide_input=True, confirmation_prompt=True)
        settings.ensure_home()
        with registry_session(settings.db_url) as session:
            user = create_user(session, add_operator, password, "operator", allow_operator=True)
        typer.echo(f"operator {user.username} created")
        return
    if not 1 <= port <= 65535:
        raise BadInput(f"--port must be between 1 and 65535, got {port}")
    if workers is not None:
        if not 1 <= workers <= 16:
            raise BadInput(f"--jobs must be between 1 and 16, got {workers}")
        settings = settings.model_copy(update={"server_workers": workers})
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))
    import uvicorn

    from easel.server import create_app

    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
