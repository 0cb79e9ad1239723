"""A few thousand people on both sides, spelled the way real data is (for tests, benches, demos).

`population(n, seed=...)` makes n people and renders each twice: as a LeadLex contact (seed
record for the sandbox) and as a CRM row (HubSpot contacts export / Salesforce report
export columns), with the variations real exports have: e-mail case and stray spaces,
phones as "+1 415-200-0007", "(415) 200-0007", "+14152000007", "415.200.0007". Then the
traps (counts in `TRAPS`), each with the outcome a correct matcher must reach in
`expected` (object id -> LeadLex id, "ambiguous" or "unmatched"):

- `shared_email`: a second LeadLex contact with the same e-mail (a duplicate) -> ambiguous;
- `no_country_code`: the LeadLex phone lacks the country code, the CRM row has no e-mail ->
  matched by phone (default region US);
- `renamed`: LeadLex shows another last name, same e-mail -> matched;
- `email_changed`: the CRM row has a new e-mail, the phone still matches -> matched by phone;
- `crm_duplicate`: two CRM rows with the same e-mail -> both ambiguous;
- `crm_only`: a CRM row with no LeadLex contact -> unmatched;
- `leadlex_only`: LeadLex contacts nobody in the CRM has (no row).

Pure and deterministic for a given seed (no I/O, `random.Random(seed)`).
"""

from __future__ import annotations

import csv
import io
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

FIRST = [
    "Anna",
    "Ben",
    "Carla",
    "David",
    "Emma",
    "Felix",
    "Greta",
    "Hugo",
    "Ines",
    "Jonas",
    "Klara",
    "Lukas",
    "Mia",
    "Noah",
    "Olga",
    "Paul",
    "Quinn",
    "Rosa",
    "Simon",
    "Tina",
    "Uwe",
    "Vera",
    "Walter",
    "Xenia",
    "Yusuf",
    "Zoe",
    "Jean-Luc",
    "María",
    "José",
    "Søren",
]
LAST = [
    "Smith",
    "Müller",
    "Garcia",
    "Rossi",
    "Dubois",
    "Kowalski",
    "Novak",
    "Jensen",
    "Silva",
    "Okafor",
    "Tanaka",
    "Schmidt",
    "Brown",
    "Wilson",
    "Taylor",
    "Moreau",
    "Fischer",
    "Weber",
    "Becker",
    "Hoffmann",
    "Lopez",
    "Martin",
    "O'Brien",
    "Van",
    "Damme",
]
COMPANIES = (
    "Acme Legal",
    "Mueller & Schmidt Rechtsanwaelte",
    "Northwind Law LLP",
    "Globex Inc.",
    "Initech GmbH",
    "Umbrella Counsel Ltd",
    "Stark Advisory",
    "Wayne Partners",
)
DOMAINS = ("example.com", "law.test", "firm.example")
TITLES = ("Partner", "Associate", "General Counsel", "Paralegal", "Legal Ops Lead", "CLO")
TRAPS: dict[str, int] = {
    "shared_email": 5,
    "no_country_code": 5,
    "renamed": 5,
    "email_changed": 5,
    "crm_duplicate": 3,
    "crm_only": 10,
    "leadlex_only": 10,
}
PROFILE_HEADERS: dict[str, dict[str, str]] = {
    "hubspot": {
        "object_id": "Record ID",
        "first_name": "First Name",
        "last_name": "Last Name",
        "email": "Email",
        "phone": "Phone Number",
        "company": "Company Name",
        "job_title": "Job Title",
    },
    "salesforce": {
        "object_id": "Contact ID",
        "first_name": "First Name",
        "last_name": "Last Name",
        "email": "Email",
        "phone": "Phone",
        "company": "Account Name",
        "job_title": "Title",
    },
}


@dataclass
class Population:
    leadlex: list[dict[str, Any]] = field(default_factory=list)  # sandbox seed records
    crm: list[dict[str, str]] = field(default_factory=list)  # role -> value, with object_id
    expected: dict[str, str] = field(default_factory=dict)  # object_id -> id|ambiguous|...
    traps: dict[str, list[str]] = field(default_factory=dict)  # trap -> object ids


def _ascii(text: str) -> str:
    table = str.maketrans({"ü": "ue", "ø": "o", "í": "i", "é": "e", "'": "", " ": ""})
    return text.lower().translate(table)


def _phone_formats(national: str) -> list[str]:
    a, b, c = national[:3], national[3:6], national[6:]
    return [f"+1 {a}-{b}-{c}", f"+1{a}{b}{c}", f"+1 ({a}) {b} {c}", f"+1.{a}.{b}.{c}"]


def _email_variant(email: str, rng: random.Random) -> str:
    local, _, domain = email.partition("@")
    pick = rng.randrange(4)
    if pick == 0:
        return email
    if pick == 1:
        return f"{local.title()}@{domain.upper()}"
    if pick == 2:
        return f"  {email} "
    return email.upper()


def salesforce_id(i: int) -> str:
    """A 15-character Salesforce Contact id (digits only, so its 18-char form ends AAA)."""
    return f"0035g{i:010d}"


def population(n: int, *, seed: int = 0, source: str = "hubspot") -> Population:
    """n people on both sides (n >= 60 leaves room for every trap), plus the traps."""
    rng = random.Random(seed)
    pop = Population(traps={k: [] for k in TRAPS})
    plan: list[str] = []
    for trap, count in TRAPS.items():
        if trap not in ("crm_only", "leadlex_only"):
            plan.extend([trap] * count)
    plan.extend([""] * max(0, n - len(plan)))
    rng.shuffle(plan)

    def object_id(i: int) -> str:
        return salesforce_id(i) + "AAA" if source == "salesforce" else str(1_000_000 + i)

    def person(i: int) -> dict[str, str]:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        return {
            "first_name": first,
            "last_name": last,
            "email": f"{_ascii(first)}.{_ascii(last)}.{i}@{rng.choice(DOMAINS)}",
            "national": f"{rng.choice(('415', '212', '312', '646'))}{2_000_000 + i:07d}",
            "company": rng.choice(COMPANIES),
            "job_title": rng.choice(TITLES),
        }

    def contact(p: dict[str, str], **over: Any) -> dict[str, Any]:
        record = {
            "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "full_name": f"{p['first_name']} {p['last_name']}",
            "email": _email_variant(p["email"], rng),
            "phone": rng.choice(_phone_formats(p["national"])),
            "company_name": p["company"],
            "job_title": p["job_title"],
        }
        record.update(over)
        return record

    def row(i: int, p: dict[str, str], **over: str) -> dict[str, str]:
        out = {
            "object_id": object_id(i),
            "first_name": p["first_name"],
            "last_name": p["last_name"],
            "email": _email_variant(p["email"], rng),
            "phone": rng.choice(_phone_formats(p["national"])),
            "company": p["company"],
            "job_title": p["job_title"],
        }
        out.update(over)
        return out

    for i, trap in enumerate(plan):
        p = person(i)
        oid = object_id(i)
        if trap:
            pop.traps[trap].append(oid)
        if trap == "shared_email":
            first = contact(p)
            twin = contact(p, phone=rng.choice(_phone_formats(f"999{i:07d}")))
            pop.leadlex += [first, twin]
            pop.crm.append(row(i, p))
            pop.expected[oid] = "ambiguous"
        elif trap == "no_country_code":
            a, b, c = p["national"][:3], p["national"][3:6], p["national"][6:]
            c1 = contact(p, phone=f"({a}) {b}-{c}")
            pop.leadlex.append(c1)
            pop.crm.append(row(i, p, email=""))
            pop.expected[oid] = c1["id"]
        elif trap == "renamed":
            c1 = contact(p, full_name=f"{p['first_name']} {rng.choice(LAST)}-Renamed")
            pop.leadlex.append(c1)
            pop.crm.append(row(i, p))
            pop.expected[oid] = c1["id"]
        elif trap == "email_changed":
            c1 = contact(p)
            pop.leadlex.append(c1)
            pop.crm.append(row(i, p, email=f"new.{i}@elsewhere.example"))
            pop.expected[oid] = c1["id"]
        elif trap == "crm_duplicate":
            c1 = contact(p)
            pop.leadlex.append(c1)
            dup = object_id(n + 100_000 + i)
            pop.crm.append(row(i, p))
            pop.crm.append(row(n + 100_000 + i, p, phone=""))
            pop.expected[oid] = pop.expected[dup] = "ambiguous"
            pop.traps["crm_duplicate"].append(dup)
        else:
            c1 = contact(p)
            pop.leadlex.append(c1)
            pop.crm.append(row(i, p))
            pop.expected[oid] = c1["id"]
    for k in range(TRAPS["crm_only"]):
        i = n + 200_000 + k
        p = person(i)
        pop.crm.append(row(i, p))
        pop.expected[object_id(i)] = "unmatched"
        pop.traps["crm_only"].append(object_id(i))
    for k in range(TRAPS["leadlex_only"]):
        c1 = contact(person(n + 300_000 + k))
        pop.leadlex.append(c1)
        pop.traps["leadlex_only"].append(c1["id"])
    return pop


def crm_export_csv(pop: Population, source: str = "hubspot") -> str:
    """The CRM rows as that CRM's export would write them (Salesforce: 15-character ids)."""
    headers = PROFILE_HEADERS[source]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(headers.values())
    for r in pop.crm:
        cells = dict(r)
        if source == "salesforce":
            cells["object_id"] = cells["object_id"][:15]
        writer.writerow([cells.get(role, "") for role in headers])
    return out.getvalue()
