"""``airflow-secure-mail incident``: being built (issue 23)."""

from __future__ import annotations

import argparse

from airflow_secure_mail.cli import incident_window


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``incident`` on the main parser."""
    incident = sub.add_parser("incident", help="trace a window's mail, notify its recipients")
    verbs = incident.add_subparsers(dest="verb", required=True)
    incident_window.add_verbs(verbs)


def run(args: argparse.Namespace) -> int:
    if args.verb in incident_window.VERBS:
        return incident_window.run(args)
    raise NotImplementedError("incident")
