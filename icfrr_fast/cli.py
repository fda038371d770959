"""``icfrr-fast`` command line. Each subcommand lives in its own module (imported only when that subcommand runs,
so ``icfrr-fast rerank`` never imports timm or the demo's dependencies) exposing ``add_arguments(parser)`` and
``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

#: subcommand -> (module, one-line help)
COMMANDS = {
    "rerank": ("icfrr_fast.commands.rerank", "re-rank cached distance matrices (qg_dists.pth, gg_dists.pth) with ICFRR"),
    "graph": ("icfrr_fast.commands.graph", "build the exact gallery graph from features (fused k-NN)"),
    "demo": ("icfrr_fast.commands.demo", "ICFRR on real images: line-art emoji -> colour emoji, with a visual report"),
    "train": ("icfrr_fast.commands.train", "train a retrieval backbone (timm ViT/CNN, ViT-x) from a YAML/TOML config"),
    "features": ("icfrr_fast.commands.features", "extract and cache query/gallery features of a dataset"),
    "tune": ("icfrr_fast.commands.tune", "sweep ICFRR's and the other re-rankers' parameters on labelled queries"),
}


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="icfrr-fast", description="Fast, exact ICFRR re-ranking for retrieval.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if command is None or command == name:  # only the chosen command's module is imported
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except (ValueError, TypeError, OSError) as e:  # bad input, missing/unreadable/unwritable files: one line
        print(f"icfrr-fast {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except MemoryError as e:
        print(f"icfrr-fast {args.command}: error: {_one_line(e) or 'out of memory'}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"icfrr-fast {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
