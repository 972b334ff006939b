"""Live native indexes: after random appends, deletes, upserts and merges, exact search equals brute
force over the live documents (and a fresh build of them) hit for hit; filtered search equals brute
force over the allowed documents."""

from __future__ import annotations

import json

import numpy as np
import pytest

from indexer import live
from indexer.native.build import build_native_index
from indexer.quantize import quantize
from lsr.sparse import SparseBatch
from plugin.live import Filter, LiveSearcher, internal_order
from plugin.native import NativeSearcher

VOCAB = tuple(f"t{i}" for i in range(60))
LEVELS = (0.5, 1.0, 2.0)  # few weight levels: many tied scores


def random_vectors(rng, n):
    out = []
    for _ in range(n):
        terms = rng.choice(len(VOCAB), rng.integers(1, 9), replace=False)
        out.append({VOCAB[t]: float(rng.choice(LEVELS)) for t in terms})
    return out


def write(path, docs: dict[str, dict[str, float]]):
    with open(path, "w") as f:
        for i, v in docs.items():
            f.write(json.dumps({"id": i, "vector": v}) + "\n")
    return path


def brute_force(docs: dict[str, dict[str, float]], order, query, k, allowed=None):
    """Quantized dot products over the live documents, ties by ``order`` (the stated tie rule)."""
    q = {t: int(quantize(np.array([w], np.float32))[0]) for t, w in query.items()}
    scored = []
    for rank, i in enumerate(order):
        if allowed is not None and i not in allowed:
            continue
        d = docs[i]
        s = sum(w * int(quantize(np.array([d[t]], np.float32))[0]) for t, w in q.items() if t in d)
        if s > 0:
            scored.append((-s, rank, i))
    scored.sort()
    return [(i, float(-s)) for s, _, i in scored[:k]]


def as_query(vector):
    return SparseBatch.from_dicts([vector], VOCAB)


def check(searcher: LiveSearcher, docs, rng, n_queries=12):
    order = internal_order(searcher).tolist()
    assert sorted(order) == sorted(docs), "the live documents are exactly the ones appended and not deleted"
    ids = list(docs)
    for query in random_vectors(rng, n_queries):
        for k in (1, 10, 200):
            want = brute_force(docs, order, query, k)
            for mode in ("exact", "scan"):
                got = [(h.docid, h.score) for h in searcher.search(as_query(query), k, mode=mode)]
                assert got == want, (mode, k)
        for share in (1 / 7, 0.0):  # a tenth and a single document (direct from a forward store)
            n_allowed = max(1, int(len(ids) * share))
            allowed = set(rng.choice(ids, n_allowed, replace=False).tolist()) if ids else set()
            want = brute_force(docs, order, query, 10, allowed)
            got = [(h.docid, h.score) for h in searcher.search(as_query(query), 10, filter=Filter(allowed))]
            assert got == want, ("filtered", share)


@pytest.mark.parametrize("seed", range(6))
def test_random_appends_deletes_upserts_and_merges_equal_brute_force(tmp_path, seed):
    rng = np.random.default_rng(seed)
    root = tmp_path / "live"
    docs: dict[str, dict[str, float]] = {}
    next_id = 0
    options = {"block_size": 4, "forward": seed % 2 == 1}  # odd seeds: selective filters score directly
    searcher = None
    for step in range(10):
        op = rng.choice(["append", "append", "delete", "upsert", "merge"]) if docs else "append"
        if op in ("append", "upsert"):
            n = int(rng.integers(1, 40))
            batch = {}
            if op == "upsert":
                for i in rng.choice(list(docs), min(len(docs), 5), replace=False).tolist():
                    batch[i] = random_vectors(rng, 1)[0]
            for v in random_vectors(rng, n):
                batch[f"d{next_id}"] = v
                next_id += 1
            change = live.append(
                root, [write(tmp_path / f"v{step}.jsonl", batch)], upsert=op == "upsert", **options
            )
            assert change.added == len(batch)
            docs.update(batch)
        elif op == "delete":
            gone = rng.choice(
                list(docs), int(rng.integers(1, max(2, len(docs) // 3))), replace=False
            ).tolist()
            change = live.delete(root, [*gone, "never-there"])
            assert (change.deleted, change.not_found) == (len(gone), 1)
            for i in gone:
                del docs[i]
        else:
            change = live.merge(root, max_segments=int(rng.integers(1, 3)), **options)
        if searcher is None:
            searcher = LiveSearcher(root, scan_below=0)
        else:
            changed = change.generation != searcher.generation.number
            assert searcher.refresh() == changed
        assert len(searcher) == len(docs)
        assert all(seg.index.has_forward == options["forward"] for seg in searcher.segments)
        check(searcher, docs, rng)


def test_live_search_equals_a_fresh_build_hit_for_hit(tmp_path):
    """The tie order is the order the live documents were appended in; a fresh build of them in that
    order, reordered or not, returns the same hits as the live index, ties included, and so does the
    live index after a merge into one segment."""
    rng = np.random.default_rng(7)
    root = tmp_path / "live"
    docs = {}
    for step in range(4):
        batch = {f"s{step}d{i}": v for i, v in enumerate(random_vectors(rng, 50))}
        live.append(root, [write(tmp_path / f"v{step}.jsonl", batch)], block_size=8)
        docs.update(batch)
    gone = rng.choice(list(docs), 40, replace=False).tolist()
    live.delete(root, gone)
    for i in gone:
        del docs[i]
    searcher = LiveSearcher(root, scan_below=0)
    order = internal_order(searcher).tolist()
    assert order == list(docs)  # the append order (dicts keep insertion order)
    assert all(seg.index.has_tie_order for seg in searcher.segments)  # the segments were reordered
    fresh = tmp_path / "fresh"
    build_native_index(
        fresh,
        vector_files=[write(tmp_path / "all.jsonl", {i: docs[i] for i in order})],
        reorder="none",
        block_size=8,
    )
    plain = NativeSearcher(fresh, scan_below=0)
    bp = tmp_path / "bp"
    build_native_index(bp, vector_files=[tmp_path / "all.jsonl"], block_size=8)
    reordered = NativeSearcher(bp, scan_below=0)
    queries = [as_query(query) for query in random_vectors(rng, 30)]
    before = [searcher.search(q, 10) for q in queries]
    live.merge(root, block_size=8)
    merged = LiveSearcher(root, scan_below=0)
    assert len(merged.segments) == 1 and internal_order(merged).tolist() == order
    for q, got in zip(queries, before, strict=True):
        assert got == plain.search(q, 10)
        assert got == reordered.search(q, 10)
        assert got == merged.search(q, 10)


def test_a_plain_index_becomes_live_on_append_and_keeps_its_hits(tmp_path):
    rng = np.random.default_rng(3)
    first = {f"a{i}": v for i, v in enumerate(random_vectors(rng, 80))}
    root = tmp_path / "ix"
    build_native_index(root, vector_files=[write(tmp_path / "a.jsonl", first)], block_size=8)
    before = NativeSearcher(root, scan_below=0)
    queries = random_vectors(rng, 10)
    hits = [before.search(as_query(q), 10) for q in queries]
    live.append(root, [write(tmp_path / "b.jsonl", {"b0": {"t0": 0.5}})])
    assert live.is_live(root)
    assert [before.search(as_query(q), 10) for q in queries] == hits, "a reader keeps what it opened"
    after = LiveSearcher(root, scan_below=0)
    assert len(after) == 81
    only_a = Filter(first)
    assert [after.search(as_query(q), 10, filter=only_a) for q in queries] == hits


def test_repeated_id_without_upsert_is_refused_and_nothing_changes(tmp_path):
    root = tmp_path / "live"
    live.append(root, [write(tmp_path / "a.jsonl", {"x": {"t1": 1.0}, "y": {"t2": 1.0}})])
    gen = live.current(root).number
    files = sorted(p.name for p in root.iterdir())
    with pytest.raises(ValueError, match=r"id 'y' is already in .*--upsert"):
        live.append(root, [write(tmp_path / "b.jsonl", {"y": {"t3": 1.0}})])
    assert live.current(root).number == gen
    assert sorted(p.name for p in root.iterdir()) == files


def test_integer_impacts_and_float_weights_cannot_share_an_index(tmp_path):
    root = tmp_path / "live"
    live.append(root, [write(tmp_path / "a.jsonl", {"x": {"t1": 1.5}})])
    with pytest.raises(ValueError, match="cannot share an index"):
        live.append(root, [write(tmp_path / "b.jsonl", {"y": {"t1": 3}})])


def test_merge_drops_deleted_documents_and_old_files(tmp_path):
    rng = np.random.default_rng(5)
    root = tmp_path / "live"
    for step in range(3):
        batch = {f"s{step}d{i}": v for i, v in enumerate(random_vectors(rng, 20))}
        live.append(root, [write(tmp_path / f"v{step}.jsonl", batch)])
    live.delete(root, ["s0d1", "s2d3"])
    held = LiveSearcher(root)
    q = as_query({"t1": 1.0, "t2": 2.0, "t3": 0.5})
    before = held.search(q, 20)
    change = live.merge(root)
    assert change.segments == 1
    gen = live.current(root)
    assert gen.segments[0].n_deleted == 0 and gen.n_docs == 58
    assert held.search(q, 20) == before, "a reader pinned to the old generation still searches it"
    assert held.refresh()
    assert [h.score for h in held.search(q, 20)] == [h.score for h in before]
    names = sorted(p.name for p in root.iterdir())
    live.delete(root, ["s1d0"])
    live.delete(root, ["s1d1"])
    names = sorted(p.name for p in root.iterdir())
    assert not any(n.startswith("seg-0") or n.startswith("seg-1") or n.startswith("seg-2") for n in names), (
        names
    )
    assert len([n for n in names if n.startswith("segments-")]) == live.KEEP


def write_with_fields(path, docs, fields):
    with open(path, "w") as f:
        for i, v in docs.items():
            f.write(json.dumps({"id": i, "vector": v, **fields[i]}) + "\n")
    return path


def test_filters_on_stored_fields_equal_brute_force_through_appends_and_merges(tmp_path):
    rng = np.random.default_rng(11)
    root = tmp_path / "live"
    docs, fields = {}, {}
    for step in range(3):
        batch = {f"s{step}d{i}": v for i, v in enumerate(random_vectors(rng, 60))}
        meta = {}
        for i in batch:
            m = {"year": int(rng.integers(2000, 2010)), "source": str(rng.choice(["pubmed", "arxiv", "web"]))}
            if rng.random() < 0.1:
                del m["year"]  # a missing field fails every condition on it
            meta[i] = m
        live.append(
            root,
            [write_with_fields(tmp_path / f"v{step}.jsonl", batch, meta)],
            fields=["year", "source"],
            block_size=4,
        )
        docs.update(batch)
        fields.update(meta)
    live.delete(root, list(docs)[::9])
    for i in list(docs)[::9]:
        del docs[i]
    conditions = [
        {"source": "arxiv"},
        {"source": ["web", "pubmed"]},
        {"year": 2004},
        {"year": {"gte": 2003, "lt": 2006}},
        {"year": {"gt": 2007}, "source": "web"},
        {"source": "nowhere"},
    ]

    def passes(i, where):
        f = fields[i]
        for name, cond in where.items():
            if name not in f:
                return False
            v = f[name]
            if isinstance(cond, dict):
                ops = {"gt": v > cond.get("gt", -1e9), "gte": v >= cond.get("gte", -1e9)}
                ops |= {"lt": v < cond.get("lt", 1e9), "lte": v <= cond.get("lte", 1e9)}
                if not all(ops[op] for op in cond):
                    return False
            elif isinstance(cond, list):
                if v not in cond:
                    return False
            elif v != cond:
                return False
        return True

    for merged in (False, True):
        if merged:
            live.merge(root, block_size=4)
        searcher = LiveSearcher(root, scan_below=0)
        assert searcher.field_names == ["source", "year"]
        order = internal_order(searcher).tolist()
        for query in random_vectors(rng, 8):
            for where in conditions:
                allowed = {i for i in docs if passes(i, where)}
                want = brute_force(docs, order, query, 10, allowed)
                got = searcher.search(as_query(query), 10, filter=Filter(where=where))
                assert [(h.docid, h.score) for h in got] == want, where
                some = set(list(docs)[::2])
                want = brute_force(docs, order, query, 10, allowed & some)
                got = searcher.search(as_query(query), 10, filter=Filter(ids=some, where=where))
                assert [(h.docid, h.score) for h in got] == want


@pytest.mark.parametrize(
    ("where", "field"),
    [
        ({"year": {"between": 1}}, "filter.where.year"),
        ({"year": {"gt": "2000"}}, "filter.where.year"),
        ({"year": [[1]]}, "filter.where.year"),
        ({"year": None}, "filter.where.year"),
        ({"year": True}, "filter.where.year"),
        ("year=2000", "filter.where"),
    ],
)
def test_malformed_conditions_name_their_field(where, field):
    from plugin.options import InvalidOption

    with pytest.raises(InvalidOption) as e:
        Filter(where=where)
    assert e.value.field == field


def test_a_field_the_index_does_not_store_is_named(tmp_path):
    from plugin.options import InvalidOption

    root = tmp_path / "live"
    live.append(
        root,
        [write_with_fields(tmp_path / "a.jsonl", {"x": {"t1": 1.0}}, {"x": {"year": 1}})],
        fields=["year"],
    )
    searcher = LiveSearcher(root)
    with pytest.raises(InvalidOption, match="stored: year") as e:
        searcher.search(as_query({"t1": 1.0}), 10, filter=Filter(where={"month": 3}))
    assert e.value.field == "filter.where.month"


def test_a_field_value_that_is_a_list_is_refused_naming_file_and_line(tmp_path):
    root = tmp_path / "live"
    path = write_with_fields(
        tmp_path / "a.jsonl", {"x": {"t1": 1.0}, "y": {"t2": 1.0}}, {"x": {}, "y": {"tags": ["a"]}}
    )
    with pytest.raises(
        ValueError, match=r"a.jsonl:2: field 'tags' of 'y' must be a string, a number or null"
    ):
        live.append(root, [path], fields=["tags"])
    assert not any(p.name.startswith("seg-") for p in root.iterdir())


def test_verification_across_segments_equals_one_static_index(tmp_path):
    """Bi-granular search over a live index (each segment with its own dense store) returns what one
    static index of the live documents returns, before and after a merge (the stores follow)."""
    from plugin.live import LiveBiGranularSearcher
    from plugin.verify import BiGranularSearcher

    rng = np.random.default_rng(9)
    root = tmp_path / "live"
    docs, dense = {}, {}
    for step in range(3):
        batch = {f"s{step}d{i}": v for i, v in enumerate(random_vectors(rng, 40))}
        vecs = {i: rng.normal(size=8).round(3).tolist() for i in batch}
        with open(tmp_path / f"d{step}.jsonl", "w") as f:
            for i, v in vecs.items():
                f.write(json.dumps({"id": i, "vector": v}) + "\n")
        live.append(root, [write(tmp_path / f"v{step}.jsonl", batch)], dense=[tmp_path / f"d{step}.jsonl"])
        docs.update(batch)
        dense.update(vecs)
    gone = list(docs)[::5]
    live.delete(root, gone)
    for i in gone:
        del docs[i]
    with pytest.raises(ValueError, match="same \\(--dense\\) or none"):
        live.append(root, [write(tmp_path / "x.jsonl", {"x": {"t1": 1.0}})])

    searcher = LiveSearcher(root)
    order = internal_order(searcher).tolist()
    static = tmp_path / "static"
    with open(tmp_path / "all-dense.jsonl", "w") as f:
        for i in order:
            f.write(json.dumps({"id": i, "vector": dense[i]}) + "\n")
    build_native_index(
        static,
        vector_files=[write(tmp_path / "all.jsonl", {i: docs[i] for i in order})],
        reorder="none",
        dense=[tmp_path / "all-dense.jsonl"],
    )
    want_searcher = BiGranularSearcher(static, candidates=25)
    queries = [(as_query(q), rng.normal(size=8).astype(np.float32)) for q in random_vectors(rng, 15)]
    want = [want_searcher.search(s, d, 10) for s, d in queries]
    got = LiveBiGranularSearcher(searcher, candidates=25)
    for (s, d), w in zip(queries, want, strict=True):
        hits = got.search(s, d, 10)
        assert [h.docid for h in hits] == [h.docid for h in w]
        np.testing.assert_allclose([h.score for h in hits], [h.score for h in w], rtol=1e-6)
    live.merge(root)
    searcher.refresh()
    merged = LiveBiGranularSearcher(searcher, candidates=25)
    for (s, d), w in zip(queries, want, strict=True):
        hits = merged.search(s, d, 10)
        assert sorted(h.docid for h in hits) == sorted(h.docid for h in w)
        np.testing.assert_allclose(sorted(h.score for h in hits), sorted(h.score for h in w), rtol=1e-6)
