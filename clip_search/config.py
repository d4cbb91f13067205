"""Defaults, in one place: every other module takes these as arguments with these values."""

import os
from pathlib import Path

DEFAULT_MODEL = "openai/clip-vit-base-patch32"

# Multilingual students distilled from a CLIP text encoder, keyed by that CLIP's model id.
# Precompute records the student in the manifest so that the store decides its text encoder.
KNOWN_STUDENTS: dict[str, str] = {
    "openai/clip-vit-base-patch32": "sentence-transformers/clip-ViT-B-32-multilingual-v1",
}

DEFAULT_BATCH_SIZE = 32

# Image-encoder backends of precompute (clip_search.vision_backends). "auto", the default, is CPU_IMAGE_BACKEND on
# the CPU in float32, else torch: CPU_IMAGE_BACKEND is the fastest backend that kept quality when measured
# (bench/backends.py, bench/RESULTS.md). A store's manifest records the backend of its rows; updates keep it.
TORCH_BACKEND, ONNX_BACKEND, ONNX_INT8_BACKEND, OPENVINO_BACKEND = "torch", "onnx", "onnx-int8", "openvino"
IMAGE_BACKENDS: tuple[str, ...] = (TORCH_BACKEND, ONNX_BACKEND, ONNX_INT8_BACKEND, OPENVINO_BACKEND)
AUTO_IMAGE_BACKEND = "auto"
CPU_IMAGE_BACKEND = ONNX_INT8_BACKEND
DEFAULT_IMAGE_BACKEND = AUTO_IMAGE_BACKEND
# ONNX Runtime's intra-op threads spin while they wait for work by default. On a machine whose cores are shared
# (precompute's decoding workers, the app's HTTP threads, other processes) spinning threads take the cores the
# others need: precompute end to end ran 1.5x faster without (bench/RESULTS.md, "Image-encoder backends").
ORT_SPIN_THREADS = False
# Decoding workers run at this niceness: on a machine whose cores the encoder's threads also use, a decoding worker
# scheduled in the middle of a parallel matrix product stalls every thread of it; at a lower priority it decodes in
# the gaps, and it still gets any core the encoder leaves idle (bench/RESULTS.md: end to end 0.86 -> 0.92-1.0 of the
# model-only rate on 2 cores).
DECODE_WORKER_NICE = 10
DEFAULT_TEXT_BATCH_SIZE = 64
DEFAULT_TOP_K = 12
DEFAULT_SHARD_SIZE = 1024  # rows per resumable shard written during precompute

STORE_FORMAT_VERSION = 2
STORE_DTYPE = "float16"
STORE_NORM_TOLERANCE = 0.01  # a stored row's length may differ from 1 by this much (float16 rounding is far less)
STORE_CHECK_CHUNK_ROWS = 16_384  # rows read at a time when a store is checked on open

# Exact search (clip_search.index.exact): a float32 copy of the matrix only when it fits in EXACT_MAX_MEMORY
# bytes (--max-memory), else the float16 matrix read EXACT_CHUNK_ROWS rows at a time; up to
# EXACT_FP16_SCAN_QUERIES queries scan the chunks as float16 (faiss), more convert each chunk once for a GEMM.
EXACT_MAX_MEMORY = 2 * 1024**3
EXACT_CHUNK_ROWS = 32_768
EXACT_FP16_SCAN_QUERIES = 4

# Decoding: images larger than this many pixels are refused (decompression bombs).
MAX_IMAGE_PIXELS = 64_000_000

# URL sources.
DOWNLOAD_TIMEOUT_S = 10.0
DOWNLOAD_RETRIES = 2
DOWNLOAD_MAX_BYTES = 20_000_000
UNSPLASH_RESIZE_WIDTH = 640

# Zero-shot classification: label -> prompts, embedded and averaged (CLIP's prompt ensembling).
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a close-up photo of a {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
)
DEFAULT_TOP_LABELS = 3

# Labels through a multilingual student: prompt templates in the labels' language (detected over all the labels
# typed; "{}" alone when no language is detected with LABEL_LANGUAGE_CONFIDENCE). Chosen on the demo world, where
# they give dictionary-form labels the accuracy of whole captions (`clip-search eval`). German labels in lower case
# are adjectives in their dictionary form ("rot") and are inflected into LABEL_GERMAN_ADJECTIVE_TEMPLATES.
LABEL_TEMPLATES: dict[str, tuple[str, ...]] = {
    "en": ("{}", "a picture of a {}"),
    "de": ("{}", "ein Bild mit {}"),
    "fr": ("{}", "une image de {}"),
    "es": ("{}", "una imagen de {}"),
    "ru": ("{}", "на картинке {}"),
    "zh": ("{}", "图片里有{}"),
}
LABEL_GERMAN_ADJECTIVE_TEMPLATES: tuple[str, ...] = ("eine {} Form",)
LABEL_LANGUAGE_CONFIDENCE = 0.9
# Open-set labels: a label fits an image when the image's score stands out from that label's scores over the store
# (z-score over the relevance sample); P(fits) = sigmoid(LABEL_FIT_SLOPE * (z - LABEL_FIT_Z)). When the best label
# does not fit, the answer is NONE_OF_THESE; a single label is a yes/no with that probability.
NONE_OF_THESE = "none of these"
LABEL_FIT_Z = 1.0
LABEL_FIT_SLOPE = 3.0
LABEL_FIT_CERTAINTY = 0.99  # no answer is more certain than this (nor less than 1 - this): a label is never "100%"

# Relevance (clip_search.relevance): a hit's score as a z-score over the query's scores on a sample of the store,
# relative to the query's best hit. Cutoffs chosen on the demo world (`clip-search eval`, README).
RELEVANCE_SAMPLE_ROWS = 4096  # store rows a query's score distribution is taken over (all rows of a smaller store)
RELEVANCE_STRONG = 0.83  # relevance from which a hit is a strong match (balances precision and recall on the demo world)
RELEVANCE_WEAK = 0.7  # relevance from which a hit is a weak match (below: none)
RELEVANCE_NULL_TEXT = ""  # the text that says nothing: a strong match scores above what it scores on any sampled row
RELEVANCE_FLOOR_MARGIN = 1.15  # the store's floor for a strong match: this many times that best score (chosen on calibration scenes)
RELEVANCE_MIN_TOP_Z = 2.0  # a query whose best hit is less than this many std above its mean over the store has no strong match

# URL sources: first retry waits this long, each later one twice as long (capped at 2 s).
DOWNLOAD_BACKOFF_S = 0.25

# A hub model id is checked once before loading (clip_search.hub): tries after the first, and each one's timeout.
HUB_CHECK_RETRIES = 2
HUB_CHECK_TIMEOUT_S = 5.0

# Web app (clip_search.ui).
APP_TITLE = "clip-search: find images by describing them"
APP_HOST = "127.0.0.1"
APP_PORT = 7860
APP_MAX_TOP_K = 50
APP_MAX_UPLOAD_BYTES = 20_000_000  # uploads larger than this are refused before they reach the app
APP_MAX_TEXT_CHARS = 10_000  # a query, negative or label text longer than this is refused (the encoders read ~77 tokens)
APP_MAX_LABELS = 32  # labels per search (each is embedded with every prompt template)
APP_BATCH_SIZE = 64  # concurrent searches the app sends to the engine as one batch (`SearchEngine.search_many`)
APP_BATCH_WAIT_MS = 4.0  # under load, how long a batch may wait to gather as many searches as the last (alone: never)
APP_SEARCH_CONCURRENCY = 64  # searches Gradio hands to the app at once (each waits for its batch as a coroutine)
APP_QUEUE_SIZE = 256  # searches waiting beyond that (in Gradio's queue, or the batcher's): refused at once ("busy, retry")
APP_SEARCH_TIMEOUT_S = 60.0  # a search not answered by then is given up with a "busy, retry" message
# Gradio keeps timings of its last GRADIO_ANALYTICS_MAX_EVENTS events (default 10,000) and summarises all of them
# after every event: memory grew ~70 kB and each search slowed as the count rose (bench/RESULTS.md, "Load"). The
# app sets this as the default; an environment value set by the user wins.
APP_ANALYTICS_EVENTS = 100
APP_STATE_SESSIONS = 100  # Gradio sessions kept in memory (every API call is one; the page keeps no state in them)
APP_API_MAX_BODY_BYTES = 256_000  # a JSON API request body larger than this is refused (413) before it is read
APP_MAX_CONDITIONS = 16  # metadata conditions ("where") per search
APP_MAX_LABELLED = 10_000  # results one session may label for export (the labels file of train-classifier --labels)
APP_IMAGE_MAX_AGE_S = 3600  # how long a browser may cache a result image (its URL names the store's revision)
APP_MAX_PAGES = 8  # "more results" shows up to this many pages of `top_k` results
APP_GALLERY_THUMBNAILS = 4  # results shown for each example prompt in the page's example gallery
APP_MAX_NEGATIVE_WEIGHT = 2.0  # the page's "… but not" weight slider goes from 0 to this
APP_NARROW_WIDTH = 700  # a page narrower than this (px, a phone) opens with the label table collapsed
APP_TRY_PROMPTS = 8  # example prompts shown as links under the query box
APP_MAX_MODE_WEIGHT = 10.0  # each hybrid weight (image, caption, keyword) a page or API client gives goes from 0 to this
APP_COMPLETIONS = 4  # completions of the typed query the suggester proposes (only those with a strong match are shown)
APP_TRY_ALSO = 3  # "try also" follow-ups under the results (the same check)
APP_ENRICHED_FILTERS = 4  # label columns added by `clip-search enrich` that the page offers a label choice for
APP_EXTRAS_CONCURRENCY = 1  # completions, summaries and follow-ups computed at once (CPU-heavy; searches never wait on them): bench/suggest_latency.py
# Example prompts for a store that ships none (as language, text), one per language: en, de, fr, es, ru, zh, ja.
# A store whose queries go through CLIP's own (English) text encoder shows the English ones only.
APP_EXAMPLE_PROMPTS: tuple[tuple[str, str], ...] = (
    ("en", "a dog running on the beach"),
    ("de", "ein rotes Auto in der Stadt"),
    ("fr", "un chat qui dort sur un canapé"),
    ("es", "una puesta de sol sobre el mar"),
    ("ru", "горы под снегом"),
    ("zh", "夜晚的城市街道"),
    ("ja", "桜の木と青い空"),
)

# Multilingual distillation (clip_search.distill): the student learns to put a sentence and its translation
# where CLIP's text encoder puts the sentence (Reimers & Gurevych 2020). The paper's settings, but for epochs.
DISTILL_STUDENT = "distilbert/distilbert-base-multilingual-cased"  # the base of clip-ViT-B-32-multilingual-v1
DISTILL_EPOCHS = 5
DISTILL_BATCH_SIZE = 64
DISTILL_LR = 2e-5
DISTILL_MAX_SEQ_LENGTH = 128
DISTILL_WARMUP_FRACTION = 0.1  # of all steps: lr rises linearly, then falls linearly to zero
DISTILL_WEIGHT_DECAY = 0.01  # AdamW; never on biases and norms
DISTILL_MAX_GRAD_NORM = 1.0
DISTILL_HELD_OUT = 0.05  # fraction of each language's pairs kept out of training to measure it
DISTILL_MAX_HELD_OUT_PER_LANG = 1000  # retrieval among ~1000 sentences, as on Tatoeba
DISTILL_SEED = 0

# The demo world (PRODUCT.md section 3): models and store built by scripts/build_demo.py, shipped in the repo.
REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CLIP = REPO_ROOT / "models" / "demo-clip"
DEMO_STUDENT = REPO_ROOT / "models" / "demo-mclip"
DEMO_STORE = REPO_ROOT / "embeddings" / "demo"

# Search indexes (clip_search.store_index): recall is measured with text queries; a store without captions is
# probed with these generic photo prompts.
INDEX_RECALL_TARGET = 0.95
INDEX_PROBE_TEMPLATES: tuple[str, ...] = ("a photo of a {}", "a {} outdoors", "a close-up of a {}")
INDEX_PROBE_NOUNS: tuple[str, ...] = (
    "dog", "cat", "horse", "bird", "fish", "car", "bicycle", "boat", "train", "airplane", "house", "bridge",
    "tree", "flower", "mountain", "beach", "lake", "river", "forest", "street", "city", "person", "child",
    "woman", "man", "crowd", "table", "chair", "book", "phone", "computer", "cup", "plate", "food", "cake",
    "fruit", "sky", "sunset", "snow", "rain", "road", "shop", "market", "church", "castle", "garden", "park",
    "field", "desert", "island", "wave", "rock", "shoe", "hat", "dress", "guitar", "painting", "lamp", "window",
)
INDEX_PROBE_QUERIES: tuple[str, ...] = (
    "people walking in a busy street at night", "a red car parked by the sea", "a plate of pasta on a wooden table",
    "snowy mountains under a blue sky", "a black and white portrait", "children playing in a park",
)


def default_cache_dir() -> Path:
    """Where clip-search caches what it derives from models (ONNX exports): $CLIP_SEARCH_CACHE, else
    $XDG_CACHE_HOME/clip-search, else ~/.cache/clip-search."""
    if os.environ.get("CLIP_SEARCH_CACHE"):
        return Path(os.environ["CLIP_SEARCH_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "clip-search"

# Classifiers trained on a store (clip_search.classifier): a shared trunk and one head per task over CLIP image
# embeddings, or CLIP's vision tower fine-tuned under them.
CLASSIFIER_HIDDEN = 256  # trunk width (0: heads straight on the embedding)
CLASSIFIER_DROPOUT = 0.1
CLASSIFIER_LR = 1e-3  # trunk and heads
CLASSIFIER_BACKBONE_LR = 1e-4  # the vision tower when fine-tuned (its top block; lower ones decay from it)
CLASSIFIER_WEIGHT_DECAY = 0.01  # AdamW; never on biases and norms
CLASSIFIER_BATCH_SIZE = 64
CLASSIFIER_MAX_EPOCHS = 200
CLASSIFIER_PATIENCE = 15  # epochs without a lower validation loss before training stops
CLASSIFIER_VAL_FRACTION = 0.2
CLASSIFIER_TEST_FRACTION = 0.2
CLASSIFIER_SEED = 0
# After training, each head that started as zero-shot keeps the blend of trained and zero-shot weights (WiSE-FT per
# head) that classifies best, from these trained shares, counted over CLASSIFIER_BLEND_FOLDS folds of the training
# and validation rows (heads trained on the other folds; when the vision tower trains, on the validation rows alone).
CLASSIFIER_ZERO_SHOT_BLENDS: tuple[float, ...] = tuple(i / 20 for i in range(21))
CLASSIFIER_BLEND_FOLDS = 4
CLASSIFIER_MULTILABEL_THRESHOLD = 0.5  # a multi-label task predicts every label whose probability reaches this

# Text indexes and hybrid search (clip_search.text_index, clip_search.hybrid): a store's text columns get sentence
# embeddings by a caption model and a BM25 keyword index. A query then runs in one of SEARCH_MODES; "auto" is hybrid
# where the store has a text index, else image. Hybrid ranks the union of each mode's best HYBRID_CANDIDATES rows
# (at least HYBRID_CANDIDATE_FACTOR × top_k) by a fusion of the modes' scores; method and weights chosen on demo
# scenes (bench/RESULTS.md, "Hybrid search").
DEFAULT_CAPTION_MODEL = "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2"
TEXT_COLUMNS: tuple[str, ...] = ("caption", "text", "description", "title")  # indexed when no columns are named
IMAGE_MODE, CAPTION_MODE, KEYWORD_MODE, HYBRID_MODE, AUTO_MODE = "image", "caption", "keyword", "hybrid", "auto"
SEARCH_MODES: tuple[str, ...] = (IMAGE_MODE, CAPTION_MODE, KEYWORD_MODE, HYBRID_MODE)
HYBRID_CANDIDATES = 200
HYBRID_CANDIDATE_FACTOR = 10
HYBRID_FUSION = "product"  # "product" (weighted geometric mean of each mode's calibrated score), "zsum" (their sum) or "rrf"
# Measured on calibration scenes (bench/RESULTS.md): BM25 on catalogue-like notes adds noise to the fused ranking
# (a note's shape word scores as much as its fact), so hybrid leaves it out unless weighted in.
HYBRID_WEIGHTS: dict[str, float] = {IMAGE_MODE: 3.0, CAPTION_MODE: 1.0, KEYWORD_MODE: 0.0}
RRF_K = 60  # reciprocal-rank fusion's constant (Cormack et al. 2009)
