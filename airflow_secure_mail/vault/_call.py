"""One Vault request: inside the send's deadline, failures mapped to our errors, one re-login on 403."""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from airflow_secure_mail.errors import SecureMailError, VaultSecretError
from airflow_secure_mail.vault._errors import (
    DENIED,
    LOGIN,
    UNREACHABLE,
    Forbidden,
    count,
    deadline_error,
    kind_of,
    map_error,
)
from airflow_secure_mail.vault._login import Login, login_for

if TYPE_CHECKING:
    import hvac

T = TypeVar("T")

DEFAULT_CALL_BUDGET = 60.0
"""Longest one Vault call (retries included) may take when no send deadline is in force."""

_REPORT_MARGIN = 0.25
"""A Vault call under a send's deadline ends this long before it, so its error (naming Vault and the path)
reaches the caller before the send's own timeout cuts everything off with a generic one."""

_PROBE_BUDGET = 2.0
"""Longest a diagnostic connection after a failure (is that a plain-HTTP Vault?) may take, within the call's time."""

_deadline: contextvars.ContextVar[tuple[float, float] | None] = contextvars.ContextVar("vault_deadline", default=None)
"""The deadline in force: (its end on ``time.monotonic``, its length in seconds as configured)."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Every Vault call inside (threads from ``asyncio.to_thread`` included) ends within ``seconds``."""
    mine = (time.monotonic() + seconds, seconds)
    current = _deadline.get()
    token = _deadline.set(mine if current is None else min(current, mine))
    try:
        yield
    finally:
        _deadline.reset(token)


def call_budget() -> float:
    """Seconds the next Vault call may take: what is left of the deadline (less the report margin), at most
    DEFAULT_CALL_BUDGET."""
    current = _deadline.get()
    if current is None:
        return DEFAULT_CALL_BUDGET
    return min(DEFAULT_CALL_BUDGET, current[0] - _REPORT_MARGIN - time.monotonic())


def _limit_named(budget: float) -> float:
    """The limit an error names: the send's deadline as configured (not what was left of it), else the budget."""
    current = _deadline.get()
    return budget if current is None or current[1] > DEFAULT_CALL_BUDGET else current[1]


class VaultCalls:
    """Guarded, authenticated calls to one Vault connection; ``VaultSecrets`` adds KV and Transit on top."""

    def __init__(self, vault_conn_id: str) -> None:
        self.vault_conn_id = vault_conn_id

    @property
    def client(self) -> hvac.Client:
        """The process-wide authenticated client of this connection."""
        return self._guarded(LOGIN, lambda: login_for(self.vault_conn_id).client())

    def _call(self, what: str, op: Callable[[hvac.Client], T]) -> T:
        """Run one Vault request; on 403 log in again once (expired token), then say why it still fails."""
        login = login_for(self.vault_conn_id)
        for _attempt in range(2):
            client = self.client
            try:
                return self._guarded(what, lambda c=client: op(c))  # type: ignore[misc]
            except Forbidden:
                login.forget(client)
        raise self._denied(what, login)

    def _guarded(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` inside the call's deadline; map every failure to our errors with no context kept."""
        from airflow_secure_mail.vault._http import CallGuard, DeadlinePassed

        budget = call_budget()
        if budget <= 0:
            raise VaultSecretError(f"no time left for Vault call {what!r}: the send's deadline has passed.", path=what)
        guard = CallGuard(budget)
        try:
            with guard:
                return fn()
        except Forbidden:
            raise
        except BaseException as exc:
            expired = guard.expired or isinstance(exc, DeadlinePassed)
            kind = UNREACHABLE if expired else kind_of(exc)
            probe = min(_PROBE_BUDGET, guard.remaining())
            error = (
                deadline_error(what, _limit_named(budget))
                if expired
                else map_error(what, exc, self.vault_conn_id, probe_budget=probe)
            )
        if isinstance(error, Forbidden) and what == LOGIN:
            kind = DENIED
            error = VaultSecretError(
                f"Vault login for connection {self.vault_conn_id!r} was denied: check its credentials and role.",
                path=what,
            )
        if kind is not None and isinstance(error, SecureMailError):  # not a 403 to retry, nor a cancellation
            count(kind)
        raise error  # outside the except: no __context__ that could hold a reply body

    def _denied(self, what: str, login: Login) -> VaultSecretError:
        """Why a request is still refused after a fresh login: the agent's role, a dead token, or the policy."""
        conn = self.vault_conn_id
        if login.agent:
            count(DENIED)
            return VaultSecretError(
                f"Vault denied access to {what} through the agent of connection {conn!r}: grant the agent's "
                "role read on this path, and check the agent is logged in.",
                path=what,
            )
        try:
            client = self.client
            self._guarded("auth/token/lookup-self", lambda: client.auth.token.lookup_self())
        except Forbidden:
            count(DENIED)
            return VaultSecretError(
                f"Vault rejected the token of connection {conn!r} as invalid or expired while reading {what}: "
                "issue a new token, or use an auth method that logs in (AppRole, Kubernetes).",
                path=what,
            )
        except VaultSecretError as exc:
            return exc  # counted as what it is (unreachable, ...)
        count(DENIED)
        return VaultSecretError(f"Vault denied access to {what}: grant the Airflow role read on this path.", path=what)
