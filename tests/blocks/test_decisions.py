from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from corpusfilter.batch import BLOCK_COLUMN, REASON_COLUMN, Batch
from corpusfilter.blocks.decisions import Drop, Keep, Tag
from corpusfilter.errors import RecipeError


def _batch() -> Batch:
    t = pa.table(
        {"id": ["a", "b", "c", "d"], "text": ["x"] * 4, "s_hits": pa.array([0, 2, None, 5], pa.int32())}
    )
    return Batch(t, "shard", 4)


def test_drop_moves_rows_with_reason_and_block_and_keeps_nulls() -> None:
    d = Drop(where="s_hits >= 2", reason="moral")
    d.label = "1.drop"
    b = d.process(_batch())
    assert b.table.column("id").to_pylist() == ["a", "c"]  # null is not >= 2: kept
    (rej,) = b.rejected
    assert rej.column("id").to_pylist() == ["b", "d"]
    assert set(rej.column(REASON_COLUMN).to_pylist()) == {"moral"}
    assert set(rej.column(BLOCK_COLUMN).to_pylist()) == {"1.drop"}
    assert d.stats["dropped_moral"].total == 2


def test_keep_is_the_inverse_and_rejects_nulls() -> None:
    b = Keep(where="s_hits >= 2", reason="not_moral").process(_batch())
    assert b.table.column("id").to_pylist() == ["b", "d"]
    assert b.rejected[0].column("id").to_pylist() == ["a", "c"]


def test_tag_appends_labels_and_drops_nothing() -> None:
    b = Tag(where="s_hits > 0", label="moral").process(_batch())
    b = Tag(where="s_hits >= 5", label="very").process(b)
    assert b.num_rows == 4 and not b.rejected
    assert b.table.column("labels").to_pylist() == [[], ["moral"], [], ["moral", "very"]]


def test_two_blocks_giving_one_label_count_its_tokens_once() -> None:
    """Two tags of one category (two detectors OR-ed into it) had stored the label twice and the
    token report counted the rows twice: a 200% share."""
    from corpusfilter.testing import run_blocks

    b = Tag(where="s_hits > 0", label="moral").process(_batch())
    b = Tag(where="s_hits >= 5", label="moral").process(b)
    assert b.table.column("labels").to_pylist() == [[], ["moral"], [], ["moral"]]
    blocks: list[dict[str, Any]] = [
        {"tokens": {}},
        *({"tag": {"where": "tokens_count >= 1", "label": "cat"}} for _ in range(2)),
    ]
    out = run_blocks(blocks, ["one two three", "four five"])
    assert out.kept["labels"].to_list() == [["cat"], ["cat"]]
    cat = out.manifest["tokens"]["categories"]["cat"]
    assert cat["share_in"] == cat["share_out"] == 1.0, cat


def test_a_tag_after_a_drop_labels_removed_rows_it_can_read_and_never_fails_on_them() -> None:
    """A tag after a drop labels the removed rows too; one whose condition only the kept rows allow
    (a cast the dropped values fail) had ended the run."""
    from corpusfilter.testing import run_blocks

    years = ["1999", "2005", "unknown", "2010", "n/a", "1980"]
    rows = {"id": [f"d{i}" for i in range(6)], "text": ["some text"] * 6, "year": years}
    blocks: list[dict[str, Any]] = [
        {"drop": {"where": "year IN ('unknown', 'n/a') OR year = '2010'", "reason": "noyear"}},
        {"tag": {"where": "CAST(year AS INT) > 2000", "label": "recent"}},
    ]
    out = run_blocks(blocks, rows)
    assert dict(zip(out.kept["year"], out.kept["labels"].to_list())) == {
        "1999": [],
        "2005": ["recent"],
        "1980": [],
    }
    got = dict(zip(out.rejected["year"], out.rejected["labels"].to_list()))
    assert got == {"unknown": [], "2010": ["recent"], "n/a": []}


def test_conditions_checked_against_schema_before_running() -> None:
    schema = _batch().table.schema
    with pytest.raises(RecipeError, match="unknown column 's_hitz'"):
        Drop(where="s_hitz > 1", reason="r").validate(schema, "blocks[1].drop")
    with pytest.raises(RecipeError, match="not a boolean"):
        Drop(where="s_hits + 1", reason="r").validate(schema, "blocks[1].drop")
    with pytest.raises(RecipeError, match="cannot parse"):
        Drop(where="s_hits >= ", reason="r")
    with pytest.raises(RecipeError, match="reason"):
        Drop(where="s_hits > 1", reason="bad reason!")


@pytest.mark.parametrize("column", ["reject_reason", "original_id", "copy_index", "cf_shard"])
def test_a_tag_column_of_corpusfilters_bookkeeping_is_refused(column: str) -> None:
    """A tag into reject_reason had crashed a later drop (the field twice); into original_id, an
    upsample ('copy_index' does not exist)."""
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("x_hits", pa.int32())])
    with pytest.raises(
        RecipeError, match=rf"blocks\[1\].tag.column: '{column}' is reserved for corpusfilter's bookkeeping"
    ):
        Tag(where="x_hits >= 1", label="x", column=column).validate(schema, "blocks[1].tag")


def test_matched_control_in_a_recipe_points_to_the_control_section(tmp_path: Path) -> None:
    from corpusfilter.recipe import load_recipe

    (tmp_path / "in").mkdir()
    recipe = {"input": {"path": str(tmp_path / "in")}, "output": {"path": str(tmp_path / "o")},
              "blocks": [{"matched_control": {}}]}  # fmt: skip
    with pytest.raises(RecipeError, match=r"blocks\[0\].matched_control: the control arm's block, which the runner "
                       r"adds from a `control:` section"):  # fmt: skip
        load_recipe(recipe)
