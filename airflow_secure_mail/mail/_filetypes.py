"""File-name facts shared by compose (the type on the wire) and screen (the type a name implies)."""

from __future__ import annotations

COMPRESSED = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "compress": "application/x-compress",
    "br": "application/x-brotli",
}
"""The type of a file whose name says it is compressed (``mimetypes``' encoding), whatever is inside.

One table for both sides: compose labels ``report.csv.bz2`` application/x-bzip2, and screen must expect
the same of its bytes, or an allowed type would be refused as a name mismatch.
"""
