"""The official Tiny-ImageNet archive: download, check, and unpack the part this project reads.

- :func:`download` makes ``<destination>/tiny-imagenet-200/`` from the official
  ``tiny-imagenet-200.zip`` when it is not there yet: :func:`fetch_archive` downloads the archive
  with pooch (a progress bar, a temporary file renamed only after the checks pass) and refuses
  it unless it has exactly :data:`ARCHIVE_BYTES` bytes and the md5 :data:`ARCHIVE_MD5`;
  :func:`unpack` then extracts only what the probe and the trainer read.
- The URL can point at a mirror through ``$ANALYSIS_UTILS_TINY_IMAGENET_URL``; the size and
  the hash cannot be changed, so a mirror must serve the official file.
- What is unpacked: ``wnids.txt``, ``words.txt``, ``val/val_annotations.txt``, the validation
  images of the 100 probe categories (``sorted(wnids)[::2]``) in ``val/images/``, and the
  training images of the same categories in ``train/<wnid>/images/``. The archive is kept
  beside the folder (delete it to save 248 MB; the folder alone is enough).

``analysis_utils.probes`` calls :func:`download` when no folder is given and the user cache
has none; ``python -m analysis_utils download tiny-imagenet`` does the same by hand.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from .errors import AnalysisUtilsError

OFFICIAL_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
#: the environment variable that replaces :data:`OFFICIAL_URL` (a mirror of the same file)
URL_VARIABLE = "ANALYSIS_UTILS_TINY_IMAGENET_URL"
ARCHIVE_NAME = "tiny-imagenet-200.zip"
ARCHIVE_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
ARCHIVE_BYTES = 248_100_043
FOLDER = "tiny-imagenet-200"
_WNID = re.compile(r"n\d{8}")
_CHUNK = 1 << 20


def archive_url() -> str:
    """The URL to download from: ``$ANALYSIS_UTILS_TINY_IMAGENET_URL``, else the official one."""
    return os.environ.get(URL_VARIABLE) or OFFICIAL_URL


def archive_problem(path: Path) -> str | None:
    """Why ``path`` is not the official archive (size first, then md5), or None when it is."""
    size = path.stat().st_size
    if size != ARCHIVE_BYTES:
        return f"has {size:,} bytes, not the official {ARCHIVE_BYTES:,}"
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    if digest.hexdigest() != ARCHIVE_MD5:
        return f"has md5 {digest.hexdigest()}, not the official {ARCHIVE_MD5}"
    return None


def _offline_sentence(url: str, reason: str, destination: Path) -> str:
    return (
        f"Could not download {url} ({reason}); without internet, put the official {FOLDER}/ "
        f"folder (the unzipped {ARCHIVE_NAME}, or this project's val-probe100.tar.gz unpacked) "
        f"in {destination}, or point data_dir / ANALYSIS_UTILS_DATA at the folder that holds it."
    )


def fetch_archive(destination: Path) -> Path:
    """``<destination>/tiny-imagenet-200.zip``, downloaded and checked (size and md5) if needed.

    A file that fails a check is deleted with a sentence saying why: an existing one is then
    downloaded again, a fresh download raises :class:`AnalysisUtilsError`.
    """
    import pooch
    import requests

    destination = Path(destination)
    archive = destination / ARCHIVE_NAME
    url = archive_url()
    if archive.exists():
        problem = archive_problem(archive)
        if problem is None:
            return archive
        archive.unlink()
        print(f"The cached {archive} {problem}, so it was deleted and is downloaded again.",
              file=sys.stderr)
    destination.mkdir(parents=True, exist_ok=True)
    print(f"Downloading Tiny-ImageNet ({ARCHIVE_BYTES / 1e6:.0f} MB) from {url} into "
          f"{destination}; it is checked by size and md5 before it is used.", file=sys.stderr)

    def download_and_check_size(url: str, output_file: str, caller) -> None:
        pooch.HTTPDownloader(progressbar=True, chunk_size=_CHUNK, timeout=60)(
            url, output_file, caller)
        size = Path(output_file).stat().st_size
        if size != ARCHIVE_BYTES:  # pooch deletes the temporary file on any exception
            raise AnalysisUtilsError(
                f"The file downloaded from {url} has {size:,} bytes, not the official "
                f"{ARCHIVE_BYTES:,}, so it was deleted; run again, or set {URL_VARIABLE} to a "
                "mirror that serves the official archive."
            )

    logger = pooch.get_logger()  # its own "Downloading data from" line would repeat ours
    level = logger.level
    logger.setLevel("WARNING")
    try:
        pooch.retrieve(url, known_hash=f"md5:{ARCHIVE_MD5}", fname=ARCHIVE_NAME,
                       path=destination, downloader=download_and_check_size)
    except AnalysisUtilsError:
        raise
    except ValueError as exc:  # pooch's hash mismatch; it has deleted the download
        raise AnalysisUtilsError(
            f"The file downloaded from {url} does not have the official md5 {ARCHIVE_MD5}, so "
            f"it was deleted; run again, or set {URL_VARIABLE} to a mirror that serves the "
            "official archive."
        ) from exc
    except requests.exceptions.ChunkedEncodingError as exc:  # the connection broke off
        raise AnalysisUtilsError(
            f"The download from {url} broke off ({exc}), so nothing was kept; run again, or set "
            f"{URL_VARIABLE} to a mirror that serves the official archive."
        ) from exc
    except requests.exceptions.RequestException as exc:  # offline, refused, not found
        raise AnalysisUtilsError(_offline_sentence(url, str(exc), destination)) from exc
    finally:
        logger.setLevel(level)
    return archive


def _read_member(handle: zipfile.ZipFile, name: str, archive: Path) -> str:
    try:
        return handle.read(name).decode()
    except KeyError:
        raise AnalysisUtilsError(
            f"{archive} has no {name}, so it is not the official Tiny-ImageNet archive; delete "
            "it and download it again."
        ) from None


def members_to_unpack(handle: zipfile.ZipFile, archive: Path) -> list[str]:
    """The archive members the probe and the trainer read (see the module docstring)."""
    wnids = _read_member(handle, f"{FOLDER}/wnids.txt", archive).split()
    bad = [wnid for wnid in wnids if not _WNID.fullmatch(wnid)]
    if bad or not wnids:
        raise AnalysisUtilsError(
            f"{archive}'s wnids.txt lists {bad[0] if bad else 'no wnid'!r}, not wnids like "
            "n01443537; delete it and download the official archive again."
        )
    categories = set(sorted(wnids)[::2])
    annotations = _read_member(handle, f"{FOLDER}/val/val_annotations.txt", archive)
    val_images = []
    for line in annotations.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[1] in categories:
            val_images.append(f"{FOLDER}/val/images/{parts[0]}")
    names = set(handle.namelist())
    missing = [name for name in val_images if name not in names]
    if missing:
        raise AnalysisUtilsError(
            f"{archive} lacks {missing[0]}, which val_annotations.txt lists; delete it and "
            "download the official archive again."
        )
    train_prefixes = tuple(f"{FOLDER}/train/{wnid}/images/" for wnid in sorted(categories))
    train_images = sorted(name for name in names
                          if name.startswith(train_prefixes) and not name.endswith("/"))
    text = [f"{FOLDER}/{name}" for name in
            ("wnids.txt", "words.txt", "val/val_annotations.txt")]
    _read_member(handle, text[1], archive)  # words.txt must be there too
    return text + val_images + train_images


def unpack(archive: Path, destination: Path) -> Path:
    """Extract :func:`members_to_unpack` of ``archive`` as ``<destination>/tiny-imagenet-200``.

    The files go to a temporary folder inside ``destination`` that is renamed at the end, so
    an interrupted unpack leaves no half-filled ``tiny-imagenet-200/``.
    """
    destination = Path(destination)
    target = destination / FOLDER
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=destination))
    try:
        with zipfile.ZipFile(archive) as handle:
            for name in members_to_unpack(handle, archive):
                handle.extract(name, staging)
        if not target.exists():  # another process may have finished first
            os.replace(staging / FOLDER, target)
    except zipfile.BadZipFile as exc:
        raise AnalysisUtilsError(
            f"{archive} cannot be read as a zip file ({exc}); delete it and download it again."
        ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def download(destination: str | os.PathLike | None = None) -> Path:
    """``<destination>/tiny-imagenet-200``, downloaded, checked and unpacked when it is missing.

    ``destination`` defaults to the user cache (:func:`analysis_utils.probes.tiny_data_home`).
    """
    if destination is None:
        from .probes import tiny_data_home

        destination = tiny_data_home()
    destination = Path(destination).expanduser()
    if (destination / FOLDER).is_dir():
        return destination / FOLDER
    return unpack(fetch_archive(destination), destination)
