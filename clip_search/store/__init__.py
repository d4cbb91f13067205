"""The embedding store: a folder holding manifest.json, embeddings.npy, metadata.parquet and skipped.jsonl.

It is the one contract every part shares (PRODUCT.md section 2), and this package is its only reader and
writer: `Manifest` (typed, validated field by field), `EmbeddingStore` (a validated open store, its rows and
their images), `write_store` (one atomic writer for shards and stores), and the portable references in `refs`.
"""

from clip_search.store.embedding_store import EmbeddingStore, check_unit_rows
from clip_search.store.examples import EXAMPLES, ExamplePrompt, StoreExamples, examples_from_captions, read_examples, read_examples_file, write_examples
from clip_search.store.files import CAPTION_COLUMNS, EMBEDDINGS, METADATA, SKIP_FIELDS, SKIPPED, read_jsonl, skip_row, write_columns, write_jsonl, write_store
from clip_search.store.manifest import MANIFEST, IndexInfo, Manifest, ModelRef, SourceInfo, TextIndexInfo, read_manifest, skip_summary, write_manifest
from clip_search.store.refs import ImageRef, portable_ref, portable_source, resolve_ref, same_model, source_root

__all__ = [
    "CAPTION_COLUMNS",
    "EMBEDDINGS",
    "EXAMPLES",
    "MANIFEST",
    "METADATA",
    "SKIPPED",
    "SKIP_FIELDS",
    "EmbeddingStore",
    "ExamplePrompt",
    "ImageRef",
    "IndexInfo",
    "Manifest",
    "ModelRef",
    "SourceInfo",
    "StoreExamples",
    "TextIndexInfo",
    "check_unit_rows",
    "examples_from_captions",
    "portable_ref",
    "portable_source",
    "read_examples",
    "read_examples_file",
    "read_jsonl",
    "read_manifest",
    "resolve_ref",
    "same_model",
    "skip_row",
    "skip_summary",
    "source_root",
    "write_columns",
    "write_examples",
    "write_jsonl",
    "write_manifest",
    "write_store",
]
