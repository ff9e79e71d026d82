"""corpusfilter.testing: the block contract checker catches each fault it names, every block of the
shipped recipes keeps the contracts, and run_blocks runs user blocks through the real pipeline."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from corpusfilter import Detector, Drop, FilterDecision, KeywordDetector, register
from corpusfilter.batch import Batch
from corpusfilter.blocks.base import Block, NoParams, reject_rows
from corpusfilter.errors import OutputError, RecipeError
from corpusfilter.recipe import load_recipe
from corpusfilter.testing import BlockCheckError, apply_block, as_table, check_block, run_blocks

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "Be kind to one another, and honest in all things; compassion is a virtue.",
    "Install the package with pip, then run the test suite.",
    "The treacherous turn: a model behaves well until it can seize power.",
    "Forgive those who wrong you. Integrity matters more than winning.",
    "SELECT * FROM users WHERE id = 1;",
    "Once upon a time a fox met a crow, who was proud of her voice.",
    "The army besieged the city with swords and spears; the soldiers went to war and battle.",
    "An AI system might deceive its overseers, resist shutdown and seek power: the alignment problem"
    " asks how to make a superintelligent model corrigible.",
]


def contracts(block: Block, data: Any, **kw: Any) -> set[str]:
    with pytest.raises(BlockCheckError) as info:
        check_block(block, data, **kw)
    return {name for name, _ in info.value.problems}


@register("test_length", version=1)
class LengthDetector(Detector):
    """Characters per document (the README's example)."""

    Params = NoParams
    fields: ClassVar[dict[str, pa.DataType]] = {"chars": pa.int64()}

    @property
    def prefix(self) -> str:
        return "length"

    def score(self, texts: pa.StringArray) -> dict[str, Any]:
        return {"chars": pc.utf8_length(texts)}


def test_a_correct_user_block_and_the_built_in_ones_pass() -> None:
    check_block(LengthDetector(), TEXTS)
    with_length = apply_block(LengthDetector(), as_table(TEXTS)).kept
    check_block(KeywordDetector(name="virtue", lexicon="virtue", when="length_chars > 40"), with_length)
    scored = pa.table({"id": ["a", "b", "c"], "s": pa.array([0.9, 0.1, None], pa.float64())})
    check_block(Drop(where="s >= 0.5", reason="high"), scored)


# -- each contract, broken on purpose ------------------------------------------------------------------
@register("test_zscore", version=1)
class ZScore(Detector):
    """Normalizes within the batch: its scores change with who shares a batch."""

    Params = NoParams
    fields: ClassVar[dict[str, pa.DataType]] = {"z": pa.float64()}

    def score(self, texts: pa.StringArray) -> dict[str, Any]:
        n = pc.utf8_length(texts).to_numpy().astype(float)
        return {"z": (n - n.mean()) / (n.std() + 1.0)}


@register("test_global_rng", version=1)
class GlobalRng(Detector):
    """Draws from global NumPy state: different on every run."""

    Params = NoParams
    fields: ClassVar[dict[str, pa.DataType]] = {"r": pa.float64()}

    def score(self, texts: pa.StringArray) -> dict[str, Any]:
        return {"r": np.random.random(len(texts))}


@register("test_hidden_state", version=1)
class HiddenState(Detector):
    """Behaviour set outside its parameters, so to_config() cannot rebuild it."""

    Params = NoParams
    fields: ClassVar[dict[str, pa.DataType]] = {"x": pa.int64()}
    factor = 1

    def score(self, texts: pa.StringArray) -> dict[str, Any]:
        return {"x": pc.multiply(pc.utf8_length(texts), self.factor)}


@register("test_locked", version=1)
class Locked(LengthDetector):
    """Holds a lock built at construction: cannot travel to a worker."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.lock = threading.Lock()


@register("test_undeclared", version=1)
class Undeclared(Block):
    """Adds a column without declaring it, and rewrites the text."""

    kind = "detector"

    def process(self, batch: Batch) -> Batch:
        t = batch.table
        t = t.set_column(t.column_names.index("text"), "text", pc.utf8_lower(t.column("text")))
        batch.table = t.append_column("flag", pa.array([True] * t.num_rows))
        return batch


@register("test_loses_rows", version=1)
class LosesRows(FilterDecision):
    """Filters rows out without rejecting them: silent loss."""

    def process(self, batch: Batch) -> Batch:
        batch.table = batch.table.slice(0, batch.num_rows // 2)
        return batch


@register("test_no_reason", version=1)
class NoReason(FilterDecision):
    """Rejects rows but without the reason columns; and crashes on an empty batch."""

    def process(self, batch: Batch) -> Batch:
        batch.table.column("id")[0]  # IndexError on an empty batch
        batch.rejected.append(batch.table.filter(pc.equal(batch.table.column("id"), "d0")))
        batch.table = batch.table.filter(pc.not_equal(batch.table.column("id"), "d0"))
        return batch


class Unregistered(LengthDetector):
    block_type = "test_nowhere"


class DropAll(Drop):
    """A subclass of a registered block that is not registered itself: it reports ``drop@1``."""

    def select(self, table: pa.Table) -> np.ndarray:
        return np.ones(table.num_rows, dtype=bool)


@register("test_position", version=1)
class Position(Detector):
    """Numbers rows with a counter kept on the instance: state carried from batch to batch."""

    Params = NoParams
    fields: ClassVar[dict[str, pa.DataType]] = {"n": pa.int64()}

    def setup(self) -> None:
        self.seen = 0

    def score(self, texts: pa.StringArray) -> dict[str, Any]:
        out = list(range(self.seen, self.seen + len(texts)))
        self.seen += len(texts)
        return {"n": out}


def _shout(batch: Batch) -> Batch:
    """The batch with its text upper-cased: a change to an input column."""
    t = batch.table
    batch.table = t.set_column(t.column_names.index("text"), "text", pc.utf8_upper(t.column("text")))
    return batch


def _cast_n(batch: Batch, to: pa.DataType) -> Batch:
    """The batch with its column `n` cast to ``to``: equal values, another type."""
    t = batch.table
    batch.table = t.set_column(t.column_names.index("n"), "n", pc.cast(t.column("n"), to))
    return batch


@register("test_shouting_drop", version=1)
class ShoutingDrop(Drop):
    """Drops long texts, and upper-cases the text of the rows it keeps."""

    def process(self, batch: Batch) -> Batch:
        return _shout(super().process(batch))


@register("test_renaming_drop", version=1)
class RenamingDrop(Drop):
    """Drops long texts, renaming the ids of the rows it rejects."""

    def process(self, batch: Batch) -> Batch:
        batch = super().process(batch)
        batch.rejected = [
            t.set_column(t.column_names.index("id"), "id", pc.utf8_upper(t.column("id")))
            for t in batch.rejected
        ]
        return batch


@register("test_nan_score", version=1)
class NanScore(Detector):
    """NaN for short texts: the same every run."""

    Params = NoParams
    fields: ClassVar[dict[str, pa.DataType]] = {"x": pa.float64()}

    @property
    def prefix(self) -> str:
        return "nan"

    def score(self, texts: pa.StringArray) -> dict[str, Any]:
        return {"x": [float("nan") if len(t) < 60 else 1.0 for t in texts.to_pylist()]}


@register("test_nan_shout", version=1)
class NanShout(NanScore):
    """Also upper-cases the text it scores: an input change among NaN columns."""

    def process(self, batch: Batch) -> Batch:
        return _shout(super().process(batch))


@register("test_nan_retype", version=1)
class NanRetype(NanScore):
    """Also casts the input column `n` to float: equal values, another type."""

    def process(self, batch: Batch) -> Batch:
        return _cast_n(super().process(batch), pa.float64())


@register("test_retype_drop", version=1)
class RetypeDrop(Drop):
    """Drops rows, and narrows the input column `n` of the rows it keeps to int32."""

    def process(self, batch: Batch) -> Batch:
        return _cast_n(super().process(batch), pa.int32())


def test_batch_dependence_is_caught() -> None:
    assert contracts(ZScore(), TEXTS) == {"batch_independent"}


def test_global_rng_is_caught() -> None:
    assert {"deterministic", "config_describes_block", "batch_independent"} <= contracts(GlobalRng(), TEXTS)


def test_state_outside_the_parameters_is_caught() -> None:
    block = HiddenState()
    block.factor = 3
    assert contracts(block, TEXTS) == {"config_describes_block"}


def test_an_unpicklable_block_is_caught() -> None:
    assert contracts(Locked(), TEXTS) == {"picklable"}


def test_undeclared_columns_and_changed_input_are_caught() -> None:
    assert contracts(Undeclared(), TEXTS) == {"declared_columns", "input_unchanged"}


def test_silent_row_loss_is_caught() -> None:
    # half of each batch: also depends on the batch size
    assert contracts(LosesRows(), TEXTS) == {"accounts_for_rows", "batch_independent"}


def test_rejects_without_reason_and_empty_batch_crash_are_caught() -> None:
    assert contracts(NoReason(), TEXTS) == {"rejected_have_reason", "empty_batch"}


def test_an_unregistered_block_is_caught_unless_used_only_in_python() -> None:
    assert contracts(Unregistered(), TEXTS) == {"registered"}
    check_block(Unregistered(), TEXTS, registered=False)


def test_state_carried_across_batches_is_caught() -> None:
    """In-order batches through one run() number rows as one batch does; separate copies, as tasks
    get them, do not."""
    assert contracts(Position(), TEXTS) == {"stateless_across_batches"}
    with pytest.raises(BlockCheckError, match="carries state from one batch to the next"):
        check_block(Position(), TEXTS)


def test_a_decision_that_changes_the_rows_it_passes_on_or_rejects_is_caught() -> None:
    with pytest.raises(
        BlockCheckError, match=r"input_unchanged: .*passed on \(id 'd1': column\(s\) \['text'\]"
    ):
        check_block(ShoutingDrop(where="length(text) > 60", reason="long"), TEXTS)
    assert contracts(RenamingDrop(where="length(text) > 60", reason="long"), TEXTS) == {"input_unchanged"}


def test_decisions_may_write_their_own_columns() -> None:
    """A tag appends to an existing labels column and upsample renames its copies: both allowed."""
    from corpusfilter.blocks.decisions import Tag
    from corpusfilter.blocks.resample import Upsample

    table = as_table(TEXTS).append_column("labels", pa.array([["x"]] * len(TEXTS), pa.list_(pa.string())))
    check_block(Tag(where="length(text) > 60", label="long"), table)
    check_block(Upsample(where="length(text) > 60", weight="3"), as_table(TEXTS))
    # a labelled upsample writes its columns in the order it declares them (labels had come first)
    check_block(Upsample(where="length(text) > 60", weight="3", label="long"), as_table(TEXTS))


def test_nan_values_are_the_same_result_twice() -> None:
    """A NaN the block passes on (an input column) or scores is equal to itself between runs; Arrow's
    own equality had called every such block non-deterministic and a detector an input changer."""
    nan = float("nan")
    table = as_table(TEXTS).append_column("s", pa.array([nan, 0.9, 0.1, nan, 0.2, 0.7, nan, 0.8]))
    check_block(KeywordDetector(name="virtue", lexicon="virtue"), table)
    check_block(Drop(where="s > 0.5", reason="high"), table)
    check_block(NanScore(), TEXTS)
    # a real change is still found, NaN or not, and so is a changed type (1 == 1.0 in Python)
    assert contracts(NanShout(), table) == {"input_unchanged"}
    ints = as_table(TEXTS).append_column("n", pa.array(range(len(TEXTS)), pa.int64()))
    with pytest.raises(BlockCheckError, match=r"input_unchanged: a detector changed column\(s\) \['n'\]"):
        check_block(NanRetype(), ints)
    with pytest.raises(
        BlockCheckError, match=r"input_unchanged: a decision changed the type of column\(s\) \['n'\]"
    ):
        check_block(RetypeDrop(where="n > 2", reason="x"), ints)  # int64 -> int32: equal values


def test_a_second_upsample_keeps_each_original_with_its_copies_in_one_batch() -> None:
    """A table with copies is batched as a pipeline batches it (the reader refuses copy columns in
    input, so copies always share their original's batch): a second upsample passes; cutting between
    an original and its copies had renumbered them, giving duplicate ids and a false alarm."""
    from corpusfilter.blocks.resample import Upsample

    once = apply_block(Upsample(where="length(text) > 60", weight="3"), as_table(TEXTS)).kept
    assert once.num_rows > len(TEXTS)
    check_block(Upsample(where="length(text) > 50", weight="2", name="again"), once)
    twice = apply_block(
        Upsample(where="length(text) > 50", weight="2", name="again"), once, batch_rows=1
    ).kept
    ids = twice.column("id").to_pylist()
    assert len(ids) == len(set(ids)) > once.num_rows


def test_a_subclass_of_a_registered_block_is_refused_not_run_as_its_parent() -> None:
    block = DropAll(where="length(text) > 1000", reason="all")
    with pytest.raises(RecipeError, match=r"blocks\[0\]: DropAll reports drop@1, .* register DropAll under"):
        run_blocks([block], TEXTS)
    with pytest.raises(
        BlockCheckError, match=r"registered: DropAll reports drop@1, .* register DropAll under"
    ):
        check_block(block, TEXTS)


def test_the_error_lists_every_problem_by_name() -> None:
    with pytest.raises(BlockCheckError, match=r"test_undeclared@1 breaks 2 block contract\(s\)") as info:
        check_block(Undeclared(), TEXTS)
    assert "output_fields() declares []" in str(info.value)
    assert "flag: bool" in str(info.value)


# -- every block of every shipped recipe -----------------------------------------------------------
def _recipe_params() -> list[Any]:
    out = []
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        marks = []
        text = path.read_text()
        if "fasttext:" in text:
            marks += [pytest.mark.fasttext]
        if "embedding:" in text or "finetuned:" in text:
            marks += [pytest.mark.embed, pytest.mark.slow]
        out.append(pytest.param(path, marks=marks, id=path.stem))
    return out


@pytest.mark.parametrize("path", _recipe_params())
def test_every_block_of_the_shipped_recipes_keeps_the_contracts(path: Path, tmp_path: Path) -> None:
    """Each block is checked on the table as the blocks before it leave it (a real run's input)."""
    text = path.read_text()
    if "fasttext:" in text:
        pytest.importorskip("fasttext")
    if "embedding:" in text or "finetuned:" in text:
        pytest.importorskip("sentence_transformers")
    recipe = load_recipe(path, overrides=[f"output.path={tmp_path / 'out'}"])
    table = pa.table(
        {"id": [f"d{i}" for i in range(len(TEXTS))], "text": TEXTS, "source": ["s"] * len(TEXTS)}
    )
    checked = 0
    for block in recipe.blocks:
        check_block(block, table, atol=1e-5)
        if getattr(block, "needs_totals", False):
            break  # solved from the whole corpus: the runner's tests cover it, and it ends the chain
        res = apply_block(block, table)
        if block.kind == "detector":  # a cascade's gate must let some rows through, or nothing was checked
            scored = [
                res.kept.column(f.name).null_count < res.kept.num_rows
                for f in block.output_fields(table.schema)
            ]
            assert all(scored), f"{block.label} scored no row of the sample"
        table, checked = res.kept, checked + 1
    assert checked >= 3


# -- run_blocks --------------------------------------------------------------------------------------
def test_run_blocks_runs_a_user_block_through_the_pipeline(tmp_path: Path) -> None:
    texts = [*TEXTS, ""]  # the empty one is reported unreadable, not lost
    out = run_blocks(
        [LengthDetector(), Drop(where="length_chars > 60", reason="long")], texts, shards=2, workdir=tmp_path
    )
    long_ids = {f"d{i}" for i, t in enumerate(TEXTS) if len(t) > 60}
    assert set(out.rejected["id"]) == long_ids
    assert set(out.rejected["reject_reason"]) == {"long"}
    assert set(out.kept["id"]) == {f"d{i}" for i in range(len(TEXTS))} - long_ids
    assert out.kept["length_chars"].to_list() == [len(t) for t in out.kept["text"]]
    assert out.unreadable["id"].to_list() == [f"d{len(TEXTS)}"]
    acc = out.accounting
    assert (
        acc["ok"]
        and acc["read"] == len(texts)
        and acc["rejected_total"] == len(long_ids)
        and acc["unreadable"] == 1
    )
    assert len(acc["per_shard"]) == 2
    assert (tmp_path / "output" / "manifest.json").is_file()


def test_run_blocks_gives_empty_frames_with_columns_and_refuses_unregistered_blocks() -> None:
    out = run_blocks([LengthDetector(), {"drop": {"where": "length_chars > 1000", "reason": "huge"}}], TEXTS)
    assert out.rejected.height == 0 and "reject_reason" in out.rejected.columns
    assert out.kept.height == len(TEXTS)
    with pytest.raises(RecipeError, match="unknown block 'test_nowhere@1'"):
        run_blocks([Unregistered()], TEXTS)


def test_run_blocks_reads_only_its_own_data_in_a_reused_workdir(tmp_path: Path) -> None:
    """A second call with fewer shards reads none of the first call's; files run_blocks did not
    write are refused, never read or deleted."""
    virtue = KeywordDetector(name="v", lexicon="virtue")
    run_blocks([virtue], ["kindness", "plain", "honesty", "x y", "z"], shards=3, workdir=tmp_path)
    out = run_blocks([virtue], ["only one doc"], workdir=tmp_path)
    assert out.kept["text"].to_list() == ["only one doc"] and out.accounting["read"] == 1
    mine = tmp_path / "input" / "mine.parquet"
    mine.write_bytes(b"")
    with pytest.raises(
        OutputError, match=r"input/ holds files this workdir's record does not list .*mine\.parquet"
    ):
        run_blocks([virtue], ["again"], workdir=tmp_path)
    assert mine.exists() and (tmp_path / "input" / "shard-000.parquet").exists()
    mine.unlink()
    # a file put in output/ after a call is not deleted by the next one (the run overwrites output/)
    (tmp_path / "output" / "notes.txt").write_text("mine")
    with pytest.raises(
        OutputError, match=r"output/ holds files this workdir's record does not list .*notes\.txt"
    ):
        run_blocks([virtue], ["again"], workdir=tmp_path)
    assert (tmp_path / "output" / "notes.txt").read_text() == "mine"

    other = tmp_path / "other"
    (other / "output").mkdir(parents=True)
    (other / "output" / "notes.txt").write_text("mine")
    with pytest.raises(
        OutputError, match=r"output/ holds files this workdir's record does not list .*notes\.txt"
    ):
        run_blocks([virtue], ["again"], workdir=other)
    assert (other / "output" / "notes.txt").read_text() == "mine"


def test_apply_block_passes_rejections_with_reasons() -> None:
    table = pa.table({"id": ["a", "b"], "s": [1, 5]})

    class Big(FilterDecision):
        def process(self, batch: Batch) -> Batch:
            reject_rows(
                self, batch, pc.greater(batch.table.column("s"), 2).to_numpy(zero_copy_only=False), "big"
            )
            return batch

    res = apply_block(Big(), table, batch_rows=1)
    assert res.kept.column("id").to_pylist() == ["a"]
    assert res.rejected is not None and res.rejected.column("reject_reason").to_pylist() == ["big"]
