"""Imported once by the conversion's forkserver, so that every worker forks with the decoders
loaded and librosa's compiled kernels warm (their first call costs seconds per process)."""

import numpy as np

from data_prep import build, media
from data_prep.params import ConvertParams

del build  # Imported for its dependencies only.
media.log_mel(np.zeros(ConvertParams().sample_rate, np.float32), 1, ConvertParams())
