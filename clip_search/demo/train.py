"""Train the demo world's small CLIP from scratch on generated scenes, on a CPU, in minutes.

A `transformers` CLIPModel with its own BPE tokenizer (trained on the English captions) learns with CLIP's
symmetric contrastive loss on (rendered scene, English caption) pairs. Three choices make it learn in minutes:

- Exact positives. Captions are drawn afresh every step and often name only some attributes ("a star"), so a
  caption can be true of several images in a batch. The scenes' attributes say exactly which, so the loss's
  targets are spread over every true pair instead of calling the other true images negatives
  (`contrastive_loss`; with one true image per caption it is CLIP's loss exactly).
- A curriculum. Colour is learned within a couple of hundred steps and, trained together from the start, it
  crowds out shape, which then stays at chance. Captions therefore name shape alone first, then shape, count
  and size, and only then anything (`TrainConfig.shape_steps`, `structure_steps`, `training_query`).
- Many scenes, each seen few times. With 24k scenes seen 15 times each, the model told the shapes of its training
  scenes apart (0.983) far better than those of new ones (0.951); 72k seen 5 times gave 0.987 and 0.972 in the same
  time. The default 120k are seen about 3 times; rendering them on every core (`training_pixels`) takes ~2 minutes.

A second, short stage (`teach_elsewhere`) then teaches what matches nothing: each batch also holds sentences about
things no scene contains ("an elephant in a garden", `clip_search.demo.elsewhere`) as texts with no true image,
extra negatives in every image's softmax over texts, with a margin that keeps their similarity to each image
below that image's own caption's. The empty text, which says nothing, learns to sit between the two on every image
(below its caption, above text about other things), as text that names nothing in a picture does for a real CLIP:
the relevance signal uses it as the store's floor (`clip_search.relevance`). Without this stage the model places
any text among the shape captions, and no relevance signal can tell "a dog on a beach" from "a red star". It is a
stage of its own, at a low learning rate, so the first stage stays exactly the schedule that was found to learn shape.

Everything is seeded: the same config gives the same model on the same machine and library versions.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from clip_search.config import RELEVANCE_NULL_TEXT
from clip_search.demo.captions import TEMPLATE_COUNT, caption, full_caption, query_text, random_query
from clip_search.demo.elsewhere import elsewhere_sentences
from clip_search.demo.scenes import TRAIN_SEED, Query, Scene, generate_scenes, render_pixels, truth_matrix
from clip_search.device import resolve_device
from clip_search.pixels import pixel_function
from clip_search.scratch import new_clip, save_clip, train_clip_tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Sizes and schedule of the demo CLIP; the defaults train in about 13 minutes on two CPU cores (the bar is 15)."""

    scenes: int = 120_000  # each seen about 3 times (see the module's docstring)
    image_size: int = 64
    patch_size: int = 8
    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    projection_dim: int = 64
    max_text_length: int = 32
    vocab_size: int = 600
    batch_size: int = 128
    steps: int = 2800
    shape_steps: int = 900  # curriculum: captions name only the shape for these first steps,
    structure_steps: int = 400  # then only shape, count and size for these, then anything
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.05
    single_attribute_prob: float = 0.4  # after the curriculum, share of captions naming one attribute alone ("a star")
    seed: int = TRAIN_SEED
    # second stage (`teach_elsewhere`): out-of-world sentences as texts with no true image
    elsewhere_scenes: int = 8000  # the first this many of the training scenes
    elsewhere_per_batch: int = 64  # out-of-world sentences added to each batch of `batch_size` captions
    elsewhere_margin: float = 0.3  # cosine by which they must stay below each image's own caption
    elsewhere_weight: float = 5.0  # weight of that margin (and of the empty text's two) in the loss
    elsewhere_lr: float = 2e-4
    elsewhere_steps: int = 300
    elsewhere_warmup_steps: int = 20


@dataclass
class TrainReport:
    """Loss at the start and the end of training, and how long it took on what."""

    config: TrainConfig
    first_loss: float
    final_loss: float
    seconds: float
    losses: list[float] = field(default_factory=list)
    device: str = "cpu"
    torch_threads: int = 1

    def as_dict(self) -> dict:
        """JSON-able form, for the model folder's training record."""
        return {
            "config": asdict(self.config), "first_loss": self.first_loss, "final_loss": self.final_loss, "seconds": round(self.seconds, 1),
            "device": self.device, "torch_threads": self.torch_threads, "torch": torch.__version__,
        }


def training_pixels(processor, scenes: list[Scene], image_size: int, chunk: int = 1000) -> torch.Tensor:
    """All scenes rendered and preprocessed as search-time decoding does (`pixel_function`), as float16, on every
    core: 120k scenes take about 4 minutes to render on one."""
    pixels = pixel_function(processor.image_processor)
    chunks = [scenes[i : i + chunk] for i in range(0, len(scenes), chunk)]
    out = torch.empty((len(scenes), 3, image_size, image_size), dtype=torch.float16)
    workers = min(os.cpu_count() or 1, len(chunks))
    with contextlib.ExitStack() as stack:  # a process pool (the platform's start method, as precompute's decoders) on several cores
        mapper = stack.enter_context(ProcessPoolExecutor(workers)).map if workers > 1 else map
        for i, array in enumerate(mapper(render_pixels, chunks, itertools.repeat(image_size), itertools.repeat(pixels))):
            out[i * chunk : i * chunk + len(array)] = torch.from_numpy(array)
    return out


# Which attributes a caption may name in each phase of the curriculum; single-attribute captions' weights after it.
_STRUCTURE_KEYS = (("shape",), ("count",), ("size",), ("shape", "count"), ("shape", "size"), ("count", "size"), ("shape", "count", "size"))
_SINGLE_ATTRIBUTE_WEIGHTS = {"shape": 3, "color": 1, "size": 1, "count": 2, "position": 1, "background": 1}


def training_query(scene: Scene, step: int, config: TrainConfig, rng: random.Random) -> Query:
    """What a training caption for `scene` says at `step`: the curriculum's attributes, later any true query."""
    if step < config.shape_steps:
        return Query.from_scene(scene, ("shape",))
    if step < config.shape_steps + config.structure_steps:
        return Query.from_scene(scene, rng.choice(_STRUCTURE_KEYS))
    if rng.random() < config.single_attribute_prob:
        kind = rng.choices(list(_SINGLE_ATTRIBUTE_WEIGHTS), weights=list(_SINGLE_ATTRIBUTE_WEIGHTS.values()))[0]
        return Query.from_scene(scene, (kind,))
    return random_query(scene, rng)


def contrastive_loss(logits_per_text: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy, with each row's (column's) target spread evenly over its true pairs.

    `truth[i, j]` says whether caption i is true of image j; the diagonal must be true. Rows past the last
    image are texts true of no image: only negatives in each image's softmax over texts. With the identity as
    `truth` this is exactly CLIP's loss.
    """
    truth = truth.to(logits_per_text.dtype)
    images = truth.shape[1]
    captions, caption_truth = logits_per_text[:images], truth[:images]
    text_to_image = -(caption_truth / caption_truth.sum(1, keepdim=True) * F.log_softmax(captions, dim=1)).sum(1).mean()
    image_to_text = -(truth / truth.sum(0, keepdim=True) * F.log_softmax(logits_per_text, dim=0)).sum(0).mean()
    return (text_to_image + image_to_text) / 2


def elsewhere_margin_loss(logits_per_text: torch.Tensor, scale: torch.Tensor, margin: float, null: torch.Tensor | None = None) -> torch.Tensor:
    """How far texts true of no image (rows past the last image) come within `margin` (a cosine) of each image's
    own caption (the diagonal), averaged over every such text and image; with `null` (the empty text's logits per
    image), also how far it comes within `margin / 2` of each image's caption, and those texts within `margin / 2`
    of it."""
    images = logits_per_text.shape[1]
    cosines = logits_per_text / scale
    own, elsewhere = cosines[:images].diagonal(), cosines[images:]
    loss = F.relu(elsewhere - own[None, :] + margin).mean()
    if null is not None:
        empty = null / scale
        loss = loss + F.relu(empty - own + margin / 2).mean() + F.relu(elsewhere - empty[None, :] + margin / 2).mean()
    return loss


def _cosine_lr(step: int, steps: int, lr: float, warmup_steps: int) -> float:
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass(frozen=True)
class _Stage:
    """One run of the training loop: its length, schedule, where it starts in the curriculum and its negatives."""

    name: str
    steps: int
    lr: float
    warmup_steps: int
    curriculum_step: int  # the curriculum step its first step's captions come from
    elsewhere: tuple[str, ...] = ()  # sentences true of no image, `per_batch` of them added to each batch
    per_batch: int = 0
    margin: float = 0.0
    margin_weight: float = 0.0


def _optimise(model, tokenizer, pixels: torch.Tensor, scenes: list[Scene], config: TrainConfig, stage: _Stage, rng: random.Random, generator: torch.Generator, progress: bool) -> list[float]:
    """The training loop of both stages: batches of scenes with captions from `training_query`; returns the losses."""
    dev = pixels.device
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=stage.lr)
    model.train()
    losses: list[float] = []
    order = torch.randperm(len(scenes), generator=generator)
    cursor = 0
    for step in tqdm(range(stage.steps), desc=stage.name, unit="step", disable=not progress):
        if cursor + config.batch_size > len(order):
            order, cursor = torch.randperm(len(scenes), generator=generator), 0
        batch = order[cursor : cursor + config.batch_size]
        cursor += config.batch_size
        batch_scenes = [scenes[i] for i in batch.tolist()]
        queries = [training_query(s, stage.curriculum_step + step, config, rng) for s in batch_scenes]
        texts = [query_text(q, "en", rng.randrange(TEMPLATE_COUNT)) for q in queries]
        truth = torch.from_numpy(truth_matrix(queries, batch_scenes)).to(dev)
        if stage.per_batch:
            texts += rng.sample(stage.elsewhere, stage.per_batch)
            truth = torch.cat([truth, truth.new_zeros(stage.per_batch, len(batch_scenes))])
        if stage.per_batch:
            texts.append(RELEVANCE_NULL_TEXT)  # last: in the margin loss only
        tokens = tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(dev)
        for group in optimizer.param_groups:
            group["lr"] = _cosine_lr(step, stage.steps, stage.lr, stage.warmup_steps)
        outputs = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], pixel_values=pixels[batch.to(dev)].float())
        logits = outputs.logits_per_text
        if stage.per_batch:
            logits, null = logits[:-1], logits[-1]
        loss = contrastive_loss(logits, truth)
        if stage.per_batch:
            loss = loss + stage.margin_weight * elsewhere_margin_loss(logits, model.logit_scale.exp(), stage.margin, null)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        if step % 100 == 0:
            log.info("%s step %d loss %.4f", stage.name, step, losses[-1])
    model.eval()
    return losses


def teach_elsewhere(model, tokenizer, pixels: torch.Tensor, scenes: list[Scene], config: TrainConfig = TrainConfig(), *, progress: bool = True) -> list[float]:
    """The second stage: train a CLIP of the first further with out-of-world sentences as texts with no true
    image (`pixels` are `scenes` preprocessed, on the model's device); returns the losses."""
    stage = _Stage(
        "train-demo, out-of-world", config.elsewhere_steps, config.elsewhere_lr, config.elsewhere_warmup_steps,
        curriculum_step=config.shape_steps + config.structure_steps, elsewhere=tuple(elsewhere_sentences()),
        per_batch=config.elsewhere_per_batch, margin=config.elsewhere_margin, margin_weight=config.elsewhere_weight,
    )
    seed = config.seed + 1  # its own streams: the first stage's are left as they were
    return _optimise(model, tokenizer, pixels, scenes, config, stage, random.Random(seed), torch.Generator().manual_seed(seed), progress)


def train_demo_clip(out: str | Path, config: TrainConfig = TrainConfig(), *, device: str | None = "cpu", progress: bool = True, first_stage_out: str | Path | None = None) -> TrainReport:
    """Train the demo CLIP and save it (model, tokenizer, processor) to `out` with save_pretrained; the model
    after the first stage too, to `first_stage_out` when given (the student's first teacher)."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    scenes = generate_scenes(config.scenes, config.seed)
    corpus = [full_caption(s, "en", t) for s in scenes[:3000] for t in range(3)] + [caption(s, "en", rng) for s in scenes[:6000]]
    tokenizer = train_clip_tokenizer(corpus, vocab_size=config.vocab_size, max_length=config.max_text_length)
    model, processor = new_clip(
        tokenizer,
        image_size=config.image_size,
        patch_size=config.patch_size,
        hidden_size=config.hidden_size,
        layers=config.layers,
        heads=config.heads,
        projection_dim=config.projection_dim,
        max_text_length=config.max_text_length,
        seed=config.seed,
    )
    log.info("rendering %d training scenes", len(scenes))
    dev = resolve_device(device)
    pixels = training_pixels(processor, scenes, config.image_size).to(dev)
    model.to(dev)

    world = _Stage("train-demo", config.steps, config.lr, config.warmup_steps, curriculum_step=0)
    losses = _optimise(model, tokenizer, pixels, scenes, config, world, rng, torch.Generator().manual_seed(config.seed), progress)
    if first_stage_out is not None:
        save_clip(model.eval(), processor, first_stage_out)
    if config.elsewhere_steps:
        count = min(config.elsewhere_scenes, len(scenes))
        losses += teach_elsewhere(model, tokenizer, pixels[:count], scenes[:count], config, progress=progress)
    model.eval().cpu()
    save_clip(model, processor, out)
    window = max(1, min(50, len(losses) // 5))
    report = TrainReport(config, sum(losses[:window]) / window, sum(losses[-window:]) / window, time.perf_counter() - started, losses, str(dev), torch.get_num_threads())
    log.info("trained in %.0f s: loss %.3f -> %.3f", report.seconds, report.first_loss, report.final_loss)
    return report
