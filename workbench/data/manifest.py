"""Dataset manifests: one YAML file per dataset in ``data_manifests/``.

A manifest says what a dataset is (description, citation, licence, official pages), which files make it up
(path, size in bytes, sha256), how many classes/images/attributes it must have, which loader reads it, and
whether it ships inside the package. It is the single source of truth that ``workbench data`` verifies
against and that the loaders check their counts with.

Every file entry lives under one of two roots:

- ``root: data``: the *data root* (``$WORKBENCH_DATA``), filled by ``workbench data import`` / ``fetch``;
- ``root: embedded``: ``workbench/embedded/`` inside the package (built by ``python -m
  workbench.data.build_embedded``), so a tampered or truncated shipped file is detected too.

``size`` or ``sha256`` may be ``null`` where they are not known (the file is then checked by its content:
shapes and counts); ``known_copies`` lists other byte-exact variants that are also accepted (e.g. a copy
that was re-saved by MATLAB). ``sources`` lists the raw inputs the embedded files were built from.

Manifests are read with ``yaml.safe_load`` and validated field by field; a malformed one is a
:class:`~workbench.errors.DataError` that names the file and the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from workbench import paths
from workbench.errors import DataError

ROOTS = ("data", "embedded")
FORMATS = ("omniglot", "digits-7seg", "taskonomy", "xlsa17", "xlsa17-attributes", "torchvision-resnet", "cub-vgg-fc7")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class KnownCopy:
    """Another byte-exact version of a file that is accepted as genuine (e.g. a re-saved copy)."""

    sha256: str
    size: int | None
    source: str


@dataclass(frozen=True)
class ManifestFile:
    """One file of a dataset: where it lives and what it must hash to."""

    path: str  # relative to its root, POSIX separators
    root: str  # "data" or "embedded"
    size: int | None  # bytes; None = unknown
    sha256: str | None  # lowercase hex; None = unknown
    note: str = ""
    known_copies: tuple[KnownCopy, ...] = ()

    def location(self, data_root: Path | None = None) -> Path:
        """The absolute path of this file (data root taken from ``$WORKBENCH_DATA`` unless given)."""
        base = paths.embedded_dir() if self.root == "embedded" else (data_root or paths.data_root())
        return base.joinpath(*PurePosixPath(self.path).parts)

    def accepted_sha256(self) -> set[str]:
        shas = {c.sha256 for c in self.known_copies}
        if self.sha256:
            shas.add(self.sha256)
        return shas

    def accepted_sizes(self) -> set[int] | None:
        """Sizes a genuine copy may have, or None when any size is possible (size unknown)."""
        if self.size is None:
            return None
        return {self.size} | {c.size for c in self.known_copies if c.size is not None}


@dataclass(frozen=True)
class Download:
    """A URL ``workbench data fetch`` may download; ``members`` maps archive members to manifest paths."""

    url: str
    kind: str  # "zip" or "file"
    members: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    name: str
    title: str
    description: str
    citation: str
    license: str
    urls: tuple[str, ...]
    format: str
    loader: str
    embedded: bool
    files: tuple[ManifestFile, ...]
    counts: dict[str, int]
    source_path: Path
    import_path_example: str = ""
    downloads: tuple[Download, ...] = ()
    sources: tuple[ManifestFile, ...] = ()
    notes: str = ""

    @property
    def data_files(self) -> tuple[ManifestFile, ...]:
        """Files that belong in the data root (what ``import`` and ``fetch`` provide)."""
        return tuple(f for f in self.files if f.root == "data")

    @property
    def embedded_files(self) -> tuple[ManifestFile, ...]:
        return tuple(f for f in self.files if f.root == "embedded")

    def file(self, path: str) -> ManifestFile:
        """The entry whose path is ``path`` (or ends with ``/path``)."""
        for f in self.files:
            if f.path == path or f.path.endswith("/" + path):
                return f
        raise DataError(f"manifest {self.source_path} lists no file {path!r}; it may be outdated (restore it from git).")

    def count(self, key: str) -> int:
        if key not in self.counts:
            raise DataError(f"manifest {self.source_path} has no 'counts.{key}'; add it or restore the file from git.")
        return self.counts[key]

    def import_command(self) -> str:
        """The exact command that fixes a missing data-root file of this dataset."""
        example = self.import_path_example or "/path/to/downloaded/files"
        return f"workbench data import {self.name} {example}"


# ----------------------------------------------------------------------------------------------------
# Reading and validating
# ----------------------------------------------------------------------------------------------------


class _Reader:
    """Type-checked access to one manifest mapping; every error names the file and the field."""

    def __init__(self, source: Path) -> None:
        self.source = source

    def fail(self, field_name: str, problem: str) -> DataError:
        return DataError(
            f"manifest {self.source}: field '{field_name}' {problem}. "
            "Fix the file (see the other manifests in data_manifests/ for the format) or restore it from git."
        )

    def get(self, mapping: dict, key: str, kind: type | tuple[type, ...], where: str = "", *, required: bool = True,
            default: Any = None) -> Any:
        name = f"{where}{key}"
        if key not in mapping or mapping[key] is None:
            if required and default is None:
                raise self.fail(name, "is missing")
            return default
        value = mapping[key]
        # bool is an int in Python; do not accept `true` where a number is expected.
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.fail(name, f"must be {_kind_name(kind)}, got {value!r}")
        if not isinstance(value, kind):
            raise self.fail(name, f"must be {_kind_name(kind)}, got {type(value).__name__} {value!r}")
        return value

    def file_entry(self, raw: Any, where: str, default_root: str | None) -> ManifestFile:
        if not isinstance(raw, dict):
            raise self.fail(where.rstrip("."), "must be a mapping with path, size and sha256")
        path = self.get(raw, "path", str, where)
        pure = PurePosixPath(path)
        if pure.is_absolute() or ".." in pure.parts or "\\" in path or not path.strip():
            raise self.fail(f"{where}path", f"must be a relative POSIX path without '..', got {path!r}")
        root = self.get(raw, "root", str, where, required=default_root is None, default=default_root)
        if root not in ROOTS:
            raise self.fail(f"{where}root", f"must be one of {', '.join(ROOTS)}, got {root!r}")
        size = self._size(raw, where)
        sha = self._sha(raw, where)
        copies = []
        for i, c in enumerate(self.get(raw, "known_copies", list, where, required=False, default=[])):
            cw = f"{where}known_copies[{i}]."
            if not isinstance(c, dict):
                raise self.fail(cw.rstrip("."), "must be a mapping with sha256, size and source")
            copy_sha = self._sha(c, cw)
            if copy_sha is None:
                raise self.fail(f"{cw}sha256", "is missing")
            copies.append(KnownCopy(copy_sha, self._size(c, cw), self.get(c, "source", str, cw)))
        note = self.get(raw, "note", str, where, required=False, default="")
        return ManifestFile(path=path, root=root, size=size, sha256=sha, note=note.strip(), known_copies=tuple(copies))

    def _size(self, raw: dict, where: str) -> int | None:
        if "size" not in raw:
            raise self.fail(f"{where}size", "is missing (write `size: null` if it is unknown)")
        size = self.get(raw, "size", int, where, required=False)
        if size is not None and size < 0:
            raise self.fail(f"{where}size", f"must be a byte count >= 0, got {size}")
        return size

    def _sha(self, raw: dict, where: str) -> str | None:
        if "sha256" not in raw:
            raise self.fail(f"{where}sha256", "is missing (write `sha256: null` if it is unknown)")
        sha = self.get(raw, "sha256", str, where, required=False)
        if sha is not None and not _SHA256.match(sha):
            raise self.fail(f"{where}sha256", f"must be 64 lowercase hex characters or null, got {sha!r}")
        return sha


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    words = {str: "text", int: "an integer", bool: "true/false", list: "a list", dict: "a mapping"}
    return " or ".join(words.get(k, k.__name__) for k in kinds)


def parse_manifest(source: Path) -> Manifest:
    """Read and validate one manifest file."""
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read manifest {source}: {exc.strerror or exc}.") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        raise DataError(f"manifest {source} is not valid YAML{where}: {getattr(exc, 'problem', exc)}. "
                        "Fix the file or restore it from git.") from None
    r = _Reader(source)
    if not isinstance(raw, dict):
        raise r.fail("(top level)", "must be a mapping of fields (name, description, files, ...)")

    name = r.get(raw, "name", str)
    if not _NAME.match(name):
        raise r.fail("name", f"must be lowercase letters, digits and dashes, got {name!r}")
    if name != source.stem:
        raise r.fail("name", f"is {name!r} but the file is named {source.name}; they must agree")
    fmt = r.get(raw, "format", str)
    if fmt not in FORMATS:
        raise r.fail("format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    embedded = r.get(raw, "embedded", bool)

    urls = r.get(raw, "urls", list)
    for i, url in enumerate(urls):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise r.fail(f"urls[{i}]", f"must be an http(s) URL, got {url!r}")

    raw_files = r.get(raw, "files", list)
    if not raw_files:
        raise r.fail("files", "must list at least one file")
    files = tuple(r.file_entry(f, f"files[{i}].", None) for i, f in enumerate(raw_files))
    seen_paths = set()
    for i, f in enumerate(files):
        if (f.root, f.path) in seen_paths:
            raise r.fail(f"files[{i}].path", f"repeats {f.path!r}")
        seen_paths.add((f.root, f.path))
    if embedded and not any(f.root == "embedded" for f in files):
        raise r.fail("embedded", "is true but no file has `root: embedded`")
    if not embedded and any(f.root == "embedded" for f in files):
        raise r.fail("embedded", "is false but some files have `root: embedded`")

    raw_counts = r.get(raw, "counts", dict)
    counts: dict[str, int] = {}
    for key, value in raw_counts.items():
        if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise r.fail(f"counts.{key}", f"must be a non-negative integer, got {value!r}")
        counts[key] = value

    downloads = []
    for i, d in enumerate(r.get(raw, "downloads", list, required=False, default=[])):
        where = f"downloads[{i}]."
        if not isinstance(d, dict):
            raise r.fail(where.rstrip("."), "must be a mapping with url and kind")
        url = r.get(d, "url", str, where)
        kind = r.get(d, "kind", str, where)
        if kind not in ("zip", "file"):
            raise r.fail(f"{where}kind", f"must be 'zip' or 'file', got {kind!r}")
        members = r.get(d, "members", dict, where, required=False, default={})
        data_paths = {f.path for f in files if f.root == "data"}
        for member, target in members.items():
            if target not in data_paths:
                raise r.fail(f"{where}members.{member}", f"maps to {target!r}, which is not a data file of this manifest")
        downloads.append(Download(url=url, kind=kind, members=dict(members)))

    sources = tuple(r.file_entry(s, f"sources[{i}].", "data")
                    for i, s in enumerate(r.get(raw, "sources", list, required=False, default=[])))

    return Manifest(
        name=name,
        title=r.get(raw, "title", str),
        description=r.get(raw, "description", str).strip(),
        citation=r.get(raw, "citation", str).strip(),
        license=r.get(raw, "license", str).strip(),
        urls=tuple(urls),
        format=fmt,
        loader=r.get(raw, "loader", str).strip(),
        embedded=embedded,
        files=files,
        counts=counts,
        source_path=source,
        import_path_example=r.get(raw, "import_path_example", str, required=False, default="").strip(),
        downloads=tuple(downloads),
        sources=sources,
        notes=r.get(raw, "notes", str, required=False, default="").strip(),
    )


def manifest_names() -> list[str]:
    """Names of every manifest in ``data_manifests/`` (sorted)."""
    folder = paths.manifests_dir()
    if not folder.is_dir():
        raise DataError(f"the manifests folder {folder} does not exist. It ships with the source checkout "
                        "(data_manifests/); point $WORKBENCH_MANIFESTS at it if you moved it.")
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load_manifest(name: str) -> Manifest:
    """The validated manifest ``data_manifests/NAME.yaml``."""
    names = manifest_names()
    if name not in names:
        raise DataError(f"no dataset named {name!r}. Known datasets: {', '.join(names)} "
                        "(`workbench data list` shows them all).")
    return parse_manifest(paths.manifests_dir() / f"{name}.yaml")


def load_all_manifests() -> list[Manifest]:
    """Every manifest, validated, sorted by name."""
    return [load_manifest(n) for n in manifest_names()]
