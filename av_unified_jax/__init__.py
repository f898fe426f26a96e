"""AV-Unified in JAX/Flax: audio-visual scene understanding as token sequences."""

__version__ = "0.1.0"
