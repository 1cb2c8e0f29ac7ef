"""Write the documentation's support matrix from what the test suite actually ran.

    python backends/support_matrix.py [TALLY.json ...] [-o docs/support-matrix.md]

Each tally is the JSON file that ``tests/conftest.py`` writes when ``NNTK_TALLY_FILE`` is set
(``backends/run <library>`` sets it to ``.backends/<library>/tally.json``, the default inputs
here). The page is a MyST Markdown table backend | version | device | dtype | passed | skipped |
failed, one row per library and dtype of each run, and a table of the runs themselves. Only the
libraries a run selected (``NNTK_BACKENDS``) are listed from it; tests that use no array
library are summarized per run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = ("numpy", "array_api_strict", "torch", "jax", "cupy")
DISPLAY = {
    "numpy": "NumPy",
    "array_api_strict": "array-api-strict",
    "torch": "PyTorch",
    "jax": "JAX",
    "cupy": "CuPy",
}
COMMAND = {"array_api_strict": "array-api-strict"}  # backends/run's name, where it differs
NOT_RUN_HINT = {"cupy": "needs an NVIDIA GPU"}
OUTCOMES = ("passed", "skipped", "failed")


def load(paths: list[Path]) -> list[dict]:
    tallies = []
    for path in paths:
        tally = json.loads(path.read_text(encoding="utf-8"))
        if tally.get("schema") != 1 or "rows" not in tally:
            raise SystemExit(f"{path}: not a tally written by tests/conftest.py (schema 1)")
        tally["path"] = str(path)
        tallies.append(tally)

    def first_backend(t: dict) -> int:
        selected = [ORDER.index(b) for b in t["backends_selected"] if b in ORDER]
        return min(selected, default=len(ORDER))

    return sorted(tallies, key=first_backend)


def run_label(tally: dict) -> str:
    run = tally.get("run")
    if run:
        return f"`{run['command']}`"
    return "`pytest` (NNTK_BACKENDS=" + ",".join(tally["backends_selected"]) + ")"


def table(header: list[str], rows: list[list[str]], numeric_from: int) -> list[str]:
    align = ["---" if i < numeric_from else "--:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def render(tallies: list[dict], today: datetime.date) -> str:
    matrix: list[list[str]] = []
    runs: list[list[str]] = []
    seen: set[str] = set()
    skips: dict[str, Counter[str]] = {}
    for tally in tallies:
        selected = set(tally["backends_selected"])
        rows = [r for r in tally["rows"] if r["backend"] in selected]
        rows.sort(key=lambda r: (ORDER.index(r["backend"]), r["dtype"]))
        for r in rows:
            seen.add(r["backend"])
            skips.setdefault(r["backend"], Counter()).update(r.get("skip_reasons", {}))
            matrix.append(
                [DISPLAY.get(r["backend"], r["backend"]), r["version"], f"`{r['device']}`"]
                + [r["dtype"]]
                + [str(r[o]) for o in OUTCOMES]
            )
        independent = [r for r in tally["rows"] if r["backend"] == "none"]
        counts = " / ".join(str(sum(r[o] for r in independent)) for o in OUTCOMES)
        runs.append(
            [
                run_label(tally),
                tally["created"][:10],
                f"{tally['python']}, {tally['platform']}",
                f"{tally.get('run', {}).get('pytest_s', tally['duration_s']):.0f} s",
                str(tally["exit_status"]),
                counts,
            ]
        )
    not_run = [b for b in ORDER if b not in seen]
    dates = sorted(t["created"][:10] for t in tallies)
    span = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"

    out = [
        "(support-matrix)=",
        "# Support matrix",
        "",
        "This page is generated from what the test suite actually ran, not written by hand. "
        "`backends/run <library>` creates a fresh virtual environment, installs nntk-array "
        "with its `test` extra and that library's requirements file (`backends/<library>.txt`), "
        "and runs the whole suite restricted to that library (`NNTK_BACKENDS`); the suite's "
        "`tests/conftest.py` counts every test's outcome per library and dtype and writes the "
        "counts as JSON (`NNTK_TALLY_FILE`), and `python backends/support_matrix.py` turns "
        "those files into this page. A row counts the tests run on one library in one dtype; "
        "the dtype `none` counts that library's tests that take no dtype parameter (for example "
        "input errors and the embedding examples).",
        "",
        f"Generated on {today.isoformat()} from {len(tallies)} "
        f"run{'s' if len(tallies) != 1 else ''} made {span}.",
        "",
        *table(
            ["backend", "version", "device", "dtype", "passed", "skipped", "failed"],
            matrix,
            numeric_from=4,
        ),
        "",
    ]
    if not_run:
        names = ", ".join(
            DISPLAY[b] + (f" ({NOT_RUN_HINT[b]})" if b in NOT_RUN_HINT else "") for b in not_run
        )
        out += [f"Not in these runs: {names}.", ""]
    if any(skips.values()):
        out += [
            "## Why tests were skipped",
            "",
            "Per library, the reasons the suite gave, over all dtypes:",
            "",
        ]
        for backend in ORDER:
            for reason, count in sorted(skips.get(backend, Counter()).items()):
                out.append(f"- {DISPLAY[backend]}: {count} × {reason}")
        out.append("")
    out += [
        "## Runs",
        "",
        "The last column counts the tests not tied to one library (doctests, and tests "
        "that make their own arrays); `backends/run` runs them once, in the NumPy "
        "environment.",
        "",
        *table(
            [
                "run",
                "date (UTC)",
                "Python, platform",
                "wall time",
                "exit status",
                "library-independent passed / skipped / failed",
            ],
            runs,
            numeric_from=3,
        ),
        "",
        "Regenerate it with:",
        "",
        "```bash",
        *(f"backends/run {COMMAND.get(b, b)}" for b in ORDER if b in seen),
        "python backends/support_matrix.py -o docs/support-matrix.md",
        "```",
        "",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "tallies",
        nargs="*",
        type=Path,
        help="tally JSON files (default: .backends/*/tally.json)",
    )
    parser.add_argument(
        "-o", "--output", type=Path, default=ROOT / "docs" / "support-matrix.md", help="page"
    )
    args = parser.parse_args(argv)
    paths = args.tallies or sorted((ROOT / ".backends").glob("*/tally.json"))
    if not paths:
        parser.error("no tally files given and none in .backends/*/tally.json: run backends/run")
    page = render(load(paths), datetime.datetime.now(datetime.timezone.utc).date())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(page, encoding="utf-8")
    print(f"wrote {args.output} from {len(paths)} tally file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
