"""Prints a converted dataset: its info, counts per split, and a few decoded examples.

  python -m data_prep.inspect OUT/NAME [--examples 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from av_unified_jax.data import shards
from data_prep.common import reason_kind


def describe_value(value) -> str:
  """Short description of a field value: dtype and shape, or type and length."""
  if isinstance(value, np.ndarray):
    if value.size <= 8:
      return f"{value.dtype}{list(value.shape)} {value.tolist()}"
    return f"{value.dtype}{list(value.shape)} min {value.min():.3g} max {value.max():.3g}"
  if isinstance(value, list):
    kinds = sorted({type(v).__name__ for v in value})
    sizes = f", {sum(len(v) for v in value)} bytes" if kinds == ["bytes"] else ""
    head = "" if kinds == ["bytes"] else f" {value[:4]}"
    return f"list[{'|'.join(kinds)}] len {len(value)}{sizes}{head}"
  return repr(value)


def summary(dataset_dir: str, num_examples: int = 2) -> str:
  """The text printed by the command."""
  info = shards.load_info(dataset_dir)
  report_path = os.path.join(dataset_dir, shards.REPORT_FILE)
  report = json.load(open(report_path)) if os.path.exists(report_path) else {}
  lines = [f"dataset {info['name']} ({dataset_dir})", f"ids: {info['id_rule']}",
           "params: " + json.dumps(info["params"]), "annotation files:"]
  lines += [f"  {rel} sha256 {v['sha256'][:16]}..." for rel, v in info["annotation_files"].items()]
  lines.append("features: " + ", ".join(f"{k} {v['dtype']}{v['shape']}"
                                         for k, v in info["features"].items()))
  for split, entry in info["splits"].items():
    lines.append(f"split {split}: {entry['num_examples']} examples in {entry['num_records']} "
                 f"records, {len(entry['shards'])} shards, skipped {entry['num_skipped']}, "
                 f"padded {entry['num_padded']}")
    reasons = {}
    for item in report.get(split, {}).get("skipped", []):
      kind = reason_kind(item["reason"])
      reasons[kind] = reasons.get(kind, 0) + 1
    if reasons:
      lines.append("  skipped by reason: " + ", ".join(f"{k} {n}" for k, n in reasons.items()))
    source = shards.open_split(dataset_dir, split)
    for i in range(min(num_examples, len(source))):
      example = source[i]
      frames = shards.decode_frames(example)
      lines.append(f"  example {i}: frames decode to {frames.dtype}{list(frames.shape)}")
      if "masks" in example:
        lines.append(f"    masks decode to bool{list(shards.decode_masks(example).shape)}")
      lines += [f"    {k}: {describe_value(v)}" for k, v in example.items()]
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m data_prep.inspect", description=__doc__)
  parser.add_argument("dataset_dir", help="OUT/NAME, a converted dataset")
  parser.add_argument("--examples", type=int, default=2, help="examples decoded per split")
  args = parser.parse_args(argv)
  try:
    print(summary(args.dataset_dir, args.examples))
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
