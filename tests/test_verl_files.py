"""verl's files found without ``import verl`` agree with what importing verl finds."""

import importlib
import importlib.resources
import os

import pytest

from verl_dgpo.verl_glue import verl_files



# that the lookup runs no verl code: tests/test_without_verl.py (one fresh interpreter for such claims)


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
