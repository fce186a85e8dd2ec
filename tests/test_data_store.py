"""`workbench data list | verify | import | fetch`, and every bad input leaving the data root unchanged."""

from __future__ import annotations

import urllib.error

import pytest
from data_fixtures import data_root, manifests, sha256_file, snapshot, tiny_manifest, write_xlsa17_pair  # noqa: F401

from workbench.cli import main
from workbench.data import import_dataset, load_xlsa17
from workbench.data import store
from workbench.errors import DataError


@pytest.fixture
def tiny(tmp_path, manifests):  # noqa: F811
    """A downloaded tiny xlsa17 folder and its manifest (res101.mat hash known, att_splits.mat unknown)."""
    folder = tmp_path / "download" / "xlsa17" / "data" / "TINY"
    write_xlsa17_pair(folder)
    res = folder / "res101.mat"
    tiny_manifest(manifests, sha256_file(res), res.stat().st_size)
    return folder


def _fails_and_leaves_root_unchanged(root, match, *args):
    before = snapshot(root)
    with pytest.raises(DataError, match=match):
        import_dataset(*args)
    assert snapshot(root) == before
    assert not list(root.glob(".import-*"))


def test_list_shows_embedded_present_and_features_missing(data_root, capsys):  # noqa: F811
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith(" ")}
    for name in ("omniglot", "digits-7seg", "taskonomy-affinities", "xlsa17-attributes", "cub-sentences"):
        assert "present" in lines[name] and "embedded" in lines[name]
    assert "missing" in lines["xlsa17-awa2"] and str(data_root) in out
    assert "workbench data import xlsa17-awa2 /path/to/xlsa17/data/AWA2" in out


def test_import_then_verify_then_load(tiny, data_root, capsys):  # noqa: F811
    assert main(["data", "import", "xlsa17-tiny", str(tiny.parent)]) == 0  # the parent folder works too
    assert (data_root / "xlsa17" / "TINY" / "res101.mat").is_file()
    assert (data_root / "other" / "keep.txt").is_file() and not list(data_root.glob(".import-*"))
    assert main(["data", "verify", "xlsa17-tiny"]) == 0
    out = capsys.readouterr().out
    assert "ok (size + sha256)" in out and "unverified" in out  # att_splits.mat has no known hash
    ds = load_xlsa17("tiny")
    assert ds.n_samples == 60 and not ds.synthetic
    # verify detects later damage
    path = data_root / "xlsa17" / "TINY" / "res101.mat"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    assert main(["data", "verify", "xlsa17-tiny"]) == 2
    assert "wrong sha256" in capsys.readouterr().err


def test_import_wrong_sha256(tiny, data_root):  # noqa: F811
    data = bytearray((tiny / "res101.mat").read_bytes())
    data[-10] ^= 0xFF  # same size, different content
    (tiny / "res101.mat").write_bytes(bytes(data))
    _fails_and_leaves_root_unchanged(data_root, "sha256.*Nothing was imported", "xlsa17-tiny", tiny)


def test_import_wrong_size(tiny, data_root):  # noqa: F811
    (tiny / "res101.mat").write_bytes((tiny / "res101.mat").read_bytes()[:-100])
    _fails_and_leaves_root_unchanged(data_root, "bytes.*truncated", "xlsa17-tiny", tiny)


def test_import_unreadable_file(tiny, data_root):  # noqa: F811
    (tiny / "att_splits.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))  # hash unknown: content check
    _fails_and_leaves_root_unchanged(data_root, "cannot be read as a MATLAB file", "xlsa17-tiny", tiny)


def test_import_wrong_counts(tiny, data_root):  # noqa: F811
    write_xlsa17_pair(tiny.parent / "other", trainval_drop=2)
    (tiny / "att_splits.mat").write_bytes((tiny.parent / "other" / "att_splits.mat").read_bytes())
    _fails_and_leaves_root_unchanged(data_root, "trainval_loc has 30 entries", "xlsa17-tiny", tiny)


def test_import_missing_file(tiny, data_root):  # noqa: F811
    (tiny / "att_splits.mat").unlink()
    _fails_and_leaves_root_unchanged(data_root, "does not contain att_splits.mat", "xlsa17-tiny", tiny)
    _fails_and_leaves_root_unchanged(data_root, "does not exist", "xlsa17-tiny", tiny / "nowhere")


def test_import_into_a_new_data_root_leaves_nothing_on_failure(tiny, tmp_path, monkeypatch):
    root = tmp_path / "fresh" / "data"
    monkeypatch.setenv("WORKBENCH_DATA", str(root))
    (tiny / "att_splits.mat").write_bytes(b"garbage")
    with pytest.raises(DataError):
        import_dataset("xlsa17-tiny", tiny)
    assert not (tmp_path / "fresh").exists()


def test_import_errors_through_the_cli(tiny, data_root, capsys):  # noqa: F811
    (tiny / "res101.mat").write_bytes(b"not a mat file")
    assert main(["data", "import", "xlsa17-tiny", str(tiny)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("workbench: error:") and "Traceback" not in err
    assert main(["data", "import", "omniglot", str(tiny)]) == 2
    assert "embedded" in capsys.readouterr().err


def test_fetch_offline_says_to_import(tiny, data_root, monkeypatch, capsys):  # noqa: F811
    def offline(url, timeout):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(store, "_open_url", offline)
    before = snapshot(data_root)
    assert main(["data", "fetch", "xlsa17-tiny"]) == 2
    err = capsys.readouterr().err
    assert "offline" in err and "workbench data import xlsa17-tiny /path/to/tiny" in err
    assert snapshot(data_root) == before


def test_fetch_downloads_extracts_and_imports(tiny, data_root, monkeypatch, tmp_path):  # noqa: F811
    import io
    import zipfile

    archive = tmp_path / "xlsa17.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in ("res101.mat", "att_splits.mat"):
            z.write(tiny / name, f"xlsa17/data/TINY/{name}")

    class Response(io.BytesIO):
        headers = {"Content-Length": str(archive.stat().st_size)}

    monkeypatch.setattr(store, "_open_url", lambda url, timeout: Response(archive.read_bytes()))
    store.fetch_dataset("xlsa17-tiny")
    assert (data_root / "xlsa17" / "TINY" / "att_splits.mat").is_file()
    assert load_xlsa17("tiny").n_samples == 60
