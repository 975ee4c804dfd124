"""The one exception family that front doors turn into clear messages."""

from __future__ import annotations


class EaselError(Exception):
    """A problem the user can fix: says what was wrong and what to do.

    The CLI prints ``error: <message>`` (and the hint) and exits non-zero; the HTTP API
    answers 4xx with a JSON body. ``exit_code`` distinguishes bad input (2) from a failed
    operation (1).
    """

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class BadInput(EaselError, ValueError):
    """The user's input (an argument, a file, an image) is not acceptable."""

    exit_code = 2


class NotFound(EaselError):
    """A named thing (set, work, artist, model) does not exist."""

    exit_code = 2


class PermissionDenied(EaselError):
    """The caller may not do this (consent, ownership, style access)."""

    exit_code = 3


class Interrupted(EaselError):
    """A run stopped by Ctrl-C or SIGTERM after saving what it needs to resume."""

    exit_code = 130
