"""requirements.txt stays true: every third-party module the code imports comes from a pinned
line of it, and every line is a package the code imports."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("av_unified_jax", "data_prep", "configs", "benchmarks", "tests", "main.py")


def _normalize(name: str) -> str:
  return re.sub(r"[-_.]+", "-", name).lower()


def requirements() -> dict[str, str]:
  """{normalized distribution name: the line} of requirements.txt."""
  out = {}
  for line in (ROOT / "requirements.txt").read_text().splitlines():
    line = line.split("#")[0].strip()
    if line:
      name = re.match(r"[A-Za-z0-9_.-]+", line).group(0)
      out[_normalize(name)] = line
  return out


def _local_modules() -> set[str]:
  names = {p.stem for p in ROOT.iterdir()} | {p.stem for p in (ROOT / "tests").iterdir()}
  return names | {"av_unified_jax"}


def imported_modules() -> dict[str, set[str]]:
  """{top-level third-party module: files importing it} over the project's Python files."""
  files = [p for s in SOURCES for p in ([ROOT / s] if s.endswith(".py")
                                        else sorted((ROOT / s).rglob("*.py")))]
  local, stdlib = _local_modules(), set(sys.stdlib_module_names)
  found: dict[str, set[str]] = {}
  for path in files:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names = [node.module]
      else:
        continue
      for name in names:
        top = name.split(".")[0]
        if top not in stdlib and top not in local and top != "__future__":
          found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
  return found


def test_every_import_is_a_pinned_requirement():
  reqs = requirements()
  dists = importlib.metadata.packages_distributions()
  missing = {}
  for module, where in sorted(imported_modules().items()):
    names = [_normalize(d) for d in dists.get(module, [])]
    if not names:
      missing[module] = f"not installed (imported by {sorted(where)[:2]})"
    elif not any(n in reqs for n in names):
      missing[module] = f"distribution {names} not in requirements.txt ({sorted(where)[:2]})"
  assert not missing, f"imports not covered by requirements.txt: {missing}"
  unpinned = [line for line in reqs.values() if "==" not in line]
  assert not unpinned, f"requirements.txt lines without an exact version: {unpinned}"


def test_every_requirement_is_imported():
  dists = importlib.metadata.packages_distributions()
  provided = {_normalize(d) for m in imported_modules() for d in dists.get(m, [])}
  unused = sorted(line for name, line in requirements().items() if name not in provided)
  assert not unused, f"requirements.txt lists packages nothing imports: {unused}"


def test_scan_sees_the_known_imports():
  found = imported_modules()
  for module in ("jax", "flax", "PIL", "absl", "etils", "tensorboardX", "hypothesis"):
    assert module in found, module
  assert "tensorflow_datasets" not in found and "sentencepiece" not in found
