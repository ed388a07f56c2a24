"""Command line: `python -m dogvision <command> [--option value ...]`; the Makefile calls this.

Commands: data, show, train, submission, validate, submit, kaggle-train, runs,
evaluate, predict. Every config field
is an option (see `python -m dogvision train --help`).
"""
import argparse
import sys
import warnings
from pathlib import Path

from . import UserError
from .config import add_config_args, config_from_args


def cmd_data(cfg, args):
    from .data import prepare_data
    prepare_data(cfg)


def cmd_show(cfg, args):
    from .plots import show_batch
    print(f"Wrote {show_batch(cfg, Path(args.out))}")


def cmd_train(cfg, args):
    from .train import train
    train(cfg)


def cmd_submission(cfg, args):
    from .predict import make_submission
    make_submission(cfg)


def cmd_validate(cfg, args):
    from .predict import validate_csv
    sample = args.sample or str(Path(cfg.data_dir) / "sample_submission.csv")
    rows = validate_csv(args.csv, sample)
    print(f"{args.csv} is a valid submission ({rows} rows, checked against {sample}).")


def cmd_submit(cfg, args):
    from . import kaggle_io
    from .predict import submission_path, validate_csv
    csv = submission_path(cfg, args.csv)
    validate_csv(csv, Path(cfg.data_dir) / "sample_submission.csv")
    kaggle_io.submit(csv, args.message or f"DogVision {csv.stem}")


def cmd_kaggle_train(cfg, args):
    from .kaggle_kernel import kaggle_train
    kaggle_train(cfg)


def cmd_bench(cfg, args):
    from .bench import bench
    bench(cfg)


def cmd_evaluate(cfg, args):
    from .evaluate import evaluate
    evaluate(cfg)


def cmd_predict(cfg, args):
    from .photos import predict_photos
    predict_photos(cfg, args.photos, top=args.top, as_json=args.json, plot_dir=(args.plot_dir or "") if args.plot else None)


def cmd_runs(cfg, args):
    from .predict import list_runs, load_run
    for name in list_runs(cfg.runs_dir):
        m = load_run(Path(cfg.runs_dir) / name).metrics
        acc, loss = m.get("val_accuracy"), m.get("val_log_loss")
        print(f"{name:40s} val acc {acc if acc is None else round(acc, 3)}  "
              f"val log loss {loss if loss is None else round(loss, 3)}  full={m.get('full')}")


COMMANDS = {
    "data": (cmd_data, "download (or take KAGGLE_ZIP), unpack and verify the competition data"),
    "show": (cmd_show, "write a 5x5 grid of a training batch with breed names"),
    "train": (cmd_train, "train a model; writes runs/<run>/"),
    "submission": (cmd_submission, "predict the test photos into submissions/<run>.csv"),
    "validate": (cmd_validate, "check a submission CSV against sample_submission.csv"),
    "submit": (cmd_submit, "validate, then send a CSV to Kaggle and show its public score"),
    "kaggle-train": (cmd_kaggle_train, "train FULL=1 + submission in a Kaggle GPU kernel; fetch runs/ and submissions/"),
    "bench": (cmd_bench, "time our pipeline against the course's on the same photos (a benchmark)"),
    "runs": (cmd_runs, "list finished runs and their validation metrics"),
    "evaluate": (cmd_evaluate, "report on a run's validation split into runs/<run>/report/ (latest run or RUN=)"),
    "predict": (cmd_predict, "top breeds of your photos: predict PHOTO_OR_FOLDER... [--top 5] [--json] [--plot [--plot-dir DIR]]"),
}


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m dogvision", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_config_args(p)
        if name == "show":
            p.add_argument("--out", default="runs/batch.png")
        if name == "validate":
            p.add_argument("csv")
            p.add_argument("--sample", default=None, help="sample_submission.csv to check against")
        if name == "predict":
            p.add_argument("photos", nargs="+", metavar="PHOTO_OR_FOLDER")
            p.add_argument("--top", type=int, default=5, help="how many breeds per photo (default 5)")
            p.add_argument("--json", action="store_true", help="print JSON instead of a table")
            p.add_argument("--plot", action="store_true", help="write each photo beside a bar chart of its breeds")
            p.add_argument("--plot-dir", default=None, metavar="DIR", help="where --plot writes (default runs/<run>/predictions/)")
        if name == "submit":
            p.add_argument("--csv", "--CSV", default=None, help="default: the latest run's submission")
            p.add_argument("--message", "--MESSAGE", "-m", default=None)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"Warning: {msg}\n"
    try:
        cfg = config_from_args(args)
        COMMANDS[args.command][0](cfg, args)
    except UserError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Interrupted. Nothing half-written was left in place; "
              "an interrupted training continues with RESUME=1 RUN=<run>.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
