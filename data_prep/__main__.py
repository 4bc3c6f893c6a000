"""Command line of data_prep (see ``data_prep/README.md``).

    python -m verl_lpreg.data_prep <dataset> --output FILE [--source ID_OR_FILE] [--limit N] [--template r1|chat]
    python -m verl_lpreg.data_prep all --output-dir DIR [--limit N] [--template r1|chat]

Exit status 0 on success, 2 on a usage or data error (message on stderr, no file written),
1 if ``all`` failed for some datasets (the others are written).
"""

from __future__ import annotations

import argparse
import os
import sys

from . import DATASETS
from .core import TEMPLATES, DataPrepError, prepare


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m verl_lpreg.data_prep",
        description="Write verl parquet files for DAPO-Math-17k and the Lp-Reg benchmarks.",
    )
    p.add_argument("dataset", help=f"one of: {', '.join(DATASETS)}, or 'all'")
    p.add_argument("--source", help="Hub dataset id or local .parquet/.jsonl/.json (default: the dataset's Hub id)")
    p.add_argument("--output", help="output .parquet file (single dataset)")
    p.add_argument("--output-dir", help="output directory for 'all' (files named <data_source>.parquet)")
    p.add_argument("--limit", type=int, help="write at most N rows per dataset")
    p.add_argument("--template", choices=TEMPLATES, default="r1", help="prompt template (default r1)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.dataset == "all":
            if not args.output_dir or args.output or args.source:
                raise DataPrepError("'all' takes --output-dir DIR (and neither --output nor --source)")
            failed = []
            for name, spec in DATASETS.items():
                output = os.path.join(args.output_dir, f"{spec.data_source}.parquet")
                try:
                    report = prepare(spec, output, limit=args.limit, template=args.template)
                except DataPrepError as e:
                    print(f"error: {e}", file=sys.stderr)
                    failed.append(name)
                    continue
                print(report.summary())
            if failed:
                print(f"error: failed: {', '.join(failed)}", file=sys.stderr)
                return 1
            return 0
        spec = DATASETS.get(args.dataset)
        if spec is None:
            raise DataPrepError(f"unknown dataset {args.dataset!r}; allowed: {', '.join(DATASETS)}, all")
        if not args.output or args.output_dir:
            raise DataPrepError(f"{args.dataset} takes --output FILE (--output-dir is for 'all')")
        report = prepare(spec, args.output, source=args.source, limit=args.limit, template=args.template)
    except DataPrepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
