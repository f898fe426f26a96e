"""Tiny demo data shared by the evaluation, prediction and main-job tests (built once per
test session into a temporary directory, removed at exit)."""

import atexit
import shutil
import tempfile
from pathlib import Path

_BUILT: dict[tuple[int, int], Path] = {}


def tiny_demo(clips: int = 6, image_size: int = 32) -> Path:
  """DIR with raw/, metadata/ and shards/ of a demo dataset of `clips` clips per layout."""
  key = (clips, image_size)
  if key not in _BUILT:
    from data_prep import demo

    out = Path(tempfile.mkdtemp(prefix="av_unified_demo_"))
    atexit.register(shutil.rmtree, out, True)
    demo.build_raw(out, clips, image_size, seed=0, workers=2)
    demo.convert_all(out, image_size, workers=2)
    _BUILT[key] = out
  return _BUILT[key]
