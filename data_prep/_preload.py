"""Imported once by the conversion's forkserver, so that every worker forks with the decoders
loaded and librosa's compiled kernels warm (their first call costs seconds per process)."""

import numpy as np

import data_prep.build  # noqa: F401  (loads PyAV, Pillow, librosa and the converters)
from av_unified_jax.data import media
from av_unified_jax.data.params import ConvertParams

media.log_mel(np.zeros(ConvertParams().sample_rate, np.float32), 1, ConvertParams())
