"""The padded batch verl's engine workers hand ``verl.workers.utils.losses.ppo_loss``, built from chosen tensors.

Shared by the ppo_loss gradient tests (``tests/test_dgpo_plugin.py`` and this folder's release test); it
imports only torch, tensordict and verl, so it runs in every supported release's environment.
"""

import torch


def engine_batch(prompt_len, response_mask, old_log_prob, log_ratio, advantages):
    """``(data, flat_log_probs, positions)`` for ``ppo_loss(config, {"log_probs": flat_log_probs}, data)``.

    ``response_mask`` is a left-aligned boolean ``(batch, width)`` mask; the flat log-probs hold, per sequence,
    ``prompt_len + n`` entries (no padding) with response token t's log-prob ``old + log_ratio`` at
    ``prompt_len - 1 + t`` (the engine's left shift); ``positions[i][t]`` is that index in the flat tensor,
    whose ``.grad`` the tests read.
    """
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu

    bsz, width = response_mask.shape
    lengths = [int(n) for n in response_mask.sum(dim=1)]
    flat, positions, offset = [], [], 0
    for i, n in enumerate(lengths):
        seq = torch.zeros(prompt_len + n, dtype=old_log_prob.dtype)
        seq[prompt_len - 1 : prompt_len - 1 + n] = (old_log_prob + log_ratio)[i, :n]
        positions.append([offset + prompt_len - 1 + t for t in range(n)])
        flat.append(seq)
        offset += prompt_len + n
    data = TensorDict(
        {
            "prompts": torch.ones(bsz, prompt_len, dtype=torch.long),
            "responses": torch.ones(bsz, width, dtype=torch.long),
            "attention_mask": torch.cat([torch.ones(bsz, prompt_len, dtype=torch.long), response_mask.long()], dim=1),
            "response_mask": response_mask,
            "old_log_probs": old_log_prob,
            "advantages": advantages,
        },
        batch_size=[bsz],
    )
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=int(response_mask.sum()), global_batch_size=bsz)
    return data, torch.cat(flat).requires_grad_(True), positions
