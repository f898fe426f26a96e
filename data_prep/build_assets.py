"""Rebuilds the demo asset pack `data_prep/assets/` from its public sources.

  apt-get update   # once, so that apt knows the package
  python -m data_prep.build_assets [--deb tuxpaint-stamps-default_*.deb] [--out data_prep/assets]

Sources:
- Debian package `tuxpaint-stamps-default` (GPL-2): photo cut-outs (RGBA PNG) of animals,
  instruments and tools, each with a recording of the sound that object makes. Without `--deb`
  the package is fetched with `apt-get download` and unpacked with `dpkg-deb -x`.
- Background photos bundled with scikit-image and scikit-learn (no download needed).

The pack holds cut-outs cropped to their alpha box and scaled to at most 256 px, sounds as
16 kHz mono 16-bit FLAC with leading/trailing silence trimmed and peak-normalised, backgrounds
as JPEG with the short side at most 256 px, and `manifest.json` with the sha256 of each source
file and of each pack file. Every stamp is assigned to `train` or `heldout`: the demo builds
its test (and val) clips from held-out stamps and backgrounds only.
`ATTRIBUTION.md` and `LICENSE-GPL-2.txt` in the pack are kept by hand (the licence text is
Debian's /usr/share/common-licenses/GPL-2).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image
from scipy import signal

PACKAGE = "tuxpaint-stamps-default"
STAMP_ROOT = "usr/share/tuxpaint/stamps"
SAMPLE_RATE = 16000
MAX_SIDE = 256
ASSETS_DIR = Path(__file__).resolve().parent / "assets"

# class -> (train stamps, held-out stamps); each stamp is a path under STAMP_ROOT without suffix.
# Only photo cut-outs whose recording is non-silent and not shared with another stamp.
CLASSES = {
    "cattle": (["animals/mammals/bovines/cow", "animals/mammals/bovines/bull",
                "animals/mammals/bovines/bison"], ["animals/mammals/bovines/cow_white"]),
    "sheep": (["animals/mammals/bovines/sheep"], ["animals/mammals/bovines/sheep_lamb"]),
    "goat": (["animals/mammals/bovines/goat"], ["animals/mammals/bovines/mountaingoat"]),
    "pig": (["animals/mammals/pig", "animals/mammals/pig_golden"],
            ["animals/mammals/pig_golden2"]),
    "equine": (["animals/mammals/equines/horse", "animals/mammals/equines/donkey"],
               ["animals/mammals/equines/zebra"]),
    "waterfowl": (["animals/birds/duck", "animals/birds/gander"], ["animals/birds/drake"]),
    "poultry": (["animals/birds/rooster", "animals/birds/turkey"], ["animals/birds/hen"]),
    "canine": (["animals/mammals/dogs/dog"], ["animals/mammals/dogs/fox"]),
    "big_cat": (["animals/mammals/cats/lion"], ["animals/mammals/cats/tiger"]),
    "ape": (["animals/mammals/apes/chimp"], ["animals/mammals/apes/gorilla"]),
    "marine_mammal": (["animals/mammals/aquatic/dolphin", "animals/mammals/aquatic/whale",
                       "animals/mammals/aquatic/sea_lion"], ["animals/mammals/aquatic/orca"]),
    "deer": (["animals/mammals/deer/deer", "animals/mammals/deer/caribou"],
             ["animals/mammals/deer/doe"]),
    "camel": (["animals/mammals/camel/camel"], ["animals/mammals/camel/dromedary"]),
    "small_mammal": (["animals/mammals/rodents/mouse", "animals/mammals/rodents/beaver",
                      "animals/mammals/rodents/rabbit", "animals/mammals/ferret"],
                     ["animals/mammals/rodents/squirrel"]),
    "insect": (["animals/insects/grasshopper", "animals/insects/hornet"],
               ["animals/insects/xanthia"]),
    "songbird": (["animals/birds/blackbird", "animals/birds/lark", "animals/birds/tucan",
                  "animals/birds/quetzal"], ["animals/birds/cuckoo"]),
    "percussion": (["hobbies/music/percussion/drumkit", "hobbies/music/percussion/cymbal_crash"],
                   ["hobbies/music/percussion/drum_tomtom_floor"]),
    "bowed_string": (["hobbies/music/string/violin"], ["hobbies/music/string/cello"]),
    "hand_tool": (["household/tools/hammer", "household/tools/saw"],
                  ["household/tools/mallet_metal"]),
}

# name -> (loader, split, licence). Loaders return the file path of the bundled image.
BACKGROUNDS = {
    "grass": ("skimage:grass.png", "train", "CC0 (scikit-image data, from DeviantArt linolafett)"),
    "brick": ("skimage:brick.png", "train", "CC0 (scikit-image data, from CC0Textures Bricks25)"),
    "coffee": ("skimage:coffee.png", "train", "CC0 (scikit-image data, photo Rachel Michetti)"),
    "rocket": ("skimage:rocket.jpg", "train", "public domain (scikit-image data, SpaceX)"),
    "china": ("sklearn:china.jpg", "train",
              "CC BY 2.0 (scikit-learn sample image, danielbuechele on Flickr)"),
    "hubble_deep_field": ("skimage:hubble_deep_field.jpg", "train",
                          "public domain (scikit-image data, NASA)"),
    "gravel": ("skimage:gravel.png", "heldout",
               "CC0 (scikit-image data, from CC0Textures Gravel04)"),
    "flower": ("sklearn:flower.jpg", "heldout",
               "CC BY 2.0 (scikit-learn sample image, vultilion on Flickr)"),
}


def sha256_bytes(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def fetch_deb(workdir: Path) -> Path:
  """Downloads the package with apt-get into `workdir`; returns the .deb path."""
  try:
    subprocess.run(["apt-get", "download", PACKAGE], cwd=workdir, check=True)
  except (OSError, subprocess.CalledProcessError) as e:
    raise SystemExit(f"error: `apt-get download {PACKAGE}` failed ({e}); run `apt-get update` "
                     "first, or pass --deb with a downloaded copy of the package") from e
  debs = sorted(workdir.glob(f"{PACKAGE}_*.deb"))
  if not debs:
    raise SystemExit(f"error: apt-get download left no {PACKAGE}_*.deb in {workdir}")
  return debs[-1]


def unpack_deb(deb: Path, workdir: Path) -> Path:
  """Extracts the package's files with dpkg-deb; returns the stamp folder."""
  target = workdir / "extracted"
  subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
  root = target / STAMP_ROOT
  if not root.is_dir():
    raise SystemExit(f"error: {deb} has no {STAMP_ROOT}; is it {PACKAGE}?")
  return root


def png_bytes(img: Image.Image) -> bytes:
  """PNG without ancillary chunks (no time stamps), so equal pixels give equal bytes."""
  buf = io.BytesIO()
  img.save(buf, format="PNG", optimize=True)
  return buf.getvalue()


def prepare_cutout(path: Path) -> bytes:
  """RGBA cut-out cropped to its alpha box, longest side at most MAX_SIDE px, as PNG bytes."""
  img = Image.open(path).convert("RGBA")
  alpha = np.asarray(img)[..., 3]
  ys, xs = np.nonzero(alpha > 0)
  img = img.crop((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
  scale = MAX_SIDE / max(img.size)
  if scale < 1:
    size = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
    img = img.resize(size, Image.Resampling.LANCZOS)
  return png_bytes(img)


def prepare_sound(path: Path) -> tuple[bytes, float]:
  """16 kHz mono FLAC bytes (silence trimmed, peak 0.9) and the duration in seconds."""
  wave, rate = sf.read(str(path), dtype="float64", always_2d=True)
  mono = wave.mean(axis=1)
  if rate != SAMPLE_RATE:
    g = np.gcd(rate, SAMPLE_RATE)
    mono = signal.resample_poly(mono, SAMPLE_RATE // g, rate // g)
  peak = float(np.abs(mono).max())
  if peak < 1e-3:
    raise SystemExit(f"error: {path} is silent; drop it from CLASSES")
  loud = np.nonzero(np.abs(mono) > peak * 10 ** (-45 / 20))[0]
  mono = mono[loud[0]:loud[-1] + 1] * (0.9 / peak)
  buf = io.BytesIO()
  sf.write(buf, mono.astype(np.float32), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
  return buf.getvalue(), len(mono) / SAMPLE_RATE


def background_source(spec: str) -> Path:
  """Path of a bundled image, `skimage:<file>` or `sklearn:<file>`."""
  lib, name = spec.split(":")
  if lib == "skimage":
    import skimage.data  # Late: optional, only rebuilding the pack needs scikit-image.
    return Path(skimage.data.__file__).parent / name
  import sklearn.datasets  # Late: optional, only rebuilding the pack needs scikit-learn.
  return Path(sklearn.datasets.__file__).parent / "images" / name


def prepare_background(path: Path) -> bytes:
  """RGB JPEG with the short side at most MAX_SIDE px."""
  img = Image.open(path).convert("RGB")
  scale = MAX_SIDE / min(img.size)
  if scale < 1:
    img = img.resize((round(img.size[0] * scale), round(img.size[1] * scale)),
                     Image.Resampling.LANCZOS)
  buf = io.BytesIO()
  img.save(buf, format="JPEG", quality=90)
  return buf.getvalue()


def write(out: Path, rel: str, data: bytes) -> dict:
  (out / rel).parent.mkdir(parents=True, exist_ok=True)
  (out / rel).write_bytes(data)
  return {"file": rel, "sha256": sha256_bytes(data), "bytes": len(data)}


def build_stamps(stamp_root: Path, out: Path) -> list[dict]:
  """Writes every stamp of CLASSES into `out/stamps/<class>/`; returns manifest rows."""
  rows, seen_sounds = [], {}
  for cls, (train, heldout) in CLASSES.items():
    for split, stems in (("train", train), ("heldout", heldout)):
      for stem in stems:
        src_png, src_ogg = stamp_root / f"{stem}.png", stamp_root / f"{stem}.ogg"
        src_sha = sha256_bytes(src_ogg.read_bytes())
        if src_sha in seen_sounds:
          raise SystemExit(f"error: {stem} shares its recording with {seen_sounds[src_sha]}")
        seen_sounds[src_sha] = stem
        name = Path(stem).name
        flac, duration = prepare_sound(src_ogg)
        rows.append({
            "id": name, "class": cls, "split": split, "duration_s": round(duration, 4),
            "image": write(out, f"stamps/{cls}/{name}.png", prepare_cutout(src_png)),
            "sound": write(out, f"stamps/{cls}/{name}.flac", flac),
            "source_image": {"path": f"{STAMP_ROOT}/{stem}.png",
                             "sha256": sha256_bytes(src_png.read_bytes())},
            "source_sound": {"path": f"{STAMP_ROOT}/{stem}.ogg", "sha256": src_sha},
        })
  return rows


def build_backgrounds(out: Path) -> list[dict]:
  rows = []
  for name, (spec, split, licence) in BACKGROUNDS.items():
    src = background_source(spec)
    rows.append({
        "id": name, "split": split, "licence": licence,
        "image": write(out, f"backgrounds/{name}.jpg", prepare_background(src)),
        "source_image": {"path": spec, "sha256": sha256_bytes(src.read_bytes())},
    })
  return rows


def package_version(deb: Path) -> str:
  res = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True,
                       capture_output=True, text=True)
  return res.stdout.strip()


def build(out: Path, deb: Path | None) -> dict:
  """Builds the pack into `out` (old stamps/ and backgrounds/ are replaced)."""
  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    deb = deb or fetch_deb(tmp)
    stamp_root = unpack_deb(deb, tmp)
    for sub in ("stamps", "backgrounds"):
      shutil.rmtree(out / sub, ignore_errors=True)
    manifest = {
        "format": 1,
        "sample_rate": SAMPLE_RATE,
        "source_package": {"name": PACKAGE, "version": package_version(deb),
                           "deb_sha256": sha256_bytes(deb.read_bytes()), "licence": "GPL-2+"},
        "classes": list(CLASSES),
        "stamps": build_stamps(stamp_root, out),
        "backgrounds": build_backgrounds(out),
    }
  (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
  return manifest


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--deb", type=Path, default=None,
                      help=f"a downloaded {PACKAGE}_*.deb (default: apt-get download it)")
  parser.add_argument("--out", type=Path, default=ASSETS_DIR, help="pack folder")
  args = parser.parse_args(argv)
  if args.deb is not None and not args.deb.is_file():
    raise SystemExit(f"error: --deb {args.deb} does not exist")
  args.out.mkdir(parents=True, exist_ok=True)
  manifest = build(args.out, args.deb)
  total = sum(r[k]["bytes"] for r in manifest["stamps"] for k in ("image", "sound"))
  total += sum(r["image"]["bytes"] for r in manifest["backgrounds"])
  print(f"wrote {len(manifest['stamps'])} stamps in {len(manifest['classes'])} classes and "
        f"{len(manifest['backgrounds'])} backgrounds to {args.out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
  main()
