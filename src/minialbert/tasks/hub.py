"""The commit a hub dataset's revision resolves to: recorded in task.json and the one loaded.

A branch or tag moves; the commit sha does not, so task.json says exactly what was read. A spec
that pins a full sha the hub does not confirm fails, naming both values. Offline (HF_HUB_OFFLINE)
the hub cannot be asked: a pinned sha is taken as is, anything else is recorded as null with a
warning (the datasets cache may still serve the data).
"""

from __future__ import annotations

import re
import sys

FULL_SHA = re.compile(r"^[0-9a-fA-F]{40}$")


def resolve_revision(hf_id: str, revision: str | None) -> str | None:
    """The commit sha `revision` (None: the default branch) of dataset `hf_id` points at."""
    from huggingface_hub import HfApi  # lazy: needs the network
    from huggingface_hub.errors import (OfflineModeIsEnabled, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    pinned = revision if revision and FULL_SHA.match(revision) else None
    try:
        resolved = getattr(HfApi().dataset_info(hf_id, revision=revision), "sha", None)
    except RevisionNotFoundError:
        raise ValueError(f"{hf_id}: the hub has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise ValueError(f"{hf_id}: no such dataset on the hub (or it is private)") from None
    except OfflineModeIsEnabled:
        if pinned is None:
            print(f"warning: {hf_id}: offline, so revision {revision or 'main'!r} is not resolved; "
                  f"task.json records revision_resolved null (pin a commit sha to avoid this)",
                  file=sys.stderr)
        return pinned
    if pinned and resolved and resolved.lower() != pinned.lower():
        raise ValueError(f"{hf_id}: revision is pinned to {pinned} but the hub resolves it to "
                         f"{resolved}")
    return resolved
