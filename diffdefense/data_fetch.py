"""Fetching a preset's IDX files into the data root: downloaded (urllib) or copied from a folder, each checked
against ``data_sources.SOURCES``, and placed atomically.

Every file is written to a temporary file inside the target folder and checked; only when all of them are good are
they renamed into place (``os.replace``). A failure removes the temporary files, so nothing half-written or
unchecked is ever left under a real name.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import secrets
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from diffdefense import __version__
from diffdefense.data import DataError
from diffdefense.data_sources import SOURCES, KnownFile

DOWNLOAD_TIMEOUT_S = 60
ABSENT_HTTP_CODES = (403, 404, 410)  # what servers answer for a missing file (S3 answers 403)


class FetchError(DataError):
    """A file that could not be fetched, or whose bytes are not the official ones."""


@dataclass
class FetchResult:
    """What one fetch did, by file name: placed (new or replaced), already there and good, skipped (optional and
    not at the source)."""

    folder: Path
    placed: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def file_matches(path: Path, known: KnownFile) -> tuple[bool, str]:
    """(whether the file's bytes are the official ones, 'sha256 <hex>' or 'md5 <hex>' of what it holds)."""
    algorithm, expected = ("sha256", known.sha256) if known.sha256 else ("md5", known.md5)
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest() == expected, f"{algorithm} {digest.hexdigest()}"


def is_url(origin: str) -> bool:
    return origin.startswith(("http://", "https://"))


def _origins(dataset: str, origin: str | None) -> list[str | Path]:
    """Base URLs to try in order, or one folder: the folder itself, or its <dataset>/ when it holds none of the
    files."""
    if origin is None:
        return list(SOURCES[dataset].mirrors)
    if is_url(origin):
        return [origin]
    folder = Path(origin).expanduser()
    if not folder.is_dir():
        raise FetchError(f"Expected --from to be an http(s) URL or an existing folder, but {origin!r} is neither.")
    if not any((folder / known.name).is_file() for known in SOURCES[dataset].files) and (folder / dataset).is_dir():
        folder = folder / dataset
    return [folder]


class _Unavailable(Exception):
    """One origin could not give one file; ``absent`` when the origin simply does not have it."""

    def __init__(self, why: str, absent: bool = False):
        super().__init__(why)
        self.absent = absent


def _open_source(origin: str | Path, name: str) -> BinaryIO:
    """``name`` at one origin, opened for reading; _Unavailable saying why not."""
    if isinstance(origin, Path):
        if not (origin / name).is_file():
            raise _Unavailable(f"there is no {origin / name}", absent=True)
        return open(origin / name, "rb")
    url = origin.rstrip("/") + "/" + name
    request = urllib.request.Request(url, headers={"User-Agent": f"diffdefense/{__version__}"})
    try:
        return urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S)
    except urllib.error.HTTPError as err:
        raise _Unavailable(f"{url} answered HTTP {err.code}", absent=err.code in ABSENT_HTTP_CODES) from err
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise _Unavailable(f"{url} could not be read ({getattr(err, 'reason', err)})") from err


def _stage(known: KnownFile, origins: list[str | Path], folder: Path, staged: list[Path]) -> Path | None:
    """Fetch one file into a temporary file in ``folder`` (recorded in ``staged``) and check it; None when it is
    optional and no origin has it."""
    failures: list[_Unavailable] = []
    for origin in origins:
        try:
            source = _open_source(origin, known.name)
        except _Unavailable as err:
            failures.append(err)
            continue
        tmp = folder / f".{known.name}.{os.getpid()}.{secrets.token_hex(4)}.part"
        # O_EXCL: a name no one else holds; mode 0o666 less the umask, as the placed file should be (mkstemp: 0o600).
        handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        staged.append(tmp)
        try:
            with source, os.fdopen(handle, "wb") as into:
                shutil.copyfileobj(source, into)
        except (OSError, http.client.HTTPException) as err:
            failures.append(_Unavailable(f"reading it from {origin} failed ({err})"))
            tmp.unlink()
            staged.remove(tmp)
            continue
        good, got = file_matches(tmp, known)
        if not good:
            expected = f"sha256 {known.sha256}" if known.sha256 else f"md5 {known.md5}"
            raise FetchError(
                f"{known.name} from {origin} has {got}, but {expected} was expected: it is corrupted or not the "
                f"official file, so nothing was placed in {folder}."
            )
        return tmp
    if not known.required and all(failure.absent for failure in failures):
        return None
    raise FetchError(
        f"Could not fetch {known.name}{'' if known.required else ' (optional)'}: "
        + "; ".join(str(failure) for failure in failures)
        + f". Nothing was placed in {folder}."
    )


def fetch_dataset(
    dataset: str, root: Path, origin: str | None = None, progress: Callable[[str], None] = lambda line: None
) -> FetchResult:
    """Fetch a preset's files into ``root / dataset``. ``origin``: a base URL or a folder (the data root or the data
    set's own folder); default: the official mirrors. Files already there and good are kept."""
    if dataset not in SOURCES:
        raise FetchError(f"Expected a data set to fetch from {sorted(SOURCES)}, but got {dataset!r}.")
    origins = _origins(dataset, origin)
    result = FetchResult(Path(root) / dataset)
    created = not result.folder.exists()
    result.folder.mkdir(parents=True, exist_ok=True)
    staged: list[Path] = []
    ready: list[tuple[Path, str]] = []
    try:
        for known in SOURCES[dataset].files:
            target = result.folder / known.name
            if target.is_file() and file_matches(target, known)[0]:
                result.present.append(known.name)
                continue
            progress(f"fetching {known.name}")
            tmp = _stage(known, origins, result.folder, staged)
            if tmp is None:
                result.skipped.append(known.name)
            else:
                ready.append((tmp, known.name))
        for tmp, name in ready:
            os.replace(tmp, result.folder / name)
            staged.remove(tmp)
            result.placed.append(name)
    except BaseException:
        for tmp in staged:
            tmp.unlink(missing_ok=True)
        if created and not any(result.folder.iterdir()):
            result.folder.rmdir()
        raise
    return result
