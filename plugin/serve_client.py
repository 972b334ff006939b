"""The client side of ``lsr serve``: start it as a child process and talk JSON to it.

For tests, benchmarks and notebooks: :class:`ServerProcess` runs ``lsr serve`` on a free loopback
port and waits for ``/health``; :func:`post_json` sends a request and reads the answer, errors
included. Standard library only; the server's own code is :mod:`plugin.serve`.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class ServerProcess:
    """``lsr serve`` in a child process on a free loopback port; a context manager.

    ``with ServerProcess(index_dir, encoder_dir) as server: server.url``. The child's stderr goes to
    ``log_path``, shown in the error when it fails to start. ``nofile`` sets the child's open-file
    limit (soft and hard), as ``ulimit -n`` would.
    """

    def __init__(
        self,
        index_dir: str | Path,
        encoder_dir: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        args: list[str] | None = None,
        startup_timeout: float = 180.0,
        nofile: int | None = None,
    ):
        self.cmd = [sys.executable, "-m", "plugin.cli", "serve", str(index_dir), "--host", host]
        self.cmd += ["--port", str(port), *(args or [])]
        if encoder_dir is not None:
            self.cmd += ["--encoder", str(encoder_dir)]
        self.startup_timeout = startup_timeout
        self.nofile = nofile
        self.url: str | None = None
        self.proc: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="lsr-serve-", suffix=".log", delete=False)
        self.log_path = Path(self._log.name)
        self.startup_seconds: float | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("the server is not started")
        return self.proc.pid

    def _limit_files(self) -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def start(self) -> ServerProcess:
        start = time.perf_counter()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=REPO,
            env=env,
            preexec_fn=self._limit_files if self.nofile else None,
        )
        try:
            self.url = self._read_url(start + self.startup_timeout)
            while True:
                try:
                    with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                self._check_alive(start + self.startup_timeout)
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - start
        return self

    def _read_url(self, deadline: float) -> str:
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while True:
                self._check_alive(deadline)
                if sel.select(timeout=0.2):
                    line = self.proc.stdout.readline()
                    if "http://" in line:
                        return line[line.index("http://") :].split()[0]

    def _check_alive(self, deadline: float) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"lsr serve exited with code {self.proc.returncode}:\n{self.log_tail()}")
        if time.perf_counter() > deadline:
            raise TimeoutError(f"lsr serve did not start in {self.startup_timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]

    def stop(self, timeout: float = 15.0) -> int | None:
        """Terminate (SIGTERM, then SIGKILL after ``timeout``); the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)


def post_json(url: str, body: dict, timeout: float = 30.0) -> tuple[int, dict]:
    """POST ``body`` as JSON; ``(status, decoded JSON body)``, for 4xx/5xx too."""
    req = urllib.request.Request(
        url, data=json.dumps(body).encode("utf-8"), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
