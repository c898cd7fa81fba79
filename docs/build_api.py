"""Build the API reference (HTML, one page per module) from the docstrings with pdoc, offline.

    pip install -e ".[docs]"              # or the test extra
    python docs/build_api.py              # every public module -> docs/api/ (git-ignored)
    python docs/build_api.py mp_contrastive.losses --out /tmp/api

Math (``:math:`` and ``.. math::``) is rendered by MathJax when the pages are opened online;
offline it shows as LaTeX source.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / "api"
# `python docs/build_api.py` puts docs/ first on sys.path, not the checkout: without this an
# installed copy of the package (another checkout's editable install) would be documented.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


#: Subpackages that are public Python but not the library's API: the experiment harness the
#: examples and benchmarks share (its package docstring says so).
NOT_API = ("experiments",)


def public_modules(package: str = "mp_contrastive") -> list[str]:
    """``package`` and every submodule below it whose dotted name has no ``_``-prefixed part, less
    :data:`NOT_API`: the public surface. Each page shows its module's ``__all__`` (pdoc's rule),
    nothing else."""
    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        parts = info.name.split(".")[1:]
        if not any(part.startswith("_") for part in parts) and parts[0] not in NOT_API:
            names.append(info.name)
    return sorted(names)


def build(modules: Sequence[str], out: str | Path = DEFAULT_OUT) -> list[Path]:
    """Write the HTML pages of ``modules`` (dotted names) and pdoc's index into ``out``; return
    the module pages written."""
    try:
        import pdoc
        import pdoc.render
    except ImportError as error:
        raise ImportError("the API reference needs pdoc: pip install -e '.[docs]'") from error
    if not modules:
        raise ValueError("'modules' must name at least one module, got none")
    out = Path(out)
    # The docstrings use Google-style "Args:" sections with reST roles and math.
    pdoc.render.configure(docformat="google", math=True, show_source=False)
    with warnings.catch_warnings():
        # A package's page already includes the submodules in its __all__ (mp_contrastive.nn):
        # naming them as well is harmless, and pdoc says so once per module.
        warnings.filterwarnings("ignore", message="The module specification .* already been added")
        pdoc.pdoc(*modules, output_directory=out)
    return [out / (name.replace(".", "/") + ".html") for name in modules]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*",
                        help="dotted module names (default: every public mp_contrastive module)")
    parser.add_argument("--out", default=str(DEFAULT_OUT),
                        help=f"output folder (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    pages = build(args.modules or public_modules(), args.out)
    missing = [page for page in pages if not page.exists()]
    for page in missing:
        print(f"not written (import failed?): {page}", file=sys.stderr)
    print(f"{len(pages) - len(missing)} module pages in {args.out} (open index.html)")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
