"""The exception family: one root, each error mixing in the built-in a caller would already catch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

E = TypeVar("E", bound=BaseException)


def detached(error: E) -> E:
    """``error`` without the chain of exceptions it replaced: a server reply or a Vault body kept in
    ``__context__``/``__cause__`` could echo a secret into a traceback."""
    error.__cause__ = None
    error.__context__ = None
    error.__suppress_context__ = True
    return error


class SecureMailError(Exception):
    """Root of every error this provider raises; messages never carry a secret."""


class TransportSecurityError(SecureMailError, ConnectionError):
    """TLS could not be established as the policy demands (no STARTTLS, bad certificate, old TLS)."""


class SmtpAuthError(SecureMailError, PermissionError):
    """The SMTP server rejected the credentials read from Vault."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class DeliveryError(SecureMailError):
    """The server did not accept the message for every recipient.

    ``refused`` maps each refused recipient to its ``(code, reply)``; ``transient`` says a retry may help.
    ``maybe_delivered``: the connection was lost after DATA started, so the server may have accepted it.
    ``throttled``: the server asked us to slow down (421 4.7.x, 432 4.3.2, 450 4.2.1, 454 Throttling).
    ``exhausted``: the relay refused for a quota that lasts (a daily sending limit): not worth retrying today.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        refused: Mapping[str, tuple[int, str]] | None = None,
        transient: bool = False,
        receipt: object | None = None,
        maybe_delivered: bool = False,
        throttled: bool = False,
        exhausted: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.refused = dict(refused or {})
        self.transient = transient or throttled
        self.receipt = receipt
        self.maybe_delivered = maybe_delivered
        self.throttled = throttled
        self.exhausted = exhausted


class VaultSecretError(SecureMailError, PermissionError):
    """A secret could not be read from Vault; ``path`` names where we looked, never a value.

    ``missing`` is True when nothing is stored there (as opposed to Vault being down or denying access).
    """

    def __init__(self, message: str, *, path: str | None = None, missing: bool = False) -> None:
        super().__init__(message)
        self.path = path
        self.missing = missing


class ConfigurationError(SecureMailError, ValueError):
    """A connection, policy or parameter is set up in a way we refuse to run with."""


class PolicyViolation(SecureMailError, ValueError):
    """A message broke a ``MailPolicy`` rule; ``rule`` and ``item`` say which and where."""

    def __init__(self, message: str, *, rule: str, item: str | None = None) -> None:
        super().__init__(message)
        self.rule = rule
        self.item = item


class EncryptionKeyMissing(SecureMailError, LookupError):
    """Encryption was requested but a recipient has no usable key; nothing was sent."""

    def __init__(self, message: str, *, recipient: str) -> None:
        super().__init__(message)
        self.recipient = recipient


class ArchiveError(SecureMailError, OSError):
    """The archive could not be read or written."""

    def __init__(self, message: str, *, key: str | None = None, exists: bool = False) -> None:
        super().__init__(message)
        self.key = key
        self.exists = exists
        """The object was already there (write-once): nothing was written."""


class ArchiveIntegrityError(ArchiveError):
    """An archived record does not match its checksum or authentication tag."""


class MalwareFound(PolicyViolation):
    """The malware scanner found ``signature`` in ``item`` (rule ``malware``); nothing was sent."""

    def __init__(self, message: str, *, item: str, signature: str) -> None:
        super().__init__(message, rule="malware", item=item)
        self.signature = signature


class MalwareScanError(PolicyViolation):
    """A part could not be scanned (scanner down, timeout, size or depth limit): refused, failing closed.

    ``rule`` is ``malware_scan``; ``reason`` says what went wrong. ``MailPolicy`` may allow such mail
    through unscanned with ``ClamdScanner(on_error="allow")``.
    """

    def __init__(self, message: str, *, item: str | None, reason: str) -> None:
        super().__init__(message, rule="malware_scan", item=item)
        self.reason = reason


class DigestFlushError(SecureMailError):
    """Some groups need attention: a digest not sent, or sent without an unreadable event (quarantined).

    Raised after every other group's digest went out. ``groups`` names the groups, ``problems`` says what
    happened to each, ``sent`` holds the Message-IDs that did go out.
    """

    def __init__(self, message: str, *, problems: Mapping[str, list[str]], sent: list[str]) -> None:
        super().__init__(message)
        self.problems = {gid: list(what) for gid, what in problems.items()}
        self.groups = sorted(self.problems)
        self.sent = list(sent)


class SpamRefused(PolicyViolation):
    """SpamAssassin scored a copy at or above ``threshold`` (rule ``spam``); nothing was sent.

    ``score`` and ``rules`` (the highest-scoring SpamAssassin rule names) say why, so the template can change.
    """

    def __init__(self, message: str, *, score: float, threshold: float, rules: tuple[str, ...] = ()) -> None:
        super().__init__(message, rule="spam")
        self.score = score
        self.threshold = threshold
        self.rules = tuple(rules)


class SpamScanError(PolicyViolation):
    """The copy could not be scored (spamd down, timeout, protocol error): refused, failing closed.

    ``rule`` is ``spam_scan``; ``reason`` says what went wrong. ``SpamAssassinScanner(on_error="allow")``
    sends such mail unscored instead.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, rule="spam_scan")
        self.reason = reason


class SendFrozen(PolicyViolation):
    """The connection is frozen by an operator (``airflow-secure-mail incident freeze``, rule ``frozen``).

    Nothing was sent; ``conn_id`` and ``reason`` say which freeze, ``since`` when it was set.
    """

    def __init__(self, message: str, *, conn_id: str, reason: str, since: str | None = None) -> None:
        super().__init__(message, rule="frozen")
        self.conn_id = conn_id
        self.reason = reason
        self.since = since
