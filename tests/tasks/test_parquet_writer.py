"""The resumable Parquet writer: idempotent merges under crashes, memory bounded by one chunk."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medfound.tasks.parquet_writer import ResumableParquetWriter

SCHEMA = pa.schema([pa.field("path", pa.string()), pa.field("embedding", pa.list_(pa.float32()))])


class Crash(Exception):
    """A crash injected into one file-system step."""


def _writer(out):
    return ResumableParquetWriter(out, {"model": "m"}, SCHEMA)


def _chunk(writer, ids, width=3):
    vectors = np.asarray([[float(ord(i[-1]))] * width for i in ids], np.float32)
    writer.write_chunk({"path": list(ids)}, {"embedding": vectors})


def _rows(out):
    table = pq.read_table(out).to_pydict()
    return sorted(zip(table["path"], (v[0] for v in table["embedding"]), strict=True))


def _crash_at(monkeypatch, k):
    """Make the k-th file-system step (rename, unlink, rmdir, fsync, Parquet write) raise."""
    calls = {"n": 0}

    def wrap(target, name):
        real = getattr(target, name)

        def step(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == k:
                raise Crash(f"{name} #{k}")
            return real(*args, **kwargs)

        monkeypatch.setattr(target, name, step)

    for name in ("replace", "unlink", "rmdir", "fsync"):
        wrap(os, name)
    wrap(pq.ParquetWriter, "write_table")


@pytest.mark.parametrize("earlier_output", [False, True])
def test_a_crash_at_any_step_of_a_merge_leaves_each_row_once(tmp_path, monkeypatch, earlier_output):
    expected = {"a", "b", "c", "d"}
    k, crashed = 0, True
    while crashed:
        k += 1
        run = tmp_path / f"crash-{k}"
        out = run / "e.parquet"
        writer = _writer(out)
        if earlier_output:
            _chunk(writer, "ab")
            writer.merge()
            _chunk(writer, "c")
            _chunk(writer, "d")
        else:
            _chunk(writer, "ab")
            _chunk(writer, "cd")
        with monkeypatch.context() as patch:
            _crash_at(patch, k)
            try:
                writer.merge()
                crashed = False
            except Crash:
                pass
        todo = expected - _writer(out).done_ids()  # the next run embeds what is missing ...
        _chunk(_writer(out), sorted(todo))
        assert _writer(out).merge() == 4, f"crash at step {k}"  # ... and merges again
        assert [p for p, _ in _rows(out)] == sorted(expected), f"crash at step {k}"
        assert not (run / "e.parquet.parts").exists()
    assert k > 6  # every step of the merge was tried


def test_a_chunk_merged_before_a_crash_is_not_merged_again(tmp_path, monkeypatch):
    out = tmp_path / "e.parquet"
    writer = _writer(out)
    _chunk(writer, "ba")
    _chunk(writer, "c")
    real_unlink = os.unlink
    monkeypatch.setattr(os, "unlink", lambda *a, **k: (_ for _ in ()).throw(Crash("power cut")))
    with pytest.raises(Crash):
        writer.merge()  # renamed into place, chunks still there
    monkeypatch.setattr(os, "unlink", real_unlink)
    stale = sorted((tmp_path / "e.parquet.parts").iterdir())
    assert len(stale) == 2
    for chunk in stale:  # recognised by name from the output's record: never read again
        chunk.write_bytes(b"not parquet")
    assert _writer(out).merge() == 3
    assert [p for p, _ in _rows(out)] == ["a", "b", "c"]


def test_merging_streams_with_memory_bounded_by_one_chunk(tmp_path):
    """15 chunks of 8 MB (a --pool none run in miniature): the merge's peak memory stays near one
    chunk, where loading every table (and Python floats) would take many times the whole."""
    out = tmp_path / "big.parquet"
    writer = _writer(out)
    width, rows_per_chunk, chunks = 100_000, 20, 15
    rng = np.random.default_rng(0)
    for c in range(chunks):
        ids = [f"img{c:02d}-{r:02d}" for r in range(rows_per_chunk)]
        matrix = rng.standard_normal((rows_per_chunk, width), dtype=np.float32)
        writer.write_chunk({"path": ids}, {"embedding": matrix})
    chunk_mb = rows_per_chunk * width * 4 / 2**20
    script = textwrap.dedent(
        f"""
        import resource, pyarrow as pa
        from medfound.tasks.parquet_writer import ResumableParquetWriter
        schema = pa.schema([pa.field("path", pa.string()),
                            pa.field("embedding", pa.list_(pa.float32()))])
        writer = ResumableParquetWriter({str(out)!r}, {{"model": "m"}}, schema)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rows = writer.merge()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(rows, (after - before) / 1024)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows, peak_mb = done.stdout.split()
    assert int(rows) == chunks * rows_per_chunk
    assert float(peak_mb) < 4 * chunk_mb, (peak_mb, chunk_mb)  # the whole is 15 chunks
    table = pq.read_table(out, columns=["path"]).column("path").to_pylist()
    assert len(set(table)) == chunks * rows_per_chunk


def test_list_columns_come_from_numpy_unchanged(tmp_path):
    out = tmp_path / "e.parquet"
    writer = _writer(out)
    matrix = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    writer.write_chunk({"path": ["x", "y", "z"]}, {"embedding": matrix})
    writer.merge()
    got = np.asarray(pq.read_table(out).column("embedding").to_pylist(), np.float32)
    np.testing.assert_array_equal(got, matrix)


def test_chunks_of_another_run_are_refused_and_temporaries_swept(tmp_path):
    from medfound.errors import ConfigError

    out = tmp_path / "e.parquet"
    _chunk(_writer(out), "ab")
    other = ResumableParquetWriter(out, {"model": "m", "uids": "another salt"}, SCHEMA, rank=1)
    _chunk(other, "c")
    with pytest.raises(ConfigError, match="another run"):
        _writer(out).merge()
    for chunk in (tmp_path / "e.parquet.parts").glob("0001-*"):
        chunk.unlink()
    killed = [tmp_path / ".e.parquet.1a2b.partial", tmp_path / "e.parquet.parts" / ".x.c3.partial"]
    for path in killed:
        path.write_bytes(b"cut short")
    assert _writer(out).merge() == 2
    assert not any(path.exists() for path in killed)
