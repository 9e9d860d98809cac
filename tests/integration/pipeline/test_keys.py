"""resolve_keys against a real OpenBao: what it fetches, where it puts it, and how often it asks Vault."""

from __future__ import annotations

import json
import secrets
from collections import Counter

import pytest

from airflow_secure_mail.errors import ConfigurationError, VaultSecretError
from airflow_secure_mail.mail.protect import Protection
from airflow_secure_mail.pipeline.keys import resolve_keys
from airflow_secure_mail.testing.keys import seed_vault_keys
from tests.helpers import audit_paths


@pytest.fixture(scope="module")
def seeded(bao):
    """A recipient and a signer under fresh paths, and an archive key stored as a ``vault:`` reference."""
    tag = secrets.token_hex(3)
    keys = seed_vault_keys(
        bao.client(),
        "alice@example.com",
        "airflow@example.com",
        keys_path=f"mail-keys-{tag}",
        signing_path=f"mail-signing-{tag}",
    )
    bao.client().secrets.kv.v2.create_or_update_secret(
        path=f"archive-key-{tag}", secret={"pgp_public_key": keys.signer_pgp.public_key}
    )
    return tag, keys


def _reads(bao, since: int) -> dict[str, int]:
    return dict(
        Counter(p.removeprefix("secret/data/") for p in audit_paths(bao, since, "read") if p.startswith("secret/data/"))
    )


def test_thousand_resolutions_read_each_key_once_the_missing_one_included(mail_env, seeded):
    from airflow_secure_mail.vault import vault_for

    tag, keys = seeded
    protection = Protection(
        encrypt="pgp",
        sign=True,
        keys_vault_path=f"mail-keys-{tag}",
        signing_vault_path=f"mail-signing-{tag}",
        encrypt_to=(f"vault:archive-key-{tag}#pgp_public_key",),
        missing_key="drop_recipient",
    )
    before = len(mail_env.bao.audit_requests())
    results = [resolve_keys(protection, ["alice@example.com", "nokey@example.com"], vault_for()) for _ in range(1000)]
    assert _reads(mail_env.bao, before) == {
        f"mail-keys-{tag}/alice@example.com": 1,
        f"mail-keys-{tag}/nokey@example.com": 1,
        f"mail-signing-{tag}": 1,
        f"archive-key-{tag}": 1,
    }
    last = results[-1]
    assert dict(last.recipients) == {"alice@example.com": keys.recipient_pgp.public_key}
    assert last.encrypt_to == (keys.signer_pgp.public_key,)  # its own field, not mixed into recipients
    assert last.pgp_signer is not None and last.pgp_signer.private_key == keys.signer_pgp.private_key
    assert last.pgp_signer.passphrase == keys.signer_pgp.passphrase
    assert last.smime_signer is None


def test_smime_resolution_takes_certificates_and_the_smime_signer(mail_env, seeded):
    from airflow_secure_mail.vault import vault_for

    tag, keys = seeded
    protection = Protection(
        encrypt="smime", sign=True, keys_vault_path=f"mail-keys-{tag}", signing_vault_path=f"mail-signing-{tag}"
    )
    material = resolve_keys(protection, ["alice@example.com"], vault_for())
    assert dict(material.recipients) == {"alice@example.com": keys.recipient_smime.certificate}
    assert material.pgp_signer is None and material.smime_signer is not None
    assert material.smime_signer.certificate == keys.signer_smime.certificate
    assert material.encrypt_to == ()


def test_inline_recipient_key_is_used_without_asking_vault(mail_env):
    from airflow_secure_mail.vault import vault_for

    before = len(mail_env.bao.audit_requests())
    protection = Protection(encrypt="pgp", recipient_keys={"Bob@Example.com": "inline-key"})
    material = resolve_keys(protection, ["bob@example.com"], vault_for())
    assert dict(material.recipients) == {"bob@example.com": "inline-key"}
    assert _reads(mail_env.bao, before) == {}


def test_vault_denial_on_a_key_path_is_an_error_not_a_missing_key(mail_env, monkeypatch, seeded):
    from airflow_secure_mail.vault import vault_for

    tag, _ = seeded
    root = mail_env.bao.client()
    root.sys.create_or_update_policy(name="smtp-only", policy='path "secret/data/smtp/*" { capabilities = ["read"] }')
    token = root.auth.token.create(policies=["smtp-only"], ttl="1h")["auth"]["client_token"]
    conn = dict(mail_env.bao.connection_uri(), password=token)
    monkeypatch.setenv("AIRFLOW_CONN_VAULT_SMTP_ONLY", json.dumps(conn))
    protection = Protection(encrypt="pgp", keys_vault_path=f"mail-keys-{tag}", missing_key="drop_recipient")
    with pytest.raises(VaultSecretError) as info:
        resolve_keys(protection, ["alice@example.com"], vault_for("vault_smtp_only"))
    assert str(info.value) == (
        f"Vault denied access to secret/mail-keys-{tag}/alice@example.com: grant the Airflow role read on this path."
    )
    assert not info.value.missing


def test_signing_path_without_the_schemes_key_is_named(mail_env):
    from airflow_secure_mail.vault import vault_for

    path = "signing-empty-" + secrets.token_hex(3)
    mail_env.bao.client().secrets.kv.v2.create_or_update_secret(path=path, secret={"note": "no key here"})
    with pytest.raises(ConfigurationError) as info:
        resolve_keys(Protection(sign=True, signing_vault_path=path), ["a@example.com"], vault_for())
    assert str(info.value) == f"no pgp signing key at {path}."
