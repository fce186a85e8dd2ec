"""The data root: checking, verifying, importing and fetching the files that manifests describe.

- :func:`dataset_status` — is each file present, of the right size (cheap), and optionally of the right
  sha256 (reads every byte)?
- :func:`verify_dataset` — the full check, with a progress bar on large files.
- :func:`import_dataset` — copy user-supplied files into the data root. They are copied into a staging
  folder first, hashed while copying, checked against the manifest (size, sha256) and by content (shapes and
  counts, read by the dataset's own reader); only when everything passes are they moved into place. On any
  failure the staging folder is removed, so the data root is left exactly as it was.
- :func:`fetch_dataset` — download from the manifest's URLs, then import. Without a network this is a clear
  error that says to download elsewhere and use ``workbench data import``.
- :func:`embedded_file` / :func:`data_files` — what loaders call to get verified paths, or a
  :class:`~workbench.errors.DataError` that names the dataset, the expected path and the command that fixes it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from tqdm.auto import tqdm

from workbench import paths
from workbench.data.manifest import Manifest, ManifestFile, load_manifest
from workbench.errors import DataError

CHUNK = 1 << 20  # 1 MiB
#: Files at least this large get a progress bar while they are hashed or copied.
PROGRESS_MIN_BYTES = 32 << 20


# ----------------------------------------------------------------------------------------------------
# Hashing and copying
# ----------------------------------------------------------------------------------------------------


def _progress(total: int, desc: str, show: bool | None) -> tqdm:
    if show is None:
        show = total >= PROGRESS_MIN_BYTES
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=not show, leave=False)


def sha256_file(path: Path, progress: bool | None = None) -> str:
    """The sha256 of a file as lowercase hex; a progress bar for large files (``progress=None``: automatic)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f, _progress(path.stat().st_size, f"sha256 {path.name}", progress) as bar:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def copy_and_hash(src: Path, dst: Path, progress: bool | None = None) -> str:
    """Copy ``src`` to ``dst`` and return the sha256 of the bytes written (one pass over the data)."""
    digest = hashlib.sha256()
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dst, "wb") as fout, \
            _progress(src.stat().st_size, f"copy {src.name}", progress) as bar:
        while chunk := fin.read(CHUNK):
            digest.update(chunk)
            fout.write(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------
# Checking files against a manifest
# ----------------------------------------------------------------------------------------------------

OK, MISSING, WRONG_SIZE, WRONG_SHA, UNVERIFIED = "ok", "missing", "wrong size", "wrong sha256", "unverified"


@dataclass
class FileCheck:
    """The result of checking one manifest file on disk."""

    entry: ManifestFile
    path: Path
    state: str  # ok | missing | wrong size | wrong sha256 | unverified (sha256 unknown, size fine)
    size: int | None = None
    sha256: str | None = None  # computed, when hashing was asked for

    @property
    def good(self) -> bool:
        return self.state in (OK, UNVERIFIED)

    def describe(self) -> str:
        """One line: what was found, padded so that the paths line up."""
        e = self.entry
        if self.state == MISSING:
            return f"{'missing':<19} {self.path}"
        if self.state == WRONG_SIZE:
            return f"{'wrong size':<19} {self.path}: {self.size:,} bytes, expected {e.size:,} (truncated or a different file)"
        if self.state == WRONG_SHA:
            return f"{'wrong sha256':<19} {self.path}: {self.sha256}, expected {e.sha256 or 'one of the known copies'}"
        if self.state == UNVERIFIED:
            computed = f"; computed {self.sha256}" if self.sha256 else ""
            return f"{'unverified':<19} {self.path}: sha256 unknown in the manifest{computed} (content is checked on load)"
        return f"{'ok (size + sha256)' if self.sha256 else 'ok (size)':<19} {self.path}"


def check_file(entry: ManifestFile, data_root: Path | None = None, *, deep: bool = False,
               progress: bool | None = None) -> FileCheck:
    """Check one file: presence and size always; the sha256 too when ``deep`` (reads the whole file)."""
    path = entry.location(data_root)
    if not path.is_file():
        return FileCheck(entry, path, MISSING)
    size = path.stat().st_size
    sizes = entry.accepted_sizes()
    if sizes is not None and size not in sizes:
        return FileCheck(entry, path, WRONG_SIZE, size=size)
    if not deep:
        return FileCheck(entry, path, OK if entry.accepted_sha256() else UNVERIFIED, size=size)
    sha = sha256_file(path, progress)
    if not entry.accepted_sha256():
        return FileCheck(entry, path, UNVERIFIED, size=size, sha256=sha)
    if sha not in entry.accepted_sha256():
        return FileCheck(entry, path, WRONG_SHA, size=size, sha256=sha)
    return FileCheck(entry, path, OK, size=size, sha256=sha)


@dataclass
class DatasetStatus:
    manifest: Manifest
    checks: list[FileCheck]

    @property
    def state(self) -> str:
        """present | missing (no file there) | partial (some files missing) | corrupt (a file does not match)."""
        if all(c.good for c in self.checks):
            return "present"
        if any(c.state in (WRONG_SIZE, WRONG_SHA) for c in self.checks):
            return "corrupt"
        if all(c.state == MISSING for c in self.checks if c.entry.root == "data") and \
                all(c.good for c in self.checks if c.entry.root == "embedded"):
            return "missing"
        return "partial"

    def fix_hint(self) -> str:
        return fix_hint(self.manifest, [c for c in self.checks if not c.good])


def fix_hint(manifest: Manifest, bad: list[FileCheck]) -> str:
    """What the user should do about the files in ``bad``."""
    if any(c.entry.root == "embedded" for c in bad):
        return ("an embedded file shipped with the package is missing or modified: reinstall workbench "
                "(`pip install -e .` in the checkout) or rebuild the embedded data with "
                "`python -m workbench.data.build_embedded --source ../shared/datasets`.")
    where = ""
    if len(manifest.downloads) > 1:  # many files: fetch downloads them all, import takes a folder of them
        return (f"run `workbench data fetch {manifest.name}` on a machine with network access (it downloads "
                f"the {len(manifest.downloads)} files and imports them), or copy the folder that holds them here and "
                f"run: {manifest.import_command()}")
    if manifest.downloads:
        where = f"download {manifest.downloads[0].url} (and unpack it) on a machine with network access, then "
    elif manifest.urls:
        where = f"get the files from {manifest.urls[0]}, then "
    return f"{where}run: {manifest.import_command()}"


def dataset_status(manifest: Manifest, data_root: Path | None = None, *, deep: bool = False) -> DatasetStatus:
    """Check every file of a dataset (embedded files are always hashed: they are small)."""
    checks = [check_file(f, data_root, deep=deep or f.root == "embedded", progress=False if not deep else None)
              for f in manifest.files]
    return DatasetStatus(manifest, checks)


def verify_dataset(name: str, data_root: Path | None = None,
                   report: Callable[[str], None] | None = None) -> DatasetStatus:
    """Check sizes and sha256 of every file of ``name``; raise :class:`DataError` if any does not match."""
    manifest = load_manifest(name)
    checks = []
    for entry in manifest.files:
        check = check_file(entry, data_root, deep=True)
        checks.append(check)
        if report:
            report("  " + check.describe())
    status = DatasetStatus(manifest, checks)
    bad = [c for c in checks if not c.good]
    if bad:
        lines = "\n".join("  " + c.describe() for c in bad)
        raise DataError(f"dataset {name!r} failed verification:\n{lines}\nTo fix it, {status.fix_hint()}")
    return status


# ----------------------------------------------------------------------------------------------------
# What loaders call
# ----------------------------------------------------------------------------------------------------


def embedded_file(manifest: Manifest, path: str) -> Path:
    """The verified path of an embedded file (size and sha256 checked on every call; the files are small)."""
    check = check_file(manifest.file(path), deep=True, progress=False)
    if not check.good:
        raise DataError(f"dataset {manifest.name!r}: {check.describe()}. To fix it, {fix_hint(manifest, [check])}")
    return check.path


def data_files(manifest: Manifest, data_root: Path | None = None) -> dict[str, Path]:
    """Paths of every data-root file of a dataset, checked for presence and size (not hashed: see ``verify``).

    A missing or wrong-sized file is a :class:`DataError` naming the dataset, the expected path and the exact
    ``workbench data import`` command.
    """
    checks = [check_file(f, data_root) for f in manifest.data_files]
    bad = [c for c in checks if not c.good]
    if bad:
        root = data_root or paths.data_root()
        lines = "\n".join("  " + c.describe() for c in bad)
        what = "is not in" if all(c.state == MISSING for c in bad) else "does not match its manifest in"
        raise DataError(
            f"dataset {manifest.name!r} {what} the data root {root}:\n{lines}\n"
            f"To fix it, {fix_hint(manifest, bad)}"
            + ("" if data_root else "  (The data root is $WORKBENCH_DATA.)")
        )
    return {c.entry.path: c.path for c in checks}


# ----------------------------------------------------------------------------------------------------
# Import
# ----------------------------------------------------------------------------------------------------


def _content_checker(fmt: str) -> Callable[[Manifest, dict[str, Path]], None] | None:
    """The reader-based check for a dataset format (shapes and counts), run on staged copies before import."""
    if fmt == "xlsa17":
        from workbench.data.xlsa17 import check_xlsa17_files

        return check_xlsa17_files
    if fmt == "cub-vgg-fc7":
        from workbench.data.cub_vgg import check_cub_vgg_files

        return check_cub_vgg_files
    if fmt == "torchvision-resnet":
        from workbench.models.resnet import check_torchvision_files

        return check_torchvision_files
    return None


def _find_source(entry: ManifestFile, source: Path) -> Path | None:
    """Find the file for ``entry`` inside the user's folder ``source``.

    For ``xlsa17/AWA2/res101.mat`` it tries ``source/xlsa17/AWA2/res101.mat``, ``source/AWA2/res101.mat``,
    ``source/res101.mat``, then any ``.../AWA2/res101.mat`` below ``source`` if there is exactly one.
    """
    parts = PurePosixPath(entry.path).parts
    for k in range(len(parts), 0, -1):
        candidate = source.joinpath(*parts[-k:])
        if candidate.is_file():
            return candidate
    if len(parts) >= 2:
        hits = [p for p in source.rglob(parts[-1]) if p.is_file() and p.parent.name == parts[-2]]
        if len(hits) == 1:
            return hits[0]
    return None


def _match_sources(manifest: Manifest, source: Path) -> dict[ManifestFile, Path]:
    wanted = manifest.data_files
    if source.is_file():
        if len(wanted) == 1:
            return {wanted[0]: source}
        same_name = [f for f in wanted if PurePosixPath(f.path).name == source.name]
        if len(same_name) == 1:
            return {same_name[0]: source}
        names = ", ".join(PurePosixPath(f.path).name for f in wanted)
        raise DataError(f"{source} is a single file, but {manifest.name!r} consists of {len(wanted)} files ({names}). "
                        f"Pass the folder that holds them: {manifest.import_command()}")
    found = {f: _find_source(f, source) for f in wanted}
    missing = [f.path for f, p in found.items() if p is None]
    if missing:
        raise DataError(
            f"{source} does not contain {', '.join(PurePosixPath(m).name for m in missing)} "
            f"(needed for {', '.join(missing)} of {manifest.name!r}). Nothing was imported. "
            f"Pass the folder that holds every file, e.g. {manifest.import_command()}"
        )
    return found  # type: ignore[return-value]


@dataclass
class ImportResult:
    manifest: Manifest
    files: list[FileCheck]  # the checks of the files now in the data root


def import_dataset(name: str, source: Path | str, data_root: Path | None = None,
                   report: Callable[[str], None] | None = None) -> ImportResult:
    """Verify user-supplied files for dataset ``name`` and copy them into the data root.

    ``source`` is a file or a folder that contains the dataset's files (e.g. ``xlsa17/data/AWA2``).
    Everything is staged and checked (size, sha256, content) before anything is moved into the data root;
    on any failure the data root is left exactly as it was.
    """
    manifest = load_manifest(name)
    source = Path(source).expanduser()
    root = Path(data_root) if data_root is not None else paths.data_root()
    if not manifest.data_files:
        raise DataError(f"{name!r} is embedded in the package; there is nothing to import.")
    if not source.exists():
        raise DataError(f"{source} does not exist. Pass the downloaded file or folder: {manifest.import_command()}")
    matched = _match_sources(manifest, source)

    # Cheap checks first, before anything is written.
    for entry, src in matched.items():
        sizes = entry.accepted_sizes()
        size = src.stat().st_size
        if sizes is not None and size not in sizes:
            raise DataError(f"{src} has {size:,} bytes but {entry.path} of {name!r} must have {entry.size:,} bytes: "
                            "it is truncated or a different file. Nothing was imported; download it again.")

    created = [d for d in [root, *root.parents] if not d.exists()][::-1]  # to remove again on failure
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=root))
    moved_dirs: list[Path] = []
    try:
        staged: dict[str, Path] = {}
        checks: list[FileCheck] = []
        for entry, src in matched.items():
            dst = staging.joinpath(*PurePosixPath(entry.path).parts)
            sha = copy_and_hash(src, dst)
            accepted = entry.accepted_sha256()
            if accepted and sha not in accepted:
                raise DataError(f"{src} has sha256 {sha}, but {entry.path} of {name!r} must have {entry.sha256}: "
                                "it is corrupt or a different version. Nothing was imported; download it again.")
            state = OK if accepted else UNVERIFIED
            checks.append(FileCheck(entry, entry.location(root), state, size=dst.stat().st_size, sha256=sha))
            staged[entry.path] = dst
        checker = _content_checker(manifest.format)
        if checker is not None:
            checker(manifest, staged)
        for path, src in staged.items():
            dst = root.joinpath(*PurePosixPath(path).parts)
            for d in [dst.parent, *dst.parent.parents]:
                if d == root or root not in d.parents:
                    break
                if not d.exists():
                    moved_dirs.append(d)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for d in sorted(moved_dirs, key=lambda p: len(p.parts), reverse=True) + created[::-1]:
            try:
                d.rmdir()
            except OSError:
                pass
        raise
    shutil.rmtree(staging, ignore_errors=True)
    if report:
        for c in checks:
            report("  " + c.describe())
    return ImportResult(manifest, checks)


# ----------------------------------------------------------------------------------------------------
# Fetch
# ----------------------------------------------------------------------------------------------------


def _open_url(url: str, timeout: float):
    """Open a URL for reading (a separate function so tests can simulate being offline)."""
    return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - URLs come from our manifests


def fetch_dataset(name: str, data_root: Path | None = None, timeout: float = 20.0,
                  report: Callable[[str], None] | None = None) -> ImportResult:
    """Download a dataset from its manifest's URLs, then import it (with all of import's checks)."""
    manifest = load_manifest(name)
    if not manifest.data_files:
        raise DataError(f"{name!r} is embedded in the package; there is nothing to fetch.")
    if not manifest.downloads:
        raise DataError(f"no download URL is known for {name!r}. Get the files from "
                        f"{', '.join(manifest.urls) or 'its publishers'}, then run: {manifest.import_command()}")
    with tempfile.TemporaryDirectory(prefix="workbench-fetch-") as tmp:
        tmp_dir = Path(tmp)
        unpacked = tmp_dir / "files"
        for download in manifest.downloads:
            target = tmp_dir / (PurePosixPath(download.url).name or "download")
            _download(download.url, target, timeout, manifest)
            if download.kind == "zip":
                _extract_members(target, download.members, unpacked, manifest)
            else:
                entry = manifest.data_files[0] if len(manifest.data_files) == 1 else manifest.file(target.name)
                dst = unpacked.joinpath(*PurePosixPath(entry.path).parts)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(target, dst)
        return import_dataset(name, unpacked, data_root, report=report)


def _download(url: str, target: Path, timeout: float, manifest: Manifest) -> None:
    try:
        response = _open_url(url, timeout)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(
            f"could not download {url} ({reason}). This machine seems to be offline or the server is unreachable. "
            f"Download it on a machine with network access, copy it here (unpack it if it is a zip), "
            f"and run: {manifest.import_command()}"
        ) from None
    with response:
        total = int(response.headers.get("Content-Length") or 0)
        with open(target, "wb") as f, tqdm(total=total or None, desc=f"download {target.name}", unit="B",
                                           unit_scale=True, unit_divisor=1024) as bar:
            while chunk := response.read(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))


def _extract_members(archive: Path, members: dict[str, str], out: Path, manifest: Manifest) -> None:
    try:
        with zipfile.ZipFile(archive) as z:
            names = set(z.namelist())
            for member, target in members.items():
                if member not in names:
                    raise DataError(f"the download {archive.name} has no member {member}; the manifest "
                                    f"{manifest.source_path} may be outdated. Download and import by hand: "
                                    f"{manifest.import_command()}")
                dst = out.joinpath(*PurePosixPath(target).parts)
                dst.parent.mkdir(parents=True, exist_ok=True)
                with z.open(member) as fin, open(dst, "wb") as fout:
                    shutil.copyfileobj(fin, fout, CHUNK)
    except zipfile.BadZipFile:
        raise DataError(f"the download {archive.name} is not a valid zip file (interrupted download?). "
                        f"Try again, or download it by hand and run: {manifest.import_command()}") from None


def snapshot(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file below ``folder`` (used to show a folder is unchanged)."""
    if not folder.exists():
        return {}
    return {p.relative_to(folder).as_posix(): sha256_file(p, progress=False)
            for p in sorted(folder.rglob("*")) if p.is_file()}
