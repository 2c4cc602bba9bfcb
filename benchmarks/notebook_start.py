"""Cold start of a widget notebook: from a fresh kernel to every panel built, against a bare kernel.

Run: ``python benchmarks/notebook_start.py [--notebook Lora_Trainer_Widget.ipynb] [--rounds 3] [--browser]
[--importtime]``.

Measured side by side, rounds interleaved, medians printed:

1. bare: start a fresh kernel and run one empty cell (the floor no notebook can beat);
2. notebook: start a fresh kernel and run every cell of the notebook (nbclient, the project as the working
   folder), with the time of each cell; "open and render" is the whole of it, from kernel start to the last
   panel built. The goal is under 3 s.

``--browser`` also opens the notebook in JupyterLab with the system Chromium and times Run All until every
panel is drawn in the page. ``--importtime`` lists the slowest imports of the panel modules
(``python -X importtime``), to find what a slow panel pulls in.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
MARKER = "@@kernel-preloaded@@"


def _cells(notebook_path: Path) -> tuple[list[str], list[str]]:
    """Ids and sources of the notebook's code cells."""
    import nbformat

    notebook = nbformat.read(notebook_path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    return [cell.get("id", str(i)) for i, cell in enumerate(code)], [cell.source for cell in code]


CPU_PROBE = "import resource as _r\n_u = _r.getrusage(_r.RUSAGE_SELF)\nprint(_u.ru_utime + _u.ru_stime)"


def run_fresh_kernel(sources: list[str]) -> tuple[float, float, list[float], float]:
    """Start a kernel, run ``sources`` one cell each; returns (kernel start s, total s, per-cell s, kernel CPU s).

    The kernel's CPU time (its whole life: start-up and every cell) hardly depends on what else runs on the
    machine, unlike the wall-clock figures, so it shows what a quiet machine would take."""
    from nbclient import NotebookClient
    from nbformat import v4

    notebook = v4.new_notebook(cells=[v4.new_code_cell(source) for source in sources])
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(PROJECT_ROOT)}})
    started = time.perf_counter()
    per_cell: list[float] = []
    with client.setup_kernel():
        ready = time.perf_counter()
        for index, cell in enumerate(notebook.cells):
            before = time.perf_counter()
            client.execute_cell(cell, index)
            per_cell.append(time.perf_counter() - before)
        total = time.perf_counter() - started
        probe = v4.new_code_cell(CPU_PROBE)
        notebook.cells.append(probe)
        client.execute_cell(probe, len(notebook.cells) - 1)
    cpu = float(probe.outputs[0]["text"])
    errors = [out for cell in notebook.cells for out in cell.outputs if out.output_type == "error"]
    if errors:
        raise SystemExit(f"a cell failed: {errors[0].ename}: {errors[0].evalue}")
    return ready - started, total, per_cell, cpu


def measure_kernels(notebook_path: Path, rounds: int) -> None:
    """The bare kernel and the notebook, interleaved; prints medians and the per-cell table."""
    ids, sources = _cells(notebook_path)
    bare, bare_cpu, kernel, totals, cells, cpus = [], [], [], [], [], []
    for round_index in range(rounds):
        _, bare_total, _, cpu = run_fresh_kernel(["pass"])
        bare.append(bare_total)
        bare_cpu.append(cpu)
        start, total, per_cell, cpu = run_fresh_kernel(sources)
        kernel.append(start)
        totals.append(total)
        cells.append(per_cell)
        cpus.append(cpu)
        print(f"round {round_index + 1}: bare kernel {bare[-1]:.2f} s, notebook {total:.2f} s", flush=True)
    median = statistics.median
    print(f"\n{notebook_path.name}, {rounds} rounds, medians:")
    print(f"  bare kernel (start + empty cell)       {median(bare):6.2f} s")
    print(f"  notebook kernel start                  {median(kernel):6.2f} s")
    for index, cell_id in enumerate(ids):
        print(f"  cell {cell_id:<33s} {median(c[index] for c in cells):6.2f} s")
    print(f"  open and render (kernel start to last panel built) {median(totals):.2f} s"
          f"  (goal < 3 s; {median(totals) - median(bare):.2f} s above a bare kernel)")
    print(f"  kernel CPU time: bare {median(bare_cpu):.2f} s, notebook {median(cpus):.2f} s "
          f"(the panels: {median(cpus) - median(bare_cpu):.2f} s of CPU)")


def measure_browser(notebook_path: Path) -> None:
    """Open the notebook in JupyterLab (system Chromium) and time Run All until every panel is drawn."""
    import nbformat

    from tests.lab_browser import chromium_page, lab_server, run_notebook

    notebook = nbformat.read(notebook_path, as_version=4)
    panels = sum(1 for cell in notebook.cells if cell.cell_type == "code") - 1  # all but the context cell
    with tempfile.TemporaryDirectory() as scratch:
        with lab_server(Path(scratch), env={"LORA_WORK_DIR": str(Path(scratch) / "work")}) as server, \
                chromium_page() as page:
            started = time.perf_counter()
            drawn = run_notebook(page, server, notebook_path.name, ["?"] * panels)
            opened = time.perf_counter() - started
    print(f"  browser: page open to all {panels} panels drawn {opened:.2f} s; Run All to all drawn {drawn:.2f} s")


def show_importtime(sources: list[str], top: int = 12) -> None:
    """The slowest imports (cumulative) of the notebook's import lines, from ``python -X importtime``."""
    imports = "\n".join(line for source in sources for line in source.splitlines()
                        if line.startswith(("from ", "import ")))
    # What a kernel has loaded before any cell runs is not the panels' cost: import it first, then a marker.
    preamble = f"import ipykernel.ipkernel, ipywidgets, IPython.display, sys\nsys.stderr.write('{MARKER}\\n')\n"
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", preamble + imports], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=300)
    rows = []
    for line in done.stderr.split(MARKER, 1)[-1].splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    print(f"\nslowest imports (cumulative ms; what a kernel already has is left out) of:\n{imports}")
    for micros, name in sorted(rows, reverse=True)[:top]:
        print(f"  {micros / 1000:8.1f} ms {name}")


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebook", default="Lora_Trainer_Widget.ipynb")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--browser", action="store_true", help="also time rendering in JupyterLab + Chromium")
    parser.add_argument("--importtime", action="store_true", help="list the slowest imports of the panels")
    args = parser.parse_args(argv)
    notebook_path = PROJECT_ROOT / args.notebook
    with tempfile.TemporaryDirectory() as work:
        os.environ["LORA_WORK_DIR"] = work  # kernels inherit it: the panels' folders land in a scratch place
        print(f"machine load average: {', '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        measure_kernels(notebook_path, args.rounds)
        if args.browser:
            measure_browser(notebook_path)
        if args.importtime:
            show_importtime(_cells(notebook_path)[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
