"""``hf://ORG/REPO[@REVISION][/FILE]``: a Hugging Face repository, resolved without huggingface_hub.

The endpoint is ``HF_ENDPOINT`` (default https://huggingface.co). Files are read from
``{endpoint}/{repo}/resolve/{revision}/{file}``; when no file is named, the repository's listing
(``{endpoint}/api/models/{repo}/revision/{revision}``) chooses its checkpoint: ``model.safetensors``,
else a safetensors shard index, else one ``.safetensors`` file, else another checkpoint. The token
comes from ``HF_TOKEN`` or the huggingface_hub login (its token file); it is sent only to the
endpoint's host and never shown.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path

from .http import HttpClient, RemoteError

DEFAULT_ENDPOINT = "https://huggingface.co"
MAX_LISTING = 16 * 1024 * 1024
PREFERRED = ("model.safetensors", "model.safetensors.index.json")
FALLBACK_SUFFIXES = (".safetensors.index.json", ".safetensors", ".gguf", ".bin.index.json", ".bin", ".pt", ".pth",
                     ".keras", ".h5", ".onnx", ".npz", ".npy")


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def token() -> str | None:
    """HF_TOKEN, else the token huggingface_hub's login stored (read as a file; nothing is imported)."""
    value = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if value:
        return value.strip()
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    path = Path(os.environ.get("HF_TOKEN_PATH", home / "token"))
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def parse(source: str) -> tuple[str, str, str | None]:
    """(repository, revision, file or None) of ``hf://ORG/REPO[@REVISION][/FILE]``."""
    rest = source[len("hf://"):].strip("/")
    parts = rest.split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise RemoteError(f"{source}: expected hf://ORG/REPO[@REVISION][/FILE]")
    repo, revision = parts[0] + "/" + parts[1], "main"
    if "@" in repo:
        repo, revision = repo.split("@", 1)
    file = "/".join(parts[2:]) or None
    if not revision or ".." in parts:
        raise RemoteError(f"{source}: expected hf://ORG/REPO[@REVISION][/FILE]")
    return repo, revision, file


def authorise(client: HttpClient) -> None:
    tok = token()
    if tok:
        client.auth[urllib.parse.urlsplit(endpoint()).netloc] = f"Bearer {tok}"


def resolve(source: str, client: HttpClient) -> str:
    """The URL of the file an ``hf://`` source names, or of the repository's checkpoint."""
    repo, revision, file = parse(source)
    authorise(client)
    rev = urllib.parse.quote(revision, safe="")
    if file is None:
        file = choose(source, listing(repo, rev, client))
    return f"{endpoint()}/{repo}/resolve/{rev}/{urllib.parse.quote(file)}"


def listing(repo: str, rev: str, client: HttpClient) -> list[str]:
    blob = client.read_all(f"{endpoint()}/api/models/{repo}/revision/{rev}", MAX_LISTING)
    try:
        siblings = json.loads(blob.decode("utf-8")).get("siblings") or []
        return [s["rfilename"] for s in siblings if isinstance(s.get("rfilename"), str)]
    except (ValueError, AttributeError, TypeError, KeyError):
        raise RemoteError(f"{endpoint()}/api/models/{repo}: not a repository listing") from None


def choose(source: str, files: list[str]) -> str:
    for name in PREFERRED:
        if name in files:
            return name
    for suffix in FALLBACK_SUFFIXES:
        found = sorted(f for f in files if f.endswith(suffix) and "/" not in f)
        if suffix == ".safetensors" and len(found) > 1:
            continue  # shards without an index: ambiguous
        if found:
            return found[0]
    raise RemoteError(f"{source}: the repository holds no checkpoint winspect reads (files: "
                      f"{', '.join(files[:8]) or 'none'})")
