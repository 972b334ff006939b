"""The Ray suites (tests/ray_suite: encoding on Ray, shards in Ray actors, their fault tests) in a
pytest process of their own, each starting a local cluster (``ray.init(num_cpus=2)``): a Ray driver
leaves native threads behind that later JVM tests in the same process did not survive."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="Ray is the lsr[ray] extra: pip install 'lsr[ray]'")
pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("suite", ["test_ray_encode.py", "test_ray_shards.py", "test_scaleout_smoke.py"])
def test_ray_suite_passes_in_its_own_process(suite, tmp_path):
    env = {**os.environ, "LSR_RAY_CHILD": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"tests/ray_suite/{suite}"]
    cmd += ["--basetemp", str(tmp_path / "t")]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    assert " passed" in done.stdout and "failed" not in done.stdout, done.stdout[-3000:]
