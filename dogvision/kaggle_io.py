"""Everything that talks to Kaggle goes through the official `kaggle` CLI.

Calling the CLI (not its Python internals) keeps us on its supported surface and
lets tests put a test double named `kaggle` on PATH to see the exact command lines.
Secrets are only ever checked for presence: no token or key is printed or saved.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import UserError
from .config import COMPETITION

TOKEN_URL = "https://www.kaggle.com/settings/api"
RULES_URL = f"https://www.kaggle.com/competitions/{COMPETITION}/rules"


class KaggleError(UserError):
    pass


def kaggle_config_dir():
    return Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")


def find_credentials():
    """Where credentials are, in the kaggle CLI's order, or None. Never the secret itself."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    config_dir = kaggle_config_dir()
    if (config_dir / "access_token").is_file():
        return str(config_dir / "access_token")
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    if (config_dir / "kaggle.json").is_file():
        return str(config_dir / "kaggle.json")
    return None


def require_credentials():
    if find_credentials() is None:
        raise KaggleError(
            "No Kaggle credentials found. Create a token at "
            f"{TOKEN_URL} (\"Create New Token\") and save it as "
            f"{kaggle_config_dir() / 'kaggle.json'} (chmod 600), or set KAGGLE_API_TOKEN. "
            "Offline? Pass an archive you already have: make data KAGGLE_ZIP=path/to.zip")
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
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    print(f"Downloading {COMPETITION} with the kaggle CLI into {dest_dir}/ ...")
    run_kaggle(["competitions", "download", COMPETITION, "-p", str(dest_dir)])
    archive = dest_dir / f"{COMPETITION}.zip"
    if not archive.is_file():
        raise KaggleError(f"The kaggle CLI finished but {archive} is not there; run `make data` again.")
    return archive


def submit(csv_path, message):
    print(f"Submitting {csv_path} to {COMPETITION} ...")
    run_kaggle(["competitions", "submit", COMPETITION, "-f", str(csv_path), "-m", message])
