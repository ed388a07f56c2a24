"""Everything that talks to Kaggle goes through the official `kaggle` CLI.

Calling the CLI (not its Python internals) keeps us on its supported surface and
lets tests put a test double named `kaggle` on PATH to see the exact command lines.
Secrets are only ever checked for presence: no token or key is printed or saved.
"""
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import UserError
from .config import COMPETITION

TOKEN_URL = "https://www.kaggle.com/settings/api"
RULES_URL = f"https://www.kaggle.com/competitions/{COMPETITION}/rules"
SUBMISSIONS_URL = f"https://www.kaggle.com/competitions/{COMPETITION}/submissions"


class KaggleError(UserError):
    pass


def kaggle_config_dir():
    return Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")


def find_credentials():
    """Where credentials are, in the kaggle CLI's order, or None. Never the secret itself."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    config_dir = kaggle_config_dir()
    home = Path.home() / ".kaggle"  # the CLI reads access_token from here whatever KAGGLE_CONFIG_DIR says
    for path in (config_dir / "access_token", home / "access_token", home / "access_token.txt"):
        if path.is_file():
            return str(path)
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    for path in (config_dir / "kaggle.json", home / "credentials.json"):  # the latter: `kaggle auth login`
        if path.is_file():
            return str(path)
    return None


def kaggle_username():
    """The account's user name, which a kernel's id starts with: KAGGLE_USERNAME or kaggle.json's."""
    require_credentials()
    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]
    path = kaggle_config_dir() / "kaggle.json"
    try:
        name = json.loads(path.read_text()).get("username") if path.is_file() else None
    except (OSError, ValueError, AttributeError):
        name = None
    if not name:
        raise KaggleError("Kaggle needs your user name for the kernel's id and your token does not say it: "
                          "run again with KAGGLE_USERNAME=<your Kaggle user name>, "
                          "e.g. make kaggle-train KAGGLE_USERNAME=alice")
    return name


def require_credentials():
    if find_credentials() is None:
        raise KaggleError(
            "No Kaggle credentials found. Create a token at "
            f"{TOKEN_URL} (\"Create New Token\") and save it as "
            f"{kaggle_config_dir() / 'kaggle.json'} (chmod 600), or set KAGGLE_API_TOKEN.")
    if shutil.which("kaggle") is None:
        raise KaggleError("The kaggle command is not installed: run `make setup` (it is in requirements.txt).")


def run_kaggle(args, echo=True):
    """Run `kaggle ARGS`, echoing its output live; raise a KaggleError a user can act on."""
    require_credentials()
    proc = subprocess.Popen(["kaggle", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    chunks = []
    while True:
        chunk = proc.stdout.read1(4096) if hasattr(proc.stdout, "read1") else proc.stdout.read(4096)
        if not chunk:
            break
        chunks.append(chunk)
        if echo:
            sys.stdout.write(chunk.decode(errors="replace"))
            sys.stdout.flush()
    proc.wait()
    output = b"".join(chunks).decode(errors="replace")
    if proc.returncode != 0:
        raise KaggleError(explain_failure(args, output, proc.returncode))
    return output


def explain_failure(args, output, returncode):
    text = output.lower()
    command = "kaggle " + " ".join(args)
    if ("403" in text or "forbidden" in text) and args[:1] == ["kernels"]:
        return (f"`{command}` was refused (HTTP 403). A kernel with a GPU and internet needs a phone-verified "
                f"Kaggle account (https://www.kaggle.com/settings), and the competition's data needs its rules "
                f"accepted at {RULES_URL}.")
    if "403" in text or "forbidden" in text:
        return (f"`{command}` was refused (HTTP 403). Accept the competition's rules with the "
                f"account of your token at {RULES_URL}, then try again.")
    if "401" in text or "unauthorized" in text or "unauthenticated" in text:
        return (f"`{command}` was refused (HTTP 401): your Kaggle token is invalid or expired. "
                f"Create a new one at {TOKEN_URL}.")
    tail = "\n".join(output.strip().splitlines()[-5:])
    return f"`{command}` failed (exit {returncode}):\n{tail}"


def download_competition(dest_dir):
    """Download the competition archive into dest_dir and return its path."""
    try:
        require_credentials()
    except KaggleError as err:
        raise KaggleError(f"{err} Offline? Use an archive you already have: "
                          "make data KAGGLE_ZIP=path/to/dog-breed-identification.zip") from None
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    print(f"Downloading {COMPETITION} with the kaggle CLI into {dest_dir}/ ...")
    run_kaggle(["competitions", "download", COMPETITION, "-p", str(dest_dir)])
    archive = dest_dir / f"{COMPETITION}.zip"
    if not archive.is_file():
        raise KaggleError(f"The kaggle CLI finished but {archive} is not there; run `make data` again.")
    return archive


def submit(csv_path, message):
    """Send the CSV, then show its public score once Kaggle has computed it."""
    print(f"Submitting {csv_path} to {COMPETITION} ...")
    run_kaggle(["competitions", "submit", COMPETITION, "-f", str(csv_path), "-m", message])
    return show_public_score(Path(csv_path).name, message)


def env_number(name, default):
    """A number from the environment (DOGVISION_SCORE_WAIT=0 in tests), else the default."""
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        raise KaggleError(f"{name} must be a number of seconds (or polls), got {os.environ[name]!r}") from None


def show_public_score(file_name, message):
    """Poll `kaggle competitions submissions` a few times (DOGVISION_SCORE_POLLS x DOGVISION_SCORE_WAIT s)."""
    polls = max(1, int(env_number("DOGVISION_SCORE_POLLS", 6)))
    wait = env_number("DOGVISION_SCORE_WAIT", 10)
    for _ in range(polls):
        time.sleep(wait)
        row = find_submission(run_kaggle(["competitions", "submissions", COMPETITION, "-v"], echo=False),
                              file_name, message)
        status = normal_status(row.get("status", "")) if row else ""
        if status == "complete" and row.get("publicScore", "").strip() not in ("", "None"):
            score = row["publicScore"].strip()
            print(f"Public score: {score} (multi-class log loss, lower is better). All: {SUBMISSIONS_URL}")
            return score
        if status == "error":
            raise KaggleError(f"Kaggle could not score {file_name} (status error). See {SUBMISSIONS_URL}")
    print(f"Kaggle has not scored {file_name} yet; see its public score later at {SUBMISSIONS_URL} "
          f"or with `kaggle competitions submissions {COMPETITION}`.")
    return None


def normal_status(text):
    """'complete', 'SubmissionStatus.COMPLETE', 'KernelWorkerStatus.CANCEL_ACKNOWLEDGED' -> lower, bare."""
    return text.strip().split(".")[-1].lower().replace("_", "")


def find_submission(output, file_name, message):
    """The newest row of `kaggle competitions submissions -v` (CSV) for this file and message, or None."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("ref,")), None)
    if start is None:
        return None
    rows = list(csv.DictReader(io.StringIO("\n".join(lines[start:]))))
    for row in rows:  # newest first
        if row.get("description") == message and row.get("fileName") in (file_name, None):
            return row
    return next((row for row in rows if row.get("description") == message), None)
