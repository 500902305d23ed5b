import numpy as np
import pyarrow as pa
import pytest

from carto import _wire


def rows(n, k, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return np.arange(n, dtype=np.int64), rng.integers(0, k, n), rng.standard_normal((n, k)).astype(dtype)


def test_schema_is_exactly_the_wire_schema():
    s = _wire.logits_schema(3)
    assert s.names == ["sample_id", "label", "logits"]
    assert s.field("sample_id").type == pa.int64() and not s.field("sample_id").nullable
    assert s.field("label").type == pa.int64() and not s.field("label").nullable
    assert s.field("logits").type == pa.list_(pa.float32(), 3)
    assert not s.field("logits").nullable
    assert _wire.logits_schema(3, np.float64).field("logits").type == pa.list_(pa.float64(), 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunks_respect_the_bound_and_decode_to_the_same_rows(dtype):
    ids, labels, logits = rows(20_000, 10, dtype)
    bound = 64 * 1024
    chunks = list(_wire.encode_rows(ids, labels, logits, bound))
    assert len(chunks) > 5
    assert all(len(c) <= bound for c in chunks)
    tables = [_wire.decode_chunk(c) for c in chunks]
    for t in tables:  # every chunk is a self-contained stream with the schema
        assert t.schema == _wire.logits_schema(10, dtype)
    t = pa.concat_tables(tables)
    assert t.column("sample_id").to_numpy().tolist() == ids.tolist()
    assert t.column("label").to_numpy().tolist() == labels.tolist()
    back = np.stack(t.column("logits").to_numpy(zero_copy_only=False))
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, logits)


def test_a_2_mib_chunk_is_filled_close_to_its_bound():
    ids, labels, logits = rows(100_000, 5)
    chunks = list(_wire.encode_rows(ids, labels, logits, 2 * 1024 * 1024))
    assert all(len(c) <= 2 * 1024 * 1024 for c in chunks)
    assert len(chunks[0]) > 1.9 * 1024 * 1024


def test_builder_cuts_full_chunks_and_flushes_the_rest():
    ids, labels, logits = rows(5_000, 4)
    b = _wire.ChunkBuilder(4, 32 * 1024)
    chunks = []
    for s in range(0, 5_000, 37):
        chunks += b.append(ids[s : s + 37], labels[s : s + 37], logits[s : s + 37])
        assert b.pending_rows <= _wire.rows_per_chunk(32 * 1024, 4)
    chunks += b.flush()
    assert b.pending_rows == 0 and b.flush() == []
    assert all(len(c) <= 32 * 1024 for c in chunks)
    t = pa.concat_tables([_wire.decode_chunk(c) for c in chunks])
    assert t.column("sample_id").to_numpy().tolist() == ids.tolist()


def test_too_small_a_bound_is_refused():
    with pytest.raises(ValueError, match="too small"):
        list(_wire.encode_rows(*rows(3, 3), 1000))
