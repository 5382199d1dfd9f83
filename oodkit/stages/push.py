"""Push a tabular artifact to the Hugging Face Hub with a dataset card built from its manifest.

The token comes from the usual huggingface-hub login or ``HF_TOKEN``; it is never passed
through oodkit, written to a manifest or printed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from oodkit.artifacts import MANIFEST_NAME, Artifact, load_artifact
from oodkit.errors import OodkitError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def dataset_card(art: Artifact) -> str:
    """A README.md for the Hub: YAML header plus the manifest's provenance."""
    m = art.manifest
    rows = len(art.dataset()) if art.has_data else 0
    lines = [
        "---",
        "tags:",
        "- oodkit",
        f"- {m.kind}",
        "- out-of-distribution-detection",
        "---",
        "",
        f"# oodkit {m.kind} artifact",
        "",
        f"Made by oodkit {m.oodkit_version} on {m.created} with:",
        "",
        "```",
        m.command,
        "```",
        "",
        f"- rows: {rows}",
        f"- content fingerprint: `{m.fingerprint}`",
        f"- format version: {m.format_version}",
        "",
        "## Parameters",
        "",
        "```json",
        json.dumps(m.params, indent=2),
        "```",
    ]
    if m.inputs:
        lines += ["", "## Inputs", ""]
        lines += [
            f"- {i.get('kind')}: `{i.get('path')}` (fingerprint `{i.get('fingerprint')}`)"
            for i in m.inputs
        ]
    if m.summary:
        lines += ["", "## Summary", "", "```json", json.dumps(m.summary, indent=2), "```"]
    return "\n".join(lines) + "\n"


def push_artifact(path: str | Path, repo_id: str, private: bool = False) -> str:
    """Push ``path``'s data, manifest and card to the dataset repo ``repo_id``; return its URL."""
    art = load_artifact(path)
    if not art.has_data:
        raise OodkitError(f"{art.path} ({art.kind}) has no tabular data to push")
    if not REPO_ID.match(repo_id):
        raise OodkitError(f"--repo-id must look like OWNER/NAME, got {repo_id!r}")
    if hub_offline():
        raise OodkitError(
            "cannot push: HF_HUB_OFFLINE is set (the Hugging Face Hub is not reachable)"
        )
    from huggingface_hub import HfApi

    card = dataset_card(art)
    try:
        art.dataset().push_to_hub(repo_id, private=private)
        api = HfApi()
        api.upload_file(
            path_or_fileobj=card.encode(),
            path_in_repo="README.md",
            repo_id=repo_id,
            repo_type="dataset",
        )
        api.upload_file(
            path_or_fileobj=str(art.path / MANIFEST_NAME),
            path_in_repo=MANIFEST_NAME,
            repo_id=repo_id,
            repo_type="dataset",
        )
    except Exception as exc:  # noqa: BLE001 - network, auth and HTTP errors come in many types
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise OodkitError(f"cannot push to {repo_id}: {type(exc).__name__}: {first}") from None
    return f"https://huggingface.co/datasets/{repo_id}"
