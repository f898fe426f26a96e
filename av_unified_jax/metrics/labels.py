"""Class-name lists of the benchmarks, in the index order their official code uses.

Sources (see docs/BENCHMARKS.md): AVE-ECCV18 (`mil_labels.h5` order, background at index 28) and
AVVP-ECCV20 `main_avvp.py::eval` (the 25 LLP classes). MUSIC-AVQA's 42 answers are not listed
here: the official answer index is the first-appearance order over `avqa-train.json`, so it must
be built from that file.
"""

# The class lists themselves live in one place, spelled as the annotation files spell them.
from av_unified_jax.tokens.labels import AVE_CLASSES, LLP_CLASSES  # noqa: E402

# AVE: 28 event classes; the 29-way output puts background at index 28.
AVE_BACKGROUND_INDEX = 28
AVE_NUM_OUTPUTS = 29

# LLP / AVVP: 25 classes; the row order of every [25, 10] matrix of the AVVP metric.
LLP_NUM_SEGMENTS = 10

assert len(AVE_CLASSES) == AVE_BACKGROUND_INDEX == 28
assert len(LLP_CLASSES) == len(set(LLP_CLASSES)) == 25
