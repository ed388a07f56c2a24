"""The submission validator accepts Kaggle's format and names what is wrong otherwise."""
import numpy as np
import pandas as pd
import pytest

from dogvision import UserError
from dogvision.predict import validate_csv

BREEDS = ["akita", "beagle", "corgi"]


@pytest.fixture
def sample(tmp_path):
    frame = pd.DataFrame({"id": ["a1", "b2", "c3"], **{b: [1 / 3] * 3 for b in BREEDS}})
    path = tmp_path / "sample_submission.csv"
    frame.to_csv(path, index=False)
    return path


def good():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=3)
    return pd.DataFrame({"id": ["a1", "b2", "c3"], **{b: probs[:, i] for i, b in enumerate(BREEDS)}})


def check(tmp_path, sample, frame):
    path = tmp_path / "sub.csv"
    frame.to_csv(path, index=False)
    return validate_csv(path, sample)


def test_accepts_a_valid_submission(tmp_path, sample):
    assert check(tmp_path, sample, good()) == 3


@pytest.mark.parametrize("corrupt, message", [
    (lambda f: f.drop(columns=["beagle"]), "missing column(s): beagle"),
    (lambda f: f.assign(poodle=0.0), "unexpected column(s): poodle"),
    (lambda f: f[["id", "corgi", "akita", "beagle"]], "columns are not in sample_submission.csv's order"),
    (lambda f: f.iloc[:2], "1 test id(s) missing, e.g. c3"),
    (lambda f: f.assign(id=["a1", "b2", "zz"]), "id(s) that are not test photos, e.g. zz"),
    (lambda f: f.assign(id=["a1", "a1", "c3"]), "duplicated id(s), e.g. a1"),
    (lambda f: f.iloc[[1, 0, 2]], "rows are not in sample_submission.csv's id order"),
    (lambda f: f.assign(akita=[np.nan, 0.5, 0.5]), "not finite numbers"),
    (lambda f: f.assign(akita=[1.5, 0.2, 0.2]), "outside [0, 1], e.g. row 2 (id a1)"),
    (lambda f: f.assign(akita=f["akita"] + 0.2), "do not sum to 1"),
])
def test_rejects_a_broken_submission_naming_the_problem(tmp_path, sample, corrupt, message):
    with pytest.raises(UserError) as err:
        check(tmp_path, sample, corrupt(good()))
    assert message in str(err.value)
    assert "sub.csv is not a valid submission" in str(err.value)


def test_cli_exit_code_and_message(tmp_path, sample, cli):
    path = tmp_path / "sub.csv"
    good().drop(columns=["corgi"]).to_csv(path, index=False)
    code, out, err = cli("validate", path, "--sample", sample)
    assert code == 2 and "missing column(s): corgi" in err
