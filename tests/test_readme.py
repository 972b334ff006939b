"""The README's Python examples run as written, against indexes and encoders built here under the names
they use (tiny random models: the examples' shapes, not their figures)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import java_available

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 4
    assert any("Searcher(" in b for b in BLOCKS) and any("SparseEncoder(" in b for b in BLOCKS)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_bert_dir, exported, tiny_index):
    from indexer.dense import DenseVectors
    from indexer.jsonvector import load_batch
    from indexer.native.build import build_native_index
    from lsr.runtime import load_encoder

    d = tmp_path_factory.mktemp("readme")
    (d / "enc").mkdir()
    (d / "indexes").mkdir()
    shutil.copytree(tiny_index["encoder"], d / "enc" / "splade")
    shutil.copytree(exported(tiny_bert_dir, "dense"), d / "enc" / "minilm")
    shutil.copytree(tiny_index["index"], d / "indexes" / "scifact-native")
    ids, docs = load_batch(tiny_index["vectors"], load_encoder(d / "enc" / "splade", "query").vocab)
    dense = load_encoder(d / "enc" / "minilm", "doc").encode([f"document {i}" for i in ids])
    build_native_index(d / "indexes" / "scifact", batches=[(ids, docs)], dense=DenseVectors(ids, dense))
    from indexer import live

    years = d / "years.jsonl"
    years.write_text("".join(f'{{"id": "{i}", "year": {2010 + n % 10}}}\n' for n, i in enumerate(ids)))
    live.append(d / "indexes" / "papers", [tiny_index["vectors"]], fields=["year"], fields_from=[years])
    if java_available():
        from indexer.lucene import build_lucene_index

        build_lucene_index([tiny_index["vectors"]], d / "indexes" / "scifact-lucene")
    return d


@pytest.mark.parametrize("n", range(len(BLOCKS)))
def test_readme_python_example_runs(workdir, monkeypatch, n):
    code = BLOCKS[n]
    if "pyserini" in code:
        if not java_available():
            pytest.skip("the Pyserini example needs Java 21+ and the Anserini jar")
        pytest.importorskip("pyserini", reason="the Pyserini example needs lsr[lucene]")
    if "jvm.start()" in code:
        # A JVM resolves relative paths against the directory it started in, and one may already run
        # in this process: run the block as a user would, in a fresh interpreter in that folder.
        import subprocess
        import sys

        env = {**os.environ, "PYTHONPATH": str(README.parent)}
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return
    monkeypatch.chdir(workdir)
    namespace: dict = {}
    exec(compile(code, f"README.md python block {n + 1}", "exec"), namespace)
    # Each example ends in a value the reader is shown: it must be a real one.
    last = code.strip().splitlines()[-1].split("#")[0].strip()
    if "=" not in last:
        assert eval(last, namespace) is not None
