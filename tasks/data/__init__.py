"""Out-of-core data (issue 19, in progress): fixed-size memory-mapped .npy shards with a
manifest, and a deterministic, resumable block-shuffle order over them for any world size.
BENCHMARKS.md says why this format and not a streaming library. Not yet wired into the stages.
"""

from tasks.data.sampler import epoch_order, rank_share
from tasks.data.shards import ShardStore, write_shards

__all__ = ["ShardStore", "epoch_order", "rank_share", "write_shards"]
