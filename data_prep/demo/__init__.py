"""The demo dataset: real cut-outs and recordings composed into clips in the raw layouts of the
five benchmarks, converted by the benchmarks' own converters (`python -m data_prep.demo`).

  dataset.py   the build: splits and sizes, raw trees, conversion, preview (`build`, `main`)
  assets.py    the asset pack (photo cut-outs, recordings, backgrounds) and its split rules
  compose.py   composition primitives: pictures (cut-outs on backgrounds) and sound
  scene.py     picture: placing and moving cut-outs over background crops
  media.py     writing the clips' video, audio and still files
  layouts.py   AVE, LLP and VGG-SS clips and annotation files
  avqa.py      MUSIC-AVQA videos and questions
  avsbench.py  AVSBench S4 and MS3 clips and masks
  preview.py   the contact sheet of a few clips per layout

    from data_prep import demo
    demo.build(Path("demo_data"), demo.Sizes(), image_size=112, seed=0, workers=2)
"""

from data_prep.demo.dataset import (DEFAULT_IMAGE_SIZE, LAYOUTS, NOVEL_RAW, Layout, Sizes, build,
                                    build_raw, convert_all, default_workers, example_ids, main,
                                    raw_root, split_counts)

__all__ = ["DEFAULT_IMAGE_SIZE", "LAYOUTS", "NOVEL_RAW", "Layout", "Sizes", "build", "build_raw",
           "convert_all", "default_workers", "example_ids", "main", "raw_root", "split_counts"]
