"""The Hugging Face Hub, in one place: repo ids, licenses, the offline switch, the client and
fetching an artifact that ``oodkit push`` put in a model repo (``hub:OWNER/NAME[@REVISION]``).

The token comes from the usual huggingface-hub login or ``HF_TOKEN``; it is never passed
through oodkit, written to a manifest or printed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from oodkit.errors import OodkitError, first_line

PREFIX = "hub:"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
# The license identifiers the Hub's metadata validation accepts
# (https://huggingface.co/docs/hub/repositories-licenses).
LICENSES = [
    "apache-2.0",
    "mit",
    "openrail",
    "bigscience-openrail-m",
    "creativeml-openrail-m",
    "bigscience-bloom-rail-1.0",
    "bigcode-openrail-m",
    "afl-3.0",
    "artistic-2.0",
    "bsl-1.0",
    "bsd",
    "bsd-2-clause",
    "bsd-3-clause",
    "bsd-3-clause-clear",
    "c-uda",
    "cc",
    "cc0-1.0",
    "cc-by-2.0",
    "cc-by-2.5",
    "cc-by-3.0",
    "cc-by-4.0",
    "cc-by-sa-3.0",
    "cc-by-sa-4.0",
    "cc-by-nc-2.0",
    "cc-by-nc-3.0",
    "cc-by-nc-4.0",
    "cc-by-nd-4.0",
    "cc-by-nc-nd-3.0",
    "cc-by-nc-nd-4.0",
    "cc-by-nc-sa-2.0",
    "cc-by-nc-sa-3.0",
    "cc-by-nc-sa-4.0",
    "cdla-sharing-1.0",
    "cdla-permissive-1.0",
    "cdla-permissive-2.0",
    "wtfpl",
    "ecl-2.0",
    "epl-1.0",
    "epl-2.0",
    "etalab-2.0",
    "eupl-1.1",
    "eupl-1.2",
    "agpl-3.0",
    "gfdl",
    "gpl",
    "gpl-2.0",
    "gpl-3.0",
    "lgpl",
    "lgpl-2.1",
    "lgpl-3.0",
    "isc",
    "h-research",
    "intel-research",
    "lppl-1.3c",
    "ms-pl",
    "apple-ascl",
    "apple-amlr",
    "mpl-2.0",
    "odc-by",
    "odbl",
    "openrail++",
    "osl-3.0",
    "postgresql",
    "ofl-1.1",
    "ncsa",
    "unlicense",
    "zlib",
    "pddl",
    "lgpl-lr",
    "deepfloyd-if-license",
    "fair-noncommercial-research-license",
    "llama2",
    "llama3",
    "llama3.1",
    "llama3.2",
    "llama3.3",
    "llama4",
    "gemma",
    "unknown",
    "other",
]


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` says the Hub is not reachable."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def check_repo_id(repo_id: str, flag: str = "--repo-id") -> str:
    if not REPO_ID.match(repo_id):
        raise OodkitError(f"{flag} must look like OWNER/NAME, got {repo_id!r}")
    return repo_id


def check_license(license: str | None) -> str | None:
    if license is not None and license not in LICENSES:
        raise OodkitError(
            f"--license must be a Hub license identifier (e.g. cc-by-4.0, mit, apache-2.0, "
            f"other), got {license!r}"
        )
    return license


def client() -> Any:
    """A ``huggingface_hub.HfApi`` (looked up at call time, so tests can stub the class)."""
    import huggingface_hub

    return huggingface_hub.HfApi()


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``hub:OWNER/NAME[@REVISION]`` → (repo id, revision or None)."""
    body = ref[len(PREFIX) :] if ref.startswith(PREFIX) else ref
    repo_id, _, revision = body.partition("@")
    check_repo_id(repo_id, "a hub: reference")
    return repo_id, revision or None


def fetch_artifact(ref: str) -> tuple[Path, str]:
    """Download (or find in the local cache) an artifact pushed to a model repo.

    Returns the local folder and the reference pinned to the commit it resolved to.
    """
    import huggingface_hub

    repo_id, revision = parse_ref(ref)
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id, revision=revision, repo_type="model", local_files_only=offline()
        )
    except Exception as exc:  # noqa: BLE001 - network, auth and cache errors come in many types
        why = " (HF_HUB_OFFLINE is set and it is not in the local cache)" if offline() else ""
        raise OodkitError(f"cannot fetch {ref}{why}: {first_line(exc, with_type=True)}") from None
    folder = Path(folder)
    commit = folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else revision
    return folder, f"{PREFIX}{repo_id}" + (f"@{commit}" if commit else "")
