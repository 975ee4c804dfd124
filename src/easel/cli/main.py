"""Entry point of the ``easel`` command.

Verbs are registered from the stage modules (``corpus``, ``registry``, ``generate`` …).
Heavy libraries are imported inside commands, never here, so ``easel --help`` is instant.
``EaselError`` raised anywhere below becomes one ``error:`` line and a non-zero exit.
"""

from __future__ import annotations

import logging
import sys

import typer

from easel import __version__
from easel.errors import EaselError

app = typer.Typer(
    name="easel",
    help="Easel: a consent-first AI art studio. Generates images with content credentials, "
    "learns only from consented work, and audits images against registered art.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"easel {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True,
                                help="More log output: -v for info, -vv for debug."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr, force=True)
    from easel.config import get_settings

    threads = get_settings().threads
    if threads:  # import torch only when asked, so commands without models stay quick
        import torch

        torch.set_num_threads(threads)


def _register() -> None:
    from easel.cli import corpus

    app.add_typer(corpus.app, name="corpus")
    for module_name in ("registry", "generate", "provenance", "audit", "train", "evaluate",
                        "style", "serve", "dataset", "upscale"):
        try:
            module = __import__(f"easel.cli.{module_name}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name == f"easel.cli.{module_name}":
                continue  # that stage has no verbs yet
            raise
        module.register(app)


_register()


def main() -> None:
    """Run the CLI, turning ``EaselError`` into a one-line message and its exit code."""
    try:
        # With standalone_mode=False click returns `typer.Exit`'s code instead of exiting.
        code = app(standalone_mode=False)
    except EaselError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        if exc.hint:
            typer.echo(f"  hint: {exc.hint}", err=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
