"""Parallel sentences (English source, translation, language) read from TSV/CSV/JSONL files or datasets, and held-out splits."""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clip_search.errors import SourceError, one_line

log = logging.getLogger(__name__)

HF_PREFIX = "hf://datasets/"
SOURCE_LANG = "en"  # the language of the `source` side: the one the CLIP teacher reads
UNKNOWN_LANG = "xx"  # the language of rows that do not say
_SAVED_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_COLUMNS = ("source", "translation", "lang")


@dataclass(frozen=True)
class ParallelPair:
    """One English sentence, its translation, and the translation's language code."""

    source: str
    translation: str
    lang: str


def load_parallel(spec: str | os.PathLike[str], *, split: str = "train", source_lang: str = SOURCE_LANG) -> list[ParallelPair]:
    """Parallel pairs from a file or dataset.

    `spec` is one of:

    - a `.tsv`/`.txt` (tab-separated) or `.csv` file, optionally `.gz`: either with a header naming the columns
      `source` and `translation` (and optionally `lang`; other columns are ignored), or headerless with two or
      three fields per line, `english<TAB>translation[<TAB>lang]`;
    - a `.jsonl` file of objects with the keys `source`, `translation` (and optionally `lang`), or with an
      opus-style `translation` object (below);
    - `hf://datasets/NAME[:config]` (`datasets.load_dataset`, offline from the local cache when
      HF_HUB_OFFLINE=1), a folder written by `save_to_disk` (a DatasetDict picks `split`), or a data folder
      `load_dataset` reads; with the columns `source`/`translation`/`lang`, or an opus-style `translation`
      column of dicts such as {"en": ..., "de": ...}.

    The opus rule: the `source_lang` entry ("en") is the source, and every other non-empty entry gives one pair,
    its key being the language; a record without the `source_lang` entry is an error. A missing `lang` reads
    "xx" (unknown). Structural problems (missing columns, a wrong number of fields, invalid JSON) raise a
    SourceError naming the file and the 1-based line or row; rows with an empty source or translation are
    skipped, and their count is logged.
    """
    spec = os.fspath(spec)
    if spec.startswith(HF_PREFIX):
        pairs, skipped = _from_dataset(_load_hub_dataset(spec, split), spec, source_lang)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise SourceError(f"parallel data not found: {spec}")
        if path.is_dir():
            pairs, skipped = _from_dataset(_load_local_dataset(path, split), spec, source_lang)
        else:
            pairs, skipped = _from_file(path, source_lang)
    if skipped:
        log.warning("%s: skipped %d rows with an empty source or translation", spec, skipped)
    if not pairs:
        raise SourceError(f"{spec}: no parallel pairs (every row was empty or the data has no rows)")
    log.info("%s: %d parallel pairs in %d languages", spec, len(pairs), len({p.lang for p in pairs}))
    return pairs


def split_held_out(
    pairs: list[ParallelPair], fraction: float, seed: int, *, max_per_lang: int | None = None
) -> tuple[list[ParallelPair], list[ParallelPair]]:
    """(train, held_out): about `fraction` of each language's pairs held out, grouped by source sentence.

    Deterministic for a seed. All pairs sharing a source sentence land on the same side (so held-out sources
    are never trained on, in any language): the unique sources are shuffled with the seed and taken in turn
    while every language they appear in is still below its target, round(fraction x its pairs) capped at
    `max_per_lang`. No language gets more than its target; each keeps at least one training pair. Both lists
    keep the input order.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"held-out fraction must be in [0, 1), not {fraction}")
    by_lang: dict[str, int] = defaultdict(int)
    for p in pairs:
        by_lang[p.lang] += 1
    target = {}
    for lang, n in by_lang.items():
        k = round(fraction * n)
        if fraction > 0 and n >= 2:
            k = max(k, 1)
        k = min(k, n - 1)
        target[lang] = min(k, max_per_lang) if max_per_lang is not None else k
    per_source: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for p in pairs:
        per_source[p.source][p.lang] += 1
    sources = sorted(per_source)
    random.Random(seed).shuffle(sources)
    taken: dict[str, int] = defaultdict(int)
    held_sources = set()
    for source in sources:
        counts = per_source[source]
        if all(taken[lang] + n <= target[lang] for lang, n in counts.items()):
            held_sources.add(source)
            for lang, n in counts.items():
                taken[lang] += n
    train = [p for p in pairs if p.source not in held_sources]
    held = [p for p in pairs if p.source in held_sources]
    return train, held


# ------------------------------------------------------------------------------------------------ records


def _pairs_from_record(record: Mapping[str, Any], where: str, source_lang: str) -> tuple[list[ParallelPair], int]:
    """The pairs of one record (flat source/translation/lang or opus-style translation dict) and its skip count."""
    if "source" in record:
        if "translation" not in record:
            raise SourceError(f"{where}: has 'source' but no 'translation'")
        source, translation = record["source"], record["translation"]
        lang = record.get("lang")
        for name, value in (("source", source), ("translation", translation), ("lang", lang)):
            if value is not None and not isinstance(value, str):
                raise SourceError(f"{where}: {name} must be text, not {type(value).__name__}")
        return _one(source, translation, lang, where)
    by_lang = record.get("translation")
    if not isinstance(by_lang, Mapping):
        raise SourceError(f"{where}: needs the keys 'source' and 'translation', or a 'translation' object of language: text")
    by_lang = _variable_languages(by_lang, where)
    if source_lang not in by_lang:
        raise SourceError(f"{where}: the translation object has no {source_lang!r} entry (languages: {', '.join(sorted(by_lang))})")
    source = by_lang[source_lang]
    pairs, skipped = [], 0
    for lang, text in by_lang.items():
        if lang == source_lang:
            continue
        got, skip = _one(source, text, lang, where)
        pairs += got
        skipped += skip
    return pairs, skipped


def _variable_languages(by_lang: Mapping[str, Any], where: str) -> dict[str, Any]:
    """{lang: text}; a `datasets.TranslationVariableLanguages` value ({"language": [...], "translation": [...]}) is zipped."""
    if set(by_lang) == {"language", "translation"} and isinstance(by_lang["language"], list):
        return dict(zip(by_lang["language"], by_lang["translation"]))
    for lang, text in by_lang.items():
        if text is not None and not isinstance(text, str):
            raise SourceError(f"{where}: translation[{lang!r}] must be text, not {type(text).__name__}")
    return dict(by_lang)


def _one(source: str | None, translation: str | None, lang: str | None, where: str) -> tuple[list[ParallelPair], int]:
    source, translation = (source or "").strip(), (translation or "").strip()
    if not source or not translation:
        return [], 1
    lang = (lang or "").strip().lower() or UNKNOWN_LANG
    return [ParallelPair(source, translation, lang)], 0


# ------------------------------------------------------------------------------------------------ files


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def _from_file(path: Path, source_lang: str) -> tuple[list[ParallelPair], int]:
    kind = path.suffixes[-2] if path.suffix == ".gz" and len(path.suffixes) >= 2 else path.suffix
    try:
        with _open_text(path) as f:
            if kind == ".jsonl":
                return _from_jsonl(f, path, source_lang)
            return _from_delimited(f, path, kind == ".csv")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (OSError, EOFError) as exc:
        raise SourceError(f"cannot read {path}: {exc}") from None


def _from_jsonl(lines: Iterable[str], path: Path, source_lang: str) -> tuple[list[ParallelPair], int]:
    pairs: list[ParallelPair] = []
    skipped = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SourceError(f"{where}: invalid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise SourceError(f"{where}: expected a JSON object, got {type(record).__name__}")
        got, skip = _pairs_from_record(record, where, source_lang)
        pairs += got
        skipped += skip
    return pairs, skipped


def _rows(f: io.TextIOBase, is_csv: bool, path: Path) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, fields) of each line; TSV fields are taken literally (quotes are text)."""
    if is_csv:
        reader = csv.reader(f)
    else:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
        for row in reader:
            yield reader.line_num, row
    except csv.Error as exc:
        raise SourceError(f"{path} line {reader.line_num}: {exc}") from None


def _from_delimited(f: io.TextIOBase, path: Path, is_csv: bool) -> tuple[list[ParallelPair], int]:
    pairs: list[ParallelPair] = []
    skipped = 0
    columns: dict[str, int] | None = None  # column name -> field index, when there is a header
    width: int | None = None  # fields per line, when headerless
    first = True
    for number, row in _rows(f, is_csv, path):
        where = f"{path} line {number}"
        if not row or not any(cell.strip() for cell in row):
            skipped += 1
            continue
        if first:
            first = False
            names = [cell.strip().lower() for cell in row]
            if any(name in _COLUMNS for name in names):
                missing = [c for c in ("source", "translation") if c not in names]
                if missing:
                    raise SourceError(f"{path}: the header has no {' or '.join(repr(m) for m in missing)} column (it has {', '.join(names)})")
                columns = {c: names.index(c) for c in _COLUMNS if c in names}
                width = len(names)
                continue
        if columns is not None:
            if len(row) != width:
                raise SourceError(f"{where}: {len(row)} fields, but the header names {width}")
            lang = row[columns["lang"]] if "lang" in columns else None
            got, skip = _one(row[columns["source"]], row[columns["translation"]], lang, where)
        else:
            if len(row) not in (2, 3):
                raise SourceError(f"{where}: {len(row)} fields; expected english, translation[, lang] or a header naming source, translation, lang")
            if width is None:
                width = len(row)
            elif len(row) != width:
                raise SourceError(f"{where}: {len(row)} fields, but earlier lines have {width}")
            got, skip = _one(row[0], row[1], row[2] if len(row) == 3 else None, where)
        pairs += got
        skipped += skip
    return pairs, skipped


# ------------------------------------------------------------------------------------------------ datasets


def _load_hub_dataset(spec: str, split: str) -> Any:
    import datasets  # imported here: `datasets` is slow to import and only datasets need it

    name, _, config = spec[len(HF_PREFIX) :].partition(":")
    if not name:
        raise SourceError(f"{spec}: no dataset name after {HF_PREFIX}")
    try:
        return datasets.load_dataset(name, config or None, split=split)
    except (OSError, ValueError, KeyError) as exc:  # DatasetNotFoundError is an OSError
        raise SourceError(f"cannot load dataset {spec} (split {split}): {one_line(exc)}") from None


def _load_local_dataset(path: Path, split: str) -> Any:
    import datasets

    try:
        if any((path / marker).exists() for marker in _SAVED_DATASET_MARKERS):
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise SourceError(f"{path}: no split {split!r} (splits: {', '.join(ds)})")
                ds = ds[split]
            return ds
        return datasets.load_dataset(str(path), split=split)
    except (OSError, ValueError, KeyError) as exc:  # DatasetNotFoundError is an OSError
        raise SourceError(f"cannot load dataset folder {path} (split {split}): {one_line(exc)}") from None


def _from_dataset(ds: Any, spec: str, source_lang: str) -> tuple[list[ParallelPair], int]:
    names = set(ds.column_names)
    if "source" in names:
        if "translation" not in names:
            raise SourceError(f"{spec}: has a 'source' column but no 'translation' column (columns: {', '.join(sorted(names))})")
        keep = [c for c in _COLUMNS if c in names]
    elif "translation" in names:
        keep = ["translation"]
    else:
        raise SourceError(f"{spec}: needs the columns source, translation[, lang] or an opus-style 'translation' column (columns: {', '.join(sorted(names))})")
    ds = ds.select_columns(keep)
    pairs: list[ParallelPair] = []
    skipped = 0
    row = 0
    for batch in ds.iter(batch_size=1000):
        for i in range(len(batch[keep[0]])):
            row += 1
            record = {c: batch[c][i] for c in keep}
            got, skip = _pairs_from_record(record, f"{spec} row {row}", source_lang)
            pairs += got
            skipped += skip
    return pairs, skipped


