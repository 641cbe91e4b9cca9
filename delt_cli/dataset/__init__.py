"""The dataset contract: directories of Parquet shards, read in order, written atomically with provenance."""

from delt_cli.dataset.provenance import MANIFEST_NAME, RunInfo, read_manifest, shard_provenance
from delt_cli.dataset.reader import Dataset, Shard, open_dataset, read_shard
from delt_cli.dataset.writer import (
    ShardwiseOutput,
    StagedOutput,
    my_shards,
    run_shardwise,
    shard_name,
    write_shard,
)

__all__ = [
    "MANIFEST_NAME",
    "Dataset",
    "RunInfo",
    "Shard",
    "ShardwiseOutput",
    "StagedOutput",
    "my_shards",
    "open_dataset",
    "read_manifest",
    "read_shard",
    "run_shardwise",
    "shard_name",
    "shard_provenance",
    "write_shard",
]
