"""``python ARGS`` as a fresh interpreter runs it, forked from one that has already imported the heavy libraries.

Many tests start a fresh interpreter because their claim is about a first import: importing verl_dgpo
changes nothing in verl, the loss registers whichever module comes first, the entry point refuses a bad key
before verl is imported. Most of the CPU such a process spends goes to importing torch, transformers,
pandas, sympy and the like, which no such claim is about (``python scripts/bench_warm_python.py``).

``run`` forks the command from a server process (one per test process, started on first use) that has
imported only those (``PRELOADED``; never verl, verl_dgpo, TRL, Ray, hydra or omegaconf) and runs it as
CPython would: ``sys.path`` from the command's cwd and ``PYTHONPATH``, ``sys.argv``, ``__main__``, the exit
status of ``SystemExit`` or of an uncaught exception, non-daemon threads joined and atexit handlers run at
the end.

What differs from a cold start, so that tests whose claim touches it keep ``subprocess.run``: the preloaded
modules are already in ``sys.modules`` (a test listing every imported module would see them). Where
importing them prints anything (a library's warning in some environment), a cold start would print it to
the command's output, so commands run cold there instead. Environment variables read at interpreter or
library start-up cannot change per command: a command whose environment differs from a server's in any
variable but the ones read later (``LATE_ENV``) gets a server of its own.
"""

import json
import locale
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time

#: Imported by the server before any command: the third-party part of ``import verl`` (what that saves each
#: command: ``python scripts/bench_warm_python.py``). A module missing in some environment is skipped.
PRELOADED = (
    "torch", "numpy", "pandas", "pyarrow", "pyarrow.parquet", "scipy", "sympy", "botocore", "datasets",
    "accelerate", "transformers", "transformers.modeling_utils", "transformers.configuration_utils",
    "transformers.tokenization_utils_base",
)  # fmt: skip

#: Environment variables a command may set without a server of its own: the preloaded libraries and the
#: interpreter do not read them at start-up (``PYTHONPATH`` is applied to the command's ``sys.path`` here).
LATE_ENV = ("PYTHONPATH", "VERL_", "PYTEST_", "WANDB_", "HYDRA_", "RAY_", "CI", "LOCAL_CPU", "TOY", "PIPELINE_")

_servers: dict[tuple, "_Server"] = {}
_one_at_a_time = threading.Lock()  # a server answers one command at a time


def _early_env(env: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in env.items() if not k.startswith(LATE_ENV)))


class _Server:
    def __init__(self, env: dict):
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        server_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), str(request_r), str(reply_w), *PRELOADED],
            pass_fds=(request_r, reply_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env=server_env, cwd=os.path.dirname(os.path.abspath(__file__)),
        )  # fmt: skip
        os.close(request_r)
        os.close(reply_w)
        self.requests = os.fdopen(request_w, "w", buffering=1)
        self.replies, self.unread = reply_r, b""
        # A cold start would print this to the command's own output: commands then run cold (subprocess.run).
        self.preload_printed = self.reply()["preload_output"]

    def reply(self, timeout=None) -> dict | None:
        """The server's next line, or None once ``timeout`` seconds pass without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.unread:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.replies], [], [], left)[0]:
                return None
            more = os.read(self.replies, 1 << 16)
            if not more:
                raise RuntimeError(f"the warm interpreter (pid {self.proc.pid}) died: exit {self.proc.wait()}")
            self.unread += more
        line, self.unread = self.unread.split(b"\n", 1)
        return json.loads(line)


def run(args, *, env=None, cwd=None, input=None, timeout=None, capture_output=True, text=True):
    """``subprocess.run(args, capture_output=True, ...)`` for ``args = [sys.executable, ...]`` where ``...`` is
    ``-c CODE``, ``-m MODULE`` or a script path, followed by its arguments."""
    args = [str(a) for a in args]
    assert args[0] == sys.executable and len(args) >= 2 and capture_output, args
    assert not (args[1].startswith("-") and args[1] not in ("-c", "-m")), f"interpreter option {args[1]} not supported"
    env = dict(os.environ if env is None else env)
    with _one_at_a_time:
        return _run(args, env, cwd, input, timeout, text)


def _run(args, env, cwd, input, timeout, text):
    server = _servers.get(_early_env(env))
    if server is None or server.proc.poll() is not None:
        server = _servers[_early_env(env)] = _Server(env)
    if server.preload_printed:
        return subprocess.run(args, env=env, cwd=cwd, input=input, timeout=timeout, capture_output=True, text=text)
    with tempfile.TemporaryDirectory(prefix="warm-python-") as folder:
        paths = {name: os.path.join(folder, name) for name in ("stdin", "stdout", "stderr")}
        stdin = input.encode() if isinstance(input, str) else input or b""
        for name in paths:
            with open(paths[name], "wb") as f:
                f.write(stdin if name == "stdin" else b"")
        server.requests.write(json.dumps({"argv": args[1:], "env": env, "cwd": os.path.abspath(cwd or os.getcwd()),
                                          **paths}) + "\n")
        pid = server.reply()["pid"]
        done = server.reply(timeout)
        if done is None:
            os.kill(pid, signal.SIGKILL)
            server.reply()
        out, err = (_read(paths[name]) for name in ("stdout", "stderr"))
    if text:
        encoding = locale.getpreferredencoding(False)
        out, err = (b.decode(encoding).replace("\r\n", "\n") for b in (out, err))
    if done is None:
        raise subprocess.TimeoutExpired(args, timeout, output=out, stderr=err)
    return subprocess.CompletedProcess(args, done["returncode"], out, err)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# --- the server ------------------------------------------------------------------------------------------


def _serve(request_fd: int, reply_fd: int, preloaded: list) -> None:
    import importlib

    base_path = sys.path[1:]  # this file's folder comes first: not a place to import libraries from
    sys.path[:] = base_path  # each command gets its own first entry instead
    quiet = (os.dup(1), os.dup(2))
    with tempfile.TemporaryFile() as said:
        os.dup2(said.fileno(), 1)
        os.dup2(said.fileno(), 2)
        for name in preloaded:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001  (an environment without it: the command imports what it needs)
                pass
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in ((1, quiet[0]), (2, quiet[1])):
            os.dup2(saved, fd)
            os.close(saved)
        said.seek(0)
        preload_output = said.read().decode(errors="replace")
    requests = os.fdopen(request_fd, "r")
    replies = os.fdopen(reply_fd, "w", buffering=1)
    replies.write(json.dumps({"preload_output": preload_output}) + "\n")
    for line in requests:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            requests.close()
            replies.close()
            _command(request, base_path)  # never returns
        replies.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")


def _command(request: dict, base_path: list) -> None:
    import atexit
    import runpy
    import threading
    import traceback
    import types

    code = 1
    try:
        for fd, name, flags in ((0, "stdin", os.O_RDONLY), (1, "stdout", os.O_WRONLY), (2, "stderr", os.O_WRONLY)):
            target = os.open(request[name], flags)
            os.dup2(target, fd)
            os.close(target)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        option, *rest = request["argv"]
        first = {"-c": "", "-m": os.getcwd()}.get(option, os.path.dirname(os.path.realpath(option)))
        extra = [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)] if os.environ.get(
            "PYTHONPATH") else []  # fmt: skip
        sys.path[:] = [first, *extra, *base_path]
        try:
            if option == "-c":
                sys.argv = ["-c", *rest[1:]]
                main = types.ModuleType("__main__")
                sys.modules["__main__"] = main
                exec(compile(rest[0], "<string>", "exec"), main.__dict__)
            elif option == "-m":
                sys.argv = ["-m", *rest[1:]]
                runpy.run_module(rest[0], run_name="__main__", alter_sys=True)
            else:
                sys.argv = [option, *rest]
                runpy.run_path(option, run_name="__main__")
            code = 0
        except SystemExit as stop:
            if stop.code is None:
                code = 0
            elif isinstance(stop.code, int):
                code = stop.code & 0xFF
            else:
                print(stop.code, file=sys.stderr)
                code = 1
        except BaseException as error:  # noqa: BLE001  (what CPython does with an uncaught exception)
            frames = error.__traceback__
            while frames is not None and frames.tb_frame.f_code.co_filename == __file__:
                frames = frames.tb_next  # the traceback starts where the command's own code does
            sys.excepthook(type(error), error.with_traceback(frames), frames)
            code = 1
        threading._shutdown()
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])
