"""Subcommands of the ``icfrr-fast`` CLI (see icfrr_fast/cli.py), one module each."""
