"""The classifier's networks: a shared trunk with one head per task over CLIP image embeddings, and the same
heads on top of CLIP's vision tower for end-to-end fine-tuning."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from clip_search.classifier.tasks import Task


class MultiTaskHeads(nn.Module):
    """A shared trunk (Linear + ReLU + dropout) with one linear head per task on it, plus a linear path per task
    straight from the embedding (`direct`, no bias); a task's logits are the sum of the two.

    The direct path can start as zero-shot classification (`init_zero_shot`: the label names' text embeddings times
    CLIP's logit scale, the trunk's head at zero), so training starts from what zero-shot already knows
    (as LP-FT and FLYP start fine-tuning from zero-shot heads). With `hidden` 0 there is no trunk: one linear head
    per task. Input: unit CLIP image embeddings, as a store holds them; output: logits by task. ReLU rather than
    GELU so that `Classifier` can run it in numpy exactly, without importing torch.
    """

    def __init__(self, dim: int, tasks: Sequence[Task], hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout)) if hidden else nn.Identity()
        self.heads = nn.ModuleDict({t.name: nn.Linear(hidden or dim, len(t.labels)) for t in tasks})
        self.direct = nn.ModuleDict({t.name: nn.Linear(dim, len(t.labels), bias=False) for t in tasks}) if hidden else nn.ModuleDict()

    def forward(self, embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
        shared = self.trunk(embeddings)
        return {name: head(shared) + (self.direct[name](embeddings) if name in self.direct else 0) for name, head in self.heads.items()}

    @torch.no_grad()
    def init_zero_shot(self, task: str, label_embeddings: torch.Tensor, logit_scale: float) -> None:
        """Start `task` as zero-shot classification: its direct path the label embeddings × scale, its head at zero."""
        self.heads[task].weight.zero_()
        self.heads[task].bias.zero_()
        target = self.direct[task] if task in self.direct else self.heads[task]
        target.weight.copy_(logit_scale * label_embeddings)


class VisionClassifier(nn.Module):
    """CLIP's vision tower and projection, the embedding normalised as a store's, then `MultiTaskHeads`.

    The children are in depth order (tower, projection, heads): the layer-wise learning rates read them that way.
    """

    def __init__(self, vision_model: nn.Module, visual_projection: nn.Module, heads: MultiTaskHeads) -> None:
        super().__init__()
        self.vision_model = vision_model
        self.visual_projection = visual_projection
        self.classifier = heads

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Unit-length image embeddings, as precompute stores them."""
        pooled = self.vision_model(pixel_values=pixel_values).pooler_output
        return nn.functional.normalize(self.visual_projection(pooled), dim=-1)

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.classifier(self.embed(pixel_values))


def task_loss(task: Task, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """One task's loss on its labelled rows: class-weighted cross-entropy, or BCE with a positive weight per label."""
    if task.multilabel:
        return nn.functional.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)
    return nn.functional.cross_entropy(logits, target, weight=weight)
