"""Paths of work directories, exports, shards and tokenizers: `etils.epath` end to end.

    paths.as_path("runs/demo")         # epath.Path('/abs/cwd/runs/demo')  (local: made absolute)
    paths.as_path("gs://bucket/run")   # epath.Path('gs://bucket/run')     (kept as given)

A URL-like path (`gs://`, `s3://`, ... any `scheme://`) is kept exactly as given; a local
path is made absolute, because orbax writes checkpoints to absolute paths only. Every
function that takes a work directory, an export directory, a shards directory or a tokenizer
directory goes through `as_path`, and reads or writes through the returned `epath.Path`, so
the same command works on a local disk, a shared mount or a cloud bucket (epath reaches
`gs://` through fsspec + gcsfs, or TensorFlow's gfile when it is installed).
"""

from __future__ import annotations

import os
import re

from etils import epath

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: str | os.PathLike) -> bool:
  """True for a URL-like path (`gs://bucket/x`, `s3://...`), False for a local one."""
  return bool(_SCHEME.match(os.fspath(path)))


def as_path(path: str | os.PathLike) -> epath.Path:
  """`path` as an `epath.Path`: a URL unchanged, a local path made absolute (not resolved)."""
  text = os.fspath(path)
  if not text:
    raise ValueError("empty path: give a directory (a local path or a URL such as gs://b/run)")
  if is_url(text):
    try:
      return epath.Path(text)
    except KeyError:
      raise ValueError(f"{text}: epath has no filesystem for this scheme; use a local path or "
                       "one of gs://, s3://, az://, hf://") from None
  return epath.Path(os.path.abspath(os.path.expanduser(text)))
