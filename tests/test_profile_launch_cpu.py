"""scripts/profile_launch_cpu.py counts the CPU time of a command's child processes by role."""

import os
import subprocess
import sys

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "profile_launch_cpu.py")
BUSY = "import time\nstart = time.process_time()\nwhile time.process_time() - start < {}: pass"


def test_a_busy_child_is_counted_under_its_program_and_the_parent_beside_it(tmp_path):
    # a parent that burns 0.5 s of CPU, then starts a child that burns 1.5 s
    parent = f"import subprocess, sys\n{BUSY.format(0.5)}\nsubprocess.run([sys.executable, '-c', {BUSY.format(1.5)!r}])"
    proc = subprocess.run([sys.executable, SCRIPT, "--log", str(tmp_path / "out.log"), "--interval", "0.05", "--",
                           sys.executable, "-c", parent], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("wall ") and "exit status 0, 2 processes" in lines[0], proc.stdout
    (cpu, count), = [(float(l.split()[0]), int(l.split()[2])) for l in lines[1:] if l.strip().endswith(os.path.basename(sys.executable))]
    assert count == 2 and 1.8 <= cpu <= 2.6, proc.stdout  # 0.5 + 1.5 s, less at most one interval of each


def test_ray_actor_and_module_names_are_their_roles():
    sys.path.insert(0, os.path.dirname(SCRIPT))
    from profile_launch_cpu import role

    assert role(["ray::WorkerDict.actor_rollout_init_model"]) == role(["ray::WorkerDict"]) == "ray::WorkerDict"
    assert role(["/usr/bin/python", "-m", "verl_dgpo.main", "--config-name", "local_cpu"]) == "python -m verl_dgpo.main"
    assert role(["/x/raylet", "--node-ip-address=1"]) == "raylet"
    assert role(["/usr/bin/python", "/x/ray/dashboard/dashboard.py", "--host=127.0.0.1"]) == "dashboard"
    assert role(["/usr/bin/python", "-u", "/x/ray/_private/log_monitor.py", "--session-dir=/tmp/ray"]) == "log_monitor"
    # a driver whose arguments name a daemon is still the driver
    assert role(["/usr/bin/python", "-m", "verl_dgpo.main", "+ray_kwargs.ray_init.include_dashboard=false"]) == (
        "python -m verl_dgpo.main")
