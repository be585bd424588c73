"""rnnlab's top-level packages `models`, `tasks` and `flows`, loaded from rnnlab's own installation even where a
notebook's folder holds packages of those names, and the notebook's left to it.

Python looks a top-level name up on `sys.path` in order, and a notebook (or `python -c`, or a script) has its own
folder first there: its `models/` would be imported instead of rnnlab's, and rnnlab's code would fail inside it; or,
once rnnlab's is loaded, `import models` in the notebook would give it rnnlab's. One process cannot hold two
modules under one name, so each takes turns: for as long as an API call runs, the names are rnnlab's (its
installation first on `sys.path`, and its modules in `sys.modules`); after it, they are whatever a plain import would
give the notebook. The worker processes that a study spawns in between inherit that `sys.path`, so they load
rnnlab's code too. Nothing of the project is imported here: this module must work before those packages are safe to
import.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import rnnlab

NAMES = ("models", "tasks", "flows")
# Where rnnlab is installed: the folder holding rnnlab/ and its sibling packages (a checkout, or site-packages).
ROOT = Path(os.path.realpath(rnnlab.__file__)).parents[1]

# rnnlab's modules under those names, kept aside between calls while the notebook has its own under them.
_kept: dict[str, ModuleType] = {}


def top(name: str) -> str:
    return name.partition(".")[0]


def places(module: ModuleType | None) -> list[str]:
    """The files or folders a module was loaded from."""
    if module is None:
        return []
    spec = getattr(module, "__spec__", None)
    found = [getattr(module, "__file__", None) or getattr(spec, "origin", None)]
    found += list(getattr(module, "__path__", None) or [])
    return [os.path.realpath(p) for p in found if isinstance(p, str) and p not in ("namespace", "built-in")]


def is_rnnlabs(name: str, module_places: list[str]) -> bool:
    """Whether a module of that name, found at those places, is rnnlab's own."""
    home = str(ROOT / top(name))
    return bool(module_places) and all(p == home or p.startswith(home + os.sep) for p in module_places)


def spec_places(spec: importlib.machinery.ModuleSpec | None) -> list[str]:
    if spec is None:
        return []
    found = [spec.origin] if spec.has_location and spec.origin else []
    found += list(spec.submodule_search_locations or [])
    return [os.path.realpath(p) for p in found]


def plain_import_finds_rnnlabs(name: str) -> bool:
    """Whether `import name`, as the notebook would write it now, would load rnnlab's package (sys.modules aside)."""
    try:
        return is_rnnlabs(name, spec_places(importlib.util.find_spec(name)))
    except (ImportError, ValueError):
        return False


@contextlib.contextmanager
def rnnlab_packages() -> Iterator[None]:
    """Inside: `models`, `tasks` and `flows` (and their submodules) are rnnlab's, however the notebook's folder is
    laid out; the processes started inside inherit that. After: the notebook's own modules of those names are back
    where they were, and rnnlab's are kept aside unless a plain import would find them anyway."""
    theirs = {
        key: sys.modules.pop(key)
        for key in [k for k, m in sys.modules.items() if top(k) in NAMES and not is_rnnlabs(k, places(m))]
    }
    sys.modules.update({k: m for k, m in _kept.items() if k not in sys.modules})
    _kept.clear()
    sys.path.insert(0, str(ROOT))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(ROOT))  # the first such entry: the one put there above
        for name in NAMES:
            ours = {k: sys.modules.pop(k) for k in [k for k in sys.modules if top(k) == name]}
            if ours and (any(top(k) == name for k in theirs) or not plain_import_finds_rnnlabs(name)):
                _kept.update(ours)
            else:
                sys.modules.update(ours)
        sys.modules.update(theirs)
