"""``rewardforge-dataset check|summary|repair PATH``: validate a dataset and describe it.

``check`` prints the summary and exits 0, or lists every problem and exits 1.
``summary`` prints the summary (``--json`` for a machine-readable one). ``repair``
deletes leftovers of an interrupted write (what the next writer would delete).
"""

from __future__ import annotations

import argparse
import json
import sys

from common.episodes import layout as L
from common.episodes.check import check_dataset, format_summary, repair
from common.episodes.reader import Dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rewardforge-dataset", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("check", "summary", "repair"))
    parser.add_argument("path", help="dataset directory (the one holding meta/info.json)")
    parser.add_argument("--json", action="store_true", help="summary: print JSON instead of text")
    args = parser.parse_args(argv)
    if args.command == "repair":
        try:
            print(f"removed {repair(args.path)} leftover file(s)/row(s) from {args.path}")
        except L.DatasetError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)
        return
    if args.command == "summary":
        try:
            s = Dataset(args.path).summary()
        except L.DatasetError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)
        print(json.dumps(s, indent=2) if args.json else format_summary(s))
        return
    problems, warnings = check_dataset(args.path)
    if not problems:
        print(format_summary(Dataset(args.path).summary()))
    for w in warnings:
        print(f"warning: {w}")
    if problems:
        print(f"{args.path}: {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        sys.exit(1)
    print("check: OK")


if __name__ == "__main__":
    main()
