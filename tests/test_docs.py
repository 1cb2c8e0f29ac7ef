"""The documentation's code runs: every top-level ```python block of the Markdown pages in
``docs/``, page by page (blocks of one page share a namespace, as a reader's session does).

Indented blocks (inside lists) show configuration for machines CI does not have (batch
schedulers, Kubernetes) and are not run. Pages for a library that is not installed skip.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
NEEDS = {  # page -> modules it imports that are optional
    "getting-started/cupy.md": ("cupy",),
    "getting-started/pytorch.md": ("torch",),
    "getting-started/jax.md": ("jax",),
    "distributed.md": ("dask", "distributed"),
}
PAGES = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if "_build" not in p.parts)


@pytest.mark.parametrize("page", [p for p in PAGES if BLOCK.search((DOCS / p).read_text())])
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::ResourceWarning")
def test_page_code_runs(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in NEEDS.get(page, ()):
        pytest.importorskip(module)
    monkeypatch.chdir(tmp_path)  # pages may write files (figures)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    try:
        for i, code in enumerate(BLOCK.findall((DOCS / page).read_text())):
            exec(compile(code, f"{page}[block {i}]", "exec"), namespace)
    finally:
        client = namespace.get("client")
        if client is not None and hasattr(client, "close"):
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()
