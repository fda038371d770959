"""``icfrr-fast train --config FILE [--<section>.<field> VALUE ...]``: train a retrieval backbone.

Every configuration field is also a flag (``icfrr-fast train --help`` lists them with their defaults). Under
``torchrun --nproc_per_node N -m icfrr_fast.cli train ...`` it trains with DDP. Needs the ``train`` extra
(``pip install "icfrr_fast[train]"``).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from icfrr_fast.training.config import add_config_arguments

    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved configuration (YAML) and exit without training")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from icfrr_fast.training.config import config_from_args

    cfg = config_from_args(args)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    from icfrr_fast.training.train import fit

    result = fit(cfg)
    best = result["best"]
    shown = f"{best['metric']} = {best['value']:.4f} (step {best['step']})" if best.get("value") is not None else "n/a"
    print(f"icfrr-fast train: done at step {result['position']['step']}; best {shown}; outputs in "
          f"{result['output_dir']}")
    return 0
