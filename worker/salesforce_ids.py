"""Salesforce record ids (org ids included): the 18-character form and its checksum. Pure.

A Salesforce id has a case-sensitive 15-character form and an 18-character form whose
last 3 characters are a checksum of the case of the first 15: for each 5-character
chunk, bit i is set when character i is an upper-case letter, and the 5-bit number
indexes into `ABCDEFGHIJKLMNOPQRSTUVWXYZ012345`. The 18-character form survives
case-insensitive handling; leadlex-sync stores every org id in it (one normal form).
"""

from __future__ import annotations

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


class SalesforceIdError(ValueError):
    """Not a 15- or 18-character Salesforce id, or the 18-character checksum is wrong."""


def checksum(id15: str) -> str:
    """The 3-character suffix of the 18-character form of a 15-character id."""
    if len(id15) != 15:
        raise SalesforceIdError("a 15-character id is needed for the checksum")
    return "".join(
        _ALPHABET[sum(1 << bit for bit, ch in enumerate(id15[start : start + 5]) if ch.isupper())]
        for start in (0, 5, 10)
    )


def to_18(value: str) -> str:
    """The 18-character form of a 15- or 18-character id; SalesforceIdError if malformed.

    An 18-character id must carry the right checksum (compared case-insensitively: the
    suffix is what makes the id case-insensitive, the first 15 characters are not).
    """
    if not (value.isascii() and value.isalnum()) or len(value) not in (15, 18):
        raise SalesforceIdError("must be a 15- or 18-character Salesforce id (letters/digits)")
    expected = checksum(value[:15])
    if len(value) == 18 and value[15:].upper() != expected:
        raise SalesforceIdError("the last 3 characters are not the checksum of the first 15")
    return value[:15] + expected
