"""Can verl's trainer start next to the installed TRL? Decided by reading files, without importing TRL.

Whenever ``trl`` is importable, verl's model set-up imports TRL's value-head model:
``verl/models/transformers/monkey_patch.py::apply_monkey_patch`` and ``verl/utils/model.py`` run
``from trl.experimental.ppo import AutoModelForCausalLMWithValueHead`` and, on ImportError,
``from trl import AutoModelForCausalLMWithValueHead``. TRL 1.13.0 removed ``trl/experimental/ppo/`` (and
the top-level name had gone before), so with such a TRL the actor's ``init_model`` fails with an
ImportError inside a Ray worker, after Ray started. :func:`check_verl_can_import_trl` finds that out on the
driver, before Ray, by looking for the class in TRL's source files (``importlib.util.find_spec("trl")``
locates the package without running it; TRL's own import takes seconds). Pure Python: no verl, no TRL import.
"""

from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path
from typing import Optional

#: What verl imports from TRL, in the order verl tries: (module, class).
VERL_IMPORTS = (
    ("trl.experimental.ppo", "AutoModelForCausalLMWithValueHead"),
    ("trl", "AutoModelForCausalLMWithValueHead"),
)


class TRLIncompatibleError(RuntimeError):
    """The installed TRL lacks the class verl's trainer imports from it."""


def _package_dir() -> Optional[Path]:
    """The installed ``trl`` package's folder, or None when ``trl`` is not importable (verl then skips TRL)."""
    from verl_dgpo.verl_glue.verl_files import package_dir

    folder = package_dir("trl")
    return Path(folder) if folder else None


def _names_in(init_file: Path) -> set[str]:
    """Every name ``init_file`` defines, imports, or lists as a string (TRL's lazy ``_import_structure``)."""
    try:
        tree = ast.parse(init_file.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)
    return names


def provides(package_dir: Path, module: str, name: str) -> bool:
    """Whether ``from {module} import {name}`` finds ``name`` in the TRL installed at ``package_dir``."""
    parts = module.split(".")[1:]  # below "trl"
    init_file = package_dir.joinpath(*parts, "__init__.py")
    return init_file.is_file() and name in _names_in(init_file)


def installed_trl(package_dir: Path) -> str:
    """``trl==X`` from the distribution metadata next to ``package_dir`` (no import), else ``trl``."""
    for dist in importlib.metadata.distributions(path=[str(package_dir.parent)]):
        if (dist.metadata["Name"] or "").lower() == "trl":
            return f"trl=={dist.version}"
    return "trl (version unknown)"


def check_verl_can_import_trl(package_dir: Optional[Path] = None) -> None:
    """Raise :class:`TRLIncompatibleError` (one line) if TRL is importable but lacks verl's value-head class.

    ``package_dir`` defaults to the installed ``trl``'s folder; no TRL at all is fine (verl skips it).
    """
    package_dir = _package_dir() if package_dir is None else package_dir
    if package_dir is None or any(provides(package_dir, module, name) for module, name in VERL_IMPORTS):
        return
    wanted = " or ".join(f"{module}.{name}" for module, name in VERL_IMPORTS)
    raise TRLIncompatibleError(
        f"{installed_trl(package_dir)} is installed ({package_dir}) but has no {wanted}, which verl's trainer imports "
        "whenever TRL is importable (its actor would fail with an ImportError after Ray starts). "
        "Either `pip install 'trl<1.13'` here, or uninstall TRL here and use TRL in an environment of its own."
    )
