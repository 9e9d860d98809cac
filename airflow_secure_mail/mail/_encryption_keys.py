"""The keys one message is encrypted to: each recipient's (checked to be theirs) and the extra ``encrypt_to`` ones."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class EncryptionKey:
    """``label`` names it in errors: the recipient's address, or ``encrypt_to <kind> N`` for an extra key."""

    label: str
    material: str = field(repr=False)
    is_recipient: bool


def encryption_keys(
    recipient_keys: Mapping[str, str], extra_keys: Sequence[str], kind: str = "key"
) -> list[EncryptionKey]:
    recipients = [EncryptionKey(address, material, True) for address, material in recipient_keys.items()]
    extras = [EncryptionKey(f"encrypt_to {kind} {i + 1}", material, False) for i, material in enumerate(extra_keys)]
    return recipients + extras
