"""Execute notebooks in place (as learners run them), record how long each took, refresh README.

    python tools/run_notebooks.py notebooks/01_ngrams.ipynb solutions/01_ngrams.ipynb
    python tools/run_notebooks.py --all          # every notebook in notebooks/ and solutions/
    python tools/run_notebooks.py --readme-only  # only rebuild the README chapter table

Each executed notebook gets ``metadata.minillm.run`` = {seconds, device, quick, torch, date}; the
README's chapter table (between ``<!-- chapter-table -->`` markers) is rebuilt from the notebooks'
``metadata.minillm`` (title, builds, and the measured seconds), so its numbers are never typed by
hand. Solutions notebooks run with ``MINILLM_STRICT_CHECKS=1`` (as under pytest); afterwards ``exercises/`` is
regenerated from them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def execute(path: Path, *, quick: bool, timeout: int) -> float:
    import nbformat
    from nbclient import NotebookClient

    env_backup = dict(os.environ)
    os.environ["MINILLM_QUICK"] = "1" if quick else "0"
    os.environ["MINILLM_STRICT_CHECKS"] = "1" if path.parent.name == "solutions" else "0"
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    try:
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        start = time.perf_counter()
        client.execute()
        seconds = time.perf_counter() - start
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    meta = nb.metadata.setdefault("minillm", {})
    meta["run"] = {"seconds": round(seconds, 1), "device": device, "quick": quick,
                   "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
                   "machine": platform.machine(), "date": dt.date.today().isoformat()}
    nbformat.write(nb, path)
    return seconds


def chapter_table() -> str:
    rows = ["| # | notebook | what you build | CPU minutes | GPU minutes |",
            "|---|---|---|---:|---:|"]
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {}).get("minillm", {})
        run = meta.get("run", {})
        cpu = f"{run['seconds'] / 60:.1f}" if run.get("device") == "cpu" and not run.get("quick") else "—"
        gpu = meta.get("gpu_run", {}).get("seconds")
        gpu = f"{gpu / 60:.1f}" if gpu else "not measured"
        number = path.name.split("_")[0]
        title = meta.get("title", path.stem)
        rows.append(f"| {number} | [{title}](notebooks/{path.name}) | {meta.get('builds', '')} | {cpu} | {gpu} |")
    return "\n".join(rows)


def refresh_readme() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    start, end = "<!-- chapter-table -->", "<!-- /chapter-table -->"
    if start not in text or end not in text:
        raise SystemExit("README.md lacks the chapter-table markers")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{chapter_table()}\n{end}{tail}", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--all", action="store_true")
    parser.add_argument("--quick", action="store_true", help="MINILLM_QUICK=1 (not for committed outputs)")
    parser.add_argument("--timeout", type=int, default=3600, help="per-cell timeout, seconds")
    parser.add_argument("--readme-only", action="store_true")
    args = parser.parse_args()
    paths = args.paths
    if args.all:
        paths = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb"))
    if not args.readme_only:
        for path in paths:
            print(f"running {path} ...", flush=True)
            seconds = execute(path.resolve(), quick=args.quick, timeout=args.timeout)
            print(f"  {seconds:7.1f} s  {path}", flush=True)
        if any("solutions" in str(p) for p in paths):
            subprocess.run([sys.executable, "-m", "minillm.exercises", "--root", str(ROOT)], check=True)
    refresh_readme()


if __name__ == "__main__":
    main()
