"""Out-of-core data: images in fixed-size .npy shards with a manifest (shards), a split's images
as an array-like that reads only what is indexed (images), and the deterministic, resumable
block-shuffle order that ranks share (sampler). BENCHMARKS.md says why this format and not a
streaming library."""

from tasks.data.images import CHUNK, Images, chunks, join, sample_positions, subset
from tasks.data.sampler import epoch_order, rank_mask, streams_for
from tasks.data.shards import ShardStore, ShardWriter, read_manifest, write_shards

__all__ = ["CHUNK", "Images", "ShardStore", "ShardWriter", "chunks", "epoch_order", "join", "rank_mask",
           "read_manifest", "sample_positions", "streams_for", "subset",
           "write_shards"]
