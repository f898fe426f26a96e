"""Record encoding of the shards: msgpack with numpy arrays as an extension type.

A record is a msgpack map from field name to value. Plain values (str, bytes, int, float, bool,
lists, maps) are native msgpack. A numpy array is msgpack extension type 1 whose payload is the
msgpack array `[dtype, shape, data]`: `dtype` the numpy dtype string with explicit byte order
(e.g. '<f2'), `shape` a list of ints, `data` the C-order bytes. The encoding is stable, readable
from any language with a msgpack library, and never executes code on load (unlike pickle).
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

NDARRAY_EXT = 1
ENCODING_NAME = "msgpack, numpy arrays as ext type 1 [dtype, shape, C-order bytes]"


def _default(obj: Any) -> Any:
  if isinstance(obj, np.ndarray):
    if obj.dtype.hasobject:
      raise TypeError(f"cannot encode an object array (shape {obj.shape}); use a list")
    arr = obj if obj.flags.c_contiguous else obj.copy(order="C")  # keeps 0-d arrays 0-d
    dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    payload = [dtype.str, list(arr.shape), arr.astype(dtype, copy=False).tobytes()]
    return msgpack.ExtType(NDARRAY_EXT, msgpack.packb(payload, use_bin_type=True))
  if isinstance(obj, np.generic):
    return obj.item()
  raise TypeError(f"cannot encode {type(obj).__name__} in a record")


def _ext_hook(code: int, data: bytes) -> Any:
  if code != NDARRAY_EXT:
    raise ValueError(f"unknown msgpack extension type {code} in a record")
  dtype, shape, raw = msgpack.unpackb(data, raw=False)
  return np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(tuple(shape))


def encode(record: dict[str, Any]) -> bytes:
  """Serializes a record (dict of plain values and numpy arrays) to bytes."""
  return msgpack.packb(record, default=_default, use_bin_type=True, strict_types=False)


def decode(data: bytes) -> dict[str, Any]:
  """Inverse of `encode`. Arrays come back read-only (views of `data`)."""
  return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=True)
