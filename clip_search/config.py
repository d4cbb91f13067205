"""Defaults, in one place: every other module takes these as arguments with these values."""

DEFAULT_MODEL = "openai/clip-vit-base-patch32"

# Multilingual students distilled from a CLIP text encoder, keyed by that CLIP's model id.
# Precompute records the student in the manifest so that the store decides its text encoder.
KNOWN_STUDENTS: dict[str, str] = {
    "openai/clip-vit-base-patch32": "sentence-transformers/clip-ViT-B-32-multilingual-v1",
}

DEFAULT_BATCH_SIZE = 32
DEFAULT_TEXT_BATCH_SIZE = 64
DEFAULT_TOP_K = 12
DEFAULT_SHARD_SIZE = 1024  # rows per resumable shard written during precompute

STORE_FORMAT_VERSION = 1
STORE_DTYPE = "float16"

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

# URL sources: first retry waits this long, each later one twice as long (capped at 2 s).
DOWNLOAD_BACKOFF_S = 0.25

# Web app (clip_search.ui).
APP_TITLE = "clip-search: find images by describing them"
APP_HOST = "127.0.0.1"
APP_PORT = 7860
APP_MAX_TOP_K = 50
APP_MAX_UPLOAD_BYTES = 20_000_000  # uploads larger than this are refused before they reach the app
# Example prompts shown under the query box, one per language: en, de, fr, es, ru, zh, ja.
APP_EXAMPLE_QUERIES: tuple[str, ...] = (
    "a dog running on the beach",
    "ein rotes Auto in der Stadt",
    "un chat qui dort sur un canapé",
    "una puesta de sol sobre el mar",
    "горы под снегом",
    "夜晚的城市街道",
    "桜の木と青い空",
)
