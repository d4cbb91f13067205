"""Multilingual knowledge distillation of a CLIP text encoder into a sentence-transformers student, and its CLI command."""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from clip_search import config
from clip_search.clip_model import ClipEncoder
from clip_search.vectors import l2_normalise
from clip_search.device import resolve_device
from clip_search.errors import ClipSearchError, ModelLoadError, one_line
from clip_search.parallel_data import SOURCE_LANG, UNKNOWN_LANG, ParallelPair, load_parallel, split_held_out

log = logging.getLogger(__name__)

# A transformer block's index in a parameter name: BERT/XLM-R "encoder.layer.3.", most newer models "layers.3.",
# T5 "block.3.", GPT-2 "h.3.". The first match in a name is the block the parameter belongs to.
_LAYER_RE = re.compile(r"(?:^|\.)(?:layer|layers|block|blocks|h)\.(\d+)(?:\.|$)")
_EMBEDDING_RE = re.compile(r"embed", re.IGNORECASE)
_EVAL_BATCH = 256


@dataclass
class HeldOutFigures:
    """Held-out figures for one language at one point of training (before or after)."""

    lang: str
    side: str  # "translation": student(translation) vs teacher(source); "source": student(source) vs teacher(source)
    pairs: int  # held-out pairs scored (unique source sentences for the source row)
    candidates: int  # unique held-out source sentences that retrieval picks among
    mse: float
    accuracy: float  # share whose own source is the nearest candidate by cosine against teacher(source)

    @property
    def label(self) -> str:
        """The row's name in tables: the language, with "(source)" for the English source sentences."""
        return f"{self.lang} (source)" if self.side == "source" else self.lang

    @property
    def chance(self) -> float:
        """Retrieval accuracy of a random guess."""
        return 1.0 / self.candidates if self.candidates else 0.0


@dataclass
class DistillReport:
    """What a distillation run did and how much it helped, measured on held-out pairs."""

    out: str
    teacher: str
    teacher_revision: str | None
    student: str
    continued: bool  # the student was already a sentence-transformers model, trained further
    data: str
    dim: int
    train_pairs: dict[str, int]
    held_out_pairs: dict[str, int]
    settings: dict[str, Any]
    steps: int
    loss_by_epoch: list[float]
    before: list[HeldOutFigures] = field(default_factory=list)
    after: list[HeldOutFigures] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def languages(self) -> list[str]:
        """The source language, then every translation language, in order of pair count."""
        counts = Counter(self.train_pairs) + Counter(self.held_out_pairs)
        langs = [lang for lang in sorted(counts, key=lambda k: (-counts[k], k)) if lang not in (SOURCE_LANG, UNKNOWN_LANG)]
        return [SOURCE_LANG, *langs]

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data, chance levels included."""
        data = asdict(self)
        for key in ("before", "after"):
            for row, fig in zip(data[key], getattr(self, key)):
                row["chance"] = fig.chance
        return data

    def table(self) -> str:
        """A plain-text table: held-out MSE and translation→source retrieval accuracy per language, before and after."""
        head = (
            f"distilled {self.teacher} -> {self.out}: {sum(self.train_pairs.values())} training pairs, "
            f"{self.steps} steps in {self.seconds:.1f} s; held-out pairs below (retrieval: nearest teacher(source))"
        )
        if not self.after:
            return head + "\n(no held-out pairs: nothing measured)"
        lines = [head, f"{'language':<14}{'pairs':>7}{'chance':>8}{'MSE before':>13}{'MSE after':>12}{'acc before':>12}{'acc after':>11}"]
        for b, a in zip(self.before, self.after):
            lines.append(
                f"{a.label:<14}{a.pairs:>7}{a.chance:>8.1%}{b.mse:>13.4g}{a.mse:>12.4g}{b.accuracy:>12.1%}{a.accuracy:>11.1%}"
            )
        return "\n".join(lines)


def distill(
    teacher: str,
    student: str,
    parallel: str | Sequence[ParallelPair],
    out: str | Path,
    *,
    epochs: int = config.DISTILL_EPOCHS,
    batch_size: int = config.DISTILL_BATCH_SIZE,
    lr: float = config.DISTILL_LR,
    freeze_body: bool = False,
    layer_lr_decay: float | None = None,
    max_seq_length: int = config.DISTILL_MAX_SEQ_LENGTH,
    held_out_fraction: float = config.DISTILL_HELD_OUT,
    seed: int = config.DISTILL_SEED,
    device: str | None = None,
    progress: bool = True,
) -> DistillReport:
    """Teach a multilingual student to embed sentences and their translations where a CLIP text encoder puts the sentence.

    `teacher` is a CLIP checkpoint (hub id or folder). `student` is a sentence-transformers folder or hub id
    (trained further; its output dimension must be the teacher's) or a plain Hugging Face encoder, which gets
    mean pooling and a linear head to the teacher's dimension. `parallel` is a `load_parallel` spec or a list of
    pairs. Each step minimises MSE(student(source), T(source)) + MSE(student(translation), T(source)), where
    T is CLIP's L2-normalised text embedding, precomputed once per unique source sentence; the student's output
    is not normalised (queries are normalised when encoded). AdamW with linear warmup and decay; `freeze_body`
    trains only the head; `layer_lr_decay` lowers the learning rate layer by layer (see `param_groups`).

    A held-out share of the pairs (grouped by source sentence, see `split_held_out`) is scored before and after
    training. Writes to `out` the student (sentence-transformers layout), `README.md` (model card),
    `distill_report.json` and `clip_search.json` ({"teacher", "dim", ...}).
    """
    _check_settings(epochs, batch_size, lr, layer_lr_decay, max_seq_length, held_out_fraction)
    started = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ClipSearchError(f"--out {out} is a file; give a folder to write the student to")
    dev = resolve_device(device)
    if isinstance(parallel, str):
        pairs, data = load_parallel(parallel), parallel
    else:
        pairs, data = list(parallel), f"{len(parallel)} pairs given in Python"
    train, held = split_held_out(pairs, held_out_fraction, seed, max_per_lang=config.DISTILL_MAX_HELD_OUT_PER_LANG)
    if not train:
        raise ClipSearchError(f"{data}: no pairs left to train on after holding out {held_out_fraction:.0%}")

    clip = ClipEncoder.load(teacher, device=str(dev))
    teacher_id, teacher_revision, dim = str(teacher), clip.commit_hash, clip.dim
    sources = sorted({p.source for p in pairs})
    source_index = {s: i for i, s in enumerate(sources)}
    targets = torch.from_numpy(_teacher_embeddings(clip, sources, progress)).to(dev)
    del clip  # the teacher is not needed once its targets are computed

    torch.manual_seed(seed)
    model, continued = _load_student(student, dim, max_seq_length, dev)
    body = model[0]
    if freeze_body:
        for p in body.parameters():
            p.requires_grad_(False)
    groups = param_groups(model, lr, layer_lr_decay)
    if not groups:
        raise ClipSearchError(f"student {student!r} has no trainable parameters")

    before = _evaluate(model, held, targets, source_index, dev) if held else []
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total = steps_per_epoch * epochs
    warmup = int(config.DISTILL_WARMUP_FRACTION * total)
    optimizer = torch.optim.AdamW(groups, lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _linear_schedule(step, warmup, total))
    shuffle = torch.Generator().manual_seed(seed)
    train_index = torch.tensor([source_index[p.source] for p in train])
    trainable = [p for g in groups for p in g["params"]]
    loss_by_epoch: list[float] = []
    log.info("distilling %s into %s: %d training pairs, %d held out, %d steps on %s", teacher_id, student, len(train), len(held), total, dev)
    bar = tqdm(total=total, desc="distill", unit="step", disable=not progress)
    for epoch in range(epochs):
        model.train()
        if freeze_body:
            body.eval()  # a frozen body runs without dropout: the head learns from stable features
        order = torch.randperm(len(train), generator=shuffle).tolist()
        epoch_loss = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            texts = [train[i].source for i in batch] + [train[i].translation for i in batch]
            emb = _forward(model, texts, dev)
            target = targets[train_index[batch].to(dev)]
            n = len(batch)
            loss = torch.nn.functional.mse_loss(emb[:n], target) + torch.nn.functional.mse_loss(emb[n:], target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, config.DISTILL_MAX_GRAD_NORM)
            optimizer.step()
            scheduler.step()
            epoch_loss += loss.item() * n
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4g}")
        loss_by_epoch.append(epoch_loss / len(train))
        log.info("epoch %d/%d: mean training loss %.4g", epoch + 1, epochs, loss_by_epoch[-1])
    bar.close()
    model.eval()
    after = _evaluate(model, held, targets, source_index, dev) if held else []

    settings = dict(
        epochs=epochs, batch_size=batch_size, lr=lr, freeze_body=freeze_body, layer_lr_decay=layer_lr_decay,
        max_seq_length=max_seq_length, held_out_fraction=held_out_fraction, seed=seed, device=str(dev),
        warmup_steps=warmup, weight_decay=config.DISTILL_WEIGHT_DECAY, max_grad_norm=config.DISTILL_MAX_GRAD_NORM,
    )
    report = DistillReport(
        out=str(out), teacher=teacher_id, teacher_revision=teacher_revision, student=str(student), continued=continued,
        data=data, dim=dim, train_pairs=dict(Counter(p.lang for p in train)), held_out_pairs=dict(Counter(p.lang for p in held)),
        settings=settings, steps=total, loss_by_epoch=loss_by_epoch, before=before, after=after,
    )
    report.seconds = time.perf_counter() - started
    _save(model, report, out)
    log.info("saved the student to %s in %.1f s", out, report.seconds)
    return report


def param_groups(model: torch.nn.Module, lr: float, layer_lr_decay: float | None = None) -> list[dict[str, Any]]:
    """AdamW parameter groups for a student's trainable parameters, with layer-wise learning-rate decay.

    The body is the model's first module (the transformer); everything after it (the dense head) gets `lr`.
    Without `layer_lr_decay` the body gets `lr` too. With it, a body parameter whose name holds a block index
    (`layer.N`, `layers.N`, `block.N`, `h.N`; N of L blocks) gets lr × decay^(L − N): the top block lr × decay,
    the next lr × decay², and so on; parameters named like embeddings get the lowest, lr × decay^(L + 1); other
    body parameters (final norms, a pooler) get the top block's lr × decay. Each group is split in two so that
    weight decay never applies to biases and norms (1-D parameters). Groups carry a "name" key.
    """
    modules = list(model.children()) if hasattr(model, "children") else []
    if not modules:
        raise ValueError("the model has no modules")
    body, head = modules[0], modules[1:]
    named: list[tuple[str, float, torch.nn.Parameter]] = []
    body_params = [(n, p) for n, p in body.named_parameters() if p.requires_grad]
    if layer_lr_decay is None:
        named += [("body", lr, p) for _, p in body_params]
    else:
        index = {n: int(m.group(1)) for n, _ in body_params if (m := _LAYER_RE.search(n))}
        layers = max(index.values()) + 1 if index else 0
        if body_params and not index:
            log.warning("layer_lr_decay: no numbered layers (layer.N, layers.N) in the student body; the whole body gets lr x decay")
        for n, p in body_params:
            if n in index:
                named.append((f"layer.{index[n]}", lr * layer_lr_decay ** (layers - index[n]), p))
            elif _EMBEDDING_RE.search(n):
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
            groups[key] = {"name": name, "lr": group_lr, "params": [], "weight_decay": config.DISTILL_WEIGHT_DECAY if decays else 0.0}
        groups[key]["params"].append(p)
    return list(groups.values())


# ------------------------------------------------------------------------------------------------ pieces


def _check_settings(epochs: int, batch_size: int, lr: float, decay: float | None, max_seq_length: int, held_out: float) -> None:
    if epochs < 1:
        raise ClipSearchError(f"--epochs must be at least 1, not {epochs}")
    if batch_size < 1:
        raise ClipSearchError(f"--batch-size must be at least 1, not {batch_size}")
    if not lr > 0:
        raise ClipSearchError(f"--lr must be positive, not {lr}")
    if decay is not None and not 0 < decay <= 1:
        raise ClipSearchError(f"--layer-lr-decay must be in (0, 1], not {decay}")
    if max_seq_length < 2:
        raise ClipSearchError(f"--max-seq-length must be at least 2, not {max_seq_length}")
    if not 0 <= held_out < 1:
        raise ClipSearchError(f"--held-out must be a fraction in [0, 1), not {held_out}")


def _linear_schedule(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))


def _teacher_embeddings(clip: ClipEncoder, sources: list[str], progress: bool) -> np.ndarray:
    """CLIP's normalised text embeddings of `sources`, in chunks under a progress bar."""
    chunk = 16 * config.DEFAULT_TEXT_BATCH_SIZE
    parts = []
    for i in tqdm(range(0, len(sources), chunk), desc="teacher", unit="chunk", disable=not progress or len(sources) <= chunk):
        parts.append(clip.encode_texts(sources[i : i + chunk]))
    return np.concatenate(parts).astype(np.float32)


def _is_sentence_transformer(student: str) -> bool:
    """Whether `student` is a folder or hub repo in the sentence-transformers layout (it has modules.json)."""
    path = Path(student).expanduser()
    if path.exists():
        return (path / "modules.json").is_file()
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        hf_hub_download(student, "modules.json")
    except (OSError, ValueError, EntryNotFoundError):
        return False
    return True


def _load_student(student: str, dim: int, max_seq_length: int, dev: torch.device) -> tuple[Any, bool]:
    """(model, continued): a sentence-transformers student, loaded to train further or assembled on a plain encoder."""
    from clip_search.text_student import assemble_student

    if _is_sentence_transformer(student):
        from sentence_transformers import SentenceTransformer

        try:
            model = SentenceTransformer(student, device=str(dev))
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"cannot load student {student!r}: {one_line(exc)}") from None
        get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        if get() != dim:
            raise ModelLoadError(f"student {student!r} makes {get()}-d embeddings but the teacher's are {dim}-d; start from a plain encoder instead")
        continued = True
    else:
        model = assemble_student(student, dim, device=str(dev), max_seq_length=max_seq_length)
        continued = False
    model.max_seq_length = max_seq_length
    return model.to(dev), continued


def _forward(model: Any, texts: list[str], dev: torch.device) -> torch.Tensor:
    """The student's (unnormalised) sentence embeddings, through its own tokenizer and forward."""
    prepare = getattr(model, "preprocess", None) or model.tokenize  # `tokenize` before sentence-transformers 6
    features = prepare(texts)
    features = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
    return model(features)["sentence_embedding"]


@torch.inference_mode()
def _student_embeddings(model: Any, texts: list[str], dev: torch.device) -> np.ndarray:
    was_training = model.training
    model.eval()
    parts = [_forward(model, texts[i : i + _EVAL_BATCH], dev).float().cpu().numpy() for i in range(0, len(texts), _EVAL_BATCH)]
    model.train(was_training)
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def _nearest_is_own(queries: np.ndarray, candidates: np.ndarray, own: np.ndarray) -> float:
    """Share of query rows whose highest-cosine candidate row is `own[i]` (both sides normalised here)."""
    q, c = l2_normalise(queries), l2_normalise(candidates)
    hits = 0
    for i in range(0, len(q), 1024):
        hits += int((np.argmax(q[i : i + 1024] @ c.T, axis=1) == own[i : i + 1024]).sum())
    return hits / len(q)


def _evaluate(model: Any, held: list[ParallelPair], targets: torch.Tensor, source_index: dict[str, int], dev: torch.device) -> list[HeldOutFigures]:
    """Held-out MSE and translation→source retrieval accuracy (nearest teacher(source) by cosine), per language."""
    teacher = targets.float().cpu().numpy()
    sources = sorted({p.source for p in held})
    translations = sorted({p.translation for p in held})
    student_src = dict(zip(sources, _student_embeddings(model, sources, dev)))
    student_tr = dict(zip(translations, _student_embeddings(model, translations, dev)))

    src_s = np.stack([student_src[s] for s in sources])
    src_t = teacher[[source_index[s] for s in sources]]
    figures = [
        HeldOutFigures(
            SOURCE_LANG, "source", len(sources), len(sources), float(np.mean((src_s - src_t) ** 2)),
            _nearest_is_own(src_s, src_t, np.arange(len(sources))),
        )
    ]
    by_lang: dict[str, list[ParallelPair]] = defaultdict(list)
    for p in held:
        by_lang[p.lang].append(p)
    for lang in sorted(by_lang, key=lambda k: (-len(by_lang[k]), k)):
        group = by_lang[lang]
        cands = sorted({p.source for p in group})
        position = {s: i for i, s in enumerate(cands)}
        tr_s = np.stack([student_tr[p.translation] for p in group])
        tr_t = teacher[[source_index[p.source] for p in group]]
        own = np.array([position[p.source] for p in group])
        accuracy = _nearest_is_own(tr_s, teacher[[source_index[s] for s in cands]], own)
        figures.append(HeldOutFigures(lang, "translation", len(group), len(cands), float(np.mean((tr_s - tr_t) ** 2)), accuracy))
    return figures


def _save(model: Any, report: DistillReport, out: Path) -> None:
    """The student, its model card, the report as JSON and the teacher pairing, all in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out), create_model_card=False)
    (out / "README.md").write_text(model_card(report), encoding="utf-8")
    (out / "distill_report.json").write_text(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    pairing = {"teacher": report.teacher, "teacher_revision": report.teacher_revision, "dim": report.dim, "languages": report.languages}
    (out / "clip_search.json").write_text(json.dumps(pairing, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def student_languages(student: str | Path) -> tuple[str, ...] | None:
    """The languages a student made by `distill` was trained on (its `clip_search.json`), or None when the folder has
    no such record (a hub id, or a student made elsewhere)."""
    record = Path(student).expanduser() / "clip_search.json"
    if not record.is_file():
        return None
    try:
        languages = json.loads(record.read_text(encoding="utf-8")).get("languages")
    except (OSError, ValueError, AttributeError):
        return None
    return tuple(str(lang) for lang in languages) if isinstance(languages, list) else None


def model_card(report: DistillReport) -> str:
    """A Hugging Face model card (README.md) for a distilled student: front matter, data, settings, figures, usage."""
    base = "" if Path(report.student).expanduser().exists() else f"base_model: {json.dumps(report.student)}\n"
    front = (
        "---\n"
        "library_name: sentence-transformers\n"
        "pipeline_tag: sentence-similarity\n"
        "tags:\n- sentence-transformers\n- sentence-similarity\n- feature-extraction\n- clip\n- multilingual\n- knowledge-distillation\n- clip-search\n"
        "language:\n" + "".join(f"- {lang}\n" for lang in report.languages) + base + "---\n"
    )
    langs = sorted(set(report.train_pairs) | set(report.held_out_pairs), key=lambda k: (-(report.train_pairs.get(k, 0) + report.held_out_pairs.get(k, 0)), k))
    counts = "\n".join(f"| {lang} | {report.train_pairs.get(lang, 0)} | {report.held_out_pairs.get(lang, 0)} |" for lang in langs)
    settings = "\n".join(f"- {k}: {v}" for k, v in report.settings.items())
    if report.after:
        rows = "\n".join(
            f"| {a.label} | {a.pairs} | {a.chance:.1%} | {b.mse:.4g} | {a.mse:.4g} | {b.accuracy:.1%} | {a.accuracy:.1%} |"
            for b, a in zip(report.before, report.after)
        )
        figures = (
            "| language | held-out pairs | chance | MSE before | MSE after | retrieval before | retrieval after |\n"
            "|---|---|---|---|---|---|---|\n" + rows + "\n\n"
            "MSE: mean squared difference between the student's embedding of the translation (the English source, for "
            "the source row) and the teacher's normalised embedding of the source. Retrieval: share of held-out "
            "translations whose own source sentence is the nearest, by cosine, among the teacher's embeddings of all "
            "held-out source sentences of that language.\n"
        )
    else:
        figures = "No pairs were held out, so nothing was measured.\n"
    revision = f" (revision {report.teacher_revision})" if report.teacher_revision else ""
    return f"""{front}
# Multilingual text encoder for {report.teacher}

A student text encoder distilled from the text tower of the CLIP model `{report.teacher}`{revision} by multilingual
knowledge distillation (Reimers & Gurevych, 2020, "Making Monolingual Sentence Embeddings Multilingual using
Knowledge Distillation"): it embeds a sentence, in English or in any of its training languages, where CLIP's text
encoder embeds the English sentence, so it can search the image embeddings of `{report.teacher}` ({report.dim}
dimensions) in {", ".join(report.languages)}.

- Teacher: `{report.teacher}`{revision}
- Student base: `{report.student}`{" (a sentence-transformers model, trained further)" if report.continued else " (mean pooling and a linear layer added)"}
- Parallel data: `{report.data}`
- Objective: MSE(student(source), teacher(source)) + MSE(student(translation), teacher(source))

| language | training pairs | held-out pairs |
|---|---|---|
{counts}

## Training

{settings}
- steps: {report.steps}
- mean training loss by epoch: {", ".join(f"{x:.4g}" for x in report.loss_by_epoch)}
- time: {report.seconds:.1f} s

## Held-out figures

{figures}
## Usage

With clip-search, as the text encoder of a store whose images `{report.teacher}` embedded:

```bash
clip-search precompute PHOTOS --model {report.teacher} --text-model PATH_TO_THIS_MODEL --out store
clip-search search store "ein roter Kreis"
```

With sentence-transformers (normalise the embeddings before comparing them to CLIP image embeddings):

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("PATH_TO_THIS_MODEL")
embeddings = model.encode(["a red circle", "ein roter Kreis"], normalize_embeddings=True)
```

`clip_search.json` records the teacher and the dimension this model pairs with.
"""
