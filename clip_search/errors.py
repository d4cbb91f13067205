"""The project's exceptions: each one is an expected failure with a message a user can act on."""


class ClipSearchError(Exception):
    """Base of every expected failure; the CLI and the app show its message as one line."""


class ModelLoadError(ClipSearchError):
    """A model id or path could not be loaded (unknown id, offline, wrong layout)."""


class StoreError(ClipSearchError):
    """An embedding store is missing, malformed, or inconsistent with itself or the model in use."""


class SourceError(ClipSearchError):
    """A source (folder, URL list, dataset) cannot be opened or read as a whole."""


class QueryError(ClipSearchError):
    """A query or label set cannot be searched (empty, unreadable image, no labels)."""


class ClusterError(ClipSearchError):
    """A distributed engine cannot be used: no scheduler at the address, the engine not installed, a failed partition."""


class SkipItem(Exception):
    """One item of a source cannot be embedded; its message is the reason written to skipped.jsonl."""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, cut to 300 characters: the tail of a user-facing error."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."
