"""A few realistic contacts with fixed UUIDs, for dev mode and demos."""

from __future__ import annotations

from typing import Any

_DEMO: tuple[dict[str, Any], ...] = (
    {
        "id": "123e4567-e89b-12d3-a456-426614174000",
        "full_name": "Jane Doe",
        "email": "jane@example.com",
        "phone": "+1 415 555 0142",
        "job_title": "General Counsel",
        "company_name": "Acme Legal",
        "linkedin_url": "https://www.linkedin.com/in/janedoe-example",
        "notes": "Met at conference. Interested in legal automation tools.",
        "created_date": "2026-01-12T09:30:00.000000Z",
        "updated_date": "2026-01-12T09:30:00.000000Z",
    },
    {
        "id": "6f1c2d3e-4b5a-4c6d-8e7f-90a1b2c3d4e5",
        "full_name": "Hans Mueller",
        "email": "hans.mueller@example.de",
        "phone": "+49 30 901820",
        "job_title": "Partner",
        "company_name": "Mueller & Schmidt Rechtsanwaelte",
        "linkedin_url": "https://de.linkedin.com/in/hans-mueller-example",
        "created_date": "2026-01-20T14:05:00.000000Z",
        "updated_date": "2026-01-20T14:05:00.000000Z",
    },
    {
        "id": "a7b8c9d0-e1f2-4a3b-9c4d-5e6f7a8b9c0d",
        "full_name": "Jean-Claude van Damme",
        "email": "jc.vandamme@example.be",
        "job_title": "Head of Legal Operations",
        "company_name": "Brussels Contract Partners",
        "created_date": "2026-02-02T08:00:00.000000Z",
        "updated_date": "2026-02-02T08:00:00.000000Z",
    },
    {
        "id": "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f",
        "full_name": "Priya Raman",
        "email": "priya.raman@example.in",
        "phone": "+91 98765 43210",
        "job_title": "Legal Counsel",
        "company_name": "Northwind Compliance",
        "linkedin_url": "https://www.linkedin.com/in/priya-raman-example",
        "created_date": "2026-02-10T11:45:00.000000Z",
        "updated_date": "2026-02-10T11:45:00.000000Z",
    },
)


def demo_contacts() -> list[dict[str, Any]]:
    """Fresh copies of the demo contacts (seed records for POST /_sandbox/contacts)."""
    return [dict(record) for record in _DEMO]
