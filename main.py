"""av_unified_jax entry point: flags -> train / eval / predict / export / summary.

  python main.py                                       # the main job on the demo data
  python main.py --config=configs/tiny.py --workdir=W  # train (and evaluate) with a config
  python main.py --mode=eval --workdir=W [--step=N]
  python main.py --mode=predict --workdir=W --video=clip.mp4 --task=ave --out=DIR
  python main.py --mode=export --workdir=W --export_dir=E [--verify]
  python main.py --mode=summary --config=configs/base.py [--workdir=W]
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from av_unified_jax.tokens.layout import TASKS

MODES = ("train", "eval", "predict", "export", "summary")
CONFIG_ERRORS = (flags.Error, AttributeError, KeyError, ValueError, TypeError)


def _fail(e: Exception) -> None:
  """A bad flag or config key: one line on stderr, exit code 2."""
  message = str(e).replace("\\n", " ").replace("\n", " ").replace("\\'", "'").strip("'\" ")
  if isinstance(e, (AttributeError, KeyError)):
    message = "unknown config key: " + message.replace("'", "")
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


try:  # Without --config the default file is loaded (and --config.* applied) right here.
  config_flags.DEFINE_config_file(
      "config", "configs/demo.py", "Experiment config file, e.g. configs/tiny.py[:arg].",
      lock_config=True)
except CONFIG_ERRORS as e:
  _fail(e)
flags.DEFINE_enum("mode", "train", MODES, "What to do.")
flags.DEFINE_string("workdir", None, "Work directory (checkpoints, logs, eval results).")
flags.DEFINE_integer("step", None, "Checkpoint step for eval/predict/export (default: latest).")
flags.DEFINE_string("video", None, "predict: input video file.")
flags.DEFINE_enum("task", None, TASKS, "predict: task.")
flags.DEFINE_string("question", None, "predict: question for --task=avqa.")
flags.DEFINE_string("out", None, "predict: output directory.")
flags.DEFINE_string("export_dir", None, "export: output directory.")
flags.DEFINE_enum("dtype", "float32", ("float32", "bfloat16"), "export: weight dtype.")
flags.DEFINE_bool("verify", False, "export: compare the PyTorch model with the JAX model.")
flags.DEFINE_bool("distributed", False,
                  "Multi-host: call jax.distributed.initialize() first (the cluster is detected, "
                  "or given by --coordinator_address, --num_processes and --process_id).")
flags.DEFINE_string("coordinator_address", None, "Multi-host: coordinator host:port.")
flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-host: index of this process.")

FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from av_unified_jax import cli  # Imported late so `--help` stays fast.

  sys.exit(cli.run(FLAGS.mode, FLAGS.config, FLAGS, default_job=_is_default_job()))


def _parse_flags(argv):
  """Parses flags; a bad flag or config key is one line on stderr and exit code 2."""
  try:
    return FLAGS(argv)
  except CONFIG_ERRORS as e:
    _fail(e)


def _is_default_job() -> bool:
  """True for a bare `python main.py` (no flags at all): the demo main job."""
  return len(sys.argv) == 1


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
