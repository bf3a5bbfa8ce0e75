"""verl's trainer next to a TRL it cannot import: the file-based check, its agreement with a real import,
and the entry point's one line (exit 2, before Ray)."""

import subprocess
import sys
from pathlib import Path

import pytest

from verl_dgpo.startup.trl_compat import TRLIncompatibleError, check_verl_can_import_trl, provides


REPO = Path(__file__).resolve().parents[1]


def fake_trl(root: Path, version: str, files: dict[str, str]) -> Path:
    """A ``trl`` package folder under ``root`` with ``files`` (relative path -> text) and its dist-info."""
    package = root / "trl"
    for relative, text in {"__init__.py": '"""fake"""\n', **files}.items():
        (package / relative).parent.mkdir(parents=True, exist_ok=True)
        (package / relative).write_text(text)
    info = root / f"trl-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: trl\nVersion: {version}\n")
    return package


PPO_INIT = "from .modeling_value_head import AutoModelForCausalLMWithValueHead, PreTrainedModelWrapper\n"


def test_trl_with_experimental_ppo_passes(tmp_path):
    package = fake_trl(tmp_path, "1.12.0", {"experimental/__init__.py": "", "experimental/ppo/__init__.py": PPO_INIT})
    check_verl_can_import_trl(package)


def test_old_trl_with_top_level_lazy_name_passes(tmp_path):
    lazy = '_import_structure = {"models": ["AutoModelForCausalLMWithValueHead", "create_reference_model"]}\n'
    check_verl_can_import_trl(fake_trl(tmp_path, "0.19.0", {"__init__.py": lazy}))


def test_trl_without_the_class_is_refused_in_one_line(tmp_path):
    package = fake_trl(tmp_path, "1.16.0", {"experimental/__init__.py": "", "experimental/gmpo/__init__.py": ""})
    with pytest.raises(TRLIncompatibleError) as caught:
        check_verl_can_import_trl(package)
    message = str(caught.value)
    assert "\n" not in message
    for part in ("trl==1.16.0", "trl.experimental.ppo.AutoModelForCausalLMWithValueHead", "trl<1.13", "environment of its own"):
        assert part in message


def test_a_mention_in_a_comment_is_not_the_class(tmp_path):
    package = fake_trl(tmp_path, "1.16.0", {"__init__.py": "# AutoModelForCausalLMWithValueHead was removed\n"})
    with pytest.raises(TRLIncompatibleError):
        check_verl_can_import_trl(package)


def test_no_trl_at_all_passes(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    check_verl_can_import_trl()


def test_file_check_agrees_with_verls_own_import_of_the_installed_trl():
    """The reference: verl's own two imports, run in a fresh process against the installed TRL."""
    pytest.importorskip("trl")
    probe = (
        "try:\n from trl.experimental.ppo import AutoModelForCausalLMWithValueHead\n"
        "except ImportError:\n"
        " try:\n  from trl import AutoModelForCausalLMWithValueHead\n except ImportError:\n  raise SystemExit(3)\n"
    )
    imports = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=300).returncode == 0
    import importlib.util

    package = Path(next(iter(importlib.util.find_spec("trl").submodule_search_locations)))
    found = provides(package, "trl.experimental.ppo", "AutoModelForCausalLMWithValueHead") or provides(
        package, "trl", "AutoModelForCausalLMWithValueHead"
    )
    assert found == imports


def test_entry_point_refuses_before_ray_with_one_line(tmp_path):
    fake_trl(tmp_path, "1.16.0", {"experimental/__init__.py": ""})
    env = {**__import__("os").environ, "PYTHONPATH": f"{tmp_path}:{REPO}"}
    done = subprocess.run(
        [sys.executable, "-m", "verl_dgpo.main", "--config-name", "local_cpu"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [lines[-1]] and lines[-1].startswith("verl-dgpo: error: trl==1.16.0 is installed"), done.stderr
    assert "ray" not in done.stdout.lower()
