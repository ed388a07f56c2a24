"""README's "Bad input" table, one row per test: build the bad input, check the message and
that what the kit made earlier (a finished run, a submission) is untouched."""
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from conftest import base_args

DATA = Path("data/dog-breed-identification")


def snapshot(*folders):
    """Every file under the folders with its bytes and mtime: "untouched" means equal snapshots."""
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns)
            for folder in folders for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def rezip(kaggle_zip, tmp_path, edit):
    """A copy of the synthetic Kaggle zip with `edit(folder)` applied to its unpacked files."""
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(kaggle_zip) as zf:
        zf.extractall(folder)
    edit(folder)
    out = tmp_path / "bad.zip"
    with zipfile.ZipFile(out, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return out


def first_id(folder, csv="labels.csv"):
    return pd.read_csv(folder / csv)["id"].iloc[0]


def edit_csv(folder, csv, change):
    frame = pd.read_csv(folder / csv, dtype={"id": str})
    change(frame).to_csv(folder / csv, index=False)


def delete_train_photo(folder):
    (folder / "train" / f"{first_id(folder)}.jpg").unlink()


def delete_test_photo(folder):
    (folder / "test" / f"{first_id(folder, 'sample_submission.csv')}.jpg").unlink()


def corrupt_test_photo(folder):
    (folder / "test" / f"{first_id(folder, 'sample_submission.csv')}.jpg").write_bytes(b"not a jpeg")


def duplicate_label(folder):
    edit_csv(folder, "labels.csv", lambda f: pd.concat([f, f.head(1)]))


def unknown_breed(folder):
    edit_csv(folder, "labels.csv", lambda f: f.assign(breed=f["breed"].replace("beagle", "beagel")))


def missing_breed(folder):
    edit_csv(folder, "labels.csv", lambda f: f[f["breed"] != "corgi"])


def wrong_columns(folder):
    edit_csv(folder, "sample_submission.csv", lambda f: f.drop(columns=["corgi"]))


def duplicate_test_id(folder):
    edit_csv(folder, "sample_submission.csv", lambda f: pd.concat([f, f.head(1)]))


def bad_header(folder):
    edit_csv(folder, "labels.csv", lambda f: f.rename(columns={"breed": "dog"}))


def no_labels(folder):
    (folder / "labels.csv").unlink()


# (row of the README table, edit of the archive, substring of the error message)
STOPS = [
    ("missing train photo", delete_train_photo, "photo(s) listed in {data}/labels.csv are missing from {data}/train/"),
    ("missing test photo", delete_test_photo,
     "photo(s) listed in {data}/sample_submission.csv are missing from {data}/test/"),
    ("unreadable test photo", corrupt_test_photo, "1 test photo(s) cannot be decoded: {data}/test/"),
    ("duplicate labeled id", duplicate_label, "labels.csv lists 1 id(s) more than once"),
    ("duplicate test id", duplicate_test_id, "sample_submission.csv lists 1 test id(s) more than once"),
    ("unknown breed", unknown_breed, "has breeds that are not columns of sample_submission.csv: beagel"),
    ("wrong breed count", missing_breed, "labels.csv has 2 breeds, expected 3; no photo of: corgi"),
    ("sample_submission columns", wrong_columns, "sample_submission.csv has 2 breed columns, expected 3"),
    ("labels.csv header", bad_header, "labels.csv must have the header `id,breed`, found id,dog"),
    ("labels.csv missing", no_labels, "labels.csv is missing"),
]


@pytest.mark.parametrize("case, edit, message", STOPS, ids=[s[0] for s in STOPS])
def test_bad_data_stops_before_training(project, kaggle_zip, tiny_model, cli, tmp_path, case, edit, message):
    bad = rezip(kaggle_zip, tmp_path, edit)
    shutil.rmtree(DATA)  # a fresh `make data` with the bad archive, next to earlier outputs
    before = snapshot("runs", "submissions")
    code, out, err = cli("data", f"--kaggle-zip={bad}", *base_args(tiny_model))
    assert code == 2
    assert message.format(data=DATA) in err
    assert not (DATA / ".verified.json").exists()  # not marked good: `make train` cannot start
    code, out, err = cli("train", *base_args(tiny_model, num_images=48))
    assert code == 2 and "is not prepared" in err
    assert snapshot("runs", "submissions") == before


def test_labels_edited_after_data_stop_train(project, tiny_model, cli):
    """Checks run again before every training: a labels.csv broken after `make data` is caught."""
    before = snapshot("runs", "submissions")
    duplicate_label(DATA)
    code, out, err = cli("train", *base_args(tiny_model, num_images=48))
    assert code == 2 and "labels.csv lists 1 id(s) more than once" in err
    assert snapshot("runs", "submissions") == before  # no new run folder either


def test_test_photo_broken_after_data_stops_submission(project, tiny_model, cli):
    """`make submission` re-checks test photos changed since `make data` before predicting."""
    before = snapshot("runs", "submissions")
    corrupt_test_photo(DATA)
    code, out, err = cli("submission", *base_args(tiny_model), "--force=1")
    assert code == 2 and "1 test photo(s) are missing or cannot be decoded" in err
    assert first_id(DATA, "sample_submission.csv") in err
    assert snapshot("runs", "submissions") == before  # the earlier submission is kept


def test_unreadable_train_photo_is_skipped_with_a_warning(project, kaggle_zip, tiny_model, cli, tmp_path):
    bad_id = []

    def corrupt(folder):
        bad_id.append(first_id(folder))
        (folder / "train" / f"{bad_id[0]}.jpg").write_bytes(b"\xff\xd8 truncated")

    bad = rezip(kaggle_zip, tmp_path, corrupt)
    shutil.rmtree(DATA)
    before = snapshot("runs/first", "submissions")
    with pytest.warns(UserWarning, match=rf"1 train photo\(s\) cannot be decoded and will be skipped: .*{bad_id[0]}"):
        code, out, err = cli("data", f"--kaggle-zip={bad}", *base_args(tiny_model))
    assert code == 0 and "Verified" in out
    with pytest.warns(UserWarning, match=f"Skipping 1 unreadable train photo.*{bad_id[0]}"):
        code, out, err = cli("train", *base_args(tiny_model, num_images=59), "--run=second")
    assert code == 0, err
    assert snapshot("runs/first", "submissions") == before


def test_extra_test_file_is_ignored_with_a_warning(project, kaggle_zip, tiny_model, cli, tmp_path):
    bad = rezip(kaggle_zip, tmp_path, lambda folder: (folder / "test" / "stray.jpg").write_bytes(b"x"))
    shutil.rmtree(DATA)
    before = snapshot("runs", "submissions")
    with pytest.warns(UserWarning, match=r"1 file\(s\) in .*test/ are not in sample_submission.csv .*: stray"):
        code, out, err = cli("data", f"--kaggle-zip={bad}", *base_args(tiny_model))
    assert code == 0
    assert snapshot("runs", "submissions") == before


def test_truncated_archive_is_refused_and_nothing_half_unpacked(project, kaggle_zip, tiny_model, cli, tmp_path):
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(kaggle_zip.read_bytes()[: kaggle_zip.stat().st_size // 2])
    shutil.rmtree(DATA)
    before = snapshot("runs", "submissions")
    code, out, err = cli("data", f"--kaggle-zip={truncated}", *base_args(tiny_model))
    assert code == 2 and f"{truncated} is not a readable zip" in err and "Download it again" in err
    assert not DATA.exists() and not Path(f"{DATA}.partial").exists()
    assert snapshot("runs", "submissions") == before


def test_damaged_member_is_refused_and_nothing_half_unpacked(workdir, kaggle_zip, tiny_model, cli, tmp_path):
    damaged = tmp_path / "damaged.zip"
    payload = bytearray(kaggle_zip.read_bytes())
    with zipfile.ZipFile(kaggle_zip) as zf:
        member = [m for m in zf.infolist() if m.filename.startswith("train/")][3]
    start = member.header_offset + 30 + len(member.filename) + 200  # inside the member's bytes
    payload[start:start + 8] = b"\x00" * 8
    damaged.write_bytes(bytes(payload))
    code, out, err = cli("data", f"--kaggle-zip={damaged}", *base_args(tiny_model))
    assert code == 2 and f"is damaged at {member.filename}" in err
    assert not DATA.exists() and not Path(f"{DATA}.partial").exists()


def test_unsafe_member_is_refused(workdir, kaggle_zip, tiny_model, cli, tmp_path):
    evil = tmp_path / "evil.zip"
    shutil.copy(kaggle_zip, evil)
    with zipfile.ZipFile(evil, "a") as zf:
        zf.writestr("../outside.txt", "x")
    code, out, err = cli("data", f"--kaggle-zip={evil}", *base_args(tiny_model))
    assert code == 2 and "has an unsafe member '../outside.txt'" in err
    assert not DATA.exists() and not Path("data/outside.txt").exists()


def test_interrupted_unpack_is_redone(workdir, kaggle_zip, tiny_model, cli):
    partial = Path(f"{DATA}.partial")
    (partial / "train").mkdir(parents=True)
    (partial / "train" / "half.jpg").write_bytes(b"\xff\xd8")
    code, out, err = cli("data", f"--kaggle-zip={kaggle_zip}", *base_args(tiny_model))
    assert code == 0, err
    assert f"Removing {partial}/ left by an interrupted unpack." in out
    assert not partial.exists() and (DATA / ".verified.json").is_file()
    assert not (DATA / "train" / "half.jpg").exists()


def test_interrupted_download_is_detected_and_redone(workdir, kaggle_zip, tiny_model, cli, monkeypatch):
    from dogvision import kaggle_io

    archive = Path("data/dog-breed-identification.zip")
    archive.parent.mkdir()
    archive.write_bytes(kaggle_zip.read_bytes()[:5000])  # what an interrupted download leaves
    downloads = []

    def fake_download(dest_dir):  # the kaggle CLI, offline
        downloads.append(dest_dir)
        shutil.copy(kaggle_zip, Path(dest_dir) / archive.name)
        return Path(dest_dir) / archive.name

    monkeypatch.setattr(kaggle_io, "download_competition", fake_download)
    code, out, err = cli("data", *base_args(tiny_model))
    assert code == 0, err
    assert f"{archive} is incomplete (an interrupted download?): downloading it again." in out
    assert len(downloads) == 1 and (DATA / ".verified.json").is_file()
