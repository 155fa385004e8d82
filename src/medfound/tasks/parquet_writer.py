"""A resumable, crash-safe Parquet writer: chunks while running, one file at the end.

Rows are written in chunks, each a durable, atomically renamed Parquet file in `OUT.parquet.parts/`; at
the end the existing output and the chunks are streamed, row group by row group, into a new
`OUT.parquet` (atomically renamed), and the chunks are removed. Memory is one chunk (a row group) of
embeddings plus the set of source ids (strings), whatever the size of the embeddings.

Crash safety: a crash at any moment leaves the previous output intact and every finished chunk on disk,
so a re-run skips what is already done. The output records which chunks it was merged from; a crash
after its rename but before the chunks' removal leaves chunks the next merge recognises and removes
instead of merging them twice. Rows are also de-duplicated by source (`path`) while merging.
Every file carries the run's identity (model, weights, preprocessing, precision, UID policy) so that a
re-run with other settings cannot be mixed into the same output.
"""

import json
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medfound.errors import ConfigError
from medfound.files import atomic_write, fsync_dir, remove_temporaries

IDENTITY_KEY = b"medfound_run"
MERGED_KEY = b"medfound_merged_chunks"
ID_COLUMN = "path"
_MAX_LIST_VALUES = 2**31 - 1  # a Parquet list column's int32 offsets


class ResumableParquetWriter:
    """Chunked writer and merger of one output file; `identity` must match across resumed runs."""

    def __init__(self, out: Path, identity: dict, schema: pa.Schema, rank: int = 0):
        self.out = Path(out)
        self.parts = self.out.with_name(self.out.name + ".parts")
        self.identity = json.loads(json.dumps(identity, sort_keys=True))  # as read back
        meta = dict(schema.metadata or {})
        meta[IDENTITY_KEY] = json.dumps(self.identity, sort_keys=True).encode()
        self.schema = schema.with_metadata(meta)
        self.rank = rank

    def _chunks(self) -> list[Path]:
        return sorted(self.parts.glob("*.parquet")) if self.parts.is_dir() else []

    def _files(self) -> list[Path]:
        return ([self.out] if self.out.exists() else []) + self._chunks()

    def done_ids(self) -> set[str]:
        """Sources already written by earlier (possibly interrupted) runs into this output."""
        return set(self.read_columns([ID_COLUMN])[ID_COLUMN])

    def read_columns(self, names: list[str]) -> dict[str, list]:
        """`names` of every row written so far (earlier runs included), as lists."""
        values: dict[str, list] = {name: [] for name in names}
        for path in self._files():
            self._check_identity(path)
            table = pq.read_table(path, columns=names)
            for name in names:
                values[name] += table.column(name).to_pylist()
        return values

    def _check_identity(self, path: Path) -> None:
        metadata = pq.read_schema(path).metadata or {}
        found = json.loads(metadata.get(IDENTITY_KEY, b"{}"))
        if found != self.identity:
            raise ConfigError(
                f"{path} holds embeddings of another run or an older medfound ({found}); this "
                f"run is {self.identity}: choose another --out or remove it"
            )

    def write_chunk(self, columns: dict[str, list], vectors: dict[str, np.ndarray]) -> None:
        """Write one finished chunk (atomically): scalar `columns` as lists, and list columns from
        2D NumPy arrays (one row each), which go to Arrow without a Python object per value."""
        n = len(columns[ID_COLUMN])
        if n == 0:
            return
        arrays = {name: pa.array(values) for name, values in columns.items()}
        arrays |= {name: _list_array(matrix) for name, matrix in vectors.items()}
        table = pa.Table.from_pydict(
            {f.name: arrays[f.name] for f in self.schema}, schema=self.schema
        )
        self.parts.mkdir(parents=True, exist_ok=True)
        target = self.parts / f"{self.rank:04d}-{uuid.uuid4().hex}.parquet"
        atomic_write(target, lambda tmp: pq.write_table(table, tmp))

    def merge(self) -> int:
        """Fold the chunks into the output file (idempotent under crashes); its row count."""
        remove_temporaries(self.parts)  # left by a kill mid-write; no rank writes any more
        remove_temporaries(self.out.parent, self.out.name)
        chunks = self._chunks()
        merged_before = _merged_chunks(self.out)
        for stale in [c for c in chunks if c.name in merged_before]:
            stale.unlink()  # already in the output: a crash stopped their removal last time
        fresh = [c for c in chunks if c.name not in merged_before]
        for chunk in fresh:  # every rank's chunks must come from the same run
            self._check_identity(chunk)
        if fresh:
            sources = ([self.out] if self.out.exists() else []) + fresh
            meta = dict(self.schema.metadata)
            meta[MERGED_KEY] = json.dumps(sorted(c.name for c in fresh)).encode()
            schema = self.schema.with_metadata(meta)
            atomic_write(self.out, lambda tmp: _stream_unique(sources, schema, tmp))
            for chunk in fresh:
                chunk.unlink()
        if self.parts.is_dir():
            fsync_dir(self.parts)
            if not any(self.parts.iterdir()):
                self.parts.rmdir()
        return pq.ParquetFile(self.out).metadata.num_rows if self.out.exists() else 0


def _merged_chunks(out: Path) -> set[str]:
    if not out.exists():
        return set()
    raw = (pq.read_schema(out).metadata or {}).get(MERGED_KEY)
    return set(json.loads(raw)) if raw else set()


def _stream_unique(sources: list[Path], schema: pa.Schema, target: Path) -> None:
    """Copy the rows of `sources` into `target` one row group at a time, each source id once."""
    seen: set[str] = set()
    with pq.ParquetWriter(target, schema) as writer:
        for path in sources:
            reader = pq.ParquetFile(path)
            for group in range(reader.num_row_groups):
                table = reader.read_row_group(group).select(schema.names)
                ids = table.column(ID_COLUMN).to_pylist()
                keep = []
                for source_id in ids:
                    keep.append(source_id not in seen)
                    seen.add(source_id)
                if not all(keep):
                    table = table.filter(pa.array(keep))
                writer.write_table(table.cast(schema))


def _list_array(matrix: np.ndarray) -> pa.ListArray:
    """(rows, width) float32 or int32 -> a list<...> column, zero-copy from the NumPy buffer."""
    matrix = np.ascontiguousarray(matrix)
    rows, width = matrix.shape
    if rows * width > _MAX_LIST_VALUES:
        raise ConfigError(
            f"a chunk of {rows} rows x {width} values exceeds Parquet's list limit; "
            "lower --chunk-rows"
        )
    offsets = pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1)))
