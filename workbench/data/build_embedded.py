"""Build the small real datasets that ship inside the package (``workbench/embedded/``).

Run it from the checkout (it needs the staged source data, not the network)::

    python -m workbench.data.build_embedded --source ../shared/datasets           # build + record sha256s
    python -m workbench.data.build_embedded --source ../shared/datasets --write-manifests
    python -m workbench.data.build_embedded --check                               # manifests == files?

Every input is checked against the ``sources`` of its manifest (size + sha256) before it is used, and every
output's size and sha256 is written to ``workbench/embedded/BUILD.json``. ``--write-manifests`` copies those
into the ``files`` entries of ``data_manifests/*.yaml`` (only the ``size:``/``sha256:`` lines change), so
the loaders detect a modified embedded file. The outputs are byte-for-byte reproducible from the same inputs
(plain text, copies, and an xz stream whose bytes depend only on the input and the preset).

What is built:

- ``omniglot/images.npy.xz``: all 1623 x 20 images, 105 x 105, as ``np.packbits(images, axis=-1)`` (uint8,
  shape (1623, 20, 105, 14), True = white background as in the source) saved with ``np.save`` and compressed
  with xz; 2.8 MB instead of 5.7 MB of bool npz. Character ``c`` (0-based) = background row ``c`` for
  ``c < 964``, else evaluation row ``c - 964``; drawer ``k`` = file suffix ``_{k+1:02d}``.
- ``omniglot/characters.csv``: one row per character with its alphabet, set and Vinyals split.
- ``omniglot/lake_runs.csv``: Lake's 20 one-shot runs as image indices (PNG pixels matched to the npz).
- ``digits-7seg/digits.csv.gz``: scikit-learn's bundled copy of the UCI handwritten digits (unchanged).
- ``taskonomy/*.csv``: the first-order affinity and win-rate matrices (unchanged) + licences.
- ``xlsa17/{CUB,AWA1,AWA2,SUN,APY}.npz``: class attributes, splits and CUB sentences (unchanged copies,
  cross-checked against the original ``att_splits.mat``).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import io
import json
import lzma
import os
import re
import shutil
import struct
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from workbench import paths
from workbench.data.manifest import Manifest, load_all_manifests
from workbench.errors import DataError, WorkbenchError

XZ_PRESET = 9 | lzma.PRESET_EXTREME
N_BACKGROUND, N_EVALUATION, N_DRAWERS, SIDE = 964, 659, 20, 105


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------


def _sklearn_dir() -> Path:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise DataError("scikit-learn is not installed; it provides the digits data (pip install scikit-learn).")
    return Path(spec.origin).parent


def resolve_source(path: str, source_root: Path) -> Path:
    """A manifest ``sources`` path: ``sklearn/...`` is inside the installed scikit-learn, the rest under --source."""
    parts = PurePosixPath(path).parts
    if parts[0] == "sklearn":
        return _sklearn_dir().joinpath(*parts[1:])
    return source_root.joinpath(*parts)


def check_sources(manifest: Manifest, source_root: Path) -> dict[str, Path]:
    """Every source file of a manifest, checked for size and sha256."""
    found = {}
    for entry in manifest.sources:
        path = resolve_source(entry.path, source_root)
        if not path.is_file():
            raise DataError(f"source file {path} for {manifest.name!r} is missing. Pass --source with the folder "
                            "that holds the staged datasets (../shared/datasets in this project).")
        size, sha = path.stat().st_size, _sha256(path)
        if (entry.size is not None and size != entry.size) or (entry.sha256 and sha != entry.sha256):
            raise DataError(f"source file {path} does not match {manifest.source_path} (size {size}, sha256 {sha}; "
                            f"expected {entry.size}, {entry.sha256}). Refusing to build from an unknown input.")
        found[entry.path] = path
    return found


# ----------------------------------------------------------------------------------------------------
# A minimal PNG reader (Lake's one-shot runs are 1-bit grayscale PNGs; no imaging library is needed)
# ----------------------------------------------------------------------------------------------------


def read_png_1bit(data: bytes) -> np.ndarray:
    """Decode a non-interlaced 1-bit grayscale PNG into a bool array (True = white)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise ValueError("PNG without IHDR")
    width, height, bit_depth, color_type, _, _, interlace = header
    if (bit_depth, color_type, interlace) != (1, 0, 0):
        raise ValueError(f"expected a 1-bit grayscale non-interlaced PNG, got depth {bit_depth} type {color_type}")
    raw = zlib.decompress(b"".join(idat))
    stride = (width + 7) // 8
    rows = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        start = y * (stride + 1)
        filt, line = raw[start], np.frombuffer(raw, np.uint8, stride, start + 1).astype(np.int32)
        out = np.zeros(stride, dtype=np.int32)
        for x in range(stride):  # bytes per "pixel" is 1 for bit depths below 8
            left = out[x - 1] if x else 0
            up, up_left = prev[x], (prev[x - 1] if x else 0)
            if filt == 0:
                pred = 0
            elif filt == 1:
                pred = left
            elif filt == 2:
                pred = up
            elif filt == 3:
                pred = (left + up) // 2
            elif filt == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                pred = left if pa <= pb and pa <= pc else (up if pb <= pc else up_left)
            else:
                raise ValueError(f"unknown PNG filter {filt}")
            out[x] = (line[x] + pred) & 0xFF
        rows[y] = out
        prev = out
    return np.unpackbits(rows, axis=1, count=width).astype(bool)


# ----------------------------------------------------------------------------------------------------
# Builders: each writes into `out` (a fresh folder) and returns nothing
# ----------------------------------------------------------------------------------------------------


def build_omniglot(src: dict[str, Path], out: Path) -> None:
    parts = []
    for key, n in (("omniglot/images_background.npz", N_BACKGROUND), ("omniglot/images_evaluation.npz", N_EVALUATION)):
        with np.load(src[key], allow_pickle=False) as z:
            images, labels = z["images"], z["labels"]
        if images.shape != (n, N_DRAWERS, SIDE, SIDE) or images.dtype != bool:
            raise DataError(f"{src[key]} holds {images.dtype} {images.shape}, expected bool ({n}, 20, 105, 105)")
        if not np.array_equal(labels, np.repeat(np.arange(n)[:, None], N_DRAWERS, axis=1)):
            raise DataError(f"{src[key]}: labels are not the row index")
        parts.append(images)
    images = np.concatenate(parts)
    buffer = io.BytesIO()
    np.save(buffer, np.packbits(images, axis=-1), allow_pickle=False)
    (out / "omniglot").mkdir(parents=True)
    (out / "omniglot" / "images.npy.xz").write_bytes(lzma.compress(buffer.getvalue(), preset=XZ_PRESET))

    # characters.csv: the source table + the Vinyals split of each character.
    with open(src["omniglot/characters.csv"], newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if [int(r["char_id"]) for r in rows] != list(range(1, N_BACKGROUND + N_EVALUATION + 1)):
        raise DataError("characters.csv: char_id must run 1..1623 in order")
    by_name = {(r["alphabet"], r["character"]): i for i, r in enumerate(rows)}
    split_of: dict[int, str] = {}
    for split in ("train", "val", "test"):
        lines = src[f"omniglot/splits_vinyals/{split}.txt"].read_text(encoding="utf-8").split()
        for line in lines:
            alphabet, character, rotation = line.split("/")
            index = by_name[(alphabet, character)]
            if split_of.setdefault(index, split) != split:
                raise DataError(f"Vinyals split: {alphabet}/{character} is in two splits")
    if len(split_of) != len(rows):
        raise DataError("Vinyals split does not cover every character")
    with open(out / "omniglot" / "characters.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["char_index", "char_id", "set", "alphabet", "character", "vinyals_split"])
        for i, r in enumerate(rows):
            expected_set = "background" if i < N_BACKGROUND else "evaluation"
            if r["set"] != expected_set or int(r["npz_row"]) != (i if i < N_BACKGROUND else i - N_BACKGROUND):
                raise DataError(f"characters.csv row {i}: set/npz_row disagree with the npz layout")
            writer.writerow([i, r["char_id"], r["set"], r["alphabet"], r["character"], split_of[i]])

    # lake_runs.csv: find every PNG of the 20 runs among the evaluation images, pixel for pixel.
    evaluation = images[N_BACKGROUND:].reshape(-1, SIDE, SIDE)
    lookup: dict[bytes, list[int]] = {}
    for j, image in enumerate(evaluation):
        lookup.setdefault(np.packbits(image).tobytes(), []).append(N_BACKGROUND * N_DRAWERS + j)
    records = []
    with zipfile.ZipFile(src["omniglot/all_runs.zip"]) as z:
        for run in range(1, 21):
            answers = {}
            for line in z.read(f"run{run:02d}/class_labels.txt").decode().split("\n"):
                if line.strip():
                    test_png, train_png = line.split()
                    answers[test_png] = int(re.search(r"class(\d+)", train_png).group(1))
            for role, stem in (("train", "training/class"), ("test", "test/item")):
                for item in range(1, 21):
                    name = f"run{run:02d}/{stem}{item:02d}.png"
                    hits = lookup.get(np.packbits(read_png_1bit(z.read(name))).tobytes(), [])
                    if len(hits) != 1:
                        raise DataError(f"{name}: found {len(hits)} matching evaluation images, expected exactly 1")
                    char, drawer = divmod(hits[0], N_DRAWERS)
                    answer = answers[name] if role == "test" else item
                    records.append([run, role, item, hits[0], char, drawer, answer])
    with open(out / "omniglot" / "lake_runs.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["run", "role", "item", "image_index", "char_index", "drawer", "answer_item"])
        writer.writerows(records)
    shutil.copyfile(src["omniglot/LICENSE"], out / "omniglot" / "LICENSE")


def build_digits(src: dict[str, Path], out: Path) -> None:
    (out / "digits-7seg").mkdir(parents=True)
    shutil.copyfile(src["sklearn/datasets/data/digits.csv.gz"], out / "digits-7seg" / "digits.csv.gz")
    shutil.copyfile(_sklearn_license(), out / "digits-7seg" / "LICENSE_scikit-learn")


def _sklearn_license() -> Path:
    """scikit-learn's BSD-3-Clause licence file, as installed (its name and year change between releases)."""
    import importlib.metadata

    dist = importlib.metadata.distribution("scikit-learn")
    for f in dist.files or []:
        if "licenses" in str(f) or PurePosixPath(str(f)).name in ("COPYING", "LICENSE"):
            return Path(dist.locate_file(f))
    raise DataError("cannot find scikit-learn's licence file in its installed metadata.")


def build_taskonomy(src: dict[str, Path], out: Path) -> None:
    (out / "taskonomy").mkdir(parents=True)
    for key, path in src.items():
        shutil.copyfile(path, out / "taskonomy" / PurePosixPath(key).name)


def build_xlsa17(src: dict[str, Path], out: Path) -> None:
    import scipy.io

    (out / "xlsa17").mkdir(parents=True)
    for key, path in src.items():
        if not key.endswith(".npz"):
            continue
        name = PurePosixPath(key).stem
        mat = scipy.io.loadmat(src[f"gzsl_att_splits/orig/{name}_att_splits.mat"])
        with np.load(path, allow_pickle=False) as z:
            if not np.allclose(z["att"], mat["att"].T, atol=1e-6):
                raise DataError(f"{path}: att differs from the original att_splits.mat")
            for loc in ("trainval_loc", "test_seen_loc", "test_unseen_loc"):
                if not np.array_equal(z[loc], mat[loc].ravel().astype(np.int64) - 1):
                    raise DataError(f"{path}: {loc} differs from the original att_splits.mat")
            if name == "CUB":
                sent = scipy.io.loadmat(src["gzsl_att_splits/orig/CUB_sent_splits.mat"])["att"].T
                if not np.allclose(z["sent"], sent, atol=1e-6):
                    raise DataError(f"{path}: sent differs from sent_splits.mat")
        shutil.copyfile(path, out / "xlsa17" / f"{name}.npz")


BUILDERS = {
    "omniglot": build_omniglot,
    "digits-7seg": build_digits,
    "taskonomy-affinities": build_taskonomy,
    "xlsa17-attributes": build_xlsa17,
}


# ----------------------------------------------------------------------------------------------------
# Recording sha256s
# ----------------------------------------------------------------------------------------------------


def embedded_record(folder: Path) -> dict[str, dict[str, int | str]]:
    return {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in ("BUILD.json", "README.md")}


def manifest_mismatches(manifests: list[Manifest], record: dict) -> list[str]:
    problems = []
    for m in manifests:
        for f in m.embedded_files:
            got = record.get(f.path)
            if got is None:
                problems.append(f"{m.name}: {f.path} was not built")
            elif (got["size"], got["sha256"]) != (f.size, f.sha256):
                problems.append(f"{m.name}: {f.path} is {got['size']} bytes {got['sha256']}, "
                                f"manifest says {f.size} {f.sha256}")
    return problems


def write_manifests(manifests: list[Manifest], record: dict) -> None:
    """Rewrite the ``size:``/``sha256:`` lines of every embedded file entry (nothing else changes)."""
    for m in manifests:
        text = m.source_path.read_text(encoding="utf-8")
        for f in m.embedded_files:
            got = record[f.path]
            pattern = re.compile(rf"(- path: {re.escape(f.path)}\n\s+root: embedded\n\s+size: )\S+(\n\s+sha256: )\S+")
            text, n = pattern.subn(rf"\g<1>{got['size']}\g<2>{got['sha256']}", text)
            if n != 1:
                raise DataError(f"{m.source_path}: could not find the entry for {f.path} written as "
                                "'- path / root: embedded / size / sha256' lines")
        m.source_path.write_text(text, encoding="utf-8")


README = """\
# Embedded datasets (built by `python -m workbench.data.build_embedded`; do not edit by hand)

Small real datasets shipped inside the package so that everything works offline on a fresh install.
Sizes and sha256 of every file are in `BUILD.json` and in the `files` of `data_manifests/*.yaml`
(the loaders refuse a file that does not match).

| folder | what | licence |
|---|---|---|
| omniglot/ | all 1623 characters x 20 drawers of Omniglot (Lake et al., Science 2015), 105x105 binary images packed with `np.packbits` and xz-compressed; character table with alphabets and the Vinyals split; Lake's 20 one-shot runs | MIT, Copyright (c) 2015 Brenden Lake (`omniglot/LICENSE`) |
| digits-7seg/ | scikit-learn's copy of the UCI "Optical Recognition of Handwritten Digits" test set (1797 8x8 images; E. Alpaydin, C. Kaynak, 1998) | data: UCI ML repository (CC BY 4.0); file as shipped by scikit-learn (BSD-3-Clause, `LICENSE_scikit-learn`) |
| taskonomy/ | first-order task affinity and win-rate matrices of Taskonomy (Zamir et al., CVPR 2018), from github:StanfordVL/taskonomy `results/` | MIT (`LICENSE_repo_MIT`); Taskonomy dataset EULA (`LICENSE_taskonomy_dataset_EULA`) |
| xlsa17/ | class attributes, proposed splits and class folds of CUB, AWA1, AWA2, SUN, APY (Xian et al., TPAMI 2018), CUB 1024-d sentence embeddings; no image features | xlsa17 release (cite Xian et al.); attributes from CUB-200-2011, AwA, SUN Attributes, aPascal/aYahoo |
"""


def build(source_root: Path, target: Path, names: list[str] | None = None) -> dict:
    manifests = {m.name: m for m in load_all_manifests()}
    names = names or list(BUILDERS)
    with tempfile.TemporaryDirectory(prefix="workbench-embedded-") as tmp:
        out = Path(tmp)
        for name in names:
            print(f"building {name} ...", flush=True)
            BUILDERS[name](check_sources(manifests[name], source_root), out)
        target.mkdir(parents=True, exist_ok=True)
        for child in sorted(out.iterdir()):
            dst = target / child.name
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(child, dst)
    (target / "README.md").write_text(README, encoding="utf-8")
    record = embedded_record(target)
    (target / "BUILD.json").write_text(json.dumps({"files": record}, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.data.build_embedded", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=None,
                        help="folder with the staged datasets (default: $WORKBENCH_SHARED_DATASETS or ../shared/datasets)")
    parser.add_argument("--only", nargs="*", choices=sorted(BUILDERS), help="build only these datasets")
    parser.add_argument("--write-manifests", action="store_true", help="write the new sizes/sha256s into the manifests")
    parser.add_argument("--check", action="store_true", help="only compare the manifests with the embedded files")
    args = parser.parse_args(argv)
    try:
        target = paths.embedded_dir()
        if not args.check:
            source = args.source or Path(os.environ.get("WORKBENCH_SHARED_DATASETS")
                                         or paths.REPO_ROOT.parent / "shared" / "datasets")
            build(source.expanduser().resolve(), target, args.only)
        record = embedded_record(target)
        manifests = load_all_manifests()
        if args.write_manifests:
            write_manifests(manifests, record)
            manifests = load_all_manifests()
        problems = manifest_mismatches(manifests, record)
        total = sum(v["size"] for v in record.values())
        print(f"embedded data: {len(record)} files, {total / 1e6:.2f} MB in {target}")
        if problems:
            print("manifests disagree with the embedded files (run with --write-manifests to update them):")
            print("\n".join("  " + p for p in problems))
            return 1
        print("manifests match the embedded files.")
        return 0
    except WorkbenchError as exc:
        print(f"build_embedded: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
