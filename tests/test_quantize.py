"""The quantization contract: one rule, round trip, pre-quantized detection."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.jsonvector import format_lines, load_batch
from indexer.quantize import (
    IMPACT_SCALE,
    MAX_IMPACT,
    dequantize,
    is_quantized,
    quantize,
    quantize_batch,
)
from lsr.sparse import SparseBatch

VOCAB = tuple(f"t{i}" for i in range(20))


def test_rounds_half_to_even_and_never_truncates():
    w = np.array([0.004, 0.017, 1.7, 2.449, 2.4951], np.float32)
    assert quantize(w).tolist() == [0, 2, 170, 245, 250]  # 1.7 -> 170, never int(1.7) == 1
    halves = np.array([0.125, 0.375, 0.625], np.float32)  # exact in binary: x4 gives 0.5, 1.5, 2.5
    assert quantize(halves, scale=4).tolist() == [0, 2, 2]


def test_round_trip_error_is_at_most_half_a_step():
    rng = np.random.default_rng(0)
    w = (rng.random(10_000) * 5).astype(np.float32)
    for scale in (1.0, 10.0, IMPACT_SCALE, 256.0):
        back = dequantize(quantize(w, scale), scale)
        assert np.abs(back - w).max() <= 0.5 / scale + 1e-6


def test_refuses_impacts_beyond_max_impact_and_bad_scales():
    assert quantize(np.array([655.35, 1.0])).tolist() == [MAX_IMPACT, 100]
    # Never clipped: 655.355 x 100 rounds to 65536, and 1e38 is a broken vector.
    for w in (655.355, 1e9, 1e38, np.inf):
        with pytest.raises(ValueError, match=r"1 weight\(s\) beyond the impact range, e\.g\. weight"):
            quantize(np.array([1.0, w]))
    with pytest.raises(ValueError, match="at scale 1000"):
        quantize(np.array([70.0]), scale=1000)
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive number"):
            quantize(np.ones(2, np.float32), bad)


def test_quantize_batch_drops_zero_impacts_and_keeps_rows():
    b = SparseBatch.from_dicts([{"t1": 0.001, "t2": 1.234}, {"t3": 0.002}, {}, {"t4": 0.3}], VOCAB)
    q = quantize_batch(b)
    assert q.to_dicts() == [{"t2": 123.0}, {}, {}, {"t4": 30.0}]
    assert is_quantized(q) and not is_quantized(b)


def test_impacts_written_as_integers_read_back_as_quantized(tmp_path):
    q = quantize_batch(SparseBatch.from_dicts([{"t1": 1.7, "t5": 0.42}], VOCAB))
    lines = format_lines(["d1"], q, impacts=True)
    assert '"t1": 170' in lines[0] and '"t5": 42' in lines[0] and "." not in lines[0].split("vector")[1]
    path = tmp_path / "v.jsonl"
    path.write_text("".join(lines))
    _, back = load_batch(path, VOCAB)
    assert is_quantized(back)
    np.testing.assert_array_equal(back.weights, q.weights)


def test_given_integer_impacts_are_kept_and_refused_beyond_max_impact():
    from indexer.quantize import to_impacts

    assert to_impacts(np.array([3, 0, MAX_IMPACT]), 100.0, given=True).tolist() == [3, 0, MAX_IMPACT]
    # 1e20 once overflowed int64 and the term was dropped; 70000 was clipped.
    for w in (70000, 1e20):
        with pytest.raises(ValueError, match=r"integer impact .* exceeds 65535"):
            to_impacts(np.array([3, w]), 100.0, given=True)
    assert to_impacts(np.array([0.03, 1.7]), 100.0, given=False).tolist() == [3, 170]
