"""The demo world: generated scenes with exact multilingual captions, for offline training and evaluation."""

from clip_search.demo.captions import (
    LANGUAGES,
    TEMPLATE_COUNT,
    caption,
    full_caption,
    label_names,
    label_prompts,
    label_values,
    parallel_pairs,
    query_text,
    random_query,
)
from clip_search.demo.scenes import (
    ATTRIBUTES,
    BACKGROUNDS,
    COLORS,
    COUNTS,
    EVAL_SEED,
    POSITIONS,
    SHAPES,
    SIZES,
    STORE_SEED,
    TRAIN_SEED,
    Query,
    Scene,
    SceneObject,
    generate_scene,
    generate_scenes,
    layout,
    render,
)

__all__ = [
    "ATTRIBUTES", "BACKGROUNDS", "COLORS", "COUNTS", "EVAL_SEED", "LANGUAGES", "POSITIONS", "SHAPES", "SIZES",
    "STORE_SEED", "TEMPLATE_COUNT", "TRAIN_SEED", "Query", "Scene", "SceneObject", "caption", "full_caption",
    "generate_scene", "generate_scenes", "label_names", "label_prompts", "label_values", "layout",
    "parallel_pairs", "query_text", "random_query", "render",
]
