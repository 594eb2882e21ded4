"""A real Orthanc PACS for tests and the benchmark: a child process with its own config and storage.

Debian's `orthanc` package (installed by `make test`) listens on free ports; liverview's AE is registered
so Orthanc accepts its find/get/move; studies are uploaded over REST (`POST /instances`).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from liverview.net.node import PacsNode, Timeouts

ORTHANC_AE = "ORTHANC"
LIVERVIEW_AE = "LIVERVIEW"


def closed_port() -> int:
    """A port nothing listens on (it was free a moment ago)."""
    return free_port()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Orthanc:
    """One running Orthanc. `modalities` are the AEs it knows: {name: (ae, host, port)}."""

    folder: Path
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    move_port: int = field(default_factory=free_port)
    #: Options added to (or replacing) the defaults of `config()`.
    extra_config: dict = field(default_factory=dict)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def config(self) -> dict:
        return {
            "Name": "liverview-test", "StorageDirectory": str(self.folder / "db"), "IndexDirectory": str(self.folder / "db"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": ORTHANC_AE,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": True,
            "DicomModalities": {"liverview": [LIVERVIEW_AE, "127.0.0.1", self.move_port]},
            "DicomScpTimeout": 30, "StableAge": 1, "SaveJobs": False, "Plugins": [], "StorageCompression": False,
            "HttpDescribeErrors": True, "DicomAssociationCloseDelay": 0, **self.extra_config,
        }

    def start(self, timeout_s: float = 20.0) -> Orthanc:
        # Debian installs it in /usr/sbin, which is not on every user's PATH.
        executable = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin")
        if executable is None:
            raise RuntimeError("Orthanc is not installed: `make test` installs it (apt-get install orthanc), "
                               "or install Debian's orthanc package by hand")
        (self.folder / "logs").mkdir(parents=True, exist_ok=True)
        config = self.folder / "orthanc.json"
        config.write_text(json.dumps(self.config()))
        # Debian's build waits for Nagle's algorithm on every C-GET sub-operation without TCP_NODELAY.
        env = {**os.environ, "TCP_NODELAY": "1"}
        self.process = subprocess.Popen([executable, f"--logdir={self.folder / 'logs'}", str(config)], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with status {self.process.returncode}; see {self.folder / 'logs'}")
            try:
                self.rest("GET", "/system")
                return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer on {self.url} within {timeout_s} s")

    def stop(self, graceful: bool = True) -> None:
        """Stop by PID; `graceful=False` kills at once (its storage is thrown away anyway)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)  # a test may have left it stopped
            if graceful:
                self.process.terminate()
            else:
                self.process.kill()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def rest(self, method: str, path: str, body: bytes | None = None) -> object:
        request = urllib.request.Request(self.url + path, data=body, method=method)
        with urllib.request.urlopen(request, timeout=30) as answer:
            data = answer.read()
        return json.loads(data) if data else None

    def upload(self, files) -> int:
        """POST each file to /instances; returns how many Orthanc stored."""
        n = 0
        for path in files:
            self.rest("POST", "/instances", Path(path).read_bytes())
            n += 1
        return n

    def clear(self) -> None:
        for patient in self.rest("GET", "/patients"):
            self.rest("DELETE", f"/patients/{patient}")

    def instance_count(self) -> int:
        return int(self.rest("GET", "/statistics")["CountInstances"])


#: Short waits so that a PACS gone silent is noticed in seconds, not the default minute.
TEST_TIMEOUTS = Timeouts(connection_s=3, acse_s=5, dimse_s=2, network_s=3)


def start_orthanc(folder: Path, **config) -> Orthanc:
    """A started Orthanc, or a test failure that says how to install it."""
    try:
        return Orthanc(folder, extra_config=config).start()
    except RuntimeError as exc:
        pytest.fail(str(exc))


def node_for(server: Orthanc, **changes) -> PacsNode:
    """liverview's node for `server`, with `changes` (e.g. a wrong AE title)."""
    node = PacsNode("test PACS", "127.0.0.1", server.dicom_port, called_ae=ORTHANC_AE, move_port=server.move_port,
                    timeouts=TEST_TIMEOUTS)
    return node.with_changes(**changes) if changes else node
