"""Signing keys are unlocked once per process and reused; a rotated key replaces the old one.

gpg and openssl judge every signature; no server is needed (protection is pure).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from airflow_secure_mail.errors import ConfigurationError
from airflow_secure_mail.mail import pgp, smime
from airflow_secure_mail.mail.pgp import GnuPGBackend, PgpSigner, SequoiaBackend, default_backend
from airflow_secure_mail.testing.keys import SmimeCA, make_pgp_identity

pytestmark = pytest.mark.tools  # gpg and openssl are the judges

DATA = b"Content-Type: text/plain\r\n\r\nreport\r\n"


@pytest.fixture(scope="module")
def signers():
    return make_pgp_identity("airflow@example.com"), make_pgp_identity("airflow@example.com")


def _verify_fingerprint(signature: bytes, identity) -> str:
    """The fingerprint gpg reports for a valid detached signature over DATA (independent keyring)."""
    home = tempfile.mkdtemp(prefix="asm-judge-")
    os.chmod(home, 0o700)
    base = ["gpg", "--homedir", home, "--batch", "--status-fd", "1"]
    try:
        subprocess.run([*base, "--import"], input=identity.public_key.encode(), check=True, capture_output=True)
        with tempfile.NamedTemporaryFile(suffix=".asc") as sig, tempfile.NamedTemporaryFile() as data:
            sig.write(signature), sig.flush()
            data.write(DATA), data.flush()
            out = subprocess.run([*base, "--verify", sig.name, data.name], capture_output=True).stdout.decode(
                errors="replace"
            )
        [line] = [ln for ln in out.splitlines() if "VALIDSIG" in ln]
        return line.split()[-1]  # the primary key's fingerprint
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True)


def test_sequoia_unlocks_a_signing_key_once_and_signs_many_times(signers):
    first, _ = signers
    backend = SequoiaBackend()
    signer = PgpSigner(first.private_key, first.passphrase)
    pgp._sequoia_signer.cache_clear()
    signatures = [backend.sign_detached(DATA, signer)[0] for _ in range(3)]
    info = pgp._sequoia_signer.cache_info()
    assert (info.misses, info.hits) == (1, 2)
    assert {_verify_fingerprint(s, first) for s in signatures} == {first.fingerprint}


@pytest.mark.parametrize("backend", [SequoiaBackend(), GnuPGBackend()], ids=["sequoia", "gnupg"])
def test_rotated_signing_key_signs_with_the_new_key(signers, backend):
    old, new = signers
    sig_old, _ = backend.sign_detached(DATA, PgpSigner(old.private_key, old.passphrase))
    sig_new, _ = backend.sign_detached(DATA, PgpSigner(new.private_key, new.passphrase))
    assert _verify_fingerprint(sig_old, old) == old.fingerprint
    assert _verify_fingerprint(sig_new, new) == new.fingerprint


@pytest.mark.parametrize("backend", [SequoiaBackend(), GnuPGBackend()], ids=["sequoia", "gnupg"])
def test_wrong_passphrase_is_not_remembered(backend):
    identity = make_pgp_identity("airflow@example.com")  # never unlocked in this process before
    with pytest.raises((ConfigurationError, pgp.SecureMailError), match="passphrase"):
        backend.sign_detached(DATA, PgpSigner(identity.private_key, "not-the-passphrase"))
    signature, micalg = backend.sign_detached(DATA, PgpSigner(identity.private_key, identity.passphrase))
    assert micalg in ("pgp-sha256", "pgp-sha512")
    assert _verify_fingerprint(signature, identity) == identity.fingerprint


def test_auto_backend_is_sequoia_where_installed():
    assert isinstance(default_backend(), SequoiaBackend)
    assert isinstance(default_backend("gnupg"), GnuPGBackend)
    with pytest.raises(ConfigurationError, match="unknown; use 'auto', 'sequoia' or 'gnupg'"):
        default_backend("pgpy")


def test_gnupg_home_is_private_and_removed_at_exit(signers):
    identity, _ = signers
    script = (
        "import os, stat, sys\n"
        "from airflow_secure_mail.mail.pgp import GnuPGBackend, PgpSigner, _gpg_home\n"
        "GnuPGBackend().sign_detached(b'x', PgpSigner(sys.argv[1], sys.argv[2]))\n"
        "home = _gpg_home().path\n"
        "print(home, oct(stat.S_IMODE(os.stat(home).st_mode)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, identity.private_key, identity.passphrase],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    home, mode = out
    assert mode == "0o700"
    assert not os.path.exists(home), "the per-process GNUPGHOME must be removed at exit"


def test_smime_signer_is_loaded_once_and_openssl_verifies():
    ca = SmimeCA()
    ident = ca.issue("airflow@example.com")
    signer = smime.SmimeSigner(ident.certificate, ident.private_key)
    smime._load_signer.cache_clear()
    ders = [smime.sign_detached(DATA, signer) for _ in range(3)]
    info = smime._load_signer.cache_info()
    assert (info.misses, info.hits) == (1, 2)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {n: os.path.join(tmp, n) for n in ("sig.der", "data", "ca.pem")}
        Path(paths["data"]).write_bytes(DATA)
        Path(paths["ca.pem"]).write_text(ca.pem)
        for der in ders:
            Path(paths["sig.der"]).write_bytes(der)
            result = subprocess.run(
                [
                    "openssl",
                    "cms",
                    "-verify",
                    "-binary",
                    "-inform",
                    "DER",
                    "-in",
                    paths["sig.der"],
                    "-content",
                    paths["data"],
                    "-CAfile",
                    paths["ca.pem"],
                    "-purpose",
                    "any",
                    "-out",
                    os.devnull,
                ],
                capture_output=True,
                text=True,
            )
            assert result.returncode == 0, result.stderr
