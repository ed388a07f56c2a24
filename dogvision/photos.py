"""`predict PHOTO_OR_FOLDER...`: the top breeds of your own photos.

Each file is decoded first with data.read_image (the reader training uses: JPEG incl.
grayscale/CMYK and EXIF rotation, PNG with alpha, WEBP, GIF's first frame, BMP), so a
file that cannot be read is named and skipped while the others are still predicted.
Features of these photos are computed but not stored: the feature cache is for the
competition's photos, not for one-off files.
"""
import json
import sys
from pathlib import Path

import numpy as np

from . import UserError, data
from .predict import find_run, load_run, predict_paths

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
LOW_CONFIDENCE = 0.3  # a top-1 probability below this is flagged: maybe not a dog of a known breed


def expand(targets):
    """Files as given; folders -> their photos (by extension, sorted, recursively)."""
    paths = []
    for target in map(Path, targets):
        if target.is_dir():
            paths += sorted(p for p in target.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            paths.append(target)
    return paths


def check_readable(paths):
    """(readable paths, {path: reason}) -- the reason is what the decoder said."""
    good, bad = [], {}
    for path in paths:
        if not path.is_file():
            bad[path] = "no such file"
            continue
        try:
            data.read_image(path)
            good.append(path)
        except Exception as err:  # noqa: BLE001 - any decoder failure means "cannot be read"
            bad[path] = f"{type(err).__name__}: {err}"
    return good, bad


def top_breeds(probs, breeds, k):
    order = np.argsort(-probs)[:k]
    return [(breeds[i], float(probs[i])) for i in order]


def predict_photos(cfg, targets, top=5, as_json=False, plot_dir=None):
    """The `predict` command: print (or return as JSON) the top breeds of each readable photo."""
    paths = expand(targets)
    if not paths:
        raise UserError(f"No photos in {', '.join(map(str, targets))} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}).")
    good, bad = check_readable(paths)
    for path, reason in bad.items():
        print(f"Warning: cannot read {path} ({reason}); skipped.", file=sys.stderr)
    if not good:
        raise UserError(f"None of the {len(paths)} photo(s) could be read: "
                        f"{', '.join(map(str, bad))}. Give JPEG, PNG, WEBP, GIF or BMP files.")
    run = load_run(find_run(cfg), cfg)
    log = sys.stderr if as_json else sys.stdout
    print(f"Predicting {len(good)} photo(s) with run {run.name}", file=log)
    probs = predict_paths(run, [str(p) for p in good], cache=False)
    k = max(1, min(top, len(run.breeds)))
    results = []
    for path, row in zip(good, probs):
        best = top_breeds(row, run.breeds, k)
        results.append({"photo": str(path), "top": [{"breed": b, "probability": p} for b, p in best],
                        "low_confidence": best[0][1] < LOW_CONFIDENCE})
    if plot_dir is not None:
        plot_all(results, good, Path(plot_dir) if plot_dir else run.dir / "predictions", log)
    if as_json:
        print(json.dumps({"run": run.name, "predictions": results,
                          "unreadable": [{"photo": str(p), "error": r} for p, r in bad.items()]}, indent=2))
    else:
        print(format_table(results, len(run.breeds)))
    return results


def format_table(results, num_breeds):
    width = max(len(item["breed"]) for r in results for item in r["top"])
    lines = []
    for r in results:
        lines.append(r["photo"])
        for rank, item in enumerate(r["top"], 1):
            lines.append(f"  {rank}. {item['breed']:<{width}}  {item['probability']:6.1%}")
        if r["low_confidence"]:
            lines.append(f"  ! low confidence ({r['top'][0]['probability']:.0%} < {LOW_CONFIDENCE:.0%}): "
                         f"this may not be one of the {num_breeds} breeds")
    return "\n".join(lines)


def plot_all(results, paths, plot_dir, log):
    """One PNG per photo: the photo beside a bar chart of its top breeds."""
    from .plots import plot_prediction

    for r, path in zip(results, paths):
        top = r["top"]
        title = f"{path.name}\n{top[0]['breed'].replace('_', ' ')} {top[0]['probability']:.0%}"
        if r["low_confidence"]:
            title += " (low confidence)"
        out = plot_dir / f"{path.stem}{path.suffix.replace('.', '_')}.png"
        plot_prediction(data.read_image(path), title, [t["breed"] for t in top],
                        [t["probability"] for t in top], out)
        print(f"Wrote {out}", file=log)
