"""Reaching the Hugging Face hub for a model id: one bounded check before the libraries' own retries.

Without it, an unknown model id or an unreachable hub costs about 27 s of transformers' and huggingface_hub's
retries and a dozen repeated warnings before the error. The check asks the hub once (a few tries, short timeouts)
and fails in one line that suggests a local model folder; a local folder or HF_HUB_OFFLINE=1 skips it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from clip_search.config import DOWNLOAD_BACKOFF_S, HUB_CHECK_RETRIES, HUB_CHECK_TIMEOUT_S
from clip_search.errors import ModelLoadError, one_line

log = logging.getLogger(__name__)


def check_hub_model(model_ref: str, *, revision: str | None = None, what: str = "model") -> bool:
    """Make sure a hub model id can be loaded; True when only a cached copy can (load it with local_files_only).

    A local folder and offline mode need no check (False). An id the hub does not have, or a hub that cannot be
    reached with no cached copy, is a ModelLoadError naming the model and the hub, suggesting a local folder."""
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    if Path(model_ref).expanduser().exists() or huggingface_hub.constants.HF_HUB_OFFLINE:
        return False
    endpoint = huggingface_hub.constants.ENDPOINT
    last: Exception | None = None
    for attempt in range(HUB_CHECK_RETRIES + 1):
        if attempt:
            time.sleep(min(DOWNLOAD_BACKOFF_S * 2 ** (attempt - 1), 2.0))
        try:
            huggingface_hub.HfApi().model_info(model_ref, revision=revision, timeout=HUB_CHECK_TIMEOUT_S)
            return False
        except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
            raise ModelLoadError(
                f"no {what} {model_ref!r}" + (f" at revision {revision!r}" if revision else "") + f" on the Hugging Face hub ({endpoint}): "
                f"check the id, or pass a local model folder ({one_line(exc)})"
            ) from None
        except Exception as exc:  # the hub client's transport errors (connection refused, timeout, 5xx) have no common base here
            last = exc
    if huggingface_hub.try_to_load_from_cache(model_ref, "config.json", revision=revision):
        log.warning("cannot reach the Hugging Face hub (%s): using the cached copy of %s", one_line(last), model_ref)
        return True
    raise ModelLoadError(
        f"cannot reach the Hugging Face hub at {endpoint} to fetch {what} {model_ref!r} ({one_line(last)}; "
        f"{HUB_CHECK_RETRIES + 1} tries): pass a local model folder, or set HF_HUB_OFFLINE=1 to use a cached copy"
    )
