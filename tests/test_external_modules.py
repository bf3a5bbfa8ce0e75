"""One helper extends ``VERL_USE_EXTERNAL_MODULES`` for the driver, the local preset and the study."""

from verl_dgpo.verl_glue.external_modules import VARIABLE, add_external_module, external_modules


def test_adds_to_an_empty_environment():
    env = {}
    add_external_module("pkg.mod", env)
    assert env == {VARIABLE: "pkg.mod"}


def test_keeps_existing_entries_in_order_and_skips_duplicates():
    env = {VARIABLE: "a, b,,"}
    add_external_module("c", env)
    add_external_module("a", env)
    assert env[VARIABLE] == "a,b,c"
    assert external_modules(env) == ["a", "b", "c"]
