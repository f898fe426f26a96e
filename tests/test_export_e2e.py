"""Export, end to end: a tiny trained-run work directory -> `--mode=export --verify` -> the
PyTorch model agrees with the JAX model (logits within 1e-4, identical constrained greedy tokens
for every target format, identical mask logits), strict loading, bfloat16 weights, and a
process where importing jax, flax or av_unified_jax fails still loads the export and generates.

The work directory has the layout training writes (config.json, tokenizer/, mask_tokenizer/,
orbax checkpoints/) with random parameters, so no training step is needed.
"""

import json
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from av_unified_jax import checkpointing, cli, models, runs, steps, tokens, train
from av_unified_jax.data import pipeline
from av_unified_jax.export import exporter, verify
from av_unified_jax.export import modeling_av_unified as tm
from av_unified_jax import mask_tokenizer as mt

STEP = 3
QUESTIONS = ["How many instruments are sounding in the video?"]
MASK_CFG = dict(mask_size=32, grid=8, code_dim=8, channels=(8, 16), num_res_blocks=1)


def random_tree(abstract, seed: int):
  """Random float values for a tree of shapes (LayerNorm scales near 1); other dtypes zero."""
  rng = np.random.default_rng(seed)
  flat = traverse_util.flatten_dict(nn.meta.unbox(abstract), keep_empty_nodes=True)

  def value(key, leaf):
    if not hasattr(leaf, "shape"):
      return leaf
    if not jnp.issubdtype(leaf.dtype, jnp.floating):
      return np.zeros(leaf.shape, leaf.dtype)
    base = 1.0 if key[-1] == "scale" else 0.0
    return (base + 0.2 * rng.normal(size=leaf.shape)).astype(leaf.dtype)
  return traverse_util.unflatten_dict({k: value(k, v) for k, v in flat.items()})


def build_workdir(workdir: Path) -> None:
  """config.json, tokenizer/, mask_tokenizer/ and checkpoint STEP of a tiny run."""
  from configs import tiny  # pylint: disable=g-import-not-at-top

  config = tiny.get_config()
  config.data.num_segments, config.data.batch_size = 4, 2
  tok = tokens.Tokenizer.build(tokens.OFFICIAL_LABEL_SETS, QUESTIONS)
  tok.save(workdir / pipeline.TOKENIZER_DIR)
  (workdir / "config.json").write_text(json.dumps(config.to_dict(), default=str))
  model = runs.build_model(config, tok.layout.vocab_size, len(tok.label_sets["avvp"]))
  tx, _ = steps.make_optimizer(config.optim, config.total_steps)
  spec = pipeline.batch_spec(config, tok, models.model_config_from(config.model))
  abstract = jax.eval_shape(runs.make_init_fn(model, tx, spec), jax.random.key(0))
  state = checkpointing.unbox(abstract)
  state = state.replace(params=random_tree(state.params, 0),
                        opt_state=jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                                               state.opt_state),
                        step=jnp.asarray(STEP, jnp.int32))
  state = jax.tree.map(jnp.asarray, state)
  manager = checkpointing.make_manager(workdir, 2, async_save=False)
  checkpointing.save(manager, STEP, state)
  manager.wait_until_finished()
  manager.close()
  mcfg = mt.MaskTokenizerConfig(codebook_size=tok.layout.num_mask_codes, **MASK_CFG)
  variables = jax.eval_shape(lambda: mt.init_variables(mcfg, jax.random.key(0)))
  mt.save_tokenizer(workdir / "mask_tokenizer", mcfg, random_tree(variables, 1))


def export_flags(**kwargs):
  values = dict(workdir=None, export_dir=None, step=None, dtype="float32", verify=False)
  return types.SimpleNamespace(**{**values, **kwargs})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """Builds the work directory and runs `--mode=export --verify` on it (in this process)."""
  root = tmp_path_factory.mktemp("export")
  workdir, export_dir = root / "W", root / "E"
  build_workdir(workdir)
  import contextlib  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top

  stdout = io.StringIO()
  with contextlib.redirect_stdout(stdout):
    rc = cli.run("export", None, export_flags(workdir=str(workdir), export_dir=str(export_dir),
                                              verify=True))
  source = exporter.load_source(workdir)
  batch, names = verify.fixed_batch(source)
  lens = {n: g.max_len for n, g in source.tokenizer.grammars().items()}
  max_len = min(max(lens.values()), source.model.cfg.max_decode_len)
  params = jax.device_get(nn.meta.unbox(source.params))
  jax_logits, jax_tokens = verify.jax_outputs(source, params, batch, names, max_len)
  return types.SimpleNamespace(root=root, workdir=workdir, export_dir=export_dir, rc=rc,
                               stdout=stdout.getvalue(), source=source, batch=batch,
                               names=names, max_len=max_len, jax_logits=jax_logits,
                               jax_tokens=jax_tokens)


def test_export_verify_line(run):
  assert run.rc == 0, run.stdout
  report = json.loads(run.stdout.strip().splitlines()[-1])
  assert set(report) == {"max_abs_logit_diff", "greedy_tokens_equal", "n_params"}
  assert report["max_abs_logit_diff"] <= 1e-4
  assert report["greedy_tokens_equal"] is True
  weights = load_file(str(run.export_dir / "model.safetensors"))
  assert report["n_params"] == sum(v.numel() for v in weights.values())
  assert any(k.startswith("mask_tokenizer.decoder.") for k in weights)
  files = {p.name for p in run.export_dir.iterdir()}
  assert {"model.safetensors", "config.json", "layout.json", "text_tokenizer.json",
          "tokenizer.json", "grammars.safetensors", "modeling_av_unified.py",
          "README.md"} <= files
  config = json.loads((run.export_dir / "config.json").read_text())
  assert config["source"]["step"] == STEP and config["dtype"] == "float32"
  assert config["grammars"] == list(run.names)
  assert all(p.stat().st_mode & 0o044 == 0o044 for p in run.export_dir.iterdir())  # shareable


def test_every_task_decodes_identically_and_validly(run):
  model = tm.AVUnified.from_pretrained(run.export_dir)
  torch_tokens = model.generate(run.batch, run.names, max_len=run.max_len).numpy()
  assert set(run.names) == {"ave", "avvp", "avvp_weak", "avqa", "ssl", "avs"}
  np.testing.assert_array_equal(torch_tokens, run.jax_tokens)
  tok = run.source.tokenizer
  for row, name in enumerate(run.names):
    task = "avvp" if name == "avvp_weak" else name
    assert tokens.walk(tok.grammar(task, weak=name == "avvp_weak"), torch_tokens[row]), name
  with torch.no_grad():
    logits = model(run.batch)["logits"].numpy()
  np.testing.assert_allclose(logits, run.jax_logits, atol=1e-4, rtol=0)


def test_mask_logits_from_generated_codes(run):
  model = tm.AVUnified.from_pretrained(run.export_dir)
  row = run.names.index("avs")
  avs_tokens = run.jax_tokens[row:row + 1]
  with torch.no_grad():
    torch_logits = model.mask_logits_from_tokens(avs_tokens).numpy()
  kh, kw = run.source.tokenizer.mask_grid
  codes = run.source.tokenizer.layout.token_code(avs_tokens[:, :kh * kw]).reshape(1, kh, kw)
  jax_logits = mt.MaskTokenizer(run.source.mask_config).apply(
      run.source.mask_variables, codes.astype(np.int32), method=mt.MaskTokenizer.decode)
  assert torch_logits.shape == (1, 32, 32)
  np.testing.assert_allclose(torch_logits, np.asarray(jax_logits), atol=1e-4, rtol=0)


def test_bfloat16_export(run):
  export_dir = run.root / "E_bf16"
  exporter.export_source(run.source, export_dir, "bfloat16")
  with safe_open(str(export_dir / "model.safetensors"), "pt") as f:
    assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
  size32 = (run.export_dir / "model.safetensors").stat().st_size
  assert (export_dir / "model.safetensors").stat().st_size < 0.6 * size32
  report = verify.verify_export(run.source, export_dir, "bfloat16")
  assert verify.passed(report), report
  model = tm.AVUnified.from_pretrained(export_dir, dtype=torch.bfloat16)  # bfloat16 compute
  assert model.decoder.pos_embed.dtype == torch.bfloat16
  with torch.no_grad():
    logits = model(run.batch)["logits"].numpy()
  assert logits.dtype == np.float32
  np.testing.assert_allclose(logits, run.jax_logits, atol=0.25, rtol=0)
  assert model.generate(run.batch, "avs").shape == (len(run.names), 65)


def test_loading_is_strict(run, tmp_path):
  broken = tmp_path / "E"
  shutil.copytree(run.export_dir, broken)
  weights = load_file(str(broken / "model.safetensors"))
  weights["decoder.extra"] = weights.pop("decoder.ln_out.bias")
  save_file(weights, str(broken / "model.safetensors"))
  with pytest.raises(RuntimeError, match=r"(?s)Missing key.*decoder\.ln_out\.bias.*"
                                         r"Unexpected key.*decoder\.extra"):
    tm.AVUnified.from_pretrained(broken)


def test_export_errors_are_one_line(run, tmp_path, capsys):
  assert cli.run("export", None, export_flags(workdir=str(run.workdir))) == 2
  assert "--export_dir" in capsys.readouterr().err
  partial = tmp_path / "W"
  partial.mkdir()
  shutil.copy(run.workdir / "config.json", partial / "config.json")
  flags = export_flags(workdir=str(partial), export_dir=str(tmp_path / "E"))
  assert cli.run("export", None, flags) == 2
  assert "tokenizer" in capsys.readouterr().err


BLOCKER = '''
import sys


class _Blocked:
  """Makes `import jax` (and flax, av_unified_jax) fail, as on a machine without them."""

  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in ("jax", "jaxlib", "flax", "optax", "orbax", "av_unified_jax"):
      raise ImportError(f"{name} is not available in this process")
    return None


sys.meta_path.insert(0, _Blocked())
'''

TORCH_ONLY = '''
import json, sys
import numpy as np
for name in ("jax", "flax", "av_unified_jax"):
  try:
    __import__(name)
    raise SystemExit(f"{name} was importable")
  except ImportError:
    pass
sys.path.insert(0, sys.argv[1])
from modeling_av_unified import AVUnified
model = AVUnified.from_pretrained(sys.argv[1])
batch = dict(np.load(sys.argv[2]))
names = json.loads(sys.argv[3])
tokens = model.generate(batch, names, max_len=int(sys.argv[4])).numpy()
np.save(sys.argv[5], tokens)
prompt = model.vocab.prompt("avqa", question="How many instruments are sounding in the video?")
masks = model.mask_logits_from_tokens(tokens[names.index("avs")][None])
print(json.dumps({"modules": sorted(m for m in sys.modules if m.split(".")[0] in
                                    ("jax", "flax", "av_unified_jax")),
                  "prompt": prompt, "mask_shape": list(masks.shape)}))
'''


def test_torch_only_process_loads_and_generates(run, tmp_path):
  blocker = tmp_path / "blocker"
  blocker.mkdir()
  (blocker / "sitecustomize.py").write_text(BLOCKER)
  (tmp_path / "torch_only.py").write_text(textwrap.dedent(TORCH_ONLY))
  np.savez(tmp_path / "batch.npz", **{k: v for k, v in run.batch.items()})
  out = tmp_path / "tokens.npy"
  proc = subprocess.run(
      [sys.executable, str(tmp_path / "torch_only.py"), str(run.export_dir),
       str(tmp_path / "batch.npz"), json.dumps(list(run.names)), str(run.max_len), str(out)],
      cwd=tmp_path, capture_output=True, text=True, timeout=300,
      env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(blocker)})
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["modules"] == []
  np.testing.assert_array_equal(np.load(out), run.jax_tokens)
  expected = run.source.tokenizer.encode_prompt("avqa", question=QUESTIONS[0])
  assert result["prompt"] == expected.tolist()
  assert result["mask_shape"] == [1, 32, 32]
  readme = (run.export_dir / "README.md").read_text()
  example = readme.split("```python\n")[1].split("```")[0].replace(
      "path/to/this/directory", str(run.export_dir))
  (tmp_path / "example.py").write_text(example)
  proc = subprocess.run([sys.executable, str(tmp_path / "example.py")], cwd=tmp_path,
                        capture_output=True, text=True, timeout=300,
                        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(blocker)})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip().endswith("'<eos>']"), proc.stdout


def test_vocabulary_matches_the_tokenizer(run):
  vocab = tm.Vocabulary.load(run.export_dir)
  tok = run.source.tokenizer
  for question in QUESTIONS + ["Is the  Ünknöwn zither louder than 2 pianos?!"]:
    assert vocab.prompt("avqa", question=question) == tok.encode_prompt(
        "avqa", question=question).tolist()
  assert vocab.prompt("avs", second=3) == tok.encode_prompt("avs", second=3).tolist()
  assert vocab.prompt("avvp", weak=True) == tok.encode_prompt("avvp", weak=True).tolist()
  for task in ("ave", "avvp", "ssl"):
    assert vocab.prompt(task) == tok.encode_prompt(task).tolist()
  sample = np.unique(np.concatenate([run.jax_tokens.ravel(), np.arange(0, 40)]))
  assert [vocab.describe(t) for t in sample] == [
      tok.layout.token_name(t) if tok.layout.kind(t) != "text" else
      tok.text.id_to_piece(tok.layout.token_text(t)) for t in sample]
  with pytest.raises(ValueError, match="question="):
    vocab.prompt("avqa")
