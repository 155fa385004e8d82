"""Read TensorFlow checkpoint "tensor bundles" (what SavedModels keep in `variables/`) without TF.

The format (REFERENCE.md section 1): `variables.index` is a LevelDB-format table whose keys are tensor
names and whose values are serialized BundleEntryProto messages (dtype, shape, shard, offset, size,
crc32c) pointing into `variables.data-NNNNN-of-MMMMM`; the empty key holds the BundleHeaderProto.
"""

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfound.convert import protowire
from medfound.errors import WeightsError

_FOOTER_SIZE = 48
_MAGIC = 0xDB4775248B80FB57  # LevelDB table magic, stored little-endian at the very end
_BLOCK_TRAILER = 5  # compression type byte + masked crc32c

# TensorFlow DataType enum -> numpy dtype (types.proto). Strings are handled apart.
_DTYPES = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    9: np.int64,
    10: np.bool_,
    17: np.uint16,
    19: np.float16,
    22: np.uint32,
    23: np.uint64,
}
DT_STRING, DT_BFLOAT16 = 7, 14


@dataclass(frozen=True)
class BundleEntry:
    """Where one tensor lives: its dtype enum, shape, data shard, byte offset and size."""

    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int


def _block_handle(data: bytes, pos: int) -> tuple[int, int, int]:
    offset, pos = protowire.read_varint(data, pos)
    size, pos = protowire.read_varint(data, pos)
    return offset, size, pos


def _block_entries(block: bytes, where: str):
    """Yield (key, value) of one table block (keys are prefix-compressed against the previous)."""
    if len(block) < 4:
        raise WeightsError(f"{where}: table block too short")
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * restarts
    if limit < 0:
        raise WeightsError(f"{where}: corrupt table block (restart array)")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = protowire.read_varint(block, pos)
        unshared, pos = protowire.read_varint(block, pos)
        value_size, pos = protowire.read_varint(block, pos)
        if shared > len(key) or pos + unshared + value_size > limit:
            raise WeightsError(f"{where}: corrupt table entry at byte {pos}")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + value_size]
        pos += value_size


def _read_block(table: bytes, offset: int, size: int, where: str) -> bytes:
    if offset + size + _BLOCK_TRAILER > len(table):
        raise WeightsError(f"{where}: table block at {offset} runs past the end (truncated index?)")
    if table[offset + size] != 0:
        raise WeightsError(f"{where}: compressed table blocks are not supported")
    return table[offset : offset + size]


def read_index(index_path: Path) -> tuple[dict[str, BundleEntry], int]:
    """Parse `variables.index` -> ({tensor name: entry}, number of data shards)."""
    where = str(index_path)
    try:
        table = index_path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"{where}: cannot read the checkpoint index ({exc})") from exc
    if len(table) < _FOOTER_SIZE:
        raise WeightsError(f"{where}: too short to be a checkpoint index (truncated?)")
    footer = table[-_FOOTER_SIZE:]
    if struct.unpack_from("<Q", footer, 40)[0] != _MAGIC:
        raise WeightsError(f"{where}: not a TensorFlow checkpoint index (bad magic; truncated?)")
    try:
        _, _, pos = _block_handle(footer, 0)  # metaindex: unused
        index_offset, index_size, _ = _block_handle(footer, pos)
        entries: dict[str, BundleEntry] = {}
        shards = 1
        index_block = _read_block(table, index_offset, index_size, where)
        for _, handle in _block_entries(index_block, where):
            offset, size, _ = _block_handle(handle, 0)
            for key, value in _block_entries(_read_block(table, offset, size, where), where):
                if key == b"":
                    shards = protowire.first(protowire.decode(value), 1, 1)
                else:
                    entries[key.decode()] = _entry(value)
    except protowire.ProtoError as exc:
        raise WeightsError(f"{where}: corrupt checkpoint index ({exc})") from exc
    return entries, shards


def _entry(value: bytes) -> BundleEntry:
    fields = protowire.decode(value)
    shape_fields = protowire.decode(protowire.first(fields, 2, b""))
    dims = [
        protowire.as_signed(protowire.first(protowire.decode(dim), 1, 0))
        for dim in shape_fields.get(2, [])
    ]
    return BundleEntry(
        dtype=protowire.first(fields, 1, 0),
        shape=tuple(dims),
        shard=protowire.first(fields, 3, 0),
        offset=protowire.first(fields, 4, 0),
        size=protowire.first(fields, 5, 0),
    )


class TensorBundle:
    """A checkpoint prefix (e.g. `variables/variables`): names, shapes and lazily read tensors."""

    def __init__(self, prefix: Path):
        self.prefix = Path(prefix)
        self.entries, self.num_shards = read_index(
            self.prefix.with_name(self.prefix.name + ".index")
        )
        self._shards: dict[int, bytes] = {}

    def _shard(self, shard: int) -> bytes:
        if shard not in self._shards:
            name = f"{self.prefix.name}.data-{shard:05d}-of-{self.num_shards:05d}"
            path = self.prefix.with_name(name)
            if not path.exists():
                raise WeightsError(f"{path}: checkpoint data shard is missing")
            self._shards[shard] = path.read_bytes()
        return self._shards[shard]

    def _raw(self, name: str) -> tuple[BundleEntry, bytes]:
        entry = self.entries[name]
        data = self._shard(entry.shard)
        if entry.offset + entry.size > len(data):
            raise WeightsError(
                f"{self.prefix}: tensor {name!r} runs past the end of data shard {entry.shard} "
                "(truncated file?)"
            )
        return entry, data[entry.offset : entry.offset + entry.size]

    def tensor(self, name: str) -> np.ndarray:
        """A numeric tensor as a numpy array of its shape."""
        entry, raw = self._raw(name)
        if entry.dtype == DT_BFLOAT16:
            bits = np.frombuffer(raw, np.uint16).astype(np.uint32) << 16
            return bits.view(np.float32).reshape(entry.shape)
        if entry.dtype not in _DTYPES:
            raise WeightsError(
                f"{self.prefix}: tensor {name!r} has unsupported dtype {entry.dtype}"
            )
        array = np.frombuffer(raw, _DTYPES[entry.dtype])
        if array.size != int(np.prod(entry.shape, dtype=np.int64)):
            raise WeightsError(f"{self.prefix}: tensor {name!r} size does not match its shape")
        return array.reshape(entry.shape).copy()

    def strings(self, name: str) -> list[bytes]:
        """A string tensor's elements: varint lengths, a 4-byte checksum, then the bytes."""
        entry, raw = self._raw(name)
        if entry.dtype != DT_STRING:
            raise WeightsError(f"{self.prefix}: tensor {name!r} is not a string tensor")
        count = int(np.prod(entry.shape, dtype=np.int64))
        lengths, pos = [], 0
        for _ in range(count):
            length, pos = protowire.read_varint(raw, pos)
            lengths.append(length)
        pos += 4
        out = []
        for length in lengths:
            out.append(raw[pos : pos + length])
            pos += length
        return out
