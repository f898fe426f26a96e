"""The task tokenizer: prompts, targets and grammars of all tasks over one vocabulary.

    tok = Tokenizer.build(label_sets={"ave": [...], "avvp": [...], "avqa": [...]},
                          extra_text=questions)
    tok.encode_prompt("avs", second=3)           # int32[L]: <avs> text... <t_3>
    tok.encode_target("ave", {"label": "Bark", "start": 2, "end": 7})  # int32[L], ends <eos>
    tok.decode_target("ave", tokens)             # -> the annotation, or InvalidSequenceError
    tok.grammar("avvp", weak=True)               # Grammar for constrained decoding
    tok.save(directory); Tokenizer.load(directory)

Saved files: `layout.json` (VocabLayout), `text_tokenizer.json` (TextTokenizer) and
`tokenizer.json` (label sets, prompts, AVS mask grid, AVVP group cap). Each is written
atomically and `tokenizer.json` last, so its presence means the directory is complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from etils import epath

from av_unified_jax import atomic
from av_unified_jax.tokens.formats import FORMATS, LabelSet
from av_unified_jax.tokens.grammar import Grammar, check_sequence
from av_unified_jax.tokens.layout import TASKS, InvalidSequenceError, VocabLayout
from av_unified_jax.tokens.text import TextTokenizer

# Prompt text per format (the task token comes first; AVQA's prompt is the question; AVS
# appends the time token of the frame's second).
DEFAULT_PROMPTS = {
    "ave": "Which event is both heard and seen, and when?",
    "avvp": "Which events are heard, which are seen, and when?",
    "avvp_weak": "Which events happen in this video?",
    "ssl": "Where is the sound coming from?",
    "avs": "Segment the sounding objects at second",
}
LABELLED_TASKS = ("ave", "avvp", "avqa")  # tasks whose targets name labels from a closed set
LAYOUT_FILE, TEXT_FILE, CONFIG_FILE = "layout.json", "text_tokenizer.json", "tokenizer.json"
_FORMAT = "av_unified_jax.tokenizer/1"


class Tokenizer:
    """Prompts and targets of every task as int32 token arrays of one VocabLayout.

    Attributes: layout (VocabLayout), text (TextTokenizer), label_sets (task -> tuple of str),
    prompts (format name -> str), mask_grid ((Kh, Kw) of AVS targets), max_avvp_groups.
    """

    def __init__(self, layout: VocabLayout, text: TextTokenizer,
                 label_sets: Mapping[str, Sequence[str]], prompts: Mapping[str, str],
                 mask_grid: tuple[int, int] = (8, 8), max_avvp_groups: int = 16):
        if layout.text_vocab_size != text.vocab_size:
            raise ValueError(f"layout.text_vocab_size={layout.text_vocab_size} but the text "
                             f"tokenizer has {text.vocab_size} ids; they were not built together")
        self.layout, self.text = layout, text
        self.label_sets = {k: tuple(v) for k, v in label_sets.items()}
        self.prompts = dict(prompts)
        self.mask_grid = (int(mask_grid[0]), int(mask_grid[1]))
        self.max_avvp_groups = int(max_avvp_groups)
        self._labels = {t: LabelSet(t, self.label_sets[t], text, layout)
                        for t in LABELLED_TASKS if t in layout.tasks}
        self._formats: dict[str, object] = {}
        self._grammars: dict[str, Grammar] = {}

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, label_sets: Mapping[str, Sequence[str]], extra_text: Iterable[str] = (), *,
              tasks: Sequence[str] = TASKS, max_time: int = 10, num_loc_bins: int = 100,
              num_mask_codes: int = 512, mask_grid: tuple[int, int] = (8, 8),
              max_avvp_groups: int = 16, prompts: Mapping[str, str] | None = None,
              min_count: int = 1) -> Tokenizer:
        """Trains the text tokenizer on labels + prompts + extra_text and builds the layout.
        Labels that are single words are shared words of the text tokenizer (see
        `TextTokenizer.train`).

        Args:
          label_sets: label strings of "ave", "avvp" and "avqa" (those in `tasks`), in class
            index order.
          extra_text: more strings for the text vocabulary (questions, other class names).
          tasks: task names, one task token each; max_time, num_loc_bins, num_mask_codes:
            the layout's ranges; mask_grid: (Kh, Kw) of AVS code grids; max_avvp_groups:
            most groups in a dense AVVP target; prompts: override DEFAULT_PROMPTS entries;
            min_count: see TextTokenizer.train.
        Deterministic: the same arguments give byte-identical saved files.
        """
        missing = [t for t in LABELLED_TASKS if t in tasks and not label_sets.get(t)]
        if missing:
            raise ValueError(f"label_sets has no labels for task(s) {missing}; pass the class "
                             f"names / answers (e.g. tokens.OFFICIAL_LABEL_SETS)")
        unknown = sorted(set(label_sets) - set(LABELLED_TASKS))
        if unknown:
            raise ValueError(f"label_sets keys {unknown} are not labelled tasks "
                             f"{LABELLED_TASKS}")
        label_sets = {t: tuple(label_sets[t]) for t in LABELLED_TASKS if t in tasks}
        prompts = {**DEFAULT_PROMPTS, **(prompts or {})}
        labels = [s for names in label_sets.values() for s in names]
        corpus = labels + list(prompts.values()) + list(extra_text)
        # A class name or answer that is one word keeps one token everywhere: a question that
        # names it uses the label's own token (after a space token), not a piece of its own.
        text = TextTokenizer.train(corpus, min_count=min_count, shared_words=labels)
        layout = VocabLayout(tasks=tuple(tasks), max_time=max_time, num_loc_bins=num_loc_bins,
                             num_mask_codes=num_mask_codes, text_vocab_size=text.vocab_size)
        return cls(layout, text, label_sets, prompts, mask_grid, max_avvp_groups)

    # -------------------------------------------------------------- save/load
    def config_dict(self) -> dict:
        return {"format": _FORMAT, "label_sets": {k: list(v) for k, v in self.label_sets.items()},
                "prompts": self.prompts, "mask_grid": list(self.mask_grid),
                "max_avvp_groups": self.max_avvp_groups}

    def save(self, directory: str | os.PathLike) -> None:
        """Writes layout.json, text_tokenizer.json and, last, tokenizer.json into `directory`,
        each atomically (a crash leaves no partial file, and no tokenizer.json before the
        others are whole)."""
        directory = epath.Path(directory)  # Local or a URL (gs://...).
        directory.mkdir(parents=True, exist_ok=True)
        files = {LAYOUT_FILE: self.layout.to_json(), TEXT_FILE: self.text.to_json(),
                 CONFIG_FILE: json.dumps(self.config_dict(), indent=1, sort_keys=True) + "\n"}
        for name, content in files.items():  # CONFIG_FILE last: it marks the save complete.
            atomic.write_text(directory / name, content)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Tokenizer:
        paths = {n: epath.Path(directory) / n for n in (LAYOUT_FILE, TEXT_FILE, CONFIG_FILE)}
        absent = [str(p) for p in paths.values() if not p.is_file()]
        if absent:
            raise FileNotFoundError(f"tokenizer directory {directory} lacks {absent}; it must "
                                    "hold the files written by Tokenizer.save")
        read = {n: p.read_text(encoding="utf-8") for n, p in paths.items()}
        config = json.loads(read[CONFIG_FILE])
        if config.get("format") != _FORMAT:
            raise ValueError(f"{paths[CONFIG_FILE]} is not a tokenizer config "
                             f"(format {config.get('format')!r}, expected {_FORMAT!r})")
        return cls(VocabLayout.from_json(read[LAYOUT_FILE]),
                   TextTokenizer.from_json(read[TEXT_FILE]), config["label_sets"],
                   config["prompts"], tuple(config["mask_grid"]), config["max_avvp_groups"])

    # ---------------------------------------------------------------- formats
    def format_name(self, task: str, weak: bool = False) -> str:
        if task not in self.layout.tasks:
            raise ValueError(f"unknown task {task!r}; this tokenizer has {self.layout.tasks}")
        if weak and task != "avvp":
            raise ValueError(f"weak=True is only for task 'avvp', not {task!r}")
        return "avvp_weak" if weak else task

    def _format(self, name: str):
        if name not in self._formats:
            task = "avvp" if name == "avvp_weak" else name
            self._formats[name] = FORMATS[name](
                self.layout, labels=self._labels.get(task), mask_grid=self.mask_grid,
                max_groups=self.max_avvp_groups)
        return self._formats[name]

    @property
    def format_names(self) -> tuple[str, ...]:
        """Every target format of this tokenizer's tasks (avvp has avvp and avvp_weak)."""
        out = []
        for t in self.layout.tasks:
            out += [t, "avvp_weak"] if t == "avvp" else [t]
        return tuple(out)

    # ---------------------------------------------------------------- prompts
    def encode_prompt(self, task: str, question: str | None = None, second: int | None = None,
                      *, weak: bool = False) -> np.ndarray:
        """Prompt tokens, int32[L], starting with the task token.

        AVQA: `<avqa>` + the question text (required). AVS: `<avs>` + prompt + `<t_second>`
        (second required, in [0, max_time]). AVVP: the dense-parse prompt, or with weak=True
        the class-list prompt. Other tasks: `<task>` + their prompt.
        """
        name = self.format_name(task, weak)
        if (question is not None) != (task == "avqa"):
            raise ValueError("encode_prompt: a question is required for 'avqa' and only there"
                             f" (task {task!r}, question {question!r})")
        if (second is not None) != (task == "avs"):
            raise ValueError("encode_prompt: second= is required for 'avs' and only there"
                             f" (task {task!r}, second {second!r})")
        if task == "avqa" and not (isinstance(question, str) and question.strip()):
            raise ValueError(f"AVQA question must be a non-empty str, got {question!r}")
        text = question if task == "avqa" else self.prompts[name]
        ids = [self.layout.task_token(task)]
        ids += [int(t) for t in self.layout.text_token(np.array(self.text.encode(text),
                                                                dtype=np.int64))]
        if task == "avs":
            if isinstance(second, bool) or not isinstance(second, (int, np.integer)):
                raise ValueError(f"AVS prompt second must be an int, got {second!r}")
            ids.append(self.layout.time_token(int(second)))
        return np.asarray(ids, dtype=np.int32)

    # ---------------------------------------------------------------- targets
    def encode_target(self, task: str, annotation, *, weak: bool = False) -> np.ndarray:
        """Target tokens, int32[L] ending with `<eos>` (formats: see tokens.formats)."""
        return np.asarray(self._format(self.format_name(task, weak)).encode(annotation),
                          dtype=np.int32)

    def decode_target(self, task: str, tokens, *, weak: bool = False):
        """Target tokens (int[L]; `<pad>` after `<eos>` allowed) -> annotation.

        Raises InvalidSequenceError naming the position and the rule broken when the tokens
        are not a valid target of this task.
        """
        name = self.format_name(task, weak)
        seq = np.asarray(tokens)
        try:
            check_sequence(self.grammar(task, weak=weak), seq, describe=self.describe)
            body = seq.tolist()
            body = body[:body.index(self.layout.EOS)]
            return self._format(name).decode(body)
        except InvalidSequenceError as err:
            raise InvalidSequenceError(
                f"invalid {name} target [{self.render(seq)}]: {err}") from None

    def grammar(self, task: str, weak: bool = False) -> Grammar:
        """Compiled decoding grammar of one task's target format (cached)."""
        name = self.format_name(task, weak)
        if name not in self._grammars:
            self._grammars[name] = self._format(name).grammar()
        return self._grammars[name]

    def grammars(self) -> dict[str, Grammar]:
        """Format name -> Grammar for every format (order of `format_names`), ready for
        `tokens.stack_grammars`."""
        return {n: self.grammar("avvp" if n == "avvp_weak" else n, weak=n == "avvp_weak")
                for n in self.format_names}

    # ---------------------------------------------------------------- display
    def describe(self, token_id: int) -> str:
        """Readable token: `<eos>`, `<t_3>`, or a text piece as `'violin'`."""
        kind = self.layout.kind(token_id)
        if kind == "text":
            return repr(self.text.id_to_piece(self.layout.token_text(token_id)))
        return self.layout.token_name(token_id)

    def render(self, tokens, limit: int = 40) -> str:
        seq = np.asarray(tokens).reshape(-1).tolist()
        parts = []
        for t in seq[:limit]:
            try:
                parts.append(self.describe(t))
            except ValueError:
                parts.append(f"<bad id {t}>")
        return " ".join(parts) + (f" ... ({len(seq)} tokens)" if len(seq) > limit else "")
