"""Reading and writing Parquet shards as Arrow batches, over datatrove ``DataFolder`` paths.

The reader turns row-level problems (null or empty text, invalid UTF-8, null id) into ``unreadable``
rows that are written aside with their reason; problems with a whole file (missing, truncated, no
text column) are :class:`InputError` naming the file. The writer uses an explicit schema, writes
atomically (temporary name, then rename), hashes what it writes, and records per-shard accounting.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import os
import posixpath
import socket
import sys
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datatrove.io import DataFolder, get_datafolder
from datatrove.pipeline.base import PipelineStep

from corpusfilter.batch import (
    BLOCK_COLUMN,
    BOOKKEEPING_COLUMNS,
    COPY_COLUMN,
    ORIGINAL_COLUMN,
    REASON_COLUMN,
    ROW_COLUMN,
    SHARD_COLUMN,
    Batch,
)
from corpusfilter.errors import CorpusfilterError, InputError, first_line
from corpusfilter.prefetch import prefetch

UNREADABLE_SCHEMA = pa.schema(
    [
        pa.field(SHARD_COLUMN, pa.string()),
        pa.field(ROW_COLUMN, pa.int64()),
        pa.field("id", pa.string()),
        pa.field("error", pa.string()),
        pa.field("raw_text", pa.binary()),
    ]
)


def _is_text(t: pa.DataType) -> bool:
    """A string column in any of Arrow's layouts; read as bytes and decoded (checked) as ``string``:
    pyarrow's filter and take have no kernels for views."""
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


_BYTES = (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_binary_view)


def _key_bytes(t: pa.DataType) -> bool:
    """Whether a text or id column of type ``t`` is read as bytes and decoded to strings: any string
    or binary layout, a dictionary of one (pandas categoricals are written so), or null (pandas writes
    a column of only None so: every row is then null, and set aside as such)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    return bool(_is_text(t) or pa.types.is_null(t) or any(f(t) for f in _BYTES))


def _nested_view(t: pa.DataType) -> bool:
    """Whether a view type lies inside ``t`` (a list, struct, map or dictionary), which the reader
    cannot decode or filter."""
    if pa.types.is_dictionary(t):
        return _nested_view(t.value_type) or pa.types.is_string_view(t.value_type)
    views = (
        pa.types.is_string_view,
        pa.types.is_binary_view,
        pa.types.is_list_view,
        pa.types.is_large_list_view,
    )
    if any(f(t) for f in views[2:]):
        return True
    return any(
        any(f(t.field(i).type) for f in views) or _nested_view(t.field(i).type) for i in range(t.num_fields)
    )


# -- input discovery ---------------------------------------------------------------------------------
@dataclass
class InputShard:
    path: str  # relative to the input folder
    rows: int
    bytes: int
    schema: pa.Schema


@dataclass
class InputSet:
    """The resolved input: a folder, its Parquet shards (sorted), and their unified schema."""

    folder: DataFolder
    shards: list[InputShard]
    schema: pa.Schema
    text_column: str
    id_column: str | None
    #: the shards come from listing a folder (a folder or a glob), not from naming one file
    listed: bool = True

    @property
    def files(self) -> list[str]:
        return [s.path for s in self.shards]


def _split_glob(path: str) -> tuple[str, str | None]:
    magic = any(c in path for c in "*?[")
    if not magic:
        return path, None
    parts = path.split("/")
    i = next(i for i, p in enumerate(parts) if any(c in p for c in "*?["))
    base = "/".join(parts[:i]) or "."
    return base, "/".join(parts[i:])


def input_exists(path: str) -> bool:
    """Whether an input path (file, folder, or a glob's base folder) is there at all, listing nothing."""
    return bool(get_datafolder(_split_glob(path)[0]).exists(""))


def resolve_input(path: str) -> tuple[DataFolder, list[str]]:
    """A file, a folder (all ``*.parquet`` below it) or a glob → (folder, sorted relative paths).

    Listing skips files and folders whose name starts with ``.`` or ``_`` (``_SUCCESS``,
    ``_temporary/``, ``.crc``: the Hive and Spark convention) unless the glob names such a part; an
    existing file or folder is that, even when its name has glob characters."""
    folder, files, _ = _resolve(path)
    return folder, files


def _resolve(path: str) -> tuple[DataFolder, list[str], bool]:
    """:func:`resolve_input`, and whether the files come from listing a folder (not one named file).
    A remote path that cannot be reached (no network, a bad token) is one error naming it."""
    if "://" not in path:
        return _resolve_here(path)
    try:
        return _resolve_here(path)
    except CorpusfilterError as e:
        if path.startswith("hf://") and str(e).startswith("input path not found"):
            raise InputError(f"{e} (a private or gated repo also needs HF_TOKEN)") from None
        raise
    except Exception as e:  # fsspec's transports raise their own errors (httpx, aiohttp, ...)
        raise InputError(f"{path}: cannot be listed ({type(e).__name__}: {first_line(e)})") from None


def _resolve_here(path: str) -> tuple[DataFolder, list[str], bool]:
    whole = get_datafolder(path)
    if whole.isfile(""):
        parent, name = posixpath.split(path.rstrip("/"))
        return get_datafolder(parent or "."), [name], False
    base, pattern = (path, None) if whole.exists("") else _split_glob(path)  # a folder named a[1]
    folder = get_datafolder(base)
    if pattern is None:
        if not folder.exists(""):
            raise InputError(f"input path not found: {path}")
        files = [f for f in folder.list_files(recursive=True) if f.lower().endswith(".parquet")]
    else:
        if not folder.exists(""):
            raise InputError(f"input path not found: {base} (from {path})")
        files = folder.list_files(recursive=True, glob_pattern=pattern)
    hidden = (".", "_")
    asked = pattern is not None and any(p.startswith(hidden) for p in pattern.split("/"))
    if not asked:  # nor files in such folders (Spark's _temporary/, .ipynb_checkpoints/)
        files = [f for f in files if not any(p.startswith(hidden) for p in f.split("/"))]
    if not files:
        raise InputError(f"input matches no Parquet files: {path}")
    return folder, sorted(files), True


def changed_files(then: dict[str, Any], now: dict[str, Any]) -> str | None:
    """How a set of input files changed between two looks ({path: size facts}), e.g. "2 files: added
    a.parquet, changed b.parquet"; None when it did not."""
    changed = sorted(
        [f"added {p}" for p in now.keys() - then.keys()]
        + [f"removed {p}" for p in then.keys() - now.keys()]
        + [f"changed {p}" for p in now.keys() & then.keys() if now[p] != then[p]]
    )
    if not changed:
        return None
    return f"{len(changed)} files: {', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''}"


def folder_url(folder: DataFolder) -> str:
    """The folder as a path ``get_datafolder`` takes back: local folders plain, remote ones with their
    protocol (``hf://datasets/ORG/NAME/data``; ``DataFolder.path`` drops it), so a manifest's
    ``input_folder`` can be re-opened to re-hash the inputs."""
    protocol = folder.fs.protocol
    protocol = protocol[0] if isinstance(protocol, (tuple, list)) else protocol
    if protocol in ("file", "local"):
        return str(folder.path)
    return f"{protocol}://{folder.path}"


def inspect_inputs(path: str, *, text_column: str, id_column: str | None, scored: bool = False) -> InputSet:
    """Read every shard's footer: row counts, sizes, a unified schema. Fails on the first unusable file.

    ``scored`` input is the output of ``corpusfilter score``: it already carries the provenance
    columns (``cf_shard``, ``cf_row``), which are kept rather than added.
    """
    folder, files, listed = _resolve(path)
    shards: list[InputShard] = []
    for rel in files:
        full = folder.resolve_paths(rel)
        try:
            with folder.open(rel, "rb") as f:
                meta = pq.ParquetFile(f).metadata
                schema = meta.schema.to_arrow_schema()
            size = int(folder.size(rel))
        except Exception as e:
            raise InputError(f"{full}: not a readable Parquet file ({first_line(e)})") from None
        if text_column not in schema.names:
            raise InputError(f"{full}: no text column {text_column!r} (columns: {', '.join(schema.names)})")
        t = schema.field(text_column).type
        if not _key_bytes(t) and meta.num_rows:  # no rows, no values to misread (pandas types them double)
            raise InputError(f"{full}: text column {text_column!r} has type {t}, expected string")
        if id_column is not None and id_column not in schema.names:
            raise InputError(
                f"{full}: no id column {id_column!r} (set input.id_column: null to derive ids from shard and row)"
            )
        viewed = next((f for f in schema if _nested_view(f.type)), None)
        if viewed is not None:
            raise InputError(
                f"{full}: column {viewed.name!r} has type {viewed.type}; views nested in lists, structs or "
                "maps are not supported (write plain list/string types, as pyarrow and polars do by default)"
            )
        if id_column is not None and pa.types.is_nested(schema.field(id_column).type) and meta.num_rows:
            raise InputError(
                f"{full}: id column {id_column!r} has type {schema.field(id_column).type}; ids must be "
                "strings or numbers"
            )
        reserved_cols = (
            (REASON_COLUMN, BLOCK_COLUMN, COPY_COLUMN, ORIGINAL_COLUMN) if scored else BOOKKEEPING_COLUMNS
        )
        if scored and not {SHARD_COLUMN, ROW_COLUMN} <= set(schema.names):
            raise InputError(f"{full}: not a scored shard (no {SHARD_COLUMN}/{ROW_COLUMN} columns)")
        for reserved in reserved_cols:
            if reserved in schema.names:
                raise InputError(
                    f"{full}: column {reserved!r} is reserved for corpusfilter's bookkeeping; rename or "
                    "drop it (an earlier output read as input: drop cf_shard, cf_row, copy_index, original_id)"
                )
        if not scored and id_column is None and "id" in schema.names:
            raise InputError(
                f"{full}: has an 'id' column, but input.id_column is null (ids derived as "
                "'<shard>#<row>' go into 'id'); set input.id_column: id, or rename the column"
            )
        shards.append(InputShard(rel, meta.num_rows, size, schema))
    # a file with no rows has no values to type (pandas writes an empty frame's columns as double):
    # it takes no part in the schema unless every file is empty
    typed = [s for s in shards if s.rows] or shards
    normalized = [_normalize_schema(s.schema, text_column, id_column) for s in typed]
    try:
        unified = _unify(normalized)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise InputError(
            f"{path}: input shards have incompatible schemas ({first_line(e)}){_first_clash(typed, normalized)}"
        ) from None
    unified = unified.remove_metadata()
    if not scored:
        if id_column is None:
            unified = unified.append(pa.field("id", pa.string()))
        unified = unified.append(pa.field(SHARD_COLUMN, pa.string())).append(pa.field(ROW_COLUMN, pa.int64()))
    return InputSet(folder, shards, unified, text_column, id_column, listed)


def _widens(src: pa.DataType, dst: pa.DataType) -> bool:
    """Whether every ``src`` value fits ``dst`` exactly: a wider integer or float, a finer timestamp."""
    t = pa.types
    if src == dst or t.is_null(src):
        return True
    if t.is_integer(src) and t.is_integer(dst):
        if t.is_signed_integer(src) and not t.is_signed_integer(dst):
            return False
        grow = 0 if t.is_signed_integer(src) == t.is_signed_integer(dst) else 1  # uint32 → int64
        return bool(dst.bit_width >= src.bit_width + grow)
    if t.is_floating(src) and t.is_floating(dst):
        return bool(dst.bit_width >= src.bit_width)
    if t.is_timestamp(src) and t.is_timestamp(dst):
        order = ["s", "ms", "us", "ns"]  # ns holds only years 1677-2262: nothing widens into it
        return bool(src.tz == dst.tz and order.index(src.unit) <= order.index(dst.unit) < 3)
    return False


def _unify(schemas: list[pa.Schema]) -> pa.Schema:
    """One schema for all shards: as Arrow unifies them, and where a column's type differs between
    shards, the type every shard's values fit exactly (int32 and int64 → int64, timestamp[ms] and
    [us] → [us]); anything lossy (int64 and double, int and string) is refused."""
    try:
        return pa.unify_schemas(schemas)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        try:
            wide = pa.unify_schemas(schemas, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            raise e from None
        for s in schemas:
            for f in s:
                if not _widens(f.type, wide.field(f.name).type):
                    raise e from None
        return wide


def _first_clash(shards: list[InputShard], schemas: list[pa.Schema]) -> str:
    """Which shard first disagrees with the ones before it (to name the file)."""
    unified = schemas[0]
    for k in range(1, len(schemas)):
        try:
            unified = _unify([unified, schemas[k]])
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            before = ", ".join(s.path for s in shards[:k][:3]) + (", ..." if k > 3 else "")
            return f": {shards[k].path} disagrees with {before}"
    return ""


def _normalize_schema(schema: pa.Schema, text_column: str, id_column: str | None) -> pa.Schema:
    fields = []
    for f in schema.remove_metadata():
        if f.name == text_column or (f.name == id_column):
            f = pa.field(f.name, pa.string())
        elif _is_text(f.type):  # large or view: one layout, as the reader decodes them
            f = pa.field(f.name, pa.string())
        elif pa.types.is_binary_view(f.type):
            f = pa.field(f.name, pa.binary())
        fields.append(f)
    return pa.schema(fields)


# -- reading one file in the calling process -----------------------------------------------------------
def read_parquet(
    folder: DataFolder, rel: str, columns: Iterable[str] | None = None, *, present_only: bool = False
) -> pa.Table:
    """Columns of one Parquet file of ``folder`` (``present_only``: those of ``columns`` it has),
    read on the calling thread: pyarrow's reader threads calling back into a Python file object
    made about one process exit in twenty abort ("terminate called without an active exception")."""
    with folder.open(rel, "rb") as f:
        pf = pq.ParquetFile(f, pre_buffer=False)
        names = pf.schema_arrow.names
        cols = None if columns is None else list(columns)
        if cols is not None and present_only:
            cols = [c for c in cols if c in names]
        missing = [c for c in cols or () if c not in names]
        if missing:  # ParquetFile.read would silently leave it out
            raise InputError(f"{rel}: no column {missing[0]!r} (has {', '.join(names)})")
        return pf.read(columns=cols, use_threads=False)


def iter_parquet(
    folder: DataFolder, rel: str, *, batch_size: int, columns: Iterable[str] | None = None
) -> Iterator[pa.Table]:
    """One Parquet file of ``folder`` in tables of ``batch_size`` rows (the ``columns`` it has), read
    on the calling thread, as :func:`read_parquet`."""
    with folder.open(rel, "rb") as f:
        pf = pq.ParquetFile(f, pre_buffer=False)
        cols = None if columns is None else [c for c in columns if c in pf.schema_arrow.names]
        for rb in pf.iter_batches(batch_size=batch_size, columns=cols, use_threads=False):
            yield pa.Table.from_batches([rb])


def sha256_file(folder: DataFolder | str, rel: str | None = None) -> str:
    """sha256 of a file — ``rel`` in a DataFolder, or a local path alone — read in 1 MB chunks."""
    h = hashlib.sha256()
    with open(folder, "rb") if rel is None else get_datafolder(folder).open(rel, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_stat(path: str) -> tuple[int, int, int]:
    """(size, mtime_ns, inode): when none moved, a file's sha256 taken before still holds."""
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def pin_file(path: str, pinned: tuple[str, tuple[int, int, int]]) -> tuple[str, tuple[int, int, int]]:
    """Check that a model file still has the sha256 recorded at validation (``pinned``: sha, stat);
    rehash only when its size, mtime or inode moved. A changed file fails loudly instead of mixing
    two models' scores in one run."""
    sha, stat = pinned
    if file_stat(path) == stat:
        return pinned
    now = sha256_file(path)
    if now != sha:
        raise CorpusfilterError(f"{path} changed since the run was validated (sha256 {now[:12]}…)")
    return now, file_stat(path)


# -- reader ------------------------------------------------------------------------------------------
def rows_read(shards: Sequence[tuple[str, int]], tasks: int, limit: int) -> dict[str, int]:
    """How many rows of each (path, rows) shard the reader reads: task k reads ``shards[k::tasks]``
    in order, all of each, until ``limit`` rows in that task (-1: no limit)."""
    out: dict[str, int] = {}
    for k in range(tasks):
        left = limit if limit >= 0 else None
        for path, rows in shards[k::tasks]:
            n = rows if left is None else min(rows, left)
            out[path] = n
            if left is not None:
                left -= n
    return out


class ParquetBatchReader(PipelineStep):
    """Reads this rank's shards (``files[rank::world_size]``, as datatrove shards files) as Batches."""

    type = "corpusfilter"
    name = "reader"

    def __init__(
        self,
        *,
        folder: DataFolder | str,
        files: list[str],
        schema: pa.Schema,
        text_column: str,
        id_column: str | None,
        batch_size: int = 10_000,
        limit: int = -1,
        expected_rows: dict[str, int] | None = None,
        progress: bool = True,
        scored: bool = False,
    ) -> None:
        super().__init__()
        self.scored = scored
        self.folder = get_datafolder(folder)
        self.files = list(files)
        self.schema = schema
        self.text_column = text_column
        self.id_column = id_column
        self.batch_size = batch_size
        self.limit = limit
        self.expected_rows = expected_rows or {}
        self.progress = progress

    def run(self, data: Iterable[Batch] | None = None, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        mine = self.files[rank::world_size]
        total = sum(self.expected_rows.get(f, 0) for f in mine)
        bar = None
        if self.progress and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=total, unit="doc", desc=f"task {rank}", position=rank % 8, leave=False)
        try:
            # Decoding runs a batch ahead in a thread (pyarrow releases the GIL) while blocks work.
            for batch in prefetch(self._batches(mine), depth=2, name="corpusfilter-reader"):
                if bar is not None:
                    bar.update(batch.rows_read)
                yield batch
        finally:
            if bar is not None:
                bar.close()

    def _batches(self, files: list[str]) -> Iterator[Batch]:
        remaining = self.limit if self.limit >= 0 else None
        for rel in files:
            for batch in self.read_shard(rel, remaining):
                if remaining is not None:
                    remaining -= batch.rows_read
                yield batch

    def read_shard(self, rel: str, limit: int | None = None) -> Iterator[Batch]:
        import pyarrow.dataset as ds

        full = self.folder.resolve_paths(rel)
        with self.folder.open(rel, "rb") as f:
            pf = pq.ParquetFile(f)
            file_schema, n_rows = pf.schema_arrow, pf.metadata.num_rows
        if n_rows == 0:  # nothing to read (its columns may have any type: pandas writes double)
            yield Batch(self.schema.empty_table(), rel, 0)
            return
        # Read every string column as binary so one bad byte costs one row, not the whole batch.
        key_columns = (self.text_column, self.id_column)
        read_schema = pa.schema(
            [
                pa.field(fl.name, pa.binary())
                if _is_text(fl.type)
                or pa.types.is_binary_view(fl.type)
                or (fl.name in key_columns and _key_bytes(fl.type))
                else fl
                for fl in file_schema.remove_metadata()
            ]
        )
        dataset = ds.dataset(rel, schema=read_schema, format="parquet", filesystem=self.folder)
        row0 = 0
        yielded = False
        try:
            for rb in dataset.to_batches(batch_size=self.batch_size, use_threads=True):
                if limit is not None and row0 >= limit:
                    break
                if limit is not None and row0 + rb.num_rows > limit:
                    rb = rb.slice(0, limit - row0)
                with self.track_time("batch"):
                    batch = self._make_batch(pa.Table.from_batches([rb]), rel, row0, full)
                self.stat_update("read", value=rb.num_rows)
                self.stat_update("unreadable", value=sum(t.num_rows for t in batch.unreadable))
                row0 += rb.num_rows
                yielded = True
                yield batch
        except (OSError, pa.ArrowException) as e:
            start = max(row0, self._first_bad_row(rel, read_schema))  # not the read-ahead batch's start
            raise InputError(f"{full}: cannot read rows from {start} on ({first_line(e)})") from None
        if not yielded:  # an empty shard still reaches the writer, so it is accounted for
            yield Batch(self.schema.empty_table(), rel, 0)

    def _first_bad_row(self, rel: str, read_schema: pa.Schema) -> int:
        """After a read failed: the first row of the first row group that cannot be read (row
        groups are read one by one), or 0 when each reads alone."""
        row = 0
        try:
            with self.folder.open(rel, "rb") as f:
                pf = pq.ParquetFile(f)
                for i in range(pf.metadata.num_row_groups):
                    try:
                        pf.read_row_group(i, columns=read_schema.names)
                    except (OSError, pa.ArrowException):
                        return row
                    row += pf.metadata.row_group(i).num_rows
        except (OSError, pa.ArrowException):
            pass
        return 0

    def _make_batch(self, table: pa.Table, rel: str, row0: int, full: str) -> Batch:
        n = table.num_rows
        rows = pa.array(np.arange(row0, row0 + n, dtype=np.int64))
        bad = np.zeros(n, dtype=bool)
        errors: list[str | None] = [None] * n
        raw_text = table.column(self.text_column).combine_chunks()

        def flag(mask: np.ndarray, message: str) -> None:
            for i in np.nonzero(mask & ~bad)[0]:
                errors[i] = message
            bad[:] |= mask

        # decode string columns, flagging rows with invalid UTF-8
        columns: dict[str, pa.Array] = {}
        for name in table.column_names:
            col = table.column(name).combine_chunks()
            if self.schema.field(name).type == pa.string() and pa.types.is_binary(col.type):
                try:
                    col = col.cast(pa.string())
                except pa.ArrowInvalid:
                    invalid = invalid_utf8(col)
                    flag(invalid, f"invalid UTF-8 in column {name!r}")
                    col = pc.if_else(pa.array(invalid), pa.nulls(n, pa.binary()), col).cast(pa.string())
            elif _holds_text(col.type) and not _valid(col):  # strings inside lists, structs, maps
                # row by row, on values of their own (a dictionary's take keeps the whole dictionary)
                probe = col.dictionary_decode() if pa.types.is_dictionary(col.type) else col
                invalid = np.asarray([not _valid(probe.take(pa.array([i]))) for i in range(n)], dtype=bool)
                flag(invalid, f"invalid UTF-8 in column {name!r}")
                if probe is not col:  # rebuild the dictionary without the bad values (a filter keeps them)
                    col = pc.if_else(pa.array(invalid), pa.nulls(n, probe.type), probe).dictionary_encode()
            columns[name] = col
        text = columns[self.text_column]
        flag(np.asarray(text.is_null().to_numpy(zero_copy_only=False), dtype=bool) & ~bad, "null text")
        lengths = pc.fill_null(pc.binary_length(text), 0).to_numpy(zero_copy_only=False)
        flag((lengths == 0) & ~bad, "empty text")
        if self.id_column is not None:
            ids = columns[self.id_column].cast(pa.string())
            flag(np.asarray(ids.is_null().to_numpy(zero_copy_only=False), dtype=bool), "null id")
            columns[self.id_column] = ids
        else:
            columns["id"] = pa.array([f"{rel}#{r}" for r in range(row0, row0 + n)], pa.string())
        if not self.scored:  # a score output already carries the original shard and row
            columns[SHARD_COLUMN] = pc.cast(
                pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array([rel])),
                pa.string(),
            )
            columns[ROW_COLUMN] = rows
        out_cols = []
        for fl in self.schema:
            if fl.name in columns:
                c = columns[fl.name]
                out_cols.append(c if c.type == fl.type else c.cast(fl.type))
            else:
                out_cols.append(pa.nulls(n, fl.type))
        good = pa.Table.from_arrays(out_cols, schema=self.schema)
        unreadable: list[pa.Table] = []
        if bad.any():
            idx = pa.array(np.nonzero(bad)[0])
            id_col = self.id_column or "id"
            unreadable.append(
                pa.Table.from_arrays(
                    [
                        pa.array([rel] * len(idx), pa.string()),
                        rows.take(idx),
                        columns[id_col].take(idx).cast(pa.string()),
                        pa.array([errors[i] for i in idx.to_pylist()], pa.string()),
                        raw_text.take(idx).cast(pa.binary()),
                    ],
                    schema=UNREADABLE_SCHEMA,
                )
            )
            good = good.filter(pa.array(~bad))
        text_bytes = int(pc.sum(lengths).as_py() or 0) if n else 0
        return Batch(good, rel, n, text_bytes=text_bytes, unreadable=unreadable)


def invalid_utf8(col: pa.Array) -> np.ndarray:
    """Per row of a binary (or string) array, whether its bytes are not valid UTF-8 (null: valid)."""

    def bad(v: bytes | None) -> bool:
        if v is None:
            return False
        try:
            v.decode("utf-8")
        except UnicodeDecodeError:
            return True
        return False

    return np.fromiter(map(bad, col.cast(pa.binary()).to_pylist()), dtype=bool, count=len(col))


def _holds_text(t: pa.DataType) -> bool:
    """Whether values of type ``t`` contain strings (in a list, struct, map or dictionary)."""
    if _is_text(t):
        return True
    if pa.types.is_dictionary(t):
        return _holds_text(t.value_type)
    return any(_holds_text(t.field(i).type) for i in range(t.num_fields))


def _valid(col: pa.Array) -> bool:
    """Whether every string in ``col`` (at any depth) is valid UTF-8; Parquet readers do not check."""
    try:
        col.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


# -- writer ------------------------------------------------------------------------------------------
class _HashingFile:
    """Write-through file wrapper that hashes and counts what is written."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.sha = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, b: Any) -> int:
        self.sha.update(b)
        self.size += len(b)
        return self.f.write(b)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        if not self.closed:
            self.f.close()
            self.closed = True

    @property
    def mode(self) -> str:
        return "wb"

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns, in order; missing columns are null."""
    cols = []
    for fl in schema:
        if fl.name in table.column_names:
            c = table.column(fl.name)
            cols.append(c if c.type == fl.type else c.cast(fl.type))
        else:
            cols.append(pa.nulls(table.num_rows, fl.type))
    return pa.Table.from_arrays(cols, schema=schema)


@dataclass
class _Sink:
    folder: DataFolder
    subdir: str
    schema: pa.Schema
    rank: int
    compression: str
    rows_per_file: int
    plain_columns: tuple[str, ...] = ()
    files: list[dict[str, Any]] = field(default_factory=list)
    _writer: pq.ParquetWriter | None = None
    _file: _HashingFile | None = None
    _tmp: str = ""
    _final: str = ""
    _rows: int = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        table = conform(table, self.schema)
        start = 0
        while start < table.num_rows:
            if self._writer is None:
                self._open()
            take = min(table.num_rows - start, self.rows_per_file - self._rows)
            assert self._writer is not None
            self._writer.write_table(table.slice(start, take))
            self._rows += take
            start += take
            if self._rows >= self.rows_per_file:
                self._close()

    def _open(self) -> None:
        k = len(self.files)
        self._final = f"{self.subdir}/{self.rank:05d}_{k:05d}.parquet"
        self._tmp = f"{self.subdir}/.tmp-{self.rank:05d}_{k:05d}.parquet"
        self._file = _HashingFile(self.folder.open(self._tmp, "wb"))
        # Dictionary-encoding long unique texts costs time and saves nothing.
        dict_cols = [f.name for f in self.schema if f.name not in self.plain_columns]
        self._writer = pq.ParquetWriter(
            self._file, self.schema, compression=self.compression, use_dictionary=dict_cols
        )
        self._rows = 0

    def _close(self) -> None:
        if self._writer is None or self._file is None:
            return
        self._writer.close()
        self._file.close()
        self.folder.mv(self._tmp, self._final)
        self.files.append(
            {
                "path": self._final,
                "rows": self._rows,
                "bytes": self._file.size,
                "sha256": self._file.sha.hexdigest(),
            }
        )
        self._writer = None
        self._file = None

    def close(self, *, keep_empty: bool = False) -> None:
        """Finish the open file; with ``keep_empty``, write a 0-row file (the schema) if none was."""
        if keep_empty and not self.files and self._writer is None:
            self._open()
        self._close()


def rejected_schema(schema: pa.Schema) -> pa.Schema:
    return schema.append(pa.field(REASON_COLUMN, pa.string())).append(pa.field(BLOCK_COLUMN, pa.string()))


_LIBC: Any = None
#: Trim only when this much freed memory sits in the heap: trimming after every batch costs page
#: faults when the next batch touches the memory again.
TRIM_ABOVE_BYTES = 256 << 20


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def trim_heap() -> None:
    """Hand memory freed by past batches back to the system (glibc ``malloc_trim``).

    Each batch allocates and frees tens of MB; glibc otherwise keeps much of it, and a worker's RSS
    creeps up over a long run (measured with MiniLM loaded, 500 MB of input: median RSS 1.30 GB
    untrimmed, flat with trimming). Trims when more than ``TRIM_ABOVE_BYTES`` are free in the heap;
    a no-op without glibc.
    """
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
        try:
            _LIBC = ctypes.CDLL(name) if name else False
            if _LIBC and not (hasattr(_LIBC, "malloc_trim") and hasattr(_LIBC, "mallinfo2")):
                _LIBC = False
            elif _LIBC:
                _LIBC.mallinfo2.restype = _MallInfo2
        except OSError:
            _LIBC = False
    if _LIBC and _LIBC.mallinfo2().fordblks > TRIM_ABOVE_BYTES:
        _LIBC.malloc_trim(0)


def _write_batch(sinks: dict[str, _Sink], batch: Batch) -> None:
    sinks["data"].write(batch.table)
    for rej in batch.rejected:
        sinks["rejected"].write(rej)
    for bad in batch.unreadable:
        sinks["unreadable"].write(bad)


class ParquetBatchWriter(PipelineStep):
    """Writes kept rows to ``data/``, rejected to ``rejected/``, unreadable to ``unreadable/``, and
    this rank's accounting to ``accounting/<rank>.json`` once every batch is written."""

    type = "corpusfilter"
    name = "writer"

    def __init__(
        self,
        *,
        output: DataFolder | str,
        schema: pa.Schema,
        compression: str = "zstd",
        rows_per_file: int = 1_000_000,
        text_column: str = "text",
    ) -> None:
        super().__init__()
        self.output = get_datafolder(output)
        self.text_column = text_column
        self.schema = schema
        self.compression = compression
        self.rows_per_file = rows_per_file

    def _clear_rank(self, rank: int) -> None:
        """Remove what an interrupted earlier attempt at this rank left behind (for --resume)."""
        for sub in ("data", "rejected", "unreadable"):
            for f in self.output.list_files(sub, glob_pattern=f"*{rank:05d}_*.parquet"):
                name = posixpath.basename(f)
                if name.startswith((f"{rank:05d}_", f".tmp-{rank:05d}_")):
                    self.output.rm(f)
        if self.output.exists(f"accounting/{rank:05d}.json"):
            self.output.rm(f"accounting/{rank:05d}.json")

    def run(self, data: Iterable[Batch] | None = None, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        mark_running(self.output, rank)
        try:
            yield from self._write(data, rank, world_size)
        finally:  # done, failed or interrupted: this task no longer writes (only kill -9 leaves it)
            if self.output.exists(running_marker(rank)):
                self.output.rm(running_marker(rank))

    def _write(self, data: Iterable[Batch] | None, rank: int, world_size: int) -> Iterator[Batch]:
        self._clear_rank(rank)
        plain = (self.text_column,)
        sinks = {
            "data": _Sink(
                self.output, "data", self.schema, rank, self.compression, self.rows_per_file, plain
            ),
            "rejected": _Sink(
                self.output,
                "rejected",
                rejected_schema(self.schema),
                rank,
                self.compression,
                self.rows_per_file,
                plain,
            ),
            "unreadable": _Sink(
                self.output,
                "unreadable",
                UNREADABLE_SCHEMA,
                rank,
                self.compression,
                self.rows_per_file,
                ("raw_text",),
            ),
        }
        shards: dict[str, dict[str, Any]] = {}
        # Compression runs in a background thread (pyarrow releases the GIL), overlapping the
        # write of one batch with the scoring of the next; at most one batch is in flight.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="corpusfilter-writer") as pool:
            pending: Future[None] | None = None
            for batch in data or ():
                acc = shards.setdefault(
                    batch.shard,
                    {"read": 0, "kept": 0, "added": 0, "rejected": {}, "unreadable": 0, "text_bytes": 0},
                )
                acc["read"] += batch.rows_read
                acc["text_bytes"] += batch.text_bytes
                acc["kept"] += batch.num_rows
                acc["added"] += batch.added
                for rej in batch.rejected:
                    reasons, counts = np.unique(rej.column(REASON_COLUMN).to_numpy(False), return_counts=True)
                    for reason, count in zip(reasons, counts):
                        acc["rejected"][str(reason)] = acc["rejected"].get(str(reason), 0) + int(count)
                acc["unreadable"] += sum(t.num_rows for t in batch.unreadable)
                with self.track_time("batch"):
                    if pending is not None:
                        pending.result()
                    pending = pool.submit(_write_batch, sinks, batch)
                self.stat_update("kept", value=batch.num_rows)
                yield batch
                trim_heap()
            if pending is not None:
                pending.result()
        for kind, s in sinks.items():  # data/*.parquet always matches a file, even if nothing was kept
            s.close(keep_empty=kind == "data" and rank == 0)
        record = {
            "rank": rank,
            "world_size": world_size,
            "shards": shards,
            "outputs": {k: s.files for k, s in sinks.items()},
        }
        with self.output.open(f"accounting/{rank:05d}.json", "w") as f:
            json.dump(record, f, indent=1, sort_keys=True)


def running_marker(rank: int) -> str:
    """Where a task says it is writing: ``logs/running/<rank>.json`` (its pid and machine), from its
    writer's start until its accounting is written. A run killed with ``kill -9`` leaves its local
    workers writing on; a new run into the folder checks these first (:func:`live_tasks`)."""
    return f"logs/running/{rank:05d}.json"


def mark_running(output: DataFolder, rank: int) -> None:
    with output.open(running_marker(rank), "w") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid())}, f)


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (Linux: ticks since boot, /proc/PID/stat field 22); None where
    unknown. A pid reused by another process, after the task died, has another start."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after the command name, which may hold spaces
    return fields[19] if len(fields) > 19 else None


def live_tasks(output: DataFolder) -> list[tuple[str, int]]:
    """(rank file, pid) of each task marked running whose process is alive on this machine (tasks
    of other machines cannot be checked from here; Slurm's are cancelled by the runner)."""
    if not output.exists("logs/running"):
        return []
    here, out = socket.gethostname(), []
    for rel in sorted(output.list_files("logs/running")):
        try:
            with output.open(rel) as f:
                mark = json.load(f)
            pid = int(mark["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # half-written by a task killed as it started: no process to wait for
        if mark.get("host") != here or pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:  # alive, another user's
            pass
        if mark.get("start") is not None and _process_start(pid) not in (None, mark["start"]):
            continue  # the pid is another process's now
        out.append((posixpath.basename(rel), pid))
    return out
