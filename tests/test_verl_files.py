"""verl's files found without ``import verl`` agree with what importing verl finds."""

import importlib
import importlib.resources
import os
import sys

import pytest

from verl_dgpo.verl_glue import verl_files

import warm_python  # tests/warm_python.py


def test_lookup_runs_no_verl_code():
    code = "import sys; from verl_dgpo.verl_glue import verl_files as f; f.config_dir(); f.has_module('verl.trainer.main_ppo'); print('verl' in sys.modules)"
    assert warm_python.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip() == "False"


def test_package_and_config_folders_are_the_imported_ones():
    import verl

    assert os.path.samefile(verl_files.package_dir(), os.path.dirname(verl.__file__))
    assert os.path.samefile(verl_files.config_dir(), str(importlib.resources.files("verl.trainer.config")))


@pytest.mark.parametrize("module", ["verl.trainer.main_ppo", "verl.trainer.ppo", "verl.trainer.no_such_module", "verl.nope.deeper"])
def test_has_module_agrees_with_the_import(module):
    try:
        importlib.import_module(module)
        importable = True
    except ModuleNotFoundError:
        importable = False
    assert verl_files.has_module(module) is importable


def test_names_outside_verl_are_not_verls():
    assert verl_files.has_module("torch.nn") is False
