"""The unified token space (docs/MODEL.md, Tokens): one vocabulary layout, a text tokenizer, per-task
encode/decode pairs and decoding grammars compiled to arrays.

    from av_unified_jax import tokens
    tok = tokens.Tokenizer.build(label_sets=tokens.OFFICIAL_LABEL_SETS, extra_text=questions)
    target = tok.encode_target("avqa", "two")         # int32[L]
    tok.decode_target("avqa", target)                 # "two"
    stack = tokens.stack_grammars(list(tok.grammars().values()))
"""

from av_unified_jax.tokens.formats import (
    FORMATS,
    MODALITIES,
    LabelSet,
    ave_segment_labels,
    canonical_avvp,
)
from av_unified_jax.tokens.grammar import (
    Grammar,
    GrammarBuilder,
    GrammarStack,
    check_sequence,
    stack_grammars,
    walk,
)
from av_unified_jax.tokens.labels import (
    AVE_CLASSES,
    AVS_S4_CATEGORIES,
    LLP_CLASSES,
    MUSIC_AVQA_ANSWERS,
    OFFICIAL_LABEL_SETS,
    fill_avqa_template,
)
from av_unified_jax.tokens.layout import (
    RANGE_NAMES,
    SPECIALS,
    TASKS,
    InvalidSequenceError,
    VocabLayout,
    dequantize_loc,
    quantize_coord,
)
from av_unified_jax.tokens.text import TextTokenizer, pre_pieces
from av_unified_jax.tokens.tokenizer import DEFAULT_PROMPTS, LABELLED_TASKS, Tokenizer

__all__ = [
    "AVE_CLASSES", "AVS_S4_CATEGORIES", "DEFAULT_PROMPTS", "FORMATS", "LABELLED_TASKS",
    "LLP_CLASSES", "MODALITIES", "MUSIC_AVQA_ANSWERS", "OFFICIAL_LABEL_SETS", "RANGE_NAMES",
    "SPECIALS", "TASKS", "Grammar", "GrammarBuilder", "GrammarStack", "InvalidSequenceError",
    "LabelSet", "TextTokenizer", "Tokenizer", "VocabLayout", "ave_segment_labels",
    "canonical_avvp", "check_sequence", "dequantize_loc", "fill_avqa_template", "pre_pieces",
    "quantize_coord", "stack_grammars", "walk",
]
