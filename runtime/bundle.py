"""Reading a bundle (the only thing the torch side and the runtime share): manifest.json and the files it lists.

A bundle is refused, naming the file, before anything runs if: the manifest is missing or not JSON, its format
version is not one this runtime reads, a listed path leaves the bundle folder, a file is missing, its size or
sha256 differs from the manifest. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from diffdefense.shipped import sha256_of

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


class BundleError(ValueError):
    """A bundle that cannot be trusted or read."""


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: dict

    def path(self, role: str) -> Path:
        """The verified file for a role ('unet', 'classifier', ...)."""
        try:
            return self.root / self.manifest["roles"][role]
        except KeyError as err:
            raise BundleError(f"The bundle at {self.root} has no {role!r} file in its manifest.") from err


def load_bundle(root: str | Path) -> Bundle:
    root = Path(root)
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(f"Expected a bundle manifest at {manifest_path}, but there is none.")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{manifest_path} is not valid JSON ({err}).") from err
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{manifest_path} has format version {version!r}; this runtime reads version {FORMAT_VERSION}."
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{manifest_path} lists no files.")
    resolved_root = root.resolve()
    for name, entry in files.items():
        path = (root / name).resolve()
        if resolved_root not in path.parents:
            raise BundleError(f"{manifest_path} lists {name!r}, a path outside the bundle folder.")
        if not path.is_file():
            raise BundleError(f"The bundle file {name} listed in {manifest_path} is missing.")
        if path.stat().st_size != entry.get("bytes"):
            raise BundleError(
                f"The bundle file {name} has {path.stat().st_size} bytes, but the manifest says "
                f"{entry.get('bytes')}: it was changed after export."
            )
        if sha256_of(path) != entry.get("sha256"):
            raise BundleError(
                f"The bundle file {name} does not match its sha256 in the manifest: it was changed after export."
            )
    for role, name in manifest.get("roles", {}).items():
        if name not in files:
            raise BundleError(f"{manifest_path} gives role {role!r} to {name!r}, which it does not list.")
    return Bundle(root, manifest)
