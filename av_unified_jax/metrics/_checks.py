"""Input checks shared by the metric modules: clear errors that name the argument."""

import numpy as np


def as_array(x, name, ndim=None, shape=None):
    """Converts `x` to a numpy array and checks its rank and (partial) shape.

    `shape` may hold None for a free dimension, e.g. (None, 10, 29).
    """
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{name}: cannot convert to a numpy array ({e}); pass a regular "
                         "array or nested list") from e
    if arr.dtype == object:
        raise ValueError(f"{name}: ragged or non-numeric input; pass a regular numeric array")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {arr.shape}")
    if shape is not None:
        matches = arr.ndim == len(shape) and all(
            want is None or got == want for got, want in zip(arr.shape, shape, strict=True))
        if not matches:
            want_str = "[" + ", ".join("N" if s is None else str(s) for s in shape) + "]"
            raise ValueError(f"{name}: expected shape {want_str}, got {arr.shape}")
    return arr


def as_float(x, name, ndim=None, shape=None):
    """Like `as_array`, and requires a real numeric dtype without NaN."""
    arr = as_array(x, name, ndim, shape)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name}: expected numbers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name}: complex values are not scores")
    if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
        raise ValueError(f"{name}: contains NaN; fix the model output before scoring")
    return arr


def as_binary(x, name, ndim=None, shape=None):
    """Like `as_array`, and requires every value to be 0 or 1; returns bool."""
    arr = as_float(x, name, ndim, shape)
    if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
        bad = np.unique(arr[~np.isin(arr, (0, 1))])[:5]
        raise ValueError(f"{name}: must hold only 0 and 1, found e.g. {bad.tolist()} "
                         "(masks stored as 0/255 must be divided by 255)")
    return arr.astype(bool)


def sigmoid_float32(logits):
    """Logistic sigmoid in float32, as the official PyTorch code computes it."""
    x = np.asarray(logits, dtype=np.float32)
    with np.errstate(over="ignore"):
        return (np.float32(1) / (np.float32(1) + np.exp(-x))).astype(np.float32)
