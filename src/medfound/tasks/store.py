"""Crash-safe, resumable Parquet output.

Rows are written in chunks, each an atomically renamed Parquet file in `OUT.parquet.parts/`; at the end
the existing output and all chunks are merged into `OUT.parquet` (again atomically) and the chunks are
removed. A crash at any moment leaves the previous output intact and every finished chunk on disk, so a
re-run skips what is already embedded. Chunks carry the run's identity (model, weights) in their schema
metadata so a re-run with another model cannot be mixed into the same output.
"""

import json
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from medfound.errors import ConfigError
from medfound.models.weights import atomic_write

IDENTITY_KEY = b"medfound_run"


class ParquetStore:
    """Chunked writer/merger for one output file; `identity` must match across resumed runs."""

    def __init__(self, out: Path, identity: dict, rank: int = 0):
        self.out = Path(out)
        self.parts = self.out.with_name(self.out.name + ".parts")
        self.identity = json.loads(json.dumps(identity, sort_keys=True))  # as read back
        self.rank = rank

    def _files(self) -> list[Path]:
        parts = sorted(self.parts.glob("*.parquet")) if self.parts.is_dir() else []
        return ([self.out] if self.out.exists() else []) + parts

    def done_ids(self) -> set[str]:
        """Sources already embedded by earlier (possibly interrupted) runs into this output."""
        done: set[str] = set()
        for path in self._files():
            schema = pq.read_schema(path)
            found = json.loads((schema.metadata or {}).get(IDENTITY_KEY, b"{}"))
            if found != self.identity:
                raise ConfigError(
                    f"{path} holds embeddings of another run ({found}); this run is "
                    f"{self.identity}: choose another --out or remove it"
                )
            done.update(pq.read_table(path, columns=["path"]).column("path").to_pylist())
        return done

    def write_chunk(self, rows: list[dict], metadata: dict[str, str]) -> None:
        """Write rows as one finished chunk file (atomically)."""
        if not rows:
            return
        table = pa.Table.from_pylist(rows, schema=self._schema(rows, metadata))
        self.parts.mkdir(parents=True, exist_ok=True)
        target = self.parts / f"{self.rank:04d}-{uuid.uuid4().hex}.parquet"
        atomic_write(target, lambda tmp: pq.write_table(table, tmp))

    def merge(self) -> int:
        """Fold all chunks into the output file; returns its row count."""
        files = self._files()
        if not files:
            return 0
        tables = [pq.read_table(path) for path in files]
        merged = pa.concat_tables(tables, promote_options="default")
        merged = merged.replace_schema_metadata(tables[-1].schema.metadata)
        atomic_write(self.out, lambda tmp: pq.write_table(merged, tmp, row_group_size=4096))
        for path in files[1:] if self.out in files else files:
            path.unlink()
        if self.parts.is_dir() and not any(self.parts.iterdir()):
            self.parts.rmdir()
        return merged.num_rows

    def _schema(self, rows: list[dict], metadata: dict[str, str]) -> pa.Schema:
        fields = []
        for key, value in rows[0].items():
            if key == "embedding":
                fields.append(pa.field(key, pa.list_(pa.float32())))
            elif key == "shape":
                fields.append(pa.field(key, pa.list_(pa.int32())))
            elif isinstance(value, bool):
                fields.append(pa.field(key, pa.bool_()))
            else:
                fields.append(pa.field(key, pa.string()))
        meta = {k.encode(): v.encode() for k, v in metadata.items()}
        meta[IDENTITY_KEY] = json.dumps(self.identity, sort_keys=True).encode()
        return pa.schema(fields, metadata=meta)
