"""Dataset preparation: benchmark converters to shards, and the demo dataset."""
