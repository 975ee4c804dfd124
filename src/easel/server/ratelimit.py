"""Failed log-ins and API-key checks, limited per account and per client address.

Every failure is a row of ``auth_failures`` (scope + key + time) in the shared database, so the
limit holds across workers, several ``easel serve`` processes and restarts. A password is only
checked while both its account and its address are under their limits: once over, the answer is
429 with ``Retry-After`` (seconds until the oldest counted failure leaves the window) and the
password is not even looked at, so guessing gains nothing. A successful log-in clears its own
account's count only: the address count stays, so logging into one's own account does not buy
more guesses at others. API keys are 256-bit random, so guessing them is hopeless anyway; their
failures are counted per address only to stop a client that hammers the server with bad keys,
and a valid key is never refused. The count and the insert are not one transaction, so a burst of
parallel guesses can pass a limit by the number of requests in flight (a few), not more.

The client address is ``request.client.host``: the socket peer, or, for connections from the
addresses uvicorn trusts (``FORWARDED_ALLOW_IPS``, default 127.0.0.1, as ``easel serve`` runs
it), the client named in ``X-Forwarded-For`` by a reverse proxy on the same host.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from easel.errors import EaselError, PermissionDenied
from easel.server.models import AuthFailure, User

WINDOW = timedelta(minutes=15)
"""The window failures are counted in (OWASP's authentication cheat sheet suggests minutes, not
hours, so that a locked-out user is not locked out for long)."""
MAX_FAILURES_PER_ACCOUNT = 5
"""Failed log-ins per account in ``WINDOW``: 5 per 15 min, i.e. at most 480 guesses a day per
account from any number of addresses, while a user mistyping a password a few times is not
stopped."""
MAX_FAILURES_PER_ADDRESS = 20
"""Failed log-ins per client address in ``WINDOW``, over all accounts: higher than per account
because several people may share one address (an office NAT), low enough that one address
cannot spray guesses over many accounts (20 per 15 min)."""
MAX_KEY_FAILURES_PER_ADDRESS = 20
"""Wrong API keys per client address in ``WINDOW`` (a misconfigured script fails a few times; a
scanner is stopped after 20)."""

SCOPE_ACCOUNT = "account"
SCOPE_ADDRESS = "address"
SCOPE_KEY_ADDRESS = "key_address"
MAX_KEY_CHARS = 200


class TooManyAttempts(EaselError):
    """Too many failed log-ins or key checks (HTTP 429 with ``Retry-After``)."""

    http_status = 429

    def __init__(self, message: str, retry_after: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


def _key(value: str) -> str:
    # lone surrogates (valid JSON, not valid UTF-8) become "?" so that any string can be stored
    text = value.strip().lower()[:MAX_KEY_CHARS].encode("utf-8", "replace").decode("utf-8")
    return text or "-"


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _retry_after(url: str, scope: str, key: str, limit: int, now: datetime) -> int | None:
    """Seconds until ``scope/key`` is under ``limit`` again, or None if it is under it now."""
    from easel.registry.store import registry_session

    since = now - WINDOW
    with registry_session(url) as session:
        count = session.scalar(select(func.count()).select_from(AuthFailure).where(
            AuthFailure.scope == scope, AuthFailure.key == key, AuthFailure.at > since)) or 0
        if count < limit:
            return None
        # the failure whose ageing-out brings the count under the limit
        oldest = session.scalar(select(AuthFailure.at).where(
            AuthFailure.scope == scope, AuthFailure.key == key, AuthFailure.at > since)
            .order_by(AuthFailure.at).offset(count - limit).limit(1))
    if oldest is None:
        return None
    return max(1, math.ceil((oldest + WINDOW - now).total_seconds()))


def check_login(url: str, username: str, address: str) -> None:
    """Raise ``TooManyAttempts`` if the account or the address is over its log-in limit."""
    now = datetime.now(UTC)
    waits = [w for w in (_retry_after(url, SCOPE_ACCOUNT, _key(username), MAX_FAILURES_PER_ACCOUNT, now),
                         _retry_after(url, SCOPE_ADDRESS, _key(address), MAX_FAILURES_PER_ADDRESS, now))
             if w is not None]
    if waits:
        wait = max(waits)
        raise TooManyAttempts(f"too many failed log-ins; try again in {wait} s", retry_after=wait,
                              hint="if you forgot your password, ask an operator")


def record_login_failure(url: str, username: str, address: str) -> None:
    """Count one failed log-in against the account and the address (and drop expired rows)."""
    _record(url, [(SCOPE_ACCOUNT, _key(username)), (SCOPE_ADDRESS, _key(address))])


def clear_account(url: str, username: str) -> None:
    """After a successful log-in: forget the account's failures (the address's stay)."""
    from easel.registry.store import registry_session

    with registry_session(url) as session:
        session.execute(delete(AuthFailure).where(AuthFailure.scope == SCOPE_ACCOUNT,
                                                  AuthFailure.key == _key(username)))


def key_failure(url: str, address: str) -> TooManyAttempts | None:
    """A wrong API key from ``address``: count it, or, if the address is over its limit, return
    the ``TooManyAttempts`` to raise instead of 401 (nothing more is stored then)."""
    now = datetime.now(UTC)
    wait = _retry_after(url, SCOPE_KEY_ADDRESS, _key(address), MAX_KEY_FAILURES_PER_ADDRESS, now)
    if wait is not None:
        return TooManyAttempts(f"too many wrong API keys from this address; try again in {wait} s",
                               retry_after=wait, hint="check the key your client sends")
    _record(url, [(SCOPE_KEY_ADDRESS, _key(address))])
    return None


def _record(url: str, entries: list[tuple[str, str]]) -> None:
    from easel.registry.store import registry_session

    now = datetime.now(UTC)
    with registry_session(url) as session:
        session.execute(delete(AuthFailure).where(AuthFailure.at <= now - WINDOW))
        for scope, key in entries:
            session.add(AuthFailure(scope=scope, key=key, at=now))


def login(url: str, db: Session, username: str, password: str, address: str) -> User:
    """Check the limits, then the password; count a failure, clear the account on success.

    Returns the ``User``; raises ``TooManyAttempts`` or the ``PermissionDenied`` of a wrong
    password. ``db`` is the request's session (the failure rows use their own transaction,
    so they stay when the request's is rolled back).
    """
    from easel.server.accounts import authenticate_password

    check_login(url, username, address)
    try:
        if not (_encodable(username) and _encodable(password)):  # no account has such a name
            raise PermissionDenied("wrong username or password")
        user = authenticate_password(db, username, password)
    except PermissionDenied:
        record_login_failure(url, username, address)
        raise
    clear_account(url, username)
    return user


def client_address(request: object) -> str:
    """The client's address as the rate limit sees it (the socket peer)."""
    client = getattr(request, "client", None)
    return str(client.host) if client is not None and client.host else "unknown"
