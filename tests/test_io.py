"""Bad input: every case ends in a clear error naming the file, or in rows counted as unreadable."""

import importlib.util
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpusfilter.errors import InputError
from corpusfilter.io import ParquetBatchReader, inspect_inputs, resolve_input


def test_glob_that_matches_nothing(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(InputError, match=r"matches no Parquet files: .*\*\.parquet"):
        resolve_input(str(tmp_path / "x" / "*.parquet"))
    with pytest.raises(InputError, match="input path not found"):
        resolve_input(str(tmp_path / "missing"))


def test_which_files_a_path_names(tmp_path: Path) -> None:
    for name in ("a.parquet", "B.PARQUET", "_SUCCESS.parquet", ".a.parquet.crc.parquet", "shard[1].parquet"):
        pq.write_table(pa.table({"text": ["x"]}), tmp_path / name)
    for name in ("_temporary/0/part-0.parquet", ".ipynb_checkpoints/c.parquet", "d[2]/e.parquet"):
        (tmp_path / name).parent.mkdir(parents=True)
        pq.write_table(pa.table({"text": ["x"]}), tmp_path / name)
    # a folder: every Parquet file below it (any case), but not those named as bookkeeping (. or _)
    assert resolve_input(str(tmp_path))[1] == ["B.PARQUET", "a.parquet", "d[2]/e.parquet", "shard[1].parquet"]
    assert resolve_input(str(tmp_path / "d[2]"))[1] == ["e.parquet"]  # a folder named with [ ]
    assert resolve_input(str(tmp_path / "_temporary" / "**" / "*.parquet"))[1] == ["0/part-0.parquet"]
    # a glob whose own file name pattern starts with _ or . asks for those files
    assert resolve_input(str(tmp_path / "_*.parquet"))[1] == ["_SUCCESS.parquet"]
    assert resolve_input(str(tmp_path / "*.parquet"))[1] == ["a.parquet", "shard[1].parquet"]
    assert resolve_input(str(tmp_path / "**" / "*.parquet"))[1] == [
        "a.parquet",
        "d[2]/e.parquet",
        "shard[1].parquet",
    ]
    # an existing file is that file, even with glob characters in its name
    assert resolve_input(str(tmp_path / "shard[1].parquet"))[1] == ["shard[1].parquet"]
    assert not inspect_inputs(str(tmp_path / "shard[1].parquet"), text_column="text", id_column=None).listed
    assert inspect_inputs(str(tmp_path / "*.parquet"), text_column="text", id_column=None).listed


@pytest.mark.parametrize(
    "column", ["cf_shard", "cf_row", "reject_reason", "reject_block", "copy_index", "original_id"]
)
def test_columns_corpusfilter_writes_are_refused_in_the_input(tmp_path: Path, column: str) -> None:
    """An earlier output read as input would have its bookkeeping mistaken for this run's."""
    pq.write_table(pa.table({"id": ["a"], "text": ["x"], column: [1]}), tmp_path / "a.parquet")
    with pytest.raises(InputError, match=rf"a\.parquet: column '{column}' is reserved.*rename or drop it"):
        inspect_inputs(str(tmp_path), text_column="text", id_column="id")


def test_an_id_column_of_structs_is_refused(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": [{"k": 1}], "text": ["x"]}), tmp_path / "a.parquet")
    with pytest.raises(
        InputError, match=r"a\.parquet: id column 'id' has type struct<k: int64>; ids must be"
    ):
        inspect_inputs(str(tmp_path), text_column="text", id_column="id")


def test_truncated_parquet_names_the_file(tmp_path: Path, corpus: Path) -> None:
    src = corpus / "shard-000.parquet"
    data = src.read_bytes()
    (corpus / "shard-000.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"shard-000\.parquet: not a readable Parquet file"):
        inspect_inputs(str(corpus), text_column="text", id_column="id")


def test_shard_without_text_column(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": ["a"], "content": ["x"]}), tmp_path / "a.parquet")
    with pytest.raises(InputError, match=r"a\.parquet: no text column 'text' \(columns: id, content\)"):
        inspect_inputs(str(tmp_path), text_column="text", id_column="id")


def test_derived_ids_would_clash_with_an_id_column(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": ["a"], "text": ["x"]}), tmp_path / "a.parquet")
    with pytest.raises(InputError, match=r"a\.parquet: has an 'id' column, but input\.id_column is null"):
        inspect_inputs(str(tmp_path), text_column="text", id_column=None)
    assert inspect_inputs(str(tmp_path), text_column="text", id_column="id").id_column == "id"


def test_incompatible_shards_name_the_file_that_disagrees(tmp_path: Path) -> None:
    for name, src in (("1", ["x"]), ("2", ["y"]), ("3", [7])):
        pq.write_table(pa.table({"id": [name], "text": ["t"], "source": src}), tmp_path / f"{name}.parquet")
    with pytest.raises(
        InputError, match=r"incompatible schemas .*: 3\.parquet disagrees with 1\.parquet, 2\.parquet$"
    ):
        inspect_inputs(str(tmp_path), text_column="text", id_column="id")


def test_shards_whose_columns_widen_are_unified_exactly(tmp_path: Path) -> None:
    """int32 in one shard and int64 in another (pandas vs polars writers) become int64; timestamps
    of two units the finer one; a lossy pairing (int64 and double) stays an error."""
    ts = [1_700_000_000_123]
    pq.write_table(
        pa.table(
            {
                "id": ["a"],
                "text": ["t"],
                "year": pa.array([2001], pa.int32()),
                "at": pa.array(ts, pa.timestamp("ms")),
                "w": pa.array([0.5], pa.float32()),
            }
        ),
        tmp_path / "1.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "id": ["b"],
                "text": ["t"],
                "year": pa.array([2_000_000_000_000], pa.int64()),
                "at": pa.array([ts[0] * 1000 + 7], pa.timestamp("us")),
                "w": pa.array([0.25], pa.float64()),
            }
        ),
        tmp_path / "2.parquet",
    )
    schema = inspect_inputs(str(tmp_path), text_column="text", id_column="id").schema
    assert (schema.field("year").type, schema.field("at").type, schema.field("w").type) == (
        pa.int64(),
        pa.timestamp("us"),
        pa.float64(),
    )
    got = pa.concat_tables([b.table for b in _read_all(tmp_path)]).select(["year", "at", "w"]).to_pylist()
    assert [r["year"] for r in got] == [2001, 2_000_000_000_000] and [r["w"] for r in got] == [0.5, 0.25]
    assert got[0]["at"] == pa.scalar(ts[0], pa.timestamp("ms")).as_py()
    ns = pa.table({"id": ["n"], "text": ["t"], "at": pa.array([0], pa.timestamp("ns"))})
    pq.write_table(ns, tmp_path / "4.parquet")  # ns holds years 1677-2262 only: ms/us do not widen into it
    with pytest.raises(InputError, match=r"incompatible schemas .*: 4\.parquet disagrees with 1\.parquet"):
        inspect_inputs(str(tmp_path), text_column="text", id_column="id")
    (tmp_path / "4.parquet").unlink()
    pq.write_table(pa.table({"id": ["c"], "text": ["t"], "year": [2001.5]}), tmp_path / "3.parquet")
    with pytest.raises(InputError, match=r"incompatible schemas .*: 3\.parquet disagrees with 1\.parquet"):
        inspect_inputs(str(tmp_path), text_column="text", id_column="id")


def _read_all(folder: Path, **kw: Any) -> list:
    inputs = inspect_inputs(str(folder), text_column="text", id_column="id")
    reader = ParquetBatchReader(
        folder=inputs.folder,
        files=inputs.files,
        schema=inputs.schema,
        text_column="text",
        id_column="id",
        batch_size=2,
        progress=False,
        **kw,
    )
    return list(reader.run(None, 0, 1))


def test_null_empty_and_invalid_utf8_rows_are_unreadable_not_lost(tmp_path: Path) -> None:
    raw = pa.array([b"fine", None, b"", b"\xff\xfe bad", b"ok too", b"x"], pa.binary())
    text = pa.StringArray.from_buffers(len(raw), raw.buffers()[1], raw.buffers()[2], raw.buffers()[0])
    ids = pa.array(["a", "b", "c", "d", "e", None])
    pq.write_table(pa.table({"id": ids, "text": text}), tmp_path / "bad.parquet")
    batches = _read_all(tmp_path)
    assert sum(b.rows_read for b in batches) == 6
    kept = [i for b in batches for i in b.table.column("id").to_pylist()]
    assert kept == ["a", "e"]
    bad = pa.concat_tables([t for b in batches for t in b.unreadable]).to_pylist()
    assert [(r["cf_row"], r["error"]) for r in bad] == [
        (1, "null text"),
        (2, "empty text"),
        (3, "invalid UTF-8 in column 'text'"),
        (5, "null id"),
    ]
    assert bad[2]["raw_text"] == b"\xff\xfe bad"
    assert all(r["cf_shard"] == "bad.parquet" for r in bad)


def test_a_null_typed_text_column_and_an_empty_pandas_shard_are_read(tmp_path: Path) -> None:
    """pandas writes a column of only None as type null, and an empty frame's columns as double:
    the run had refused the whole input; the rows are null text (set aside), and no rows are none."""
    pq.write_table(pa.table({"id": ["c", "d"], "text": pa.nulls(2)}), tmp_path / "b.parquet")
    doubles = {c: pa.array([], pa.float64()) for c in ("id", "text", "source")}  # its other columns too
    pq.write_table(pa.table(doubles), tmp_path / "c.parquet")
    pq.write_table(pa.table({"id": ["a"], "text": ["fine"], "source": ["web"]}), tmp_path / "a.parquet")
    batches = _read_all(tmp_path)
    assert sum(b.rows_read for b in batches) == 3
    assert [i for b in batches for i in b.table.column("id").to_pylist()] == ["a"]
    bad = pa.concat_tables([t for b in batches for t in b.unreadable]).to_pylist()
    assert [(r["cf_shard"], r["cf_row"], r["error"]) for r in bad] == [
        ("b.parquet", 0, "null text"),
        ("b.parquet", 1, "null text"),
    ]
    with pytest.raises(InputError, match=r"x.parquet: text column 'text' has type double, expected string"):
        pq.write_table(pa.table({"id": ["e"], "text": [1.5]}), tmp_path / "x.parquet")  # values: refused
        _read_all(tmp_path)


def test_a_corrupt_page_is_reported_from_its_row_group_not_the_batch(tmp_path: Path) -> None:
    """The reader reads ahead, so the failing batch started at row 0 although rows 0-1499 read fine."""
    texts = [f"document {i}" for i in range(3000)]
    pq.write_table(pa.table({"id": [str(i) for i in range(3000)], "text": texts}), tmp_path / "b.parquet",
                   row_group_size=500)  # fmt: skip
    off = pq.ParquetFile(tmp_path / "b.parquet").metadata.row_group(3).column(1).data_page_offset
    raw = bytearray((tmp_path / "b.parquet").read_bytes())
    raw[off + 40 : off + 200] = bytes(x ^ 0x5A for x in raw[off + 40 : off + 200])
    (tmp_path / "b.parquet").write_bytes(bytes(raw))
    inputs = inspect_inputs(str(tmp_path), text_column="text", id_column="id")
    reader = ParquetBatchReader(folder=inputs.folder, files=inputs.files, schema=inputs.schema, text_column="text",
                                id_column="id", batch_size=10_000, progress=False)  # fmt: skip
    with pytest.raises(InputError, match=r"b.parquet: cannot read rows from 1500 on \("):
        list(reader.run(None, 0, 1))


def test_invalid_utf8_inside_lists_and_structs_is_unreadable(tmp_path: Path) -> None:
    """Parquet readers do not check strings nested in lists, structs or maps; polars then refuses
    the whole output file, so such rows are set aside like top-level ones."""
    words = pa.array([b"ok", b"\xff", b"fine", b"also"], pa.binary()).view(pa.string())
    tags = pa.ListArray.from_arrays(pa.array([0, 1, 2, 3, 4], pa.int32()), words)
    meta = pa.StructArray.from_arrays([words.take(pa.array([3, 2, 1, 0]))], ["who"])
    cat = pa.DictionaryArray.from_arrays(pa.array([0, 0, 0, 1], pa.int32()), words.take(pa.array([0, 1])))
    table = pa.table({"id": ["a", "b", "c", "d"], "text": ["w"] * 4, "tags": tags, "meta": meta, "cat": cat})
    pq.write_table(table, tmp_path / "n.parquet")
    batches = _read_all(tmp_path)
    kept = pa.concat_tables([b.table for b in batches])
    assert kept.column("id").to_pylist() == ["a"]
    kept.validate(full=True)
    bad = pa.concat_tables([t for b in batches for t in b.unreadable]).to_pylist()
    assert [(r["id"], r["error"]) for r in bad] == [
        ("b", "invalid UTF-8 in column 'tags'"),
        ("c", "invalid UTF-8 in column 'meta'"),
        ("d", "invalid UTF-8 in column 'cat'"),  # only the row whose dictionary value is bad
    ]


def test_binary_text_column_is_decoded(tmp_path: Path) -> None:
    pq.write_table(
        pa.table({"id": ["a"], "text": pa.array([b"caf\xc3\xa9"], pa.binary())}), tmp_path / "b.parquet"
    )
    (batch,) = _read_all(tmp_path)
    assert batch.table.column("text").to_pylist() == ["café"]


def test_schemas_are_unified_across_shards(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": ["a"], "text": ["x"], "lang": ["en"]}), tmp_path / "1.parquet")
    pq.write_table(pa.table({"id": ["b"], "text": ["y"], "score": [0.5]}), tmp_path / "2.parquet")
    batches = _read_all(tmp_path)
    assert [b.table.schema for b in batches][0] == batches[1].table.schema
    assert batches[1].table.column("lang").to_pylist() == [None]


def test_limit_reads_at_most_n_per_task(corpus: Path) -> None:
    batches = _read_all(corpus, limit=3)
    assert sum(b.rows_read for b in batches) == 3


def test_read_parquet_and_iter_parquet_read_back_a_written_file(tmp_path: Path) -> None:
    from datatrove.io import get_datafolder

    from corpusfilter.io import iter_parquet, read_parquet

    pq.write_table(
        pa.table({"id": ["a", "b", "c"], "n": [1, 2, 3]}), tmp_path / "f.parquet", row_group_size=2
    )
    folder = get_datafolder(str(tmp_path))
    assert read_parquet(folder, "f.parquet", ["n"]).column("n").to_pylist() == [1, 2, 3]
    assert read_parquet(folder, "f.parquet", ["n", "gone"], present_only=True).column_names == ["n"]
    with pytest.raises(InputError, match=r"f\.parquet: no column 'gone' \(has id, n\)"):
        read_parquet(folder, "f.parquet", ["gone"])  # asked for, not optional: an error
    parts = list(iter_parquet(folder, "f.parquet", batch_size=2, columns=["id", "gone"]))
    assert [t.column_names for t in parts] == [["id"], ["id"]]
    assert [v for t in parts for v in t.column("id").to_pylist()] == ["a", "b", "c"]


def test_dictionary_and_view_text_and_id_columns_are_read_as_strings(tmp_path: Path) -> None:
    """A text column written from a pandas categorical (a dictionary of strings) or as a string view,
    and such an id column, are decoded like plain strings, bad bytes and all, through a real run."""
    import json

    import polars as pl

    from corpusfilter.recipe import load_recipe
    from corpusfilter.runner import run

    from .conftest import recipe_dict

    words = pa.array(
        [b"kindness and mercy, kindness", b"a plain page", b"\xff bad", b"caf\xc3\xa9"], pa.binary()
    )
    words = words.view(pa.string())
    text = pa.DictionaryArray.from_arrays(pa.array([0, 1, 2, 3, 1], pa.int32()), words)
    ids = pa.array(["a", "b", "c", "d", "e"], pa.string_view())
    inp = tmp_path / "in"
    inp.mkdir()
    pq.write_table(pa.table({"id": ids, "text": text}), inp / "cat.parquet")
    assert pq.ParquetFile(inp / "cat.parquet").schema_arrow.field("text").type.value_type == pa.string()
    # a view text column beside a view column of its own (pyarrow's filter has no kernel for views,
    # so every view column is read as plain strings, its bad bytes set aside too)
    src = pa.array([b"web", b"\xfe"], pa.binary()).view(pa.string()).cast(pa.string_view())
    pq.write_table(
        pa.table(
            {
                "id": pa.array(["f", "g"]),
                "text": pa.array(["a view of text", "kindness and mercy, kindness"], pa.string_view()),
                "source": src,
            }
        ),
        inp / "view.parquet",
    )
    # bytes in other layouts: a binary view, a dictionary of binary
    pq.write_table(
        pa.table({"id": ["h"], "text": pa.array([b"bytes of text"], pa.binary_view())}), inp / "bv.parquet"
    )
    cat = pa.array([b"a dictionary of bytes"]).dictionary_encode()
    pq.write_table(pa.table({"id": ["i"], "text": cat}), inp / "db.parquet")
    out = tmp_path / "out"
    run(load_recipe(recipe_dict(inp, out)), progress=False)
    kept = pl.read_parquet(out / "data").sort("id")
    assert kept["id"].to_list() == ["b", "d", "e", "f", "h", "i"]
    assert kept["text"].to_list() == [
        "a plain page", "café", "a plain page", "a view of text", "bytes of text", "a dictionary of bytes"
    ]  # fmt: skip
    assert kept["source"].to_list() == [None, None, None, "web", None, None]
    assert pl.read_parquet(out / "rejected")["id"].to_list() == ["a"]
    bad = pl.read_parquet(out / "unreadable").sort("id")
    assert bad.select("id", "error").rows() == [
        ("c", "invalid UTF-8 in column 'text'"),
        ("g", "invalid UTF-8 in column 'source'"),
    ]
    assert bad["raw_text"].to_list() == [b"\xff bad", b"kindness and mercy, kindness"]
    acc = json.loads((out / "manifest.json").read_text())["accounting"]
    assert (acc["read"], acc["kept"], acc["rejected_total"], acc["unreadable"]) == (9, 6, 1, 2)
    from corpusfilter.verify import verify

    assert verify(str(out)).ok
    if importlib.util.find_spec("matplotlib"):  # the report reads data/ with polars, which checks UTF-8
        from corpusfilter.report import report

        assert "| documents read | 9 |" in report(out).markdown.read_text()
    # views nested in lists are refused before anything runs, naming the file and column
    nested = pa.array([["x"]], pa.list_(pa.string_view()))
    pq.write_table(pa.table({"id": ["j"], "text": ["t"], "tags": nested}), inp / "nested.parquet")
    with pytest.raises(
        InputError, match=r"nested.parquet: column 'tags' has type list<element: string_view>; views"
    ):
        run(load_recipe(recipe_dict(inp, tmp_path / "out2")), progress=False)
