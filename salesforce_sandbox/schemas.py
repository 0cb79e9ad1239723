"""Avro schemas of the simulated change-event topics, shaped like Salesforce's.

Like the real `ContactChangeEvent` / `LeadChangeEvent` schemas: namespace
`com.sforce.eventbus`, the `ChangeEventHeader` record first, every body field a nullable
union, `Name` a compound record, addresses a compound `Address` record defined once and
then referenced by name, dates as epoch-millisecond longs. Enough fields that bitmaps span
more than 32 bits. A schema id is a fingerprint of the schema JSON (opaque to clients).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

NAMESPACE = "com.sforce.eventbus"
CHANGE_TYPES = (
    "CREATE",
    "UPDATE",
    "DELETE",
    "UNDELETE",
    "GAP_CREATE",
    "GAP_UPDATE",
    "GAP_DELETE",
    "GAP_UNDELETE",
    "GAP_OVERFLOW",
)


def _nullable(avro_type: Any) -> list[Any]:
    return ["null", avro_type]


def _fields(names: list[str], avro_type: Any = "string") -> list[dict[str, Any]]:
    return [{"name": n, "type": _nullable(avro_type), "default": None} for n in names]


HEADER: dict[str, Any] = {
    "type": "record",
    "name": "ChangeEventHeader",
    "fields": [
        {"name": "entityName", "type": "string"},
        {"name": "recordIds", "type": {"type": "array", "items": "string"}},
        {
            "name": "changeType",
            "type": {"type": "enum", "name": "ChangeType", "symbols": list(CHANGE_TYPES)},
        },
        {"name": "changeOrigin", "type": "string"},
        {"name": "transactionKey", "type": "string"},
        {"name": "sequenceNumber", "type": "int"},
        {"name": "commitTimestamp", "type": "long"},
        {"name": "commitNumber", "type": "long"},
        {"name": "commitUser", "type": "string"},
        {"name": "nulledFields", "type": {"type": "array", "items": "string"}},
        {"name": "diffFields", "type": {"type": "array", "items": "string"}},
        {"name": "changedFields", "type": {"type": "array", "items": "string"}},
    ],
}

NAME: dict[str, Any] = {
    "type": "record",
    "name": "Switchable_PersonName",
    "fields": _fields(
        ["Salutation", "FirstName", "LastName", "MiddleName", "InformalName", "Suffix"]
    ),
}

ADDRESS: dict[str, Any] = {
    "type": "record",
    "name": "Address",
    "fields": [
        *_fields(["Street", "City", "State", "PostalCode", "Country", "StateCode"]),
        *_fields(["CountryCode"]),
        *_fields(["Latitude", "Longitude"], "double"),
        *_fields(["GeocodeAccuracy"]),
    ],
}


def _contact() -> dict[str, Any]:
    return {
        "type": "record",
        "name": "ContactChangeEvent",
        "namespace": NAMESPACE,
        "fields": [
            {"name": "ChangeEventHeader", "type": HEADER},
            *_fields(["AccountId"]),
            {"name": "Name", "type": _nullable(NAME), "default": None},
            {"name": "MailingAddress", "type": _nullable(ADDRESS), "default": None},
            {"name": "OtherAddress", "type": _nullable("Address"), "default": None},
            *_fields(["Phone", "Fax", "MobilePhone", "HomePhone", "OtherPhone"]),
            *_fields(["AssistantPhone", "ReportsToId", "Email", "Title", "Department"]),
            *_fields(["AssistantName", "LeadSource"]),
            *_fields(["Birthdate"], "int"),
            *_fields(["Description", "OwnerId"]),
            *_fields(["HasOptedOutOfEmail", "DoNotCall"], "boolean"),
            *_fields(["CreatedDate"], "long"),
            *_fields(["CreatedById"]),
            *_fields(["LastModifiedDate"], "long"),
            *_fields(["LastModifiedById", "Jigsaw", "JigsawContactId", "CleanStatus"]),
            *_fields(["IndividualId", "EmailBouncedReason"]),
            *_fields(["EmailBouncedDate"], "long"),
            *_fields(["Pronouns", "GenderIdentity", "LeadLex_Id__c"]),
        ],
    }


def _lead() -> dict[str, Any]:
    return {
        "type": "record",
        "name": "LeadChangeEvent",
        "namespace": NAMESPACE,
        "fields": [
            {"name": "ChangeEventHeader", "type": HEADER},
            {"name": "Name", "type": _nullable(NAME), "default": None},
            *_fields(["Title", "Company"]),
            {"name": "Address", "type": _nullable(ADDRESS), "default": None},
            *_fields(["Phone", "MobilePhone", "Fax", "Email", "Website", "Description"]),
            *_fields(["LeadSource", "Status", "Industry", "Rating"]),
            *_fields(["AnnualRevenue"], "double"),
            *_fields(["NumberOfEmployees"], "int"),
            *_fields(["OwnerId"]),
            *_fields(["HasOptedOutOfEmail", "IsConverted"], "boolean"),
            *_fields(["ConvertedDate"], "int"),
            *_fields(["ConvertedAccountId", "ConvertedContactId", "ConvertedOpportunityId"]),
            *_fields(["IsUnreadByOwner", "DoNotCall", "HasOptedOutOfFax"], "boolean"),
            *_fields(["CreatedDate"], "long"),
            *_fields(["CreatedById"]),
            *_fields(["LastModifiedDate"], "long"),
            *_fields(["LastModifiedById", "Jigsaw", "JigsawContactId", "CleanStatus"]),
            *_fields(["CompanyDunsNumber", "IndividualId", "EmailBouncedReason"]),
            *_fields(["EmailBouncedDate"], "long"),
            *_fields(["Pronouns", "GenderIdentity", "LeadLex_Id__c"]),
        ],
    }


TOPIC_ENTITIES: dict[str, str] = {
    "/data/ContactChangeEvent": "Contact",
    "/data/LeadChangeEvent": "Lead",
}
SCHEMAS: dict[str, dict[str, Any]] = {"Contact": _contact(), "Lead": _lead()}


def schema_json(entity: str) -> str:
    return json.dumps(SCHEMAS[entity], separators=(",", ":"), sort_keys=True)


def schema_id(text: str) -> str:
    """An opaque schema id (a fingerprint of the schema text)."""
    return hashlib.sha256(text.encode()).hexdigest()[:22]
