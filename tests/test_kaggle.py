"""Everything that talks to Kaggle, offline: a test double of `kaggle` (tests/fake_kaggle/kaggle)
is first on PATH; it records each command line and plays back Kaggle's answers.

Checked: the exact command lines, what a user reads (token URL, rules URL, the kernel's log),
that no token or key ever shows in the output or in any file the kit writes, and that the
kernel script itself runs (offline, on a read-only copy of the competition's data).
"""
import base64
import io
import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import base_args

from dogvision.kaggle_io import RULES_URL, TOKEN_URL

FAKE = Path(__file__).parent / "fake_kaggle" / "kaggle"
SECRETS = ("sekrit-123", "sekrit-json-456", "sekrit-tok-789")
KERNEL = "alice/dogvision-train"
PUSH = ["kernels", "push", "-p", "kaggle/build/dogvision-train", "--accelerator", "NvidiaTeslaT4"]
STATUS = ["kernels", "status", KERNEL]
OUTPUT = ["kernels", "output", KERNEL, "-p", "kaggle/build/output"]
SAMPLE = "data/dog-breed-identification/sample_submission.csv"  # a valid submission (uniform)
SUBMIT = ["competitions", "submit", "dog-breed-identification", "-f", SAMPLE, "-m", "first try"]
SUBMISSIONS = ["competitions", "submissions", "dog-breed-identification", "-v"]


class FakeKaggle:
    def __init__(self, log, monkeypatch):
        self.log, self.monkeypatch = log, monkeypatch

    def scenario(self, name):
        self.monkeypatch.setenv("FAKE_KAGGLE_SCENARIO", name)

    def calls(self):
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []


@pytest.fixture
def kaggle(workdir, monkeypatch, kaggle_zip):
    """The fake `kaggle` first on PATH (run by this Python), no waiting between polls."""
    bin_dir, state = workdir / "fakebin", workdir / "fakestate"
    bin_dir.mkdir()
    state.mkdir()
    fake = bin_dir / "kaggle"
    fake.write_text(f"#!{sys.executable}\n" + FAKE.read_text().split("\n", 1)[1])
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_KAGGLE_LOG", str(state / "calls.jsonl"))
    monkeypatch.setenv("FAKE_KAGGLE_ZIP", str(kaggle_zip))
    monkeypatch.setenv("FAKE_KAGGLE_SCENARIO", "ok")
    monkeypatch.setenv("DOGVISION_SCORE_WAIT", "0")
    monkeypatch.setenv("DOGVISION_KERNEL_POLL", "0")
    return FakeKaggle(state / "calls.jsonl", monkeypatch)


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    monkeypatch.setenv("KAGGLE_KEY", "sekrit-123")


def assert_no_secret(workdir, *texts):
    """No secret in what the user saw, nor in any file under the project (but the credentials' own)."""
    for text in texts:
        for secret in SECRETS:
            assert secret not in text
    for path in workdir.rglob("*"):
        if path.is_file() and path.relative_to(workdir).parts[0] != "home":
            data = path.read_bytes()
            assert not any(s.encode() in data for s in SECRETS), path
    for script in workdir.glob("kaggle/build/*/run.py"):  # the kit inside is base64: look in it too
        kit = script.read_text().split('KIT = "', 1)[1].split('"', 1)[0]
        with zipfile.ZipFile(io.BytesIO(base64.b64decode(kit))) as zf:
            names = zf.namelist()
            assert all(n.startswith("dogvision/") and n.endswith(".py") for n in names if n != "requirements.txt")
            assert not any(s.encode() in zf.read(n) for n in names for s in SECRETS)


# ---------------------------------------------------------------- credentials

@pytest.mark.parametrize("command", [["kaggle-train"], ["data"], ["submit", f"--csv={SAMPLE}"]])
def test_no_credentials_one_message_with_the_token_url(prepared_or_not, kaggle, cli, command):
    code, out, err = cli(*command)
    assert code == 2
    assert err.startswith("Error: No Kaggle credentials found.") and TOKEN_URL in err
    assert err.count("\n") == 1  # one short message, no traceback
    assert kaggle.calls() == []  # Kaggle is never called without credentials


@pytest.fixture
def prepared_or_not(request, workdir, kaggle_zip, tiny_model, cli):
    """Data ready for `submit` (which validates first); none for `data` (which must download)."""
    if "submit" in request.node.callspec.params["command"]:
        request.getfixturevalue("prepared")
    return workdir


def test_token_without_user_name_asks_for_kaggle_username(workdir, kaggle, cli, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "sekrit-tok-789")
    code, out, err = cli("kaggle-train")
    assert code == 2 and "KAGGLE_USERNAME=" in err
    assert kaggle.calls() == []
    assert_no_secret(workdir, out, err)


def test_user_name_comes_from_kaggle_json(workdir, kaggle, cli, monkeypatch):
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(workdir / "home" / "kcfg"))
    (workdir / "home" / "kcfg").mkdir(parents=True)
    (workdir / "home" / "kcfg" / "kaggle.json").write_text('{"username": "bob", "key": "sekrit-json-456"}')
    kaggle.scenario("kernel-complete")
    code, out, err = cli("kaggle-train")
    assert code == 0, err
    assert kaggle.calls()[1] == ["kernels", "status", "bob/dogvision-train"]
    assert json.loads(Path("kaggle/build/dogvision-train/kernel-metadata.json").read_text())["id"] == \
        "bob/dogvision-train"
    assert_no_secret(workdir, out, err)


# ---------------------------------------------------------------- download and submit

def test_download_runs_the_exact_command(workdir, kaggle, api_key, cli, tiny_model):
    code, out, err = cli("data", *base_args(tiny_model))
    assert code == 0, err
    assert kaggle.calls() == [["competitions", "download", "dog-breed-identification", "-p", "data"]]
    assert Path("data/dog-breed-identification/.verified.json").is_file()
    assert_no_secret(workdir, out, err)


@pytest.mark.parametrize("status, url", [("401", TOKEN_URL), ("403", RULES_URL)])
def test_download_refused_says_what_to_do(workdir, kaggle, api_key, cli, status, url):
    kaggle.scenario(status)
    code, out, err = cli("data")
    assert code == 2 and f"HTTP {status}" in err and url in err
    assert kaggle.calls() == [["competitions", "download", "dog-breed-identification", "-p", "data"]]
    assert_no_secret(workdir, out, err)


@pytest.mark.parametrize("status, url", [("401", TOKEN_URL), ("403", RULES_URL)])
def test_submit_refused_says_what_to_do(prepared, kaggle, api_key, cli, status, url):
    kaggle.scenario(status)
    code, out, err = cli("submit", f"--csv={SAMPLE}", "-m", "first try")
    assert code == 2 and f"HTTP {status}" in err and url in err
    assert kaggle.calls() == [SUBMIT]
    assert_no_secret(prepared, out, err)


def test_submit_shows_the_public_score(prepared, kaggle, api_key, cli):
    code, out, err = cli("submit", f"--csv={SAMPLE}", "-m", "first try")
    assert code == 0, err
    assert kaggle.calls() == [SUBMIT, SUBMISSIONS, SUBMISSIONS]  # pending on the first look, scored on the second
    assert "Public score: 0.41234" in out and "0.99999" not in out  # ours, not an older submission's
    assert_no_secret(prepared, out, err)


def test_submit_not_scored_yet_says_where_to_look(prepared, kaggle, api_key, cli, monkeypatch):
    kaggle.scenario("pending")
    monkeypatch.setenv("DOGVISION_SCORE_POLLS", "3")
    code, out, err = cli("submit", f"--csv={SAMPLE}", "-m", "first try")
    assert code == 0, err
    assert kaggle.calls() == [SUBMIT] + [SUBMISSIONS] * 3
    assert "has not scored sample_submission.csv yet" in out and "Public score" not in out


# ---------------------------------------------------------------- kaggle-train

def test_kaggle_train_round_trip(workdir, kaggle, api_key, cli):
    kaggle.scenario("kernel-complete")
    code, out, err = cli("kaggle-train", "--num-epochs=20", "--tta=1")
    assert code == 0, err
    assert kaggle.calls() == [PUSH, STATUS, STATUS, OUTPUT]
    meta = json.loads(Path("kaggle/build/dogvision-train/kernel-metadata.json").read_text())
    assert meta["id"] == KERNEL and meta["code_file"] == "run.py" and meta["kernel_type"] == "script"
    assert meta["competition_sources"] == ["dog-breed-identification"]
    assert meta["enable_gpu"] is True and meta["enable_internet"] is True
    script = Path("kaggle/build/dogvision-train/run.py").read_text()
    assert 'ARGS = ["--num-epochs", "20", "--tta", "1"]' in script  # the options differing from defaults
    assert f"{KERNEL}: running" in out and f"{KERNEL}: complete" in out  # the progress line
    run = Path("runs/LATEST_FULL").read_text().strip()
    assert run.startswith("kaggle-") and Path("runs/LATEST").read_text().strip() == run
    assert f'RUN = "{run}"' in script
    assert json.loads(Path("runs", run, "metrics.json").read_text())["val_accuracy"] == 0.85
    assert Path("runs", run, "kernel.log").is_file() and Path("submissions", f"{run}.csv").is_file()
    assert f"Next: make submit CSV=submissions/{run}.csv" in out
    assert_no_secret(workdir, out, err)


def test_kaggle_train_failed_kernel_shows_the_end_of_its_log(workdir, kaggle, api_key, cli):
    kaggle.scenario("kernel-error")
    code, out, err = cli("kaggle-train")
    assert code == 2
    assert kaggle.calls() == [PUSH, STATUS, STATUS, OUTPUT]
    assert "status error: Your notebook tried to allocate more memory" in err
    assert "MemoryError: fake out of memory" in err and "log line 99" in err
    assert "log line 10\n" not in err  # the tail only
    assert not Path("runs").exists() and not Path("submissions").exists()
    assert_no_secret(workdir, out, err)


@pytest.mark.parametrize("scenario, expected", [
    ("401", TOKEN_URL), ("403", "phone-verified"), ("push-error", "Maximum weekly GPU quota")])
def test_kaggle_train_refused_push(workdir, kaggle, api_key, cli, scenario, expected):
    kaggle.scenario(scenario)
    code, out, err = cli("kaggle-train")
    assert code == 2 and expected in err
    assert kaggle.calls() == [PUSH]  # nothing is polled after a refused push
    assert_no_secret(workdir, out, err)


def test_kaggle_train_refuses_a_local_model_folder(workdir, kaggle, api_key, cli, tiny_model):
    code, out, err = cli("kaggle-train", f"--model-handle={tiny_model}")
    assert code == 2 and "local folder" in err and kaggle.calls() == []


def test_kernel_script_runs_offline_on_read_only_data(workdir, kaggle_zip, tiny_model):
    """The pushed run.py, as Kaggle runs it: data read-only under INPUT, results in WORKING."""
    from dogvision import kaggle_kernel
    from dogvision.__main__ import build_parser
    from dogvision.config import config_from_args

    cfg = config_from_args(build_parser().parse_args(["train", *base_args(tiny_model)]))
    push_dir = kaggle_kernel.build_kernel(cfg, "alice", "kaggle-test-full")
    source = workdir / "input" / "dog-breed-identification"
    with zipfile.ZipFile(kaggle_zip) as zf:
        zf.extractall(source)
    read_only = sorted([source, *source.rglob("*")], reverse=True)
    for path in read_only:
        path.chmod(0o555 if path.is_dir() else 0o444)
    env = dict(os.environ, DOGVISION_KAGGLE_INPUT=str(workdir / "input"),
               DOGVISION_KAGGLE_WORKING=str(workdir / "working"), DOGVISION_KAGGLE_SCRATCH=str(workdir / "scratch"))
    env.pop("PYTHONPATH", None)  # the kernel imports the kit it carries, not this checkout
    try:
        proc = subprocess.run([sys.executable, str(push_dir / "run.py")], env=env, cwd=workdir,
                              capture_output=True, text=True, timeout=300)
    finally:
        for path in reversed(read_only):
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (workdir / "scratch" / "kit" / "dogvision" / "train.py").is_file()
    assert not (source / ".verified.json").exists()  # /kaggle/input is never written to
    run = workdir / "working" / "runs" / "kaggle-test-full"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["full"] is True and metrics["val_accuracy"] >= 0.8
    csv = workdir / "working" / "submissions" / "kaggle-test-full.csv"
    from dogvision.predict import validate_csv
    assert validate_csv(csv, source / "sample_submission.csv") == 12
