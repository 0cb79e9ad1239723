"""Normalizers: E.164 phones, RFC 5322-lite emails, canonical LinkedIn URLs, LeadLex ids."""

from __future__ import annotations

import pytest

from worker.mapping import (
    normalize_email,
    normalize_leadlex_id,
    normalize_linkedin_url,
    normalize_phone,
)

# ---- phone ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("(415) 555-2671", "US", "+14155552671"),
        ("415.555.2671", "US", "+14155552671"),
        ("1-415-555-2671", "US", "+14155552671"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("07700 900123", "GB", "+447700900123"),  # Ofcom drama range: possible, not "valid"
        ("+44 20 7946 0958", "US", "+442079460958"),  # a "+" number ignores the region
        ("+49 30 901820", "US", "+4930901820"),
        ("+1-202-555-0173", "GB", "+12025550173"),
        ("00 44 20 7946 0958", "DE", "+442079460958"),  # international prefix of DE
        ("+1 415 555 2671 ext. 12", "US", "+14155552671"),  # extension dropped
        ("  +1\u00a0415\u00a0555\u00a02671  ", "US", "+14155552671"),
        ("030 901820", "de", "+4930901820"),  # region case does not matter
    ],
)
def test_phone_to_e164(raw: str, region: str, e164: str) -> None:
    """Phone numbers in common national and international forms become E.164."""
    assert normalize_phone(raw, region) == e164


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("", "US"),
        ("   ", "US"),
        ("call me", "US"),
        ("12345", "US"),  # too short
        ("555-0100", "US"),  # local-only: no area code
        ("+1-555-9999", "US"),  # the LeadLex docs' own example is too short
        ("+999 123 456 789", "US"),  # no such country code
        ("020 7946 0958", ""),  # no "+" and no region to read it in
        ("020 7946 0958", "ZZ"),
        ("1" * 300, "US"),
        ("+1 415 555 2671 5555 5555", "US"),  # too long
    ],
)
def test_phone_garbage_rejected(raw: str, region: str) -> None:
    """Text that is not a full phone number raises ValueError."""
    with pytest.raises(ValueError, match=r"."):
        normalize_phone(raw, region)


# ---- email ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("jane@example.com", "jane@example.com"),
        ("  Jane.Doe@Example.COM ", "Jane.Doe@example.com"),  # local part keeps its case
        ("a+tag@sub.example.co.uk", "a+tag@sub.example.co.uk"),
        ("o'brien@example.ie", "o'brien@example.ie"),
        ("x_y-z@my-domain.io", "x_y-z@my-domain.io"),
        ("user@müller.de", "user@xn--mller-kva.de"),  # IDN domain -> punycode
        ("user@xn--mller-kva.de", "user@xn--mller-kva.de"),
        ("a@b.xn--p1ai", "a@b.xn--p1ai"),
        ("a" * 64 + "@example.com", "a" * 64 + "@example.com"),
    ],
)
def test_email_valid(raw: str, normalized: str) -> None:
    """Valid addresses are stripped and their domain lower-cased."""
    assert normalize_email(raw) == normalized


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "plainaddress",
        "@example.com",
        "jane@",
        "jane@@example.com",
        "jane@example",  # no TLD
        "jane@example.c",  # one-letter TLD
        "jane@example.123",  # numeric TLD
        "jane doe@example.com",
        "jane@exa mple.com",
        ".jane@example.com",
        "jane.@example.com",
        "ja..ne@example.com",
        "jane@-example.com",
        "jane@example-.com",
        "jane@example..com",
        "jane@example.com.",
        '"jane"@example.com',  # quoted local parts are not supported
        "jane@[192.168.0.1]",
        "jäne@example.com",  # non-ASCII local part
        "Jane <jane@example.com>",
        "mailto:jane@example.com",
        "a" * 65 + "@example.com",  # local part > 64
        "a@" + "b" * 64 + ".com",  # label > 63
        "a@" + ".".join(["abcdefghi"] * 25) + ".com",  # > 254 in all
    ],
)
def test_email_invalid(raw: str) -> None:
    """Malformed addresses raise ValueError."""
    with pytest.raises(ValueError, match=r"."):
        normalize_email(raw)


# ---- LinkedIn ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("https://www.linkedin.com/in/jane-doe", "https://www.linkedin.com/in/jane-doe"),
        ("http://linkedin.com/in/jane-doe/", "https://www.linkedin.com/in/jane-doe"),
        ("https://uk.linkedin.com/in/jane-doe?trk=abc#top", "https://www.linkedin.com/in/jane-doe"),
        ("www.linkedin.com/in/jane-doe", "https://www.linkedin.com/in/jane-doe"),
        ("linkedin.com/in/jane-doe", "https://www.linkedin.com/in/jane-doe"),
        ("HTTPS://WWW.LinkedIn.com/IN/Jane-Doe", "https://www.linkedin.com/in/Jane-Doe"),
        ("https://m.linkedin.com/in/jane/details/experience/", "https://www.linkedin.com/in/jane"),
        (
            "https://www.linkedin.com/company/acme-inc/about/",
            "https://www.linkedin.com/company/acme-inc",
        ),
        (
            "https://www.linkedin.com/pub/jane-doe/12/345/678",
            "https://www.linkedin.com/pub/jane-doe/12/345/678",
        ),
        ("https://www.linkedin.com/in/j%C3%BCrgen", "https://www.linkedin.com/in/j%C3%BCrgen"),
        ("https://www.linkedin.com/in/jürgen", "https://www.linkedin.com/in/j%C3%BCrgen"),
        ("https://www.linkedin.com.//in//jane", "https://www.linkedin.com/in/jane"),
    ],
)
def test_linkedin_canonical(raw: str, canonical: str) -> None:
    """LinkedIn profile and company URLs become https://www.linkedin.com/... without noise."""
    assert normalize_linkedin_url(raw) == canonical


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "jane-doe",
        "https://twitter.com/jane",
        "https://linkedin.com.evil.com/in/jane",
        "https://evillinkedin.com/in/jane",
        "https://evil.com/?u=https://linkedin.com/in/jane",
        "https://linkedin.com@evil.com/in/jane",
        "https://user:pw@www.linkedin.com/in/jane",
        "https://www.linkedin.com:8443/in/jane",
        "ftp://www.linkedin.com/in/jane",
        "javascript:alert(1)//linkedin.com/in/x",
        "https://www.linkedin.com/",
        "https://www.linkedin.com/in/",
        "https://www.linkedin.com/in/..",
        "https://www.linkedin.com/feed/",
        "https://www.linkedin.com/jobs/view/123",
        "https://www.linkedin.com/in/jane doe",
        "https://[::1/in/jane",
    ],
)
def test_linkedin_invalid(raw: str) -> None:
    """Anything but an http(s) linkedin.com /in/, /pub/ or /company/ URL raises ValueError."""
    with pytest.raises(ValueError, match=r"."):
        normalize_linkedin_url(raw)


# ---- LeadLex id ----------------------------------------------------------------------------


def test_leadlex_id_uuid_lower_cased() -> None:
    """A UUID (any case, padded) is accepted and lower-cased."""
    assert (
        normalize_leadlex_id(" 0B9E5C1A-1111-4222-8333-123456789ABC ")
        == "0b9e5c1a-1111-4222-8333-123456789abc"
    )


@pytest.mark.parametrize(
    "raw",
    ["", "abc-123", "0b9e5c1a111142228333123456789abc", "{0b9e5c1a-1111-4222-8333-123456789abc}"],
)
def test_leadlex_id_rejects_non_uuid(raw: str) -> None:
    """Anything but a hyphenated UUID raises ValueError."""
    with pytest.raises(ValueError, match="UUID"):
        normalize_leadlex_id(raw)
