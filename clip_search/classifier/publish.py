"""Uploading a classifier folder to the Hugging Face Hub as a model repo (token from the usual places)."""

from __future__ import annotations

from pathlib import Path

from clip_search.errors import ClipSearchError, one_line


def push_folder(folder: str | Path, repo_id: str, *, token: str | None = None, private: bool = False) -> str:
    """Create the model repo `repo_id` if needed and upload the folder's files; returns the commit URL.

    Any failure (offline, no token, no right to write) is a ClipSearchError naming the repo; the folder is kept.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(folder), commit_message="Upload clip-search classifier")
    except Exception as exc:  # the hub client raises many kinds (offline mode, HTTP, auth, validation): each is one line
        raise ClipSearchError(f"cannot push to the hub repo {repo_id}: {one_line(exc)}; the classifier is kept at {folder}") from None
    return str(getattr(info, "commit_url", info))
