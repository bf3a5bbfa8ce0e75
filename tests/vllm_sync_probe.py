"""verl's weight sync into a CPU vLLM engine, measured by what vLLM then generates (tests/test_vllm_cpu.py runs it).

    python tests/vllm_sync_probe.py OUT_JSON [--plugin on|off] [--timeout S]

1. Writes two tiny Qwen2 models of the same shape (head_dim 32, as CPU vLLM needs) from different seeds:
   A (the engine's start weights) and B (the "trained" weights the sync sends).
2. Starts vLLM (``vllm.LLM``, float32, eager) on A with verl's own worker extension
   (``vLLMColocateWorkerExtension``), as verl's vLLM server does.
3. Syncs B into it the way verl's training worker does on a machine without CUDA IPC: verl's
   ``BucketedWeightSender`` over ZMQ with shared memory, while vLLM's workers run verl's
   ``update_weights_from_ipc`` (``collective_rpc``), then ``process_weights_after_loading``.
4. Writes greedy continuations of a few prompts: vLLM before and after the sync, and Hugging Face
   ``generate`` on A and on B (the reference: transformers' own model on the same weights).

``--plugin on`` sets the CPU preset's variable (``VERL_DGPO_VLLM_CPU=1``) so that verl-dgpo's
``vllm.general_plugins`` entry point keeps vLLM's linear weights syncable; ``off`` runs vLLM as it
ships. The sender's receive timeout (verl_dgpo.local.vllm_cpu.apply_sender_timeout) is on in both, so
a sync that fails on vLLM's side ends here with the error instead of hanging. The result JSON has
``error`` (None, or the sync's exception as one line) and the four lists of token ids.
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time

PROMPTS = [[5, 17, 42, 99], [300, 12], [7, 7, 7, 7, 7, 7], [128, 64, 32]]
NEW_TOKENS = 12
SHAPE = {"num_attention_heads": 2, "num_key_value_heads": 1}  # hidden 64 / 2 heads: head_dim 32


def make_model(path, seed):
    """A tiny Qwen2 of :data:`SHAPE` with its weights drawn at std 0.2 (``seed``): wide logit gaps, so greedy
    continuations depend on the weights (at the 0.02 init they mostly repeat the prompt's last token)."""
    import torch
    from transformers import AutoModelForCausalLM

    from verl_dgpo.local.assets import make_tiny_model

    make_tiny_model(path, seed=seed, **SHAPE)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    model.save_pretrained(path)
    return path


def hf_greedy(path):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    out = []
    for prompt in PROMPTS:
        ids = torch.tensor([prompt])
        with torch.no_grad():
            seq = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=NEW_TOKENS,
                                 min_new_tokens=NEW_TOKENS, eos_token_id=None, pad_token_id=0)
        out.append(seq[0, len(prompt):].tolist())
    return out


def vllm_greedy(llm):
    from vllm import SamplingParams, TokensPrompt

    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)
    outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in PROMPTS], params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outputs]


def sync(llm, weights, zmq_handle):
    """verl's shared-memory weight transfer: sender here, verl's receiver in vLLM's worker."""
    from verl.workers.rollout.vllm_rollout.bucketed_weight_transfer import BucketedWeightSender

    errors = []

    def receive():
        try:
            llm.collective_rpc("update_weights_from_ipc", kwargs={"use_shm": True})
        except Exception as err:  # noqa: BLE001 - reported with the sender's error
            errors.append(f"receiver: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    sender = BucketedWeightSender(zmq_handle=zmq_handle, bucket_size_mb=16, use_shm=True)
    try:
        asyncio.run(sender.async_send_weights(iter(weights)))
    except Exception as err:  # noqa: BLE001
        errors.insert(0, f"{type(err).__name__}: {err}")
    receiver.join(timeout=60)
    return "; ".join(errors) or None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--plugin", choices=["on", "off"], default="on")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    job = f"probe{os.getpid()}"
    os.environ.update({"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1", "VERL_PLATFORM": "cpu",
                       "VERL_RAY_JOB_ID": job,
                       # vLLM's workers set up verl's CPU platform as every process of a CPU-preset run does
                       "VERL_USE_EXTERNAL_MODULES": "verl_dgpo.local.boot", "VERL_DGPO_VLLM_SYNC_TIMEOUT_S": str(args.timeout),
                       "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})  # fmt: skip
    os.environ["VERL_DGPO_VLLM_CPU"] = "1" if args.plugin == "on" else "0"
    import torch
    from transformers import AutoModelForCausalLM

    from verl_dgpo.local import vllm_cpu
    from verl_dgpo.local.platform import register_cpu_platform

    register_cpu_platform()
    vllm_cpu.apply_sender_timeout()  # what verl_dgpo.local.boot does in the training worker of a vLLM run
    work = tempfile.mkdtemp(prefix="vllm-sync-probe-")
    a, b = make_model(os.path.join(work, "a"), seed=0), make_model(os.path.join(work, "b"), seed=1)
    result = {"plugin": args.plugin, "hf_a": hf_greedy(a), "hf_b": hf_greedy(b)}

    from vllm import LLM

    started = time.time()
    llm = LLM(model=a, dtype="float32", enforce_eager=True, max_model_len=64, seed=0, gpu_memory_utilization=0.5,
              worker_extension_cls="verl.workers.rollout.vllm_rollout.utils.vLLMColocateWorkerExtension")
    result["engine_start_s"] = time.time() - started
    result["vllm_before"] = vllm_greedy(llm)
    state = AutoModelForCausalLM.from_pretrained(b, dtype=torch.float32).state_dict()
    started = time.time()
    result["error"] = sync(llm, state.items(), f"ipc:///tmp/rl-colocate-zmq-{job}-replica-0-rank-0.sock")
    result["sync_s"] = time.time() - started
    result["vllm_after"] = None if result["error"] else vllm_greedy(llm)
    with open(args.out, "w") as f:
        json.dump(result, f)
    print(json.dumps({k: v for k, v in result.items() if not k.startswith(("hf_", "vllm_"))}), flush=True)
    # A failed sync may leave vLLM's worker stuck, and the engine's processes outlive an os._exit: end them first.
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        child.kill()
    psutil.wait_procs(children, timeout=30)
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
