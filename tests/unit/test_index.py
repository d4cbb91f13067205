"""clip_search.index: chunked exact search equals the full matrix, ANN reaches recall on text-like queries, files round-trip."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from clip_search.index import AnnIndex, ExactIndex, IndexFileError, build_index, choose_kind, recall_at_k
from clip_search.index.ann import default_params, factory_string
from clip_search.index.tune import TUNE_MARGIN
from clip_search.vectors import l2_normalise

DIM = 64
N = 3000
THREADS = 1  # the suite runs beside other work on 2 cores: OpenMP spinning on a busy core is slow
SMALL_IVFPQ = {"nlist": 32, "m": 16, "nbits": 6}  # 4-d sub-quantizers, 64 codes: trains fast on 3000 rows
SMALL_IVFSQ = {"nlist": 32}
ANN_KINDS = ("hnsw", "ivfsq", "ivfpq")


def clustered(rng: np.random.Generator, n: int, dim: int = DIM, clusters: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Image-like float16 unit rows around clusters + an image offset; the centres, cluster sizes and text offset."""
    centres = l2_normalise(rng.standard_normal((clusters, dim)))
    probs = (np.arange(clusters) + 1.0) ** -0.7
    which = rng.choice(clusters, n, p=probs / probs.sum())
    m_img, m_txt = l2_normalise(rng.standard_normal((2, dim)))
    rows = l2_normalise(m_img + centres[which] + 0.8 * rng.standard_normal((n, dim)) / np.sqrt(dim))
    return rows.astype(np.float16), centres, probs / probs.sum(), m_txt


def text_like(rng: np.random.Generator, centres: np.ndarray, probs: np.ndarray, m_txt: np.ndarray, count: int) -> np.ndarray:
    """Queries near cluster centres, shifted by a text offset (the modality gap), as float32 unit vectors."""
    which = rng.choice(len(centres), count, p=probs)
    noise = rng.standard_normal((count, centres.shape[1])) / np.sqrt(centres.shape[1])
    return l2_normalise(2.5 * m_txt + centres[which] + 1.2 * noise)


def brute_force(matrix: np.ndarray, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Reference top-k: every score, a full stable sort per query, -1 padding."""
    rows = np.full((len(queries), k), -1, np.int64)
    scores = np.full((len(queries), k), -np.inf, np.float32)
    candidates = np.arange(len(matrix)) if allowed is None else np.flatnonzero(allowed)
    all_scores = queries.astype(np.float64) @ matrix[candidates].astype(np.float64).T
    for i, s in enumerate(all_scores):
        order = np.lexsort((candidates, -s))[:k]
        rows[i, : len(order)] = candidates[order]
        scores[i, : len(order)] = s[order]
    return rows, scores


@pytest.fixture(scope="module")
def world() -> dict:
    """A clustered float16 corpus with text-like queries (the first 100 tune, the last 100 measure)."""
    rng = np.random.default_rng(7)
    rows, centres, probs, m_txt = clustered(rng, N)
    return {"rows": rows, "queries": text_like(rng, centres, probs, m_txt, 200)}


@pytest.fixture(scope="module")
def truth(world: dict) -> np.ndarray:
    """Exact top-10 of every query."""
    return ExactIndex(world["rows"]).search(world["queries"], 10)[0]


@pytest.fixture(scope="module")
def hnsw(world: dict) -> AnnIndex:
    """An HNSW index over the corpus (efSearch set by the tests)."""
    return AnnIndex.build(world["rows"], "hnsw", {"M": 16, "efConstruction": 40}, threads=THREADS)


@pytest.fixture(scope="module")
def ivfpq(world: dict) -> AnnIndex:
    """An IVF-PQ index over the corpus with an exact re-rank of 100 candidates."""
    return AnnIndex.build(world["rows"], "ivfpq", dict(SMALL_IVFPQ, nprobe=8, rerank=100), threads=THREADS)


@pytest.fixture(scope="module")
def ivfsq(world: dict) -> AnnIndex:
    """An IVF-SQ8 index over the corpus with an exact re-rank of 20 candidates."""
    return AnnIndex.build(world["rows"], "ivfsq", dict(SMALL_IVFSQ, nprobe=8, rerank=20), threads=THREADS)


@pytest.fixture
def ann(request: pytest.FixtureRequest, kind: str) -> AnnIndex:
    """The module's index of `kind`."""
    return request.getfixturevalue(kind)


# --- exact --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_rows", [1, 7, 256, 1000, 2999, 3000, 5000])
@pytest.mark.parametrize("n_queries", [1, 3, 9])
def test_chunked_exact_equals_full_matrix(world: dict, chunk_rows: int, n_queries: int) -> None:
    """Forcing chunks (a tiny memory budget) gives the rows and scores of the in-memory float32 search."""
    rows = world["rows"][:1500] if chunk_rows == 1 else world["rows"]
    queries = world["queries"][:n_queries]
    full = ExactIndex(rows)
    chunked = ExactIndex(rows, max_memory=1, chunk_rows=chunk_rows)
    assert full.matrix is not None and chunked.matrix is None
    a, b = full.search(queries, 10), chunked.search(queries, 10)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=0, atol=1e-6)
    ref = brute_force(rows, queries, 10)
    np.testing.assert_array_equal(a[0], ref[0])
    np.testing.assert_allclose(a[1], ref[1], atol=1e-5)
    assert a[0].dtype == np.int64 and a[1].dtype == np.float32


def test_exact_ties_break_by_row_number() -> None:
    """Duplicated rows score the same; the lower row numbers come first and win the last places, in every path."""
    rng = np.random.default_rng(1)
    base = l2_normalise(rng.standard_normal((50, DIM))).astype(np.float16)
    rows = np.concatenate([base, base, base])  # row i, i+50, i+100 are equal
    query = base[7:8].astype(np.float32)
    for index in (ExactIndex(rows), ExactIndex(rows, max_memory=1, chunk_rows=13)):
        found, scores = index.search(query, 2)
        assert found.tolist() == [[7, 57]]
        assert scores[0, 0] == scores[0, 1]
        found, _ = index.search(np.repeat(query, 6, axis=0), 4)  # the GEMM path of many queries
        assert found[0, :3].tolist() == [7, 57, 107]


@pytest.mark.parametrize("max_memory", [None, 1])
@pytest.mark.parametrize("case", ["none", "one", "random", "all"])
def test_exact_allowed_mask(world: dict, max_memory: int | None, case: str) -> None:
    """Only allowed rows come back; fewer than k allowed pads with -1 / -inf; results match the brute force."""
    rng = np.random.default_rng(3)
    n = len(world["rows"])
    allowed = {"none": np.zeros(n, bool), "one": np.eye(1, n, 1234, dtype=bool)[0],
               "random": rng.random(n) < 0.02, "all": np.ones(n, bool)}[case]
    queries = world["queries"][:5]
    index = ExactIndex(world["rows"], max_memory=max_memory, chunk_rows=700)
    for q in (queries[:1], queries):
        found, scores = index.search(q, 10, allowed)
        ref_rows, ref_scores = brute_force(world["rows"], q, 10, allowed)
        np.testing.assert_array_equal(found, ref_rows)
        np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
        assert allowed[found[found >= 0]].all()
        assert (scores[found < 0] == -np.inf).all()
    if case == "one":
        assert found[:, 0].tolist() == [1234] * 5 and (found[:, 1:] == -1).all()


def test_exact_rejects_bad_arguments(world: dict) -> None:
    """A query of the wrong dimension or a mask of the wrong length is a ValueError naming the mismatch."""
    index = ExactIndex(world["rows"])
    with pytest.raises(ValueError, match="dimension"):
        index.search(np.ones((1, DIM + 1), np.float32), 5)
    with pytest.raises(ValueError, match="allowed"):
        index.search(world["queries"][:1], 5, np.ones(5, bool))


# --- approximate --------------------------------------------------------------------------------------------------


def test_hnsw_recall_on_text_queries(world: dict, truth: np.ndarray, hnsw: AnnIndex) -> None:
    """HNSW with a generous efSearch finds ≥ 0.9 of the exact top-10 for gap-shifted queries."""
    hnsw.params["efSearch"] = 128
    found, scores = hnsw.search(world["queries"], 10)
    assert recall_at_k(found, truth) >= 0.9
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_ivfpq_rerank_recall_and_exact_scores(world: dict, truth: np.ndarray, ivfpq: AnnIndex) -> None:
    """IVF-PQ + exact re-rank reaches ≥ 0.85 recall@10, and its scores are the exact float16-row scores."""
    found, scores = ivfpq.search(world["queries"], 10)
    assert recall_at_k(found, truth) >= 0.85
    exact = np.einsum("qkd,qd->qk", world["rows"][found].astype(np.float32), world["queries"])
    np.testing.assert_allclose(scores, exact, atol=1e-5)
    ivfpq.params["rerank"] = 0  # without the re-rank, PQ scores alone rank worse
    assert recall_at_k(ivfpq.search(world["queries"], 10)[0], truth) < recall_at_k(found, truth)
    ivfpq.params["rerank"] = 100
    assert ivfpq.code_bytes == 12  # 16 sub-quantizers of 6 bits


def test_ivfsq_recall_and_exact_scores(world: dict, truth: np.ndarray, ivfsq: AnnIndex) -> None:
    """IVF-SQ8 (1 byte a dimension) + a short re-rank reaches ≥ 0.9 recall@10 with exact float16-row scores; more
    lists probed find more, and without the re-rank its SQ8 scores are close to the exact ones."""
    found, scores = ivfsq.search(world["queries"], 10)
    recall = recall_at_k(found, truth)
    assert recall >= 0.9
    exact = np.einsum("qkd,qd->qk", world["rows"][found].astype(np.float32), world["queries"])
    np.testing.assert_allclose(scores, exact, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    ivfsq.params["nprobe"] = 1
    assert recall_at_k(ivfsq.search(world["queries"], 10)[0], truth) < recall
    ivfsq.params.update(nprobe=8, rerank=0)
    found, scores = ivfsq.search(world["queries"], 10)
    exact = np.einsum("qkd,qd->qk", world["rows"][found].astype(np.float32), world["queries"])
    assert np.abs(scores - exact).max() < 0.02
    ivfsq.params["rerank"] = 20
    assert ivfsq.code_bytes == DIM  # one byte a dimension, what the tuner's cost counts


def test_default_params_and_factory() -> None:
    """Lists grow with √n up to a cap per kind; PQ splits D into 8-d pieces; unknown kinds are refused."""
    assert default_params("ivfsq", 1_000_000, 512)["nlist"] == 4096
    assert default_params("ivfsq", 10_000, 512)["nlist"] == 512
    assert default_params("ivfpq", 1_000_000, 512)["nlist"] == 1024
    assert default_params("ivfpq", 10_000_000, 512)["nlist"] == 2048
    assert default_params("ivfpq", 1_000_000, 512)["m"] == 64
    assert factory_string("ivfsq", default_params("ivfsq", 1_000_000, 512)) == "IVF4096,SQ8"
    assert factory_string("hnsw", default_params("hnsw", 1_000_000, 512)) == "HNSW32,SQ8"
    params = default_params("ivfsq", 1_000, 64)
    params["nprobe"] = 99
    assert default_params("ivfsq", 1_000, 64)["nprobe"] != 99  # a fresh dict each time
    with pytest.raises(ValueError, match="unknown ANN kind"):
        default_params("lsh", 1_000, 64)


@pytest.mark.parametrize("kind", ANN_KINDS)
def test_ann_save_load_round_trip(world: dict, kind: str, ann: AnnIndex, tmp_path) -> None:
    """A saved and reloaded index returns identical rows and scores."""
    index = ann
    names = index.save(tmp_path)
    assert names == [f"index-{kind}.faiss"] and (tmp_path / names[0]).is_file()
    loaded = AnnIndex.load(tmp_path, kind, index.params, world["rows"])
    assert loaded.kind == kind and loaded.params == index.params
    a, b = index.search(world["queries"], 10), loaded.search(world["queries"], 10)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_ann_load_missing_or_corrupt_file(world: dict, tmp_path) -> None:
    """A missing, corrupt or mismatched index file is an IndexFileError naming the file."""
    with pytest.raises(IndexFileError, match="index-hnsw.faiss"):
        AnnIndex.load(tmp_path, "hnsw", {}, world["rows"])
    (tmp_path / "index-ivfpq.faiss").write_bytes(b"not a faiss index")
    with pytest.raises(IndexFileError, match="index-ivfpq.faiss"):
        AnnIndex.load(tmp_path, "ivfpq", {}, world["rows"])


def test_ann_load_mismatched_store(world: dict, hnsw: AnnIndex, tmp_path) -> None:
    """An index built over another store (another row count) is refused, naming the file."""
    hnsw.save(tmp_path)
    with pytest.raises(IndexFileError, match="index-hnsw.faiss.*rebuild"):
        AnnIndex.load(tmp_path, "hnsw", hnsw.params, world["rows"][:100])


@pytest.mark.parametrize("kind", ANN_KINDS)
@pytest.mark.parametrize("share", [0.0, 0.002, 0.5])
def test_ann_respects_allowed(world: dict, kind: str, share: float, ann: AnnIndex) -> None:
    """The filter applies before top-k: only allowed rows, as many as exist, padded with -1 when too few."""
    index = ann
    index.params["efSearch"] = 128
    allowed = np.random.default_rng(5).random(N) < share
    found, scores = index.search(world["queries"][:20], 10, allowed)
    assert allowed[found[found >= 0]].all()
    assert (scores[found < 0] == -np.inf).all()
    exact = ExactIndex(world["rows"]).search(world["queries"][:20], 10, allowed)[0]
    if allowed.sum() < 10:
        np.testing.assert_array_equal(found, exact)  # few allowed rows: all of them, exactly
    else:
        assert (found >= 0).all()
        assert recall_at_k(found, exact) >= 0.8


# --- choosing and tuning ------------------------------------------------------------------------------------------


def test_choose_kind_by_size() -> None:
    """Small stores are searched exactly, mid-sized with IVF-SQ8, the largest with IVF-PQ."""
    assert choose_kind(1_000) == "exact"
    assert choose_kind(1_000_000) == "ivfsq"
    assert choose_kind(10_000_000) == "ivfsq"  # met the 10M bar in 4.9 GiB
    assert choose_kind(50_000_000) == "ivfpq"


def test_recall_at_k() -> None:
    """Recall counts found true rows, ignoring padding."""
    truth = np.array([[1, 2, 3, 4], [5, 6, -1, -1]])
    assert recall_at_k(np.array([[4, 3, 9, 8], [6, 5, -1, -1]]), truth) == pytest.approx(4 / 6)
    assert recall_at_k(truth, truth) == 1.0


@pytest.mark.parametrize("kind", ANN_KINDS)
def test_build_index_tunes_to_target(world: dict, truth: np.ndarray, kind: str) -> None:
    """Tuning reaches the target on the tuning half with the lowest knob tried; the other half is measured."""
    params = {"hnsw": {"M": 16, "efConstruction": 40}, "ivfsq": SMALL_IVFSQ, "ivfpq": SMALL_IVFPQ}[kind]
    given = {"truth": truth} if kind == "ivfsq" else {}  # the caller's exact top-k, when given, is used as is
    index, info = build_index(world["rows"], world["queries"], kind=kind, recall_target=0.9, k=10, threads=THREADS, params=params, **given)
    assert info["kind"] == kind and index.kind == kind
    assert info["tuned_on"] == 100 and info["measured_on"] == 100
    assert info["tuned_recall"] >= 0.9 + TUNE_MARGIN  # tuned above the target, so unseen queries meet it
    assert 0.8 <= info["recall_at_10"] <= 1.0
    truth = ExactIndex(world["rows"]).search(world["queries"], 10)[0]
    assert recall_at_k(index.search(world["queries"][100:], 10)[0], truth[100:]) == pytest.approx(info["recall_at_10"])
    assert info["bytes_per_vector"] > 0 and info["build_seconds"] > 0
    if kind == "hnsw":  # the lowest setting: one step lower misses the tuned target (or it is the lowest tried)
        ef = info["params"]["efSearch"]
        lower = [e for e in (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512) if 10 <= e < ef]
        if lower:
            index.params["efSearch"] = lower[-1]
            assert recall_at_k(index.search(world["queries"][:100], 10)[0], truth[:100]) < 0.9 + TUNE_MARGIN


def test_build_index_exact(world: dict) -> None:
    """kind "exact" (and "auto" for a small store) returns an ExactIndex with recall 1."""
    index, info = build_index(world["rows"], world["queries"], kind="auto")
    assert isinstance(index, ExactIndex) and info["kind"] == "exact" and info["recall_at_10"] == 1.0


def test_import_is_light() -> None:
    """Importing clip_search.index loads neither faiss nor torch."""
    code = "import sys, clip_search.index; print('faiss' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_rerank_reads_memory_mapped_rows_with_pread(world: dict, ivfsq: AnnIndex, tmp_path) -> None:
    """Over a memory-mapped store (and views of it) the re-rank reads rows from the file, with the results of the
    in-memory matrix; the file's pages are not mapped into the process for it."""
    from clip_search.index.ann import _float32_rows, _RowReader

    np.save(tmp_path / "e.npy", world["rows"])
    mapped = np.load(tmp_path / "e.npy", mmap_mode="r")
    rows = np.array([5, 2999, 5, 0, 1234])
    for view, ref in ((mapped, world["rows"]), (mapped[1000:2500], world["rows"][1000:2500]), (mapped[::3], world["rows"][::3])):
        reader = _RowReader.of(view)
        assert reader is not None
        picked = rows[rows < len(view)]
        np.testing.assert_array_equal(_float32_rows(view, picked, reader), ref[picked].astype(np.float32))
    assert _RowReader.of(world["rows"]) is None and _RowReader.of(np.asarray(mapped[:, :8])) is None
    on_file = AnnIndex(ivfsq.index, "ivfsq", ivfsq.params, mapped)
    assert on_file._reader is not None
    a, b = ivfsq.search(world["queries"], 10), on_file.search(world["queries"], 10)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
