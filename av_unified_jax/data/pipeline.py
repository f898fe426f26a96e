"""The online input pipeline (grain): converted shards -> per-process numpy batches -> global
jax.Arrays. Deterministic given the seed; the iterator state goes into the checkpoint.

    tok = pipeline.load_or_build_tokenizer(config, workdir)        # once per run, saved in W
    data = pipeline.make_train_data(config, tok, mask_codes=codes)  # .iterator, .batch_spec, ...
    local = next(data.iterator)                                     # this process's rows
    batch = pipeline.global_batch(local, shardings, data.batch_spec)  # global jax.Arrays
    state = data.iterator.get_state(); data.iterator.set_state(state)  # exact resume

Per task (config.tasks.<task>: dataset, weight > 0), the training stream is

    the split's rows -> shuffle (reshuffled every epoch) -> repeat
      -> SelectSegments -> RandomResizedCrop [-> RandomHorizontalFlip] [-> MelShift]
      [-> SpecAugment]
      -> TaskTokens -> ModelExample            (named transforms, each seeded; see tasks.py)

and the tasks are mixed by `grain.MapDataset.mix` with the configured weights (a fixed
interleave with exact long-run proportions). That stream is one for the whole run: global
batch k is its elements [k * B, (k + 1) * B), and process p of n reads only its rows of it,
[k * B + p * B / n, k * B + (p + 1) * B / n), which are rows [p * B / n, (p + 1) * B / n) of
the global batch array. Batches are read with `config.data.worker_count` worker processes
(grain `mp_prefetch`) and `config.data.prefetch` batches in flight. Everything up to the batch
is a random-access `MapDataset`, so global batch k is a pure function of (config, seed, k),
the same for every process count: the iterator state is just {"next_batch": k} (plus a
fingerprint of what the stream depends on), the same for every worker count and every process,
and a run may resume with another number of processes (it continues with global batch k).

Evaluation: `make_eval_batches` reads the evaluation split once, in order, without
augmentation, each process its own contiguous rows of every global batch, padded with
`valid=False` rows so all processes run the same number of batches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

import grain
import jax
import numpy as np
from absl import flags

from av_unified_jax import models
from av_unified_jax.data import shards, tasks, transforms
from av_unified_jax.data.tasks import (EVAL_FIELDS, MODEL_FIELDS, TOKENIZER_DIR, MaskCodes,
                                       build_tokenizer, collect_label_sets, load_or_build_tokenizer)

__all__ = ["EVAL_FIELDS", "MODEL_FIELDS", "TOKENIZER_DIR", "BatchIterator", "EvalData",
           "TrainData", "batch_spec", "build_tokenizer", "collect_label_sets",
           "example_shapes", "global_batch", "load_or_build_tokenizer", "make_eval_batches",
           "make_train_data", "make_train_iterator"]


# ----------------------------------------------------------------------------- sources
def dataset_dir(config, task: str) -> str:
  """Directory of the converted dataset that `task` reads (config.tasks.<task>.dataset)."""
  if task not in tasks.TASKS:
    raise ValueError(f"unknown task {task!r}; tasks are {sorted(tasks.TASKS)}")
  name = config.tasks[task].dataset
  if name not in tasks.TASKS[task].datasets:
    raise ValueError(f"config.tasks.{task}.dataset={name!r}: task {task!r} reads one of "
                     f"{tasks.TASKS[task].datasets}")
  if not config.data.shards_dir:
    raise ValueError("config.data.shards_dir is empty: set it to the directory holding the "
                     "converted datasets (e.g. --config.data.shards_dir=demo_data/shards)")
  return os.path.join(config.data.shards_dir, name)


def open_source(config, task: str, split: str) -> shards.ShardSource:
  """The split's random-access source; raises naming the path when it is not converted."""
  return shards.open_split(dataset_dir(config, task), split)


def open_train_sources(config, task: str, split: str) -> dict[str, shards.ShardSource]:
  """{dataset: its split} of every converted dataset `task` trains on: `dataset`, then
  `extra_train_datasets`."""
  dataset_dir(config, task)  # Checks the task, its dataset and shards_dir.
  extra = tuple(config.tasks[task].extra_train_datasets or ())
  bad = [n for n in extra if n not in tasks.TASKS[task].datasets]
  if bad:
    raise ValueError(f"config.tasks.{task}.extra_train_datasets={extra}: {bad} is not a "
                     f"dataset of task {task!r} (one of {tasks.TASKS[task].datasets})")
  return {n: shards.open_split(os.path.join(config.data.shards_dir, n), split)
          for n in dict.fromkeys((config.tasks[task].dataset,) + extra)}


def active_tasks(config) -> list[str]:
  """Tasks with a positive weight, in `tasks.TASK_ORDER` order."""
  active = [t for t in tasks.TASK_ORDER if float(config.tasks[t].weight) > 0]
  if not active:
    raise ValueError("every config.tasks.<task>.weight is 0: give at least one task a weight")
  return active


def check_source(config, task: str, source: shards.ShardSource, model_cfg=None) -> None:
  """Raises when the converted data cannot feed this config (segments, log-mel size)."""
  spec = tasks.TASKS[task]
  t = int(config.data.num_segments)
  clip = source.spec.clip_seconds
  if clip > t and not spec.sample:
    raise ValueError(f"{task}: {source.spec.name} clips have {clip} s but "
                     f"config.data.num_segments={t}; this task needs T >= {clip}")
  last_time = {"ave": clip, "avvp": clip, "avs": clip - 1}.get(task, 0)
  if last_time > config.tokens.max_time:
    raise ValueError(f"{task} targets/prompts of {source.spec.name} need time tokens up to "
                     f"<t_{last_time}>, but config.tokens.max_time={config.tokens.max_time}")
  params = source.info.get("params", {})
  if model_cfg is not None and params:
    got = (params.get("mel_frames_per_second"), params.get("n_mels"))
    want = (model_cfg.mel_frames, model_cfg.mel_bins)
    if got != want:
      raise ValueError(f"{source.dataset_dir} has log-mel [F, M] = {list(got)} per second, "
                       f"the model expects {list(want)}: set model.mel_frames/mel_bins or "
                       "convert the data again")


def check_lengths(config, task: str, tokenizer) -> None:
  """Raises when a fixed prompt or a fixed-length target does not fit the static lengths."""
  lp, lt = int(config.tokens.max_prompt_len), int(config.tokens.max_target_len)
  prompts = {"ave": [tokenizer.encode_prompt("ave")], "ssl": [tokenizer.encode_prompt("ssl")],
             "avvp": [tokenizer.encode_prompt("avvp"), tokenizer.encode_prompt("avvp", weak=True)],
             "avs": [tokenizer.encode_prompt("avs", second=0)]}.get(task, [])
  longest = max((len(p) for p in prompts), default=0)
  if longest > lp:
    raise ValueError(f"the {task} prompt has {longest} tokens, more than "
                     f"config.tokens.max_prompt_len={lp}")
  kh, kw = tokenizer.mask_grid
  need = {"avs": kh * kw + 1, "ssl": 5}.get(task, 0)
  if need > lt:
    raise ValueError(f"{task} targets have {need} tokens, more than "
                     f"config.tokens.max_target_len={lt}")


def _seed(*parts: int) -> int:
  """A 32-bit seed derived from integer parts (stable across runs and platforms)."""
  return int(np.random.SeedSequence([int(p) % 2**63 for p in parts]).generate_state(1)[0])


def example_transforms(config, task: str, tokenizer, *, train: bool,
                       mask_codes: MaskCodes | None = None) -> list:
  """The named transforms from a stored example to a model example (see tasks.py)."""
  spec = tasks.TASKS[task]
  check_lengths(config, task, tokenizer)
  select = transforms.SelectSegments(int(config.data.num_segments), sample=spec.sample,
                                     mask_frame=task == "avs", train=train)
  clip_ops = transforms.clip_transforms(int(config.data.image_size),
                                        spec.augment if train and config.data.augment else None,
                                        mel_shift=int(config.data.mel_shift))
  tokens_op = tasks.TaskTokens(task, tokenizer, int(config.tokens.max_prompt_len),
                               int(config.tokens.max_target_len), train=train,
                               mask_codes=mask_codes,
                               background_weight=float(config.loss.avs_background_weight),
                               class_labels_train_mil="ave" in tuple(config.loss.mil_tasks))
  return [select, *clip_ops, tokens_op,
          tasks.ModelExample(task, int(config.data.num_segments), eval_fields=not train)]


def apply_transforms(ds: grain.MapDataset, ops: list, seed: int) -> grain.MapDataset:
  """Chains the transforms; random ones get their own seed (derived from `seed` and their
  position), so the output of element i is a pure function of (seed, i)."""
  for k, op in enumerate(ops):
    ds = ds.random_map(op, seed=_seed(seed, k)) if op.random else ds.map(op)
  return ds


# ----------------------------------------------------------------------------- training
def task_stream(config, task: str, tokenizer, *, mask_codes: MaskCodes | None = None,
                model_cfg=None) -> grain.MapDataset:
  """Infinite MapDataset of the run's training examples of one task (every process alike)."""
  sources = list(open_train_sources(config, task, config.data.train_split).values())
  for part in sources:
    check_source(config, task, part, model_cfg)
  source = sources[0] if len(sources) == 1 else shards.ConcatSource(sources)
  ds = grain.MapDataset.source(source)
  index = tasks.task_id(task)
  ds = ds.shuffle(seed=_seed(config.seed, index, 1)).repeat()
  ops = example_transforms(config, task, tokenizer, train=True, mask_codes=mask_codes)
  # The trailing 0 keeps the seeds of runs made when each process had a stream of its own
  # (process 0 of 1 then), so single-process streams are unchanged.
  return apply_transforms(ds, ops, _seed(config.seed, index, 2, 0))


def per_process_batch_size(batch: int, process_count: int, what: str = "data.batch_size") -> int:
  if batch % process_count:
    raise ValueError(f"config.{what}={batch} is not divisible by the {process_count} "
                     "processes; each process reads batch_size / process_count rows")
  return batch // process_count


def train_batches(config, tokenizer, *, process_index: int, process_count: int,
                  mask_codes: MaskCodes | None = None, model_cfg=None) -> grain.MapDataset:
  """Infinite MapDataset whose element k is this process's part of global batch k (see the
  module docstring)."""
  active = active_tasks(config)
  streams = [task_stream(config, t, tokenizer, mask_codes=mask_codes, model_cfg=model_cfg)
             for t in active]
  weights = [float(config.tasks[t].weight) for t in active]
  mixed = streams[0] if len(streams) == 1 else grain.MapDataset.mix(streams, weights)
  local = per_process_batch_size(int(config.data.batch_size), process_count)
  # Block j of `local` elements is part j % n of global batch j // n: take this process's.
  return mixed.batch(local, drop_remainder=True)[process_index::process_count]


def _mark_flags_parsed() -> None:
  """grain's worker processes read absl flags; a library caller may not have parsed them."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


class BatchIterator:
  """Iterator of per-process numpy batches with exact, worker-count-independent resume.

  `get_state()` -> {"next_batch": k, "fingerprint": str} (JSON); `set_state(state)` makes the
  next `next()` return (this process's part of) global batch k. A state from a stream with
  another seed, batch size, task mixture or data raises ValueError naming the difference; a
  state of another process, or of another number of processes, is accepted (the stream is the
  same; the `"process"` entry of `about` only records who wrote it).
  """

  def __init__(self, batches: grain.MapDataset, *, worker_count: int = 0, prefetch: int = 2,
               fingerprint: Mapping[str, Any] | None = None):
    self._batches = batches
    self._workers, self._prefetch = int(worker_count), max(1, int(prefetch))
    self._about = dict(fingerprint or {})
    stream = {k: v for k, v in self._about.items() if k != "process"}  # Who reads: not hashed.
    self.fingerprint = hashlib.sha256(json.dumps(stream, sort_keys=True).encode()
                                      ).hexdigest()[:16]
    self._next = 0
    self._it: Iterator | None = None

  def _start(self) -> None:
    ds = self._batches[self._next:].to_iter_dataset(grain.ReadOptions(
        num_threads=self._prefetch, prefetch_buffer_size=self._prefetch))
    if self._workers > 0:
      _mark_flags_parsed()
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=self._workers, per_worker_buffer_size=self._prefetch))
    self._it = iter(ds)

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self._it is None:
      self._start()
    batch = next(self._it)
    self._next += 1
    return batch

  def get_state(self) -> dict:
    return {"next_batch": self._next, "fingerprint": self.fingerprint, "about": self._about}

  def set_state(self, state: Mapping[str, Any]) -> None:
    theirs = dict(state.get("about", {}))
    diff = sorted(k for k in set(theirs) | set(self._about) if k != "process"
                  and theirs.get(k) != self._about.get(k))
    if diff or "about" not in state and state.get("fingerprint") != self.fingerprint:
      raise ValueError(f"the saved input-iterator state belongs to another data stream "
                       f"(differs in {diff or 'fingerprint'}); resume with the same data, "
                       "seed, batch size and task mixture")
    self.close()
    self._next = int(state["next_batch"])

  def close(self) -> None:
    """Stops worker processes (a later `next()` starts them again)."""
    it, self._it = self._it, None
    if it is not None and hasattr(it, "close"):
      it.close()


def _stream_about(config, process_index, process_count, sizes) -> dict:
  return {"seed": int(config.seed), "batch_size": int(config.data.batch_size),
          "process": [process_index, process_count],
          "num_segments": int(config.data.num_segments), "image_size": int(config.data.image_size),
          "tasks": {t: [config.tasks[t].dataset, float(config.tasks[t].weight), sizes[t]]
                    for t in sizes},
          "split": config.data.train_split,
          "tokens": [int(config.tokens.max_prompt_len), int(config.tokens.max_target_len)]}


def _process_layout(process_index, process_count) -> tuple[int, int]:
  if process_index is None or process_count is None:
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} outside [0, {process_count})")
  return int(process_index), int(process_count)


def make_train_iterator(config, tokenizer, *, mask_codes: MaskCodes | None = None,
                        process_index: int | None = None, process_count: int | None = None,
                        model_cfg=None) -> BatchIterator:
  """This process's training batches (see module doc). Defaults: jax's process index/count.

  `mask_codes(example_id, frame_index) -> int[Kh, Kw] | None` must be picklable when
  `config.data.worker_count > 0` (a module-level function or an object, not a lambda).
  """
  process_index, process_count = _process_layout(process_index, process_count)
  batches = train_batches(config, tokenizer, process_index=process_index,
                          process_count=process_count, mask_codes=mask_codes,
                          model_cfg=model_cfg)
  sizes = {t: len(open_source(config, t, config.data.train_split)) for t in active_tasks(config)}
  return BatchIterator(batches, worker_count=config.data.worker_count,
                       prefetch=config.data.prefetch,
                       fingerprint=_stream_about(config, process_index, process_count, sizes))


# ----------------------------------------------------------------------------- shapes, arrays
def example_shapes(config, tokenizer, model_cfg=None) -> dict[str, tuple[tuple[int, ...], Any]]:
  """{field: (shape, numpy dtype)} of one training example (no batch axis)."""
  t, s = int(config.data.num_segments), int(config.data.image_size)
  f, m = (model_cfg.mel_frames, model_cfg.mel_bins) if model_cfg is not None else (100, 64)
  lp, lt = int(config.tokens.max_prompt_len), int(config.tokens.max_target_len)
  c = len(tokenizer.label_sets.get("avvp", ()))
  return {"frames": ((t, s, s, 3), np.uint8), "log_mel": ((t, f, m), np.float32),
          "segment_mask": ((t,), np.bool_), "prompt_tokens": ((lp,), np.int32),
          "target_tokens": ((lt,), np.int32), "target_weights": ((lt,), np.float32),
          "task_id": ((), np.int32), "weak_labels": ((c,), np.float32),
          "has_weak": ((), np.bool_), "focus_segment": ((), np.int32),
          "focus_map": ((tasks.MAP_GRID, tasks.MAP_GRID), np.float32),
          "has_focus_map": ((), np.bool_), "event_segments": ((t,), np.float32),
          "has_event_segments": ((), np.bool_)}


def batch_spec(config, tokenizer, model_cfg=None) -> dict:
  """{field: jax.ShapeDtypeStruct} of a *global* training batch (leading axis batch_size)."""
  b = int(config.data.batch_size)
  return {k: jax.ShapeDtypeStruct((b,) + shape, dtype)
          for k, (shape, dtype) in example_shapes(config, tokenizer, model_cfg).items()}


def global_batch(local: Mapping[str, np.ndarray], shardings: Mapping[str, Any],
                 spec: Mapping[str, Any]) -> dict:
  """This process's rows -> global jax.Arrays (`jax.make_array_from_process_local_data`).

  Args: local: {field: array[B / process_count, ...]}; shardings: {field: Sharding};
    spec: {field: ShapeDtypeStruct or shape tuple} of the global batch. Fields of `local`
    not in `spec` (e.g. evaluation bookkeeping) are left out.
  """
  missing = sorted(set(spec) - set(local))
  if missing:
    raise ValueError(f"the input batch lacks fields {missing}")
  return {k: jax.make_array_from_process_local_data(
      shardings[k], np.asarray(local[k]), tuple(getattr(spec[k], "shape", spec[k])))
          for k in spec}


@dataclasses.dataclass
class TrainData:
  """What the train loop needs: `iterator` (BatchIterator), `batch_spec` (global
  ShapeDtypeStructs), `vocab_size`, `num_classes` (MIL classes = LLP label set), `tokenizer`."""

  iterator: BatchIterator
  batch_spec: dict
  vocab_size: int
  num_classes: int
  tokenizer: Any


def make_train_data(config, tokenizer, *, mask_codes: MaskCodes | None = None,
                    process_index: int | None = None, process_count: int | None = None,
                    model_cfg=None) -> TrainData:
  """The training input of this process (drop-in for the synthetic source of train.py).
  `model_cfg` (default: from config.model) gives the log-mel size checked against the data."""
  if model_cfg is None:
    model_cfg = models.model_config_from(config.model)
  it = make_train_iterator(config, tokenizer, mask_codes=mask_codes, process_index=process_index,
                           process_count=process_count, model_cfg=model_cfg)
  return TrainData(it, batch_spec(config, tokenizer, model_cfg), tokenizer.layout.vocab_size,
                   len(tokenizer.label_sets.get("avvp", ())), tokenizer)


# ----------------------------------------------------------------------------- evaluation
class _ReadEvalExample:
  """(source index, frame index) -> the stored example tagged with both."""

  random = False

  def __init__(self, source):
    self.source = source

  def __call__(self, pair) -> dict:
    index, frame = int(pair[0]), int(pair[1])
    example = dict(self.source[index])
    example["_example_index"] = index
    if frame >= 0:
      example["_frame_index"] = frame
    return example


def eval_items(task: str, source: shards.ShardSource) -> np.ndarray:
  """int64[N, 2] (source index, frame index) of the evaluation examples: one per example;
  for AVS one per annotated frame (frame index -1 for the other tasks)."""
  if task != "avs":
    return np.stack([np.arange(len(source)), np.full(len(source), -1)], 1)
  items = []
  for i in range(len(source)):
    annotated = np.asarray(source[i]["mask_annotated"], bool)
    items += [(i, k) for k in np.flatnonzero(annotated)]
  return np.asarray(items, np.int64).reshape(-1, 2)


@dataclasses.dataclass
class EvalData:
  """One pass over a task's evaluation split: `batches` (iterable of per-process numpy
  batches with MODEL_FIELDS + EVAL_FIELDS), `source` (join `example_index` with
  `source[i]` / `source.ids[i]`), `num_examples`, `num_batches`."""

  task: str
  source: shards.ShardSource
  batches: Any
  num_examples: int
  num_batches: int


def make_eval_batches(config, task: str, tokenizer, *, split: str | None = None,
                      batch_size: int | None = None, max_examples: int | None = None,
                      mask_codes: MaskCodes | None = None, process_index: int | None = None,
                      process_count: int | None = None) -> EvalData:
  """Evaluation batches of `task` (defaults: config.data.eval_split, config.eval.batch_size,
  config.eval.max_examples with 0 = all). Global batch g holds examples [g*B, (g+1)*B);
  process p gets rows [p*B/n, (p+1)*B/n) of it; rows past the end repeat example 0 with
  valid=False."""
  process_index, process_count = _process_layout(process_index, process_count)
  split = split or config.data.eval_split
  batch = int(batch_size or config.eval.batch_size)
  limit = int(config.eval.max_examples if max_examples is None else max_examples)
  local = per_process_batch_size(batch, process_count, "eval.batch_size")
  source = open_source(config, task, split)
  check_source(config, task, source)
  items = eval_items(task, source)
  items = items[:limit] if limit > 0 else items
  n = len(items)
  if not n:
    raise ValueError(f"{source.dataset_dir}/{split} has no {task} evaluation examples")
  num_batches = max(1, math.ceil(n / batch))
  rows = np.arange(num_batches * batch).reshape(num_batches, process_count, local)
  mine = rows[:, process_index].reshape(-1)  # this process's rows, batch by batch
  valid = mine < n
  ds = grain.MapDataset.source(items[np.where(valid, mine, 0)])
  ds = ds.map(_ReadEvalExample(source))
  ops = example_transforms(config, task, tokenizer, train=False, mask_codes=mask_codes)
  ds = apply_transforms(ds, ops, _seed(config.seed, tasks.task_id(task), 3))
  ds = ds.map_with_index(lambda i, ex: {**ex, "valid": np.bool_(valid[i])})
  threads = max(1, int(config.data.prefetch))
  batches = ds.batch(local).to_iter_dataset(
      grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads))
  return EvalData(task, source, batches, n, num_batches)
