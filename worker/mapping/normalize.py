"""Pure normalizers for CRM values headed to LeadLex: text, notes, phone, email, LinkedIn, id.

Each `normalize_*` returns the canonical form or raises `ValueError` with a short,
human message (it becomes a `Rejection.message`). The regular expressions and limits
here are also what the tests treat as "LeadLex would accept this".
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote, unquote, urlsplit

import phonenumbers

MAX_EMAIL_LENGTH = 254  # RFC 5321 path limit
MAX_EMAIL_LOCAL_LENGTH = 64

# Whitespace of any kind (incl. NBSP, line/paragraph separators) collapses to one space.
_WHITESPACE_RE = re.compile(r"\s+")
# Control characters (C0, DEL, C1) and lone surrogates: Postgres text rejects NUL and
# JSON encoders choke on surrogates, so they are dropped. Tab, LF and CR are kept
# here: text collapses them to a space, notes keep them as line breaks.
_CONTROL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# RFC 5322 "lite": dot-atom local part, ASCII (punycode) domain with >= 2 labels and
# an alphabetic (or punycode) TLD. No quoted local parts, no IP-literal domains.
EMAIL_RE = re.compile(
    rf"^{_ATEXT}+(?:\.{_ATEXT}+)*@(?:{_LABEL}\.)+(?:[a-z]{{2,63}}|xn--[a-z0-9-]{{1,59}})$"
)
# E.164: "+", country code (no leading 0), at most 15 digits in all.
E164_RE = re.compile(r"^\+[1-9][0-9]{1,14}$")
# A LeadLex contact id: a UUID in canonical 8-4-4-4-12 form.
LEADLEX_ID_RE = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE
)
LINKEDIN_HOST = "www.linkedin.com"
_LINKEDIN_KINDS = ("in", "pub", "company")
# Characters kept verbatim in a LinkedIn path; everything else is percent-encoded.
_PATH_SAFE = "-._~!$&'()*+,;=:@"


def clean_text(value: str) -> str:
    """One-line text: NFC, control characters dropped, whitespace runs collapsed, stripped."""
    if value.isascii() and value.isprintable():  # fast path: only " " can be whitespace
        if "  " not in value and value[:1] != " " and value[-1:] != " ":
            return value
        return " ".join(value.split())
    value = _CONTROL_RE.sub("", value)
    if not value.isascii():
        value = unicodedata.normalize("NFC", value)
    return _WHITESPACE_RE.sub(" ", value).strip()


def clean_notes(value: str) -> str:
    """Multi-line text: NFC, CRLF/CR -> LF, other control characters dropped, stripped."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    value = _CONTROL_RE.sub("", value)
    if not value.isascii():
        value = unicodedata.normalize("NFC", value)
    return value.strip()


def normalize_phone(value: str, region: str) -> str:
    """E.164 form of `value` (parsed with `region` when it has no "+"), or ValueError.

    The number must be a *possible* full number (right length for its country);
    `is_valid_number` is deliberately not required, so freshly allocated ranges and
    fictional test numbers (e.g. +44 7700 900xxx) still sync. Extensions are dropped.
    """
    text = clean_text(value)
    if not text:
        raise ValueError("empty phone number")
    try:
        number = phonenumbers.parse(text, (region or "").upper() or None)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            raise ValueError(
                f"no valid country code and none implied by region {region!r}"
            ) from None
        raise ValueError("not a phone number") from None
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason != phonenumbers.ValidationResult.IS_POSSIBLE:
        raise ValueError("wrong number of digits for a full phone number")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if not E164_RE.match(e164):  # pragma: no cover - phonenumbers guarantees the shape
        raise ValueError("not a phone number")
    return e164


def normalize_email(value: str) -> str:
    """`value` stripped, its domain lower-cased (IDN -> punycode); ValueError unless valid.

    The local part keeps its case (RFC 5321 says it may matter); compare case-insensitively.
    """
    text = value.strip()
    if not text:
        raise ValueError("empty email address")
    if len(text) > MAX_EMAIL_LENGTH:
        raise ValueError(f"longer than {MAX_EMAIL_LENGTH} characters")
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        raise ValueError("expected local@domain")
    if len(local) > MAX_EMAIL_LOCAL_LENGTH:
        raise ValueError(f"local part longer than {MAX_EMAIL_LOCAL_LENGTH} characters")
    domain = domain.lower()
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError("invalid international domain name") from None
    email = f"{local}@{domain}"
    if len(email) > MAX_EMAIL_LENGTH or not EMAIL_RE.match(email):
        raise ValueError("not a valid email address")
    return email


def normalize_linkedin_url(value: str) -> str:
    """Canonical `https://www.linkedin.com/{in|pub|company}/...` URL, or ValueError.

    Accepts http(s) URLs (or scheme-less ones) on linkedin.com or any subdomain
    (country and mobile hosts become www). Drops query, fragment and trailing slash;
    for /in/ and /company/ keeps only the profile slug (sub-pages such as
    /details/experience are cut), for the legacy /pub/ keeps the whole path.
    """
    text = value.strip()
    if not text:
        raise ValueError("empty URL")
    if any(ch.isspace() for ch in text):
        raise ValueError("URL contains whitespace")
    if "://" not in text and not text.lower().startswith(("http:", "https:")):
        text = "https://" + text
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        raise ValueError("not a URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("URL must use http or https")
    if parts.username is not None or parts.password is not None or port is not None:
        raise ValueError("URL must not carry credentials or a port")
    host = host.rstrip(".")
    if host != "linkedin.com" and not host.endswith(".linkedin.com"):
        raise ValueError("not a linkedin.com URL")
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) < 2 or segments[0].lower() not in _LINKEDIN_KINDS:
        raise ValueError("path must be /in/<profile>, /pub/<profile> or /company/<name>")
    kind = segments[0].lower()
    rest = segments[1:] if kind == "pub" else segments[1:2]
    decoded = [unquote(s) for s in rest]
    if any(s.strip(".") == "" for s in decoded):
        raise ValueError("invalid path")
    path = "/".join(quote(s, safe=_PATH_SAFE) for s in decoded)
    return f"https://{LINKEDIN_HOST}/{kind}/{path}"


def normalize_leadlex_id(value: str) -> str:
    """A LeadLex contact id (UUID) in lower case, or ValueError."""
    text = value.strip()
    if not LEADLEX_ID_RE.match(text):
        raise ValueError("not a LeadLex contact id (UUID)")
    return text.lower()
