"""Starting and stopping a real clawgate gateway process for the tests."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
LISTENING = re.compile(r"^listening on (wss?://[^\s/]+:(\d+)/)\s*$")


def gateway_binary() -> Path:
    path = Path(os.environ.get("CLAWGATE_BIN") or REPO_ROOT / "target" / "debug" / "clawgate")
    if not path.is_file() or not os.access(path, os.X_OK):
        raise RuntimeError(
            f"no gateway binary at {path}: build it (`cargo build`) or set CLAWGATE_BIN"
        )
    return path


@dataclass
class Gateway:
    """A running `clawgate` process (its stderr log is in `log_path`)."""

    proc: subprocess.Popen[bytes]
    url: str
    port: int
    data_dir: Path
    log_path: Path
    token: str | None = None
    _drain: threading.Thread | None = field(default=None, repr=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the process and wait for it to exit; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._drain is not None:
            self._drain.join(5)
        return self.proc.returncode


def start_gateway(
    data_dir: Path,
    *,
    port: int = 0,
    token: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    config: str | None = None,
    timeout: float = 30.0,
) -> Gateway:
    """Start `clawgate --data-dir DATA_DIR --port PORT` and wait for its `listening on` line.

    `config` (TOML text) is written to `DATA_DIR/clawgate.toml`, the config file the gateway
    reads by default."""
    binary = gateway_binary()
    data_dir.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (data_dir / "clawgate.toml").write_text(config)
    # A clean environment: no CLAWGATE_* setting of the caller's leaks into the gateway.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAWGATE_")}
    env["NO_COLOR"] = "1"
    if token is not None:
        env["CLAWGATE_TOKEN"] = token
    env.update(extra_env or {})
    log_path = data_dir.parent / f"{data_dir.name}-gateway-{port or 'any'}.log"
    log_file = open(log_path, "ab")
    try:
        proc = subprocess.Popen(
            [str(binary), "--data-dir", str(data_dir), "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file,
            env=env,
        )
    finally:
        log_file.close()
    assert proc.stdout is not None
    stdout = proc.stdout

    lines: queue.Queue[bytes] = queue.Queue()

    def read_first_line() -> None:
        lines.put(stdout.readline())
        for _ in iter(stdout.readline, b""):  # keep the pipe drained
            pass

    drain = threading.Thread(target=read_first_line, name="gateway-stdout", daemon=True)
    drain.start()
    try:
        first = lines.get(timeout=timeout).decode("utf-8", "replace")
    except queue.Empty:
        proc.kill()
        proc.wait(5)
        raise RuntimeError(f"gateway printed nothing in {timeout} s; log:\n{log_path.read_text()}")
    match = LISTENING.match(first.strip())
    if match is None:
        proc.kill()
        proc.wait(5)
        raise RuntimeError(
            f"unexpected first line {first!r} (exit {proc.returncode}); log:\n"
            + log_path.read_text(errors="replace")
        )
    return Gateway(
        proc=proc,
        url=match.group(1),
        port=int(match.group(2)),
        data_dir=data_dir,
        log_path=log_path,
        token=token,
        _drain=drain,
    )
