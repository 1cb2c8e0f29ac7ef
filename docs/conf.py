"""Sphinx configuration of the nntk_array documentation.

Build (warnings are errors, as in CI)::

    pip install ".[docs]"
    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import nntk_array

project = "nntk_array"
author = "nntk_array developers"
copyright = "nntk_array developers"
version = release = nntk_array.__version__

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# MyST: $...$ and $$...$$ math, ::: fences, definition lists.
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# API reference: one generated page per public name (docs/api/generated, not committed).
autosummary_generate = True
autosummary_imported_members = False
autosummary_ignore_module_all = False
autodoc_typehints = "none"  # the numpydoc sections carry types and shapes
autodoc_default_options = {"member-order": "bysource"}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# Every documented public object needs its parameters, returns and a runnable example
# (the examples run as doctests: ``pytest --doctest-modules nntk_array``).
numpydoc_validation_checks = {"GL08", "PR01", "PR02", "RT01", "EX01"}
# A typing.Protocol's (Model's, KernelOperator's) constructor is typing's (*args, **kwargs),
# not one users call; its members are validated like everything else.
numpydoc_validation_exclude = {r"^nntk_array\.Model$", r"^nntk_array\.KernelOperator$"}

# No network on the build machines: no intersphinx.
html_theme = "pydata_sphinx_theme"
html_title = f"nntk_array {release}"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_context = {"default_mode": "light"}


def _check_api_reference(app: object) -> None:
    """Warn (an error under -W) when a name of ``nntk_array.__all__`` is missing from api.md."""
    import re
    from pathlib import Path

    from sphinx.util import logging

    text = Path(__file__).with_name("api.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\s+([A-Za-z_][A-Za-z0-9_]*)\s*$", text, flags=re.MULTILINE))
    listed |= set(re.findall(r"py:data:: (\w+)", text))
    missing = sorted(set(nntk_array.__all__) - listed)
    if missing:
        logging.getLogger(__name__).warning(
            "public names missing from docs/api.md: %s", ", ".join(missing)
        )


def setup(app: object) -> None:
    app.connect("builder-inited", _check_api_reference)  # type: ignore[attr-defined]
