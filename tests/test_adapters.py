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
