"""Atomic file writes: a reader (or a run restarted after a crash) sees the old file or the
new one, never half of one.

    atomic.write_text(W / "config.json", text)
    atomic.write_bytes(W / "mask_tokenizer.msgpack", data)

The content goes to a temporary file in the same directory (`.<name>.tmp-<pid>-<random>`),
which is then renamed over the target (`os.replace` on a local disk, where the data is also
synced first; the filesystem's rename for other `etils.epath` paths, e.g. `gs://`, whose
objects only appear once written). A crash before the rename leaves the temporary file
behind and the target untouched. Depends on nothing else in the project, so every layer may
use it.
"""

from __future__ import annotations

import os
import uuid

from etils import epath

PathLike = str | os.PathLike


def write_bytes(path: PathLike, data: bytes) -> None:
  """Writes `data` to `path` atomically (see the module docstring); creates no directories."""
  path = epath.Path(path)
  tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
  try:
    if _is_local(path):
      with open(os.fspath(tmp), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
      os.replace(os.fspath(tmp), os.fspath(path))
    else:
      tmp.write_bytes(data)
      tmp.replace(path)
  except BaseException:
    if tmp.exists():
      tmp.unlink()
    raise


def write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
  """Writes `text` to `path` atomically (see the module docstring)."""
  write_bytes(path, text.encode(encoding))


def _is_local(path: epath.Path) -> bool:
  return "://" not in os.fspath(path)
