"""What trains and what stays frozen: `--freeze none|backbone|all-but-last-N|head:NAME` applied to a classifier's
parameters, and a summary of the outcome (which layers train, how many parameters)."""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

from torch import nn

from clip_search.classifier.model import MultiTaskHeads, VisionClassifier
from clip_search.errors import ClipSearchError
from clip_search.layer_decay import LAYER_RE

NONE, BACKBONE, ALL_BUT_LAST, HEAD = "none", "backbone", "all-but-last", "head"
_ALL_BUT_LAST = re.compile(r"^all-but-last-(\d+)$")


@dataclass(frozen=True)
class FreezePlan:
    """A parsed `--freeze` value: the mode, N for all-but-last-N, the task for head:NAME."""

    mode: str
    last_n: int = 0
    head: str | None = None

    @classmethod
    def parse(cls, text: str) -> FreezePlan:
        """A plan from "none", "backbone", "all-but-last-N" or "head:NAME"."""
        text = (text or "").strip()
        if text in (NONE, BACKBONE):
            return cls(text)
        if match := _ALL_BUT_LAST.match(text):
            return cls(ALL_BUT_LAST, last_n=int(match.group(1)))
        if text.startswith(HEAD + ":") and text[len(HEAD) + 1 :]:
            return cls(HEAD, head=text[len(HEAD) + 1 :])
        raise ClipSearchError(f"freeze: cannot read {text!r}: use none, backbone, all-but-last-N (e.g. all-but-last-2) or head:NAME")

    def __str__(self) -> str:
        return {ALL_BUT_LAST: f"all-but-last-{self.last_n}", HEAD: f"head:{self.head}"}.get(self.mode, self.mode)

    @property
    def changes_backbone(self) -> bool:
        """Whether training under this plan can change the image embeddings (so stored ones no longer fit)."""
        return self.mode == NONE or (self.mode == ALL_BUT_LAST and self.last_n > 0)


@dataclass(frozen=True)
class TrainableSummary:
    """Which parts of a model train and which are frozen, by part name, and the parameter counts."""

    trainable: tuple[str, ...]
    frozen: tuple[str, ...]
    trainable_params: int
    total_params: int

    def describe(self) -> str:
        """One paragraph for the command line."""
        frozen = f"; frozen: {', '.join(self.frozen)}" if self.frozen else ""
        return f"training {self.trainable_params:,} of {self.total_params:,} parameters: {', '.join(self.trainable) or 'nothing'}{frozen}"


def apply_freeze(model: nn.Module, plan: FreezePlan) -> TrainableSummary:
    """Set `requires_grad` on every parameter of `model` as `plan` says, and summarise the outcome."""
    heads = model.classifier if isinstance(model, VisionClassifier) else model
    if not isinstance(heads, MultiTaskHeads):
        raise TypeError("apply_freeze takes a MultiTaskHeads or a VisionClassifier")
    if plan.mode == HEAD and plan.head not in heads.heads:
        raise ClipSearchError(f"freeze: no task {plan.head!r} to train the head of; the tasks are {', '.join(heads.heads)}")
    for name, p in model.named_parameters():
        p.requires_grad_(_trains(model, name, plan))
    if not any(p.requires_grad for p in model.parameters()):
        raise ClipSearchError(f"freeze {plan}: nothing left to train")
    return summarise(model)


def _trains(model: nn.Module, name: str, plan: FreezePlan) -> bool:
    if plan.mode == HEAD:
        return name.removeprefix("classifier.").startswith((f"heads.{plan.head}.", f"direct.{plan.head}."))
    if not isinstance(model, VisionClassifier):
        if plan.mode == ALL_BUT_LAST:
            raise ClipSearchError(f"freeze {plan}: only a fine-tuned model has vision layers to unfreeze; use depth finetune")
        return True
    if name.startswith("classifier."):
        return True
    if plan.mode == NONE:
        return True
    if plan.mode == BACKBONE:
        return False
    layers = len(model.vision_model.encoder.layers)
    if plan.last_n > layers:
        raise ClipSearchError(f"freeze {plan}: the vision tower has only {layers} layers")
    if plan.last_n == 0:
        return False
    match = LAYER_RE.search(name)
    if match:
        return int(match.group(1)) >= layers - plan.last_n
    # Above the blocks (final norm, projection) trains with the last ones; below them (patch and position
    # embeddings, the norm before the first block) stays frozen with the first.
    return not name.startswith(("vision_model.embeddings.", "vision_model.pre_layrnorm."))


def summarise(model: nn.Module) -> TrainableSummary:
    """Trainable and frozen parts of `model`, grouped by part (a vision block, the projection, the trunk, a head)."""
    parts: OrderedDict[str, list[bool]] = OrderedDict()
    trainable = total = 0
    for name, p in model.named_parameters():
        parts.setdefault(_part(name), []).append(p.requires_grad)
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    on = tuple(part for part, flags in parts.items() if all(flags))
    off = tuple(part for part, flags in parts.items() if not any(flags))
    mixed = tuple(f"{part} (partly)" for part, flags in parts.items() if any(flags) and not all(flags))
    return TrainableSummary(on + mixed, off, trainable, total)


def _part(name: str) -> str:
    name = name.removeprefix("classifier.")
    if match := LAYER_RE.search(name):
        return f"vision layer {match.group(1)}"
    if name.startswith("vision_model."):
        return "vision " + name.split(".")[1]
    if name.startswith(("heads.", "direct.")):
        return f"head {name.split('.')[1]}"
    return name.split(".")[0]
