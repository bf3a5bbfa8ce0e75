"""tests/warm_python.py runs a command as a fresh interpreter does: compared here with subprocess.run itself."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

import warm_python  # tests/warm_python.py

#: Prints what a command can observe of its start: where imports come from (up to the installed packages),
#: its arguments, folder, environment and __name__; a non-daemon thread and an atexit handler print at the end.
PROBE = textwrap.dedent(
    """
    import atexit, os, sys, threading, time
    site = next(i for i, p in enumerate(sys.path) if "python3" in p or "site-packages" in p)
    print("path", sys.path[:site])
    print("argv", sys.argv[1:], "cwd", os.getcwd(), "X", os.environ.get("VERL_DGPO_WARM_PROBE"), "name", __name__)
    print("to stderr", file=sys.stderr)
    atexit.register(print, "atexit ran")
    threading.Thread(target=lambda: (time.sleep(0.2), print("thread joined"))).start()
    if sys.argv[1:] and sys.argv[1] != "0":
        sys.exit(int(sys.argv[1]) if sys.argv[1].isdigit() else sys.argv[1])
    """
)


def both(args, **kwargs):
    """(returncode, stdout, stderr) of a cold and of a warm run of the same command."""
    cold = subprocess.run(args, capture_output=True, text=True, **kwargs)
    warm = warm_python.run(args, capture_output=True, text=True, **kwargs)
    return (cold.returncode, cold.stdout, cold.stderr), (warm.returncode, warm.stdout, warm.stderr)


@pytest.fixture
def probes(tmp_path):
    """The probe as a script and as a module ``warm_probe`` in a folder that only PYTHONPATH names."""
    (tmp_path / "script").mkdir()
    (tmp_path / "lib").mkdir()
    (tmp_path / "script" / "probe.py").write_text(PROBE)
    (tmp_path / "lib" / "warm_probe.py").write_text(PROBE)
    return tmp_path


@pytest.mark.parametrize("form", ["-c", "-m", "script"])
@pytest.mark.parametrize("exit_with", ["0", "3", "a message"])
def test_a_command_observes_what_it_would_in_a_fresh_interpreter(probes, form, exit_with):
    command = {"-c": ["-c", PROBE], "-m": ["-m", "warm_probe"], "script": [str(probes / "script" / "probe.py")]}[form]
    env = dict(os.environ, VERL_DGPO_WARM_PROBE="x", PYTHONPATH=os.pathsep.join([str(probes / "lib"), ""]))
    cold, warm = both([sys.executable, *command, exit_with], env=env, cwd=str(probes))
    assert warm == cold
    assert cold[0] == {"0": 0, "3": 3, "a message": 1}[exit_with]
    assert "thread joined\natexit ran\n" in cold[1] and str(probes / "lib") in cold[1]


def test_an_uncaught_exception_prints_the_same_traceback_and_exits_1():
    cold, warm = both([sys.executable, "-c", "def f():\n    raise ValueError('boom')\nf()"])
    assert warm == cold and cold[0] == 1 and cold[2].endswith("ValueError: boom\n")


def test_stdin_reaches_the_command():
    cold, warm = both([sys.executable, "-c", "import sys; print(sys.stdin.read()[::-1])"], input="abc")
    assert warm == cold == (0, "cba\n", "")


def test_nothing_a_claim_is_about_is_imported_before_the_command():
    code = "import sys; print(sorted({m.split('.')[0] for m in sys.modules} & {'verl', 'verl_dgpo', 'trl', 'ray', 'hydra', 'omegaconf', 'transfer_queue'}))"
    done = warm_python.run([sys.executable, "-c", code])
    assert (done.returncode, done.stdout) == (0, "[]\n")
    assert warm_python.run([sys.executable, "-c", "import sys; print('torch' in sys.modules)"]).stdout == "True\n"


def test_a_command_past_its_timeout_is_killed(tmp_path):
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        warm_python.run([sys.executable, "-c", f"import os, time; open({str(tmp_path / 'pid')!r}, 'w').write(str(os.getpid())); time.sleep(60)"],
                        timeout=3)  # fmt: skip
    assert time.monotonic() - started < 30
    pid = int((tmp_path / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_quick_commands_in_a_row_each_get_their_own_result():
    """A command that ends before its start is read back must not hand its result to the next one."""
    for i in range(20):
        done = warm_python.run([sys.executable, "-c", f"print({i}); raise SystemExit({i % 3})"])
        assert (done.returncode, done.stdout) == (i % 3, f"{i}\n")


def test_commands_run_cold_where_preloading_prints(monkeypatch):
    """``import this`` prints: a warm command would lose that output, so commands run in a fresh interpreter."""
    monkeypatch.setattr(warm_python, "PRELOADED", ("this",))
    monkeypatch.setattr(warm_python, "_servers", {})
    done = warm_python.run([sys.executable, "-c", "import sys; print('this' in sys.modules)"])
    assert (done.returncode, done.stdout) == (0, "False\n")


def test_a_variable_read_at_import_takes_effect_as_in_a_fresh_interpreter():
    """huggingface_hub reads HF_HUB_OFFLINE when it is imported, which the server does (transformers imports it):
    a command that sets it differently gets a server started with it."""
    code = "import huggingface_hub.constants as c; print(c.HF_HUB_OFFLINE)"
    online = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    for offline in (False, True):
        env = dict(online, HF_HUB_OFFLINE="1") if offline else online
        cold, warm = both([sys.executable, "-c", code], env=env)
        assert warm == cold == (0, f"{offline}\n", "")
