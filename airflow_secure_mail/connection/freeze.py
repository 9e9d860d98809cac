"""The incident kill switch: a connection frozen in Vault sends nothing until it is unfrozen.

``airflow-secure-mail incident freeze --conn-id ID --reason R`` writes ``{"frozen": true, "reason", "since",
"by"}`` to KV at ``<vault_path>.freeze`` (extra ``freeze_vault_path`` overrides it) on the credentials' mount
and KV version; ``unfreeze`` writes ``frozen: false``. KV v2 keeps every version, Vault's audit log says who.

Every send reads the switch before composing anything, at most once per ``freeze_check_interval`` seconds per
process (monotonic clock), past the KV cache. Nothing stored there means not frozen. When Vault does not answer
or denies the read, the last state read stays in force (a freeze holds while Vault is away); a state never read
lets the send go on with a warning, once per interval, naming the policy line to add: a worker policy written
before this switch existed must not stop every alert after an upgrade (``setup`` reports the gap).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_secure_mail.errors import SecureMailError, SendFrozen, VaultSecretError

if TYPE_CHECKING:
    from airflow_secure_mail.connection.settings import SmtpSettings

log = logging.getLogger(__name__)

READ_BUDGET = 5.0
"""Longest one read of the switch may take (and at most a quarter of the send's deadline): a Vault that does
not answer costs a send this much at most once per interval, and the last known state decides."""

_TRUE = ("true", "1", "yes", "on")
"""``bao kv put … frozen=true`` stores text: these words freeze as ``true`` does."""


@dataclass(frozen=True)
class FreezeState:
    """What the switch says: frozen or not, why, since when (ISO 8601 UTC) and by whom."""

    frozen: bool
    reason: str = ""
    since: str | None = None
    by: str | None = None

    @classmethod
    def from_secret(cls, data: dict[str, Any]) -> FreezeState:
        frozen = data.get("frozen")
        if isinstance(frozen, str):
            frozen = frozen.strip().lower() in _TRUE
        return cls(
            frozen=frozen is True or frozen == 1,
            reason=str(data.get("reason") or ""),
            since=str(data["since"]) if data.get("since") else None,
            by=str(data["by"]) if data.get("by") else None,
        )

    def to_secret(self) -> dict[str, Any]:
        return {"frozen": self.frozen, "reason": self.reason, "since": self.since, "by": self.by}


@dataclass(frozen=True)
class FreezeSwitch:
    """Where one connection's switch lives: its Vault connection, KV mount, path and version."""

    vault_conn_id: str
    mount: str
    path: str
    kv_version: int

    @property
    def where(self) -> str:
        return f"{self.mount}/{self.path}"

    def policy_path(self) -> str:
        """The path as a Vault policy names it (KV v2 adds ``data/``)."""
        return f"{self.mount}/data/{self.path}" if self.kv_version == 2 else self.where

    def policy_line(self, capabilities: tuple[str, ...] = ("read",)) -> str:
        caps = ", ".join(f'"{c}"' for c in capabilities)
        return f'path "{self.policy_path()}" {{ capabilities = [{caps}] }}'


def switch_for(settings: SmtpSettings) -> FreezeSwitch | None:
    """The connection's switch; None when it has neither ``vault_path`` nor ``freeze_vault_path``."""
    path = settings.freeze_path
    if path is None:
        return None
    return FreezeSwitch(settings.vault_conn_id, settings.vault_mount, path, settings.vault_kv_version)


@dataclass
class _Known:
    state: FreezeState | None = None
    """The last state read; None = never read in this process."""
    next_read: float = 0.0
    """``time.monotonic()`` after which the switch is read again."""
    warned_until: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


_known: dict[tuple[str, str, str], _Known] = {}
_known_lock = threading.Lock()


def _entry(switch: FreezeSwitch) -> _Known:
    key = (switch.vault_conn_id, switch.mount, switch.path)
    with _known_lock:
        return _known.setdefault(key, _Known())


def read_switch(switch: FreezeSwitch, vault: Any, *, budget: float = READ_BUDGET) -> FreezeState:
    """Read the switch from Vault now (no cache); nothing stored = not frozen. Raises VaultSecretError."""
    from airflow_secure_mail.vault import deadline

    with deadline(budget):
        try:
            data = vault.read(switch.path, mount=switch.mount, kv_version=switch.kv_version, fresh=True,
                              setting="freeze_vault_path", fields=("frozen",))  # fmt: skip
        except VaultSecretError as exc:
            if exc.missing:
                return FreezeState(frozen=False)
            raise
    return FreezeState.from_secret(dict(data))


def current_state(
    switch: FreezeSwitch, vault: Any, interval: float, *, conn_id: str, budget: float = READ_BUDGET
) -> FreezeState | None:
    """The switch's state as this process knows it, read again when ``interval`` seconds have passed.

    None: never read successfully (the send goes on; a warning said why, at most once per interval).
    """
    known = _entry(switch)
    with known.lock:  # one read per interval, whichever thread asks first; the others wait for its answer
        now = time.monotonic()
        if now < known.next_read:
            return known.state
        try:
            known.state = read_switch(switch, vault, budget=budget)
        except SecureMailError as exc:  # down, sealed, denied: the last known state stays in force
            if known.state is None and now >= known.warned_until:
                known.warned_until = now + interval
                log.warning(
                    "connection %r: cannot read its freeze switch at %s (%s); sending anyway. Give the workers' "
                    "Vault policy: %s",
                    conn_id, switch.where, _one_line(exc), switch.policy_line(),
                )  # fmt: skip
            elif known.state is not None:
                log.info("connection %r: freeze switch at %s not read (%s); keeping the last state read",
                         conn_id, switch.where, _one_line(exc))  # fmt: skip
        known.next_read = time.monotonic() + interval
        return known.state


def check_not_frozen(conn_id: str, settings: SmtpSettings, vault: Any) -> None:
    """Raise SendFrozen when connection ``conn_id`` is frozen (blocking: call it off the event loop)."""
    switch = switch_for(settings)
    if switch is None:
        return
    budget = min(READ_BUDGET, settings.deadline / 4)  # the send keeps most of its deadline for its own work
    state = current_state(switch, vault, settings.freeze_check_interval, conn_id=conn_id, budget=budget)
    if state is not None and state.frozen:
        raise frozen_error(conn_id, state)


def is_due(settings: SmtpSettings) -> bool:
    """Whether the next check of this connection reads Vault (so the caller can skip a thread hop if not)."""
    switch = switch_for(settings)
    if switch is None:
        return False
    return time.monotonic() >= _entry(switch).next_read


def cached_state(settings: SmtpSettings) -> FreezeState | None:
    """The last state read in this process (None: never read, or no switch)."""
    switch = switch_for(settings)
    return None if switch is None else _entry(switch).state


def frozen_error(conn_id: str, state: FreezeState) -> SendFrozen:
    reason = " ".join(state.reason.split()) or "no reason given"
    return SendFrozen(
        f"connection {conn_id!r} is frozen since {state.since or 'an unknown time'}: {reason.rstrip('.')}. "
        "Nothing was sent; "
        f"`airflow-secure-mail incident unfreeze --conn-id {conn_id}` ends the freeze.",
        conn_id=conn_id,
        reason=reason,
        since=state.since,
    )


def remember(switch: FreezeSwitch, state: FreezeState, interval: float) -> None:
    """Take ``state`` as just read (the CLI wrote it): sends of this process see it at once."""
    known = _entry(switch)
    with known.lock:
        known.state = state
        known.next_read = time.monotonic() + interval


def forget() -> None:
    """Forget every state read (tests; ``vault.clear_cache`` does not reach this)."""
    with _known_lock:
        _known.clear()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


__all__ = [
    "FreezeState",
    "FreezeSwitch",
    "cached_state",
    "check_not_frozen",
    "current_state",
    "forget",
    "frozen_error",
    "is_due",
    "read_switch",
    "remember",
    "switch_for",
]
