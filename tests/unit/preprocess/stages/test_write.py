"""Stage 5: writing shards atomically, and the manifest."""

import hashlib

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from preprocess.shards import ShardWriter, schema
from preprocess.stages.mask import ParkedRows
from preprocess.stages.write import WriteShards, manifest_of, write_shard

from .helpers import row_spec


def park(path, batch):
    """Rows in a file, as masking leaves them for a shard's writer."""
    writer = ShardWriter(str(path), schema(np.dtype("uint16")))
    writer.write(batch)
    size, _ = writer.close()
    return ParkedRows(str(path), batch.num_rows, size)


def test_write_shards_writes_arrow_files_atomically(tmp_path, vocab_file):
    spec = row_spec(vocab_file)
    from preprocess.packed import PairBlock, Ragged
    from preprocess.shards import build_rows

    ones = np.ones(6, dtype=np.uint64)
    pairs = PairBlock(np.arange(6, dtype=np.uint64), ones, ones, np.zeros(6, dtype=np.int8),
                      Ragged(np.tile(np.arange(5, 9), 6), np.arange(7) * 4),
                      Ragged(np.tile(np.arange(9, 14), 6), np.arange(7) * 5))
    batch, _ = build_rows(pairs, spec)
    elements = [((0, 2), (0, park(tmp_path / "a.arrow", batch.slice(0, 3)))),
                ((1, 2), (3, park(tmp_path / "b.arrow", batch.slice(3, 3))))]
    with TestPipeline() as p:
        infos = p | beam.Create(elements) | WriteShards(str(tmp_path), "train", "uint16", {"seed": "1"})
        assert_that(infos | beam.Map(lambda s: (s.path, s.rows)), equal_to([
            ("train/shard-00000-of-00002.arrow", 3), ("train/shard-00001-of-00002.arrow", 3)]))
    files = sorted(f.name for f in (tmp_path / "train").iterdir())
    assert files == ["shard-00000-of-00002.arrow", "shard-00001-of-00002.arrow"]  # no temporaries left
    t = pa.ipc.open_file(str(tmp_path / "train" / files[1])).read_all()
    assert t.num_rows == 3 and t.schema.metadata[b"split"] == b"train"


def test_write_shard_orders_pieces_and_the_manifest_sums_the_splits(vocab_file, tmp_path):
    from preprocess.packed import PairBlock, Ragged
    from preprocess.shards import ShardInfo, build_rows

    ones = np.ones(4, dtype=np.uint64)
    pairs = PairBlock(np.arange(4, dtype=np.uint64), ones, ones, np.zeros(4, dtype=np.int8),
                      Ragged(np.tile(np.arange(5, 9), 4), np.arange(5) * 4),
                      Ragged(np.tile(np.arange(9, 14), 4), np.arange(5) * 5))
    batch, _ = build_rows(pairs, row_spec(vocab_file))
    pieces = [(2, park(tmp_path / "b.arrow", batch.slice(2, 2))), (0, park(tmp_path / "a.arrow", batch.slice(0, 2)))]
    out = tmp_path / "shard.arrow"
    rows, tokens, size, digest = write_shard(str(out), pieces, "uint16", {"seed": "1"})
    data = out.read_bytes()
    table = pa.ipc.open_file(pa.py_buffer(data)).read_all()
    assert rows == 4 and tokens == 4 * 12 and table.column("input_ids").to_pylist() == \
        pa.Table.from_batches([batch]).column("input_ids").to_pylist()  # pieces in position order
    assert size == len(data) and digest == hashlib.sha256(data).hexdigest()
    assert table.schema.metadata[b"seed"] == b"1"
    header = {"config": {"seed": 1}, "vocab": {"size": 10}, "inputs": ["a.txt"], "split_names": ["train"]}
    shard = ShardInfo("train/shard-00000-of-00001.arrow", rows, tokens, len(data), "x")
    manifest = manifest_of(header, [shard], {"train": {"rows": 4, "tokens": 48}, "documents": {"documents_read": 2}})
    assert manifest["splits"]["train"]["rows"] == 4 and manifest["documents"] == {"documents_read": 2}
