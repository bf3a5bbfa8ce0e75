"""Several claims about a fresh interpreter checked in ONE plain interpreter (``subprocess.run`` of
``sys.executable``), each reported on its own so that each test asserts its own claim with its own message.

A claim file lists its claims in the order they run; each must leave the interpreter as it found it in the
respect the next one tests (a claim "X does not import verl" before one that imports it, never after).
``HELPERS`` is the probe's preamble: ``claim(name)`` records what a function returns (or its traceback) and
whether verl and Ray are imported afterwards; ``run_entry(module, args)`` runs ``python -m MODULE ARGS`` as
``runpy`` does, with the process's file descriptors 1 and 2 caught for that run (libraries' C-level output
included), and returns its exit status, stdout and stderr.
"""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HELPERS = r'''
import json, os, runpy, sys, tempfile, traceback

results = {}


def claim(name):
    def run(fn):
        try:
            results[name] = {"ok": True, **(fn() or {})}
        except BaseException:  # noqa: BLE001 - every claim reports, none stops the others
            results[name] = {"ok": False, "error": traceback.format_exc()[-3000:]}
        results[name]["verl imported"] = "verl" in sys.modules
        results[name]["ray imported"] = "ray" in sys.modules
    return run


def run_entry(module, args):
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    caught = {fd: tempfile.TemporaryFile() for fd in (1, 2)}
    status, argv = 0, sys.argv
    sys.stdout.flush(); sys.stderr.flush()
    for fd in (1, 2):
        os.dup2(caught[fd].fileno(), fd)
    try:
        sys.argv = [module, *args]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit:
        status = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    finally:
        sys.argv = argv
        sys.stdout.flush(); sys.stderr.flush()
        for fd in (1, 2):
            os.dup2(saved[fd], fd)
            os.close(saved[fd])
    text = {}
    for fd in (1, 2):
        caught[fd].seek(0)
        text[fd] = caught[fd].read().decode(errors="replace")
        caught[fd].close()
    return {"status": status, "stdout": text[1], "stderr": text[2]}


def entry_runs(runs):
    """``runs``: [[claim name, module, args], ...], in order."""
    for name, module, args in runs:
        claim(name)(lambda module=module, args=args: run_entry(module, args))
'''


def run_claims(body: str, *, argument=None, env=None, cwd="/", timeout=300) -> dict:
    """``HELPERS + body`` in one fresh interpreter (cwd ``/``, no ``VERL_USE_EXTERNAL_*``, this checkout first
    on ``PYTHONPATH``); ``argument`` reaches it JSON-encoded as ``sys.argv[1]``. Returns ``{claim: result}``."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_USE_EXTERNAL")}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, full_env.get("PYTHONPATH")]))
    full_env.update(env or {})
    code = HELPERS + body + "\nprint(json.dumps(results))\n"
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(argument)], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def claim(results: dict, name: str) -> dict:
    """One claim's result; fails with its traceback if the claim raised."""
    result = results[name]
    assert result["ok"], f"{name}: {result.get('error')}"
    return result
