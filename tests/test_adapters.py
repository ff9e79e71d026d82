"""corpusfilter blocks as ordinary document-level steps in a plain datatrove pipeline."""

import json
from pathlib import Path

import polars as pl
from datatrove.executor.local import LocalPipelineExecutor
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.writers import JsonlWriter

from corpusfilter.adapters import DocumentAdapter
from corpusfilter.blocks.decisions import Drop, Tag
from corpusfilter.blocks.keyword import KeywordDetector

from .conftest import DOCS, TERMS


def test_adapters_in_a_datatrove_pipeline(corpus: Path, tmp_path: Path) -> None:
    out, excluded = tmp_path / "kept", tmp_path / "excluded"
    pipeline = [
        ParquetReader(str(corpus), text_key="text", id_key="id"),
        DocumentAdapter(KeywordDetector(name="moral", terms=TERMS), batch_size=3),
        DocumentAdapter(Tag(where="moral_hits >= 1", label="moral")),
        DocumentAdapter(
            Drop(where="moral_hits >= 2", reason="moral"),
            exclusion_writer=JsonlWriter(str(excluded), compression=None),
        ),
        # JSONL: datatrove's ParquetWriter infers its schema from the first document, and an empty
        # label list there types the column as list<null> and crashes on the next document.
        JsonlWriter(str(out), compression=None),
    ]
    LocalPipelineExecutor(pipeline, tasks=1, logging_dir=str(tmp_path / "logs")).run()
    kept = pl.concat([pl.read_ndjson(f) for f in sorted(out.glob("*.jsonl"))])
    dropped = pl.concat([pl.read_ndjson(f) for f in sorted(excluded.glob("*.jsonl"))])
    assert sorted(kept["id"]) == ["d1", "d3", "d6", "d7"]
    assert sorted(dropped["id"]) == ["d0", "d2", "d4", "d5"]
    assert len(kept) + len(dropped) == len(DOCS)
    meta = dropped.filter(pl.col("id") == "d5")["metadata"].item()
    assert meta["moral_hits"] == 4 and meta["labels"] == ["moral"] and meta["filter_reason"] == "moral"
    steps = json.loads((tmp_path / "logs" / "stats.json").read_text())
    (drop,) = [s["stats"] for s in steps if s["name"].endswith("adapter(drop)")]
    assert drop["dropped_moral"] == 4 and drop["forwarded"] == 4


def test_a_block_rescores_stale_metadata_and_tags_append(tmp_path: Path) -> None:
    """A score already in a document's metadata is replaced by the block's, not kept beside it; a
    second tag appends to the labels the first wrote."""
    from datatrove.data import Document

    docs = [
        Document(text="kindness and mercy", id="a", metadata={"moral_hits": 99, "labels": ["old"]}),
        Document(text="a plain page", id="b", metadata={"moral_hits": 99}),
    ]
    step = DocumentAdapter(KeywordDetector(name="moral", terms=TERMS))
    out = list(step.run(iter(docs)))
    clean = list(step.run(iter([Document(text=d.text, id=d.id) for d in docs])))
    assert [d.metadata["moral_hits"] for d in out] == [d.metadata["moral_hits"] for d in clean] == [1, 0]
    assert out[0].metadata == {**clean[0].metadata, "labels": ["old"]}
    tagged = list(DocumentAdapter(Tag(where="moral_hits >= 1", label="moral")).run(iter(out)))
    assert tagged[0].metadata["labels"] == ["old", "moral"] and tagged[1].metadata["labels"] == []


def test_resampling_blocks_are_refused_by_the_document_adapter() -> None:
    import pytest

    from corpusfilter.blocks.resample import Upsample
    from corpusfilter.errors import RecipeError

    with pytest.raises(RecipeError, match="DocumentAdapter: upsample adds copies of documents"):
        DocumentAdapter(Upsample(where="moral_hits >= 1", weight="3"))


def test_metadata_the_block_does_not_read_is_left_alone() -> None:
    """JSONL readers put every extra field in metadata: a year of 2020 in one document and "unknown"
    in another had crashed a keyword detector, which reads only the text. A key the block does read
    with no single type is a one-line error naming it."""
    import pytest
    from datatrove.data import Document

    from corpusfilter.errors import RecipeError

    docs = [
        Document(text="kindness", id="a", metadata={"year": 2020, "src": "x"}),
        Document(text="plain", id="b", metadata={"year": "unknown"}),
    ]
    out = list(DocumentAdapter(KeywordDetector(name="v", terms=TERMS)).run(iter(docs)))
    assert [d.metadata["v_hits"] for d in out] == [1, 0]
    assert [d.metadata["year"] for d in out] == [2020, "unknown"] and out[0].metadata["src"] == "x"
    casc = DocumentAdapter(KeywordDetector(name="w", terms=TERMS, when="year > 2000"))
    with pytest.raises(RecipeError, match=r"metadata key 'year', which the block reads, holds values of several "
                       r"types in one batch \(int, str\)"):  # fmt: skip
        list(casc.run(iter(docs)))


def test_the_adapter_checks_the_block_as_a_recipe_does() -> None:
    """The adapter never validated its block: a non-boolean condition dropped every document, an
    aggregate's result moved with the batch size, a string `labels` was split into letters, and a
    misspelt key was a pyarrow KeyError. Now the errors a recipe gives, before any document moves."""
    import pytest
    from datatrove.data import Document

    from corpusfilter.errors import RecipeError

    def docs() -> list[Document]:
        return [Document(text=t, id=str(i), metadata={"a": i}) for i, t in enumerate("wxyz")]

    for where, says in (
        ("a + 1", "not a boolean"),
        ("a > AVG(a)", "aggregate"),
        ("a_typo > 1", "a_typo"),
    ):
        with pytest.raises(RecipeError, match=says):
            list(DocumentAdapter(Drop(where=where, reason="r")).run(iter(docs())))
    labelled = [Document(text="x", id="1", metadata={"labels": "news", "a": 1})]
    with pytest.raises(RecipeError, match="'labels' exists with type string, not list<string>"):
        list(DocumentAdapter(Tag(where="a = 1", label="f")).run(iter(labelled)))
    with pytest.raises(RecipeError, match="batch_size must be a positive integer"):
        DocumentAdapter(Drop(where="a > 1", reason="r"), batch_size=0)
    assert [d.id for d in DocumentAdapter(Drop(where="a >= 2", reason="r")).run(iter(docs()))] == ["0", "1"]


def test_an_adapter_with_a_model_block_runs_twice() -> None:
    """Its run tore the model down and left the block marked set up: a second run (a notebook cell
    run again) failed with AttributeError."""
    import pytest
    from datatrove.data import Document

    pytest.importorskip("fasttext")
    from corpusfilter.blocks.fasttext import FastTextDetector

    root = Path(__file__).resolve().parents[1]
    step = DocumentAdapter(
        FastTextDetector(name="ai", model=str(root / "classifiers/ai_discourse/model.bin"))
    )
    first = [d.metadata["ai_ai_discourse"] for d in step.run(iter([Document(text="the AI model", id="1")]))]
    again = [d.metadata["ai_ai_discourse"] for d in step.run(iter([Document(text="the AI model", id="1")]))]
    assert first == again


def test_a_tag_after_a_tag_that_matched_nothing_in_a_batch() -> None:
    """Every document of a batch holding labels [] (or None) made the key list<null> (or null), which
    the block's check refused: a second tag after one that matched nothing there failed the run."""
    from datatrove.data import Document

    empty: list[str] | None
    for empty in ([], None):
        docs = [Document(text="x", id=str(i), metadata={"labels": empty, "a": i}) for i in range(3)]
        out = list(DocumentAdapter(Tag(where="a >= 1", label="t")).run(iter(docs)))
        assert [d.metadata["labels"] for d in out] == [[], ["t"], ["t"]]
