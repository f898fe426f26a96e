"""The mask tokenizer trained from converted AVSBench shards (`--shards_dir`): the S4 and MS3
training masks, read as the main job reads them."""

import json

import numpy as np
import pytest
import test_pipeline_shards as tps

from av_unified_jax import mask_tokenizer as mt
from av_unified_jax.data import shards
from av_unified_jax.mask_tokenizer import train as mtt


def _write_avs(root):
  """avsbench_s4 (6 training clips, first frame annotated) and avsbench_ms3 (3 clips, all 5
  frames annotated): 6 + 15 training masks."""
  rng, uids = np.random.default_rng(0), tps.Uids()
  tps.write_dataset(root, "avsbench_s4", {"train": tps.avs_examples(rng, uids, "train", 6),
                                          "test": tps.avs_examples(rng, uids, "test", 2)})
  tps.write_dataset(root, "avsbench_ms3", {"train": tps.avs_examples(rng, uids, "train", 3,
                                                                     "avsbench_ms3")})


def test_shard_masks_reads_the_annotated_training_masks_of_s4_and_ms3(tmp_path):
  _write_avs(tmp_path)
  masks = mtt.shard_masks(tmp_path, log=lambda _: None)
  assert len(masks) == 6 + 15
  first = shards.decode_masks(shards.open_split(tmp_path / "avsbench_s4", "train")[0])[0]
  np.testing.assert_array_equal(masks[0], first)
  assert all(m.dtype == bool and m.shape == (tps.IMAGE, tps.IMAGE) and m.any() for m in masks)
  s4_test = mtt.shard_masks(tmp_path, "test", datasets=("avsbench_s4",), log=lambda _: None)
  assert len(s4_test) == 2 * 5  # Every frame of a test clip is annotated.
  with pytest.raises(ValueError, match="split 'test' is not converted"):
    mtt.shard_masks(tmp_path, "test", log=lambda _: None)  # MS3 has no test split here.


def test_cli_trains_from_shards_dir(tmp_path, capsys):
  _write_avs(tmp_path / "shards")
  workdir = tmp_path / "w"
  rc = mtt.main(["prog", "--config=configs/mask_tokenizer.py:tiny", f"--workdir={workdir}",
                 f"--shards_dir={tmp_path / 'shards'}", "--config.total_steps=2",
                 "--config.eval.train_subset=0"])
  assert rc == 0
  assert "mask tokenizer: 15 avsbench_ms3/train masks" in capsys.readouterr().out
  cfg, _ = mt.load_tokenizer(workdir)
  assert cfg.codebook_size == 64
  results = json.loads((workdir / "metrics.json").read_text())["results"]
  assert results["heldout/num_masks"] == 2  # 10% of the 21 shard masks


def test_cli_shards_dir_errors_are_one_line(tmp_path, capsys):
  (tmp_path / "empty").mkdir()
  argv = ["prog", "--config=configs/mask_tokenizer.py:tiny", f"--workdir={tmp_path / 'w'}"]
  assert mtt.main(argv + [f"--shards_dir={tmp_path / 'empty'}"]) == 2
  err = capsys.readouterr().err
  assert "no train masks in" in err and "avsbench_s4 or avsbench_ms3" in err
  assert mtt.main(argv + [f"--shards_dir={tmp_path}", f"--masks={tmp_path}"]) == 2
  assert "not both" in capsys.readouterr().err
  assert not (tmp_path / "w").exists()
