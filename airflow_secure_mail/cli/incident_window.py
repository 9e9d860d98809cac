"""``airflow-secure-mail incident trace|notify``: what a time window sent and refused, and a correction notice
to its recipients (being built, issue 23). ``cli/incident.py`` registers these verbs beside freeze/unfreeze."""

from __future__ import annotations

import argparse


def add_verbs(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``trace`` and ``notify`` under ``incident``."""


def run(args: argparse.Namespace) -> int:
    """Run ``trace`` or ``notify`` (``args.verb``)."""
    raise NotImplementedError(args.verb)
