"""Manifests: every one loads and validates; malformed ones are clear errors naming file and field;
the embedded files match their manifests (so a modified shipped file is detected)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from data_fixtures import manifests  # noqa: F401  (fixture)

from workbench import paths
from workbench.data.manifest import load_all_manifests, load_manifest, manifest_names, parse_manifest
from workbench.data.store import dataset_status
from workbench.errors import DataError

REQUIRED = {"omniglot", "digits-7seg", "taskonomy-affinities", "xlsa17-attributes", "cub-sentences",
            "xlsa17-cub", "xlsa17-awa1", "xlsa17-awa2", "xlsa17-sun", "xlsa17-apy"}


def test_every_manifest_loads_and_covers_the_required_datasets():
    loaded = {m.name: m for m in load_all_manifests()}
    assert REQUIRED <= set(loaded)
    for m in loaded.values():
        assert m.description and m.citation and m.license and m.loader
        assert m.files
    awa2 = loaded["xlsa17-awa2"].file("res101.mat")
    assert (awa2.size, awa2.sha256) == (310966408, "3592d2002a4e2d7ea4ef19069f9c35b8ad86c5e1a43b2d30257eba7018fd6dfa")
    apy = loaded["xlsa17-apy"].file("res101.mat")
    assert (apy.size, apy.sha256) == (129153547, "b4bae3b9964011d9d1848fb8db932daa1d8ddd16759f70a64ca2af5b63d82eca")
    assert loaded["xlsa17-cub"].file("res101.mat").sha256 is None  # unknown, and says so
    assert not loaded["xlsa17-awa2"].embedded and loaded["omniglot"].embedded


def test_embedded_files_match_their_manifests():
    for m in load_all_manifests():
        if m.embedded:
            status = dataset_status(m)
            assert status.state == "present", [c.describe() for c in status.checks]


def test_embedded_data_is_small():
    total = sum(p.stat().st_size for p in paths.embedded_dir().rglob("*") if p.is_file())
    assert total < 12e6


@pytest.mark.parametrize(
    "old, new, field",
    [
        ("    sha256: 8bf84167413cd00beacdce3fe582f780ab538d8dbef043a6d688f2527bbce199",
         "    sha256: not-a-hash", "sources[0].sha256"),
        ("embedded: true", "embedded: maybe", "embedded"),
        ("  characters: 1623", "  characters: many", "counts.characters"),
        ("format: omniglot", "format: jpeg", "format"),
        ("name: omniglot", "name: omniglot-v2", "name"),
    ],
)
def test_malformed_manifest_names_file_and_field(manifests, old, new, field):  # noqa: F811
    path = manifests / "omniglot.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(DataError) as err:
        load_manifest("omniglot")
    assert str(path) in str(err.value) and f"'{field}'" in str(err.value)


def test_missing_field_and_bad_yaml(manifests):  # noqa: F811
    path = manifests / "taskonomy-affinities.yaml"
    path.write_text(path.read_text().replace("license: >", "licence: >"))
    with pytest.raises(DataError, match="field 'license' is missing"):
        load_manifest("taskonomy-affinities")
    path.write_text("name: [unclosed\n")
    with pytest.raises(DataError, match="not valid YAML at line"):
        parse_manifest(path)


def test_yaml_is_loaded_safely(manifests):  # noqa: F811
    path = manifests / "digits-7seg.yaml"
    path.write_text("!!python/object/apply:os.system ['echo unsafe']\n")
    with pytest.raises(DataError):
        load_manifest("digits-7seg")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(DataError, match="Known datasets: .*omniglot"):
        load_manifest("omniglott")


def test_missing_manifests_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_MANIFESTS", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="WORKBENCH_MANIFESTS"):
        manifest_names()


def test_build_record_agrees_with_manifests():
    from workbench.data.build_embedded import embedded_record, manifest_mismatches

    assert manifest_mismatches(load_all_manifests(), embedded_record(paths.embedded_dir())) == []


def test_tampered_embedded_file_is_detected(monkeypatch, tmp_path):
    copy = tmp_path / "embedded"
    shutil.copytree(paths.embedded_dir(), copy)
    target = copy / "digits-7seg" / "digits.csv.gz"
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    monkeypatch.setattr(paths, "embedded_dir", lambda: Path(copy))
    from workbench.data import load_digits_7seg

    with pytest.raises(DataError, match="wrong sha256.*reinstall"):
        load_digits_7seg()
