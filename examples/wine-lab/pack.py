"""Build the lab's importable notebooks from src/: the .ipynb files and the HelperFunctions .dbc.

The Databricks source files in src/ are what people edit; this writes, with Brickyard's own
notebook format writers:
  FullExperiment.ipynb, samples/BaseExperiment.ipynb  (Jupyter, as the lab imports them)
  HelperFunctions.dbc                                  (a DBC archive holding one notebook)
Run `python examples/wine-lab/pack.py` after editing src/; `--check` fails when a built file
is out of date (the tests run it).
"""
from __future__ import annotations

import sys
from pathlib import Path

from brickyard.runtime.formats import read_archive, read_notebook, write_archive, write_notebook

LAB = Path(__file__).resolve().parent
SRC = LAB / "src"
JUPYTER = {"FullExperiment.ipynb": "FullExperiment.py", "samples/BaseExperiment.ipynb": "BaseExperiment.py"}
DBC = {"HelperFunctions.dbc": "HelperFunctions.py"}
DBC_OBJECT_ID = 1000


def source_notebook(name: str):  # noqa: ANN201
    path = SRC / name
    return read_notebook("SOURCE", path.read_bytes(), path.stem, extension=path.suffix)


def build() -> dict[str, bytes]:
    """Every built file's relative path and content."""
    out = {rel: write_notebook("JUPYTER", source_notebook(src), 0) for rel, src in JUPYTER.items()}
    for rel, src in DBC.items():
        out[rel] = write_archive("", [("HelperFunctions", source_notebook(src), DBC_OBJECT_ID)])
    return out


def _same(rel: str, built: bytes, current: bytes) -> bool:
    if rel.endswith(".dbc"):  # zip members carry timestamps: compare the notebooks
        def cells(data: bytes) -> list:
            return [(e.path, [c.source for c in e.notebook.cells]) for e in read_archive(data, 1 << 24, 1 << 26)]
        return cells(built) == cells(current)
    return built == current


def main(argv: list[str]) -> int:
    stale = []
    for rel, data in build().items():
        target = LAB / rel
        current = target.read_bytes() if target.exists() else None
        if current is not None and _same(rel, data, current):
            continue
        if "--check" in argv:
            stale.append(rel)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        print(f"wrote {target.relative_to(LAB)}")
    if stale:
        print(f"out of date (run python {Path(__file__).name}): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
