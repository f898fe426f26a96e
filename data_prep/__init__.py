"""Dataset preparation: converters from the benchmarks' distributed layouts to shards, and the demo data."""
