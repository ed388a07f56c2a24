"""DogVision on Kaggle's GPUs: the script that `make kaggle-train` pushes as a Kaggle kernel.

`kaggle kernels push` uploads only this one file, so `make kaggle-train` fills in KIT
(the dogvision package and requirements.txt, zipped, base64), RUN and ARGS in the
copy it pushes (kaggle/build/dogvision-train/run.py). On Kaggle it runs what
`make submission FULL=1` runs locally (`python -m dogvision data`, `train --full 1`,
`submission --full 1`) on the competition's data, which competition_sources attaches
read-only under /kaggle/input, and leaves runs/<RUN>/ and submissions/<RUN>.csv in
/kaggle/working, from where `kaggle kernels output` fetches them.
The DOGVISION_KAGGLE_* variables move those folders, so the tests can run it offline.
"""
import base64
import importlib.util
import io
import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

KIT = ""  # filled in by `make kaggle-train`
RUN = ""
ARGS = []

INPUT = Path(os.environ.get("DOGVISION_KAGGLE_INPUT", "/kaggle/input"))
WORKING = Path(os.environ.get("DOGVISION_KAGGLE_WORKING", "/kaggle/working"))
SCRATCH = Path(os.environ.get("DOGVISION_KAGGLE_SCRATCH", "/tmp/dogvision"))  # not fetched by `kernels output`


def sh(*cmd, env=None):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env)


def install_kit(kit_dir):
    """Unpack the package; pip-install tf-keras / tensorflow-hub only if the image lacks them."""
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(KIT))) as zf:
        zf.extractall(kit_dir)
    pins = dict(line.strip().split("==", 1) for line in (kit_dir / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    tf_minor = ".".join(metadata.version("tensorflow").split(".")[:2])
    wanted = {"tf_keras": f"tf-keras=={tf_minor}.*",  # must match the image's TensorFlow
              "tensorflow_hub": f"tensorflow-hub=={pins['tensorflow-hub']}"}
    missing = [spec for module, spec in wanted.items() if importlib.util.find_spec(module) is None]
    if missing:
        sh(sys.executable, "-m", "pip", "install", "--quiet", *missing)


def competition_data():
    """The attached competition folder (the folder with labels.csv and sample_submission.csv)."""
    for labels in [INPUT / "dog-breed-identification" / "labels.csv", *sorted(INPUT.glob("*/labels.csv")),
                   *sorted(INPUT.glob("*/*/labels.csv"))]:
        if labels.is_file() and (labels.parent / "sample_submission.csv").is_file():
            return labels.parent
    sys.exit(f"No labels.csv under {INPUT}/: is dog-breed-identification in the kernel's "
             "competition_sources (kaggle/kernel-metadata.json)?")


def writable_data_dir(source):
    """/kaggle/input is read-only but `data` writes its .verified.json: link the files into a folder of ours."""
    data_dir = SCRATCH / "data" / "dog-breed-identification"
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in ("labels.csv", "sample_submission.csv", "train", "test"):
        if not (data_dir / name).exists():
            (data_dir / name).symlink_to(source / name)
    return data_dir


def main():
    if not KIT or not RUN:
        sys.exit("This is the template: run `make kaggle-train`, which pushes a filled-in copy.")
    kit_dir = SCRATCH / "kit"
    install_kit(kit_dir)
    data_dir = writable_data_dir(competition_data())
    env = dict(os.environ, PYTHONPATH=str(kit_dir), TF_USE_LEGACY_KERAS="1")
    where = ["--data-dir", str(data_dir), "--cache-dir", str(SCRATCH / "features"),
             "--runs-dir", str(WORKING / "runs"), "--submissions-dir", str(WORKING / "submissions")]
    python = [sys.executable, "-m", "dogvision"]
    sh(*python, "data", *where, *ARGS, env=env)
    sh(*python, "train", "--full", "1", "--run", RUN, *where, *ARGS, env=env)
    sh(*python, "submission", "--full", "1", "--run", RUN, *where, *ARGS, env=env)
    print(f"Done: {WORKING / 'runs' / RUN}/ and {WORKING / 'submissions' / RUN}.csv", flush=True)


if __name__ == "__main__":
    main()
