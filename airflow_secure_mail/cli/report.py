"""``airflow-secure-mail report``: being built (issue 23)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``report`` on the main parser."""


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("report")
