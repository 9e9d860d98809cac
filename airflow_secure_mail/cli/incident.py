"""``airflow-secure-mail incident``: being built (issue 23)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``incident`` on the main parser."""


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("incident")
