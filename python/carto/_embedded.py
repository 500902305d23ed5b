"""An embedded coordinator: `carto serve` on a loopback port, with a fresh
random token, for the life of one Recorder."""

from __future__ import annotations

import atexit
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, List, Optional

from .errors import CartoBinaryNotFound, CoordinatorError

_SERVING = re.compile(r"^carto: serving on (https?://\S+)")


def find_binary(explicit: Optional[str] = None) -> str:
    """The `carto` executable: `explicit`, else $CARTO_BIN, else `carto` on PATH."""
    if explicit:
        return explicit
    env = os.environ.get("CARTO_BIN")
    if env:
        if not (os.path.isfile(env) and os.access(env, os.X_OK)):
            raise CartoBinaryNotFound(f"carto: CARTO_BIN={env} is not an executable file")
        return env
    found = shutil.which("carto")
    if found:
        return found
    raise CartoBinaryNotFound(
        "carto: no `carto` binary to start an embedded coordinator: set CARTO_BIN to its path "
        "or put it on PATH (build it with `cargo build --release -p carto-coordinator`), "
        "or pass coordinator=URL"
    )


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the coordinator gets SIGTERM if this Python process dies."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class EmbeddedCoordinator:
    """`carto serve --listen 127.0.0.1:0 --state-dir TMP --token-file TMP/token`."""

    def __init__(self, binary: Optional[str] = None, *, start_timeout: float = 30.0) -> None:
        self.binary = find_binary(binary)
        self.start_timeout = start_timeout
        self.dir = Path(tempfile.mkdtemp(prefix="carto-embedded-"))
        self.token = secrets.token_hex(32)
        self.token_file = self.dir / "token"
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.token + "\n")
        self.state_dir = self.dir / "state"
        self.log_path = self.dir / "serve.log"
        self.url: Optional[str] = None
        self.proc: Optional["subprocess.Popen[str]"] = None
        self._log: Optional[IO[str]] = None
        self._lock = threading.Lock()

    def start(self) -> str:
        """Starts the process; returns its URL once it serves."""
        self._log = open(self.log_path, "w")
        cmd: List[str] = [
            self.binary, "serve",
            "--listen", "127.0.0.1:0",
            "--state-dir", str(self.state_dir),
            "--token-file", str(self.token_file),
        ]
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._log,
                text=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        except OSError as e:
            self.stop()
            raise CartoBinaryNotFound(f"carto: cannot start {self.binary}: {e}") from None
        atexit.register(self.stop)
        found: List[str] = []
        ready = threading.Event()
        assert self.proc.stdout is not None
        out = self.proc.stdout

        def read_stdout() -> None:
            # Reads the "serving on" line, then drains stdout for the process's life.
            for line in out:
                if not found:
                    m = _SERVING.match(line.strip())
                    if m:
                        found.append(m.group(1))
                        ready.set()
            ready.set()

        threading.Thread(target=read_stdout, name="carto-serve-stdout", daemon=True).start()
        ready.wait(self.start_timeout)
        if not found:
            log = self._log_tail()
            self.stop()
            raise CoordinatorError(f"carto: `{' '.join(cmd)}` did not start serving: {log or 'no output'}")
        self.url = found[0]
        return self.url

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text()[-2000:].strip()
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the process (SIGTERM, then SIGKILL) and removes its files."""
        with self._lock:
            p = self.proc
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            if p is not None and p.stdout is not None:
                try:
                    p.stdout.close()
                except Exception:
                    pass
            if self._log is not None:
                self._log.close()
                self._log = None
            if self.dir.exists():
                shutil.rmtree(self.dir, ignore_errors=True)
            try:
                atexit.unregister(self.stop)
            except Exception:
                pass

    def __enter__(self) -> "EmbeddedCoordinator":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
