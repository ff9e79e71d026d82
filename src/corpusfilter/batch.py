"""The unit that flows between corpusfilter steps: an Arrow table of live rows plus the rows set aside."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

#: Provenance columns added by the reader to every row: input shard (relative path) and row index in it.
SHARD_COLUMN = "cf_shard"
ROW_COLUMN = "cf_row"
#: Columns added to rejected rows.
REASON_COLUMN = "reject_reason"
BLOCK_COLUMN = "reject_block"
#: Columns of the rows ``upsample`` and ``backfill`` write: copy number (0: the original) and whose copy.
COPY_COLUMN = "copy_index"
ORIGINAL_COLUMN = "original_id"
#: Every column corpusfilter writes for its bookkeeping: no input or tag may use these names.
BOOKKEEPING_COLUMNS = (SHARD_COLUMN, ROW_COLUMN, REASON_COLUMN, BLOCK_COLUMN, COPY_COLUMN, ORIGINAL_COLUMN)


@dataclass
class Batch:
    """A slice of one input shard on its way through the pipeline.

    ``table`` holds the rows still alive. Decisions move rows out of it into ``rejected`` (with reason
    and block columns); the reader puts rows it cannot use into ``unreadable``. ``rows_read`` is how many
    input rows this batch stands for, so the writer can check read + added = kept + rejected + unreadable.
    """

    table: pa.Table
    shard: str
    rows_read: int
    text_bytes: int = 0
    rejected: list[pa.Table] = field(default_factory=list)
    unreadable: list[pa.Table] = field(default_factory=list)
    #: rows added by resampling blocks (copies), so that read + added = kept + rejected + unreadable
    added: int = 0

    @property
    def num_rows(self) -> int:
        return self.table.num_rows
