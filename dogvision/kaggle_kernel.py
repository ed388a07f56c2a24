"""`make kaggle-train`: train FULL=1 and predict the test photos on Kaggle's GPUs, then fetch the results.

`kaggle kernels push` uploads a kernel's script and nothing else, so the script
(kaggle/run.py) goes with the dogvision package zipped inside it. The round trip:

    kaggle kernels push -p kaggle/build/dogvision-train --accelerator NvidiaTeslaT4
    kaggle kernels status USER/dogvision-train                  (every DOGVISION_KERNEL_POLL s)
    kaggle kernels output USER/dogvision-train -p kaggle/build/output
    -> runs/<run>/ and submissions/<run>.csv, as if trained here; a failed kernel shows its log.

No credential goes into the pushed files: only the user name, in the kernel's id.
"""
import base64
import io
import json
import re
import shutil
import sys
import time
import zipfile
from pathlib import Path

from . import UserError, kaggle_io
from .config import Config, to_dict
from .fileio import write_json, write_text

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "kaggle"
BUILD_DIR = Path("kaggle", "build")
SLUG = "dogvision-train"
ACCELERATOR = "NvidiaTeslaT4"
# Where things are (here or in the kernel) and run bookkeeping: never sent to the kernel.
NOT_SENT = {"data_dir", "kaggle_zip", "cache_dir", "runs_dir", "submissions_dir", "full", "run", "resume", "force"}
DONE = {"complete", "error", "cancelrequested", "cancelacknowledged"}


def kernel_args(cfg):
    """The config options that differ from the defaults, as CLI options for the kernel's commands."""
    defaults = to_dict(Config())
    args = []
    for key, value in to_dict(cfg).items():
        if key not in NOT_SENT and value != defaults[key]:
            args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def kit_base64():
    """The dogvision package and requirements.txt as a base64 zip (deterministic: sorted, fixed times)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted((REPO / "dogvision").glob("*.py")) + [REPO / "requirements.txt"]:
            info = zipfile.ZipInfo(str(path.relative_to(REPO)), date_time=(2020, 1, 1, 0, 0, 0))
            zf.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    return base64.b64encode(buf.getvalue()).decode()


def fill(script, **values):
    """Replace the template's `NAME = ...` lines with the values (JSON: valid Python for str and list)."""
    for name, value in values.items():
        script, count = re.subn(rf"^{name} = .*$", lambda m: f"{name} = {json.dumps(value)}", script, count=1,
                                flags=re.MULTILINE)
        if count != 1:
            raise UserError(f"{TEMPLATES / 'run.py'} has no `{name} = ...` line; restore it from git.")
    return script


def build_kernel(cfg, user, run, build_dir=BUILD_DIR):
    """kaggle/build/dogvision-train/: kernel-metadata.json with the user's id, and the filled script."""
    push_dir = Path(build_dir) / SLUG
    shutil.rmtree(push_dir, ignore_errors=True)
    push_dir.mkdir(parents=True)
    meta = json.loads((TEMPLATES / "kernel-metadata.json").read_text())
    meta["id"] = f"{user}/{SLUG}"
    write_json(push_dir / "kernel-metadata.json", meta)
    script = fill((TEMPLATES / "run.py").read_text(), KIT=kit_base64(), RUN=run, ARGS=kernel_args(cfg))
    write_text(push_dir / meta["code_file"], script)
    return push_dir


def kernel_status(kernel):
    """('complete' | 'running' | 'error' | ..., failure message or '') from `kaggle kernels status`."""
    output = kaggle_io.run_kaggle(["kernels", "status", kernel], echo=False)
    found = re.search(r'has status "([^"]+)"', output)
    if not found:
        raise kaggle_io.KaggleError(f"Unexpected answer from `kaggle kernels status {kernel}`: {output.strip()[-300:]}")
    failure = re.search(r'Failure message: "(.*)"', output)
    return kaggle_io.normal_status(found.group(1)), failure.group(1) if failure else ""


def wait_for_kernel(kernel):
    """Poll until the kernel is done, with one progress line; returns (status, failure message)."""
    poll = kaggle_io.env_number("DOGVISION_KERNEL_POLL", 60)
    start = time.time()
    while True:
        time.sleep(poll)  # first wait too: right after a push, the status can still be the last version's
        status, failure = kernel_status(kernel)
        minutes, seconds = divmod(int(time.time() - start), 60)
        sys.stdout.write(f"\r{kernel}: {status} ({minutes}m{seconds:02d}s)   ")
        sys.stdout.flush()
        if status in DONE:
            print()
            return status, failure


def log_tail(path, lines=25):
    """The last lines of a kernel log (Kaggle's is a JSON list of {"data": ...} entries)."""
    text = Path(path).read_text(errors="replace")
    try:
        text = "".join(entry.get("data", "") for entry in json.loads(text) if isinstance(entry, dict))
    except (ValueError, TypeError, AttributeError):
        pass
    return "\n".join(text.rstrip().splitlines()[-lines:])


def collect(output_dir, run, cfg):
    """Move the kernel's runs/<run>/ and submissions/<run>.csv into this project's folders."""
    run_src, csv_src = output_dir / "runs" / run, output_dir / "submissions" / f"{run}.csv"
    if not (run_src / "metrics.json").is_file() or not csv_src.is_file():
        found = ", ".join(str(p.relative_to(output_dir)) for p in sorted(output_dir.rglob("*")) if p.is_file())
        raise kaggle_io.KaggleError(f"The kernel finished, but its output has no runs/{run}/metrics.json and "
                                    f"submissions/{run}.csv (it has: {found or 'nothing'}). Was an older "
                                    f"version still running? Run `make kaggle-train` again.")
    run_dir, csv = Path(cfg.runs_dir) / run, Path(cfg.submissions_dir) / f"{run}.csv"
    for target in (run_dir, csv):
        if target.exists():
            raise UserError(f"{target} already exists; it is not overwritten. The kernel's files are in {output_dir}/.")
    csv.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(run_src), str(run_dir))
    shutil.move(str(csv_src), str(csv))
    if (output_dir / f"{SLUG}.log").is_file():
        shutil.move(str(output_dir / f"{SLUG}.log"), str(run_dir / "kernel.log"))
    for pointer in ("LATEST", "LATEST_FULL"):  # as `make train FULL=1` leaves them
        write_text(Path(cfg.runs_dir) / pointer, run + "\n")
    return run_dir, csv


def kaggle_train(cfg):
    """The `kaggle-train` command. Returns (run folder, submission CSV)."""
    user = kaggle_io.kaggle_username()  # also checks that credentials exist
    if "://" not in cfg.model_handle:
        raise UserError(f"MODEL_HANDLE={cfg.model_handle} is a local folder, which the kernel cannot see. "
                        "Use a TF Hub / Kaggle Models URL (the kernel has internet), or leave it unset.")
    run = cfg.run or time.strftime("kaggle-%Y%m%d-%H%M%S-full")
    if (Path(cfg.runs_dir) / run).exists():
        raise UserError(f"{Path(cfg.runs_dir) / run}/ exists already; choose another RUN=.")
    kernel, url = f"{user}/{SLUG}", f"https://www.kaggle.com/code/{user}/{SLUG}"
    push_dir = build_kernel(cfg, user, run)
    print(f"Pushing kernel {kernel} ({ACCELERATOR} GPU; `train FULL=1` and `submission` as run {run}) ...")
    pushed = kaggle_io.run_kaggle(["kernels", "push", "-p", str(push_dir), "--accelerator", ACCELERATOR])
    if "push error" in pushed.lower():  # the CLI reports these with exit code 0
        raise kaggle_io.KaggleError(f"Kaggle refused the kernel in {push_dir}/: {pushed.strip()}")
    print(f"Waiting for the kernel (it uses your weekly GPU quota while it runs; watch it at {url}).")
    try:
        status, failure = wait_for_kernel(kernel)
    except KeyboardInterrupt:
        raise UserError(f"\nStopped waiting; the kernel keeps running (and using GPU quota) at {url}. "
                        f"Its files, when done: kaggle kernels output {kernel} -p kaggle/build/output") from None
    output_dir = BUILD_DIR / "output"
    shutil.rmtree(output_dir, ignore_errors=True)
    output_dir.mkdir(parents=True)
    fetch = ["kernels", "output", kernel, "-p", str(output_dir)]
    if status != "complete":
        log = output_dir / f"{SLUG}.log"
        try:
            kaggle_io.run_kaggle(fetch, echo=False)
        except kaggle_io.KaggleError:
            pass
        tail = log_tail(log) if log.is_file() else "(no log could be fetched)"
        why = f": {failure}" if failure else ""
        raise kaggle_io.KaggleError(f"The kernel ended with status {status}{why}. The end of its log "
                                    f"({log if log.is_file() else url}):\n{tail}")
    print(f"Fetching the kernel's output into {output_dir}/ ...")
    kaggle_io.run_kaggle(fetch, echo=False)
    run_dir, csv = collect(output_dir, run, cfg)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    print(f"Kaggle run {run}: val accuracy {metrics.get('val_accuracy')}, val log loss "
          f"{metrics.get('val_log_loss')} (chosen on the 80/20 split, then refit on all photos)")
    print(f"Saved {run_dir}/ and {csv}. Next: make submit CSV={csv}")
    return run_dir, csv
