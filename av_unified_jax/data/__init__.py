"""Converted datasets: the example schema, the record encoding and the split reader.

Importing this package stays light (numpy only; array_record is imported on first read), so
the conversion workers in `data_prep` can use it without loading jax.
"""

from av_unified_jax.data.schema import DATASETS, DatasetSpec, Feature, get_spec
from av_unified_jax.data.shards import (ShardSource, decode_frames, decode_masks, load_info,
                                        open_split)

__all__ = ["DATASETS", "DatasetSpec", "Feature", "ShardSource", "decode_frames", "decode_masks",
           "get_spec", "load_info", "open_split"]
