"""AdamW parameter groups with layer-wise learning-rate decay: one rule for every model this project fine-tunes
(the distilled text student, the classifier's vision tower)."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import torch

log = logging.getLogger(__name__)

# A transformer block's index in a parameter name: BERT/XLM-R "encoder.layer.3.", CLIP and most newer models
# "layers.3.", T5 "block.3.", GPT-2 "h.3.". The first match in a name is the block the parameter belongs to.
LAYER_RE = re.compile(r"(?:^|\.)(?:layer|layers|block|blocks|h)\.(\d+)(?:\.|$)")
EMBEDDING_RE = re.compile(r"embed", re.IGNORECASE)


def layer_decay_groups(body: torch.nn.Module, head: Sequence[torch.nn.Module], lr: float, layer_lr_decay: float | None, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups for the trainable parameters of a `body` (a transformer) and the `head` modules above it.

    The head gets `lr`. Without `layer_lr_decay` the body gets `lr` too. With it, a body parameter whose name holds
    a block index (`layer.N`, `layers.N`, `block.N`, `h.N`; N of L blocks) gets lr × decay^(L − N): the top block
    lr × decay, the next lr × decay², and so on; parameters named like embeddings get the lowest, lr × decay^(L + 1);
    other body parameters (final norms, a pooler) get the top block's lr × decay. Each group is split in two so that
    weight decay never applies to biases and norms (1-D parameters). Groups carry a "name" key.
    """
    named: list[tuple[str, float, torch.nn.Parameter]] = []
    body_params = [(n, p) for n, p in body.named_parameters() if p.requires_grad]
    if layer_lr_decay is None:
        named += [("body", lr, p) for _, p in body_params]
    else:
        index = {n: int(m.group(1)) for n, _ in body_params if (m := LAYER_RE.search(n))}
        layers = max(index.values()) + 1 if index else 0
        if body_params and not index:
            log.warning("layer_lr_decay: no numbered layers (layer.N, layers.N) in the model body; the whole body gets lr x decay")
        for n, p in body_params:
            if n in index:
                named.append((f"layer.{index[n]}", lr * layer_lr_decay ** (layers - index[n]), p))
            elif EMBEDDING_RE.search(n):
                named.append(("embeddings", lr * layer_lr_decay ** (layers + 1), p))
            else:
                named.append(("body", lr * layer_lr_decay, p))
    for module in head:
        named += [("head", lr, p) for p in module.parameters() if p.requires_grad]
    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    for name, group_lr, p in named:
        decays = p.ndim > 1
        key = (name, decays)
        if key not in groups:
            groups[key] = {"name": name, "lr": group_lr, "params": [], "weight_decay": weight_decay if decays else 0.0}
        groups[key]["params"].append(p)
    return list(groups.values())
