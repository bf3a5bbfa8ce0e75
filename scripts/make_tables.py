#!/usr/bin/env python
"""Print the paper's tables with our Avg@32 / Pass@32 beside the published figures, and a bar chart.

    python scripts/make_tables.py \
        --summary GRPO:1.5B=runs/grpo-1.5b/eval --summary DGPO:1.5B=runs/dgpo-1.5b/eval \
        --out results/

writes results/tables.md, results/tables.tex and results/averages.png, and prints the markdown.
Each --summary is METHOD:SIZE=PATH, PATH a summary.json of `python -m verl_dgpo.eval` or its directory.
"""

import argparse
import os
import sys

from verl_dgpo.eval.tables import PAPER_CSV, bar_chart, latex, load_paper, markdown, parse_summary_args


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--summary", action="append", required=True, metavar="METHOD:SIZE=PATH")
    parser.add_argument("--paper", default=PAPER_CSV, help="published results CSV (default: the copy shipped with verl-dgpo)")
    parser.add_argument("--out", default=None, help="directory for tables.md, tables.tex, averages.png")
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument("--title", default=None, help="a line put first in tables.md and in every LaTeX caption, e.g. a scale warning")
    args = parser.parse_args(argv)
    try:
        ours = parse_summary_args(args.summary)
    except (ValueError, OSError) as err:
        print(f"make_tables: {err}", file=sys.stderr)
        return 2
    paper = load_paper(args.paper)
    md, tex = markdown(ours, paper, args.title), latex(ours, paper, args.title)
    print(md)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "tables.md"), "w", encoding="utf-8") as f:
            f.write(md)
        with open(os.path.join(args.out, "tables.tex"), "w", encoding="utf-8") as f:
            f.write(tex)
        if not args.no_chart:
            print("chart:", bar_chart(ours, paper, os.path.join(args.out, "averages.png")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
