"""CRM fields -> LeadLex fields: pure mapping and normalization (no I/O, no logging).

The pipeline calls `map_record(cfg, source, object_type, snapshot, changed)` with the
record's newest known CRM values and the CRM fields the current event carried, and gets
back the LeadLex fields to PATCH (`fields`), the notes text (`notes`), and what was left
out (`rejected`, `skipped`). `cfg` comes from `load_mapping(MAPPING_FILE, region)`.

Default mapping (change it with a TOML/YAML file, see docs/mapping.example.toml)
-------------------------------------------------------------------------------
HubSpot contact (property names compared case-insensitively):
    firstname + lastname -> full_name      email -> email        phone -> phone
    jobtitle -> job_title                  company -> company_name
    hs_linkedin_url -> linkedin_url
    mobilephone: not mapped (add `mobilephone = "phone"` to use it)
    notes:       custom property `leadlex_notes`, appended with prefix "[HubSpot] "
    LeadLex id:  custom property `leadlex_contact_id`
Salesforce contact (API names compared exactly):
    FirstName + LastName -> full_name      Email -> email        Phone -> phone
    Title -> job_title
    not mapped: AccountId (an Account id, not a name), MobilePhone, Name (compound)
    notes:       Description, prefix "[Salesforce] "
    LeadLex id:  LeadLex_Id__c
Salesforce lead: as contact (without AccountId), plus Company -> company_name.
Generic contact and lead (JSON keys compared exactly): the LeadLex names themselves,
    full_name, first_name + last_name, email, phone, job_title, company_name,
    linkedin_url; notes from `notes` (no prefix); LeadLex id from `leadlex_id`.

Rules
-----
- Only LeadLex fields affected by `changed` are returned. `full_name` is composed as
  "first last" from the name parts in the *snapshot* when either part changed (ts =
  newest part change, a clear included); a directly mapped full-name field wins when
  it is itself in `changed`; `MappingResult.composed` then names full_name (the pipeline
  lets a later composition of the same record and time replace it: a part of that time
  may have been missing from the snapshot).
  first_name / last_name are never sent on their own (PATCH has no such fields).
- When several CRM fields feed one LeadLex field (e.g. phone and mobilephone), the
  newest value wins; on equal times the one declared later wins (file additions come
  after the defaults). A changed value older than another feeder's is not sent.
- Text: NFC, control characters dropped, whitespace collapsed, stripped. Phone: E.164
  via phonenumbers (default region for numbers without "+", must be a possible full
  number). Email: RFC 5322-lite, domain lower-cased. LinkedIn: https://www.linkedin.com/
  {in,pub,company}/... Max 255 characters per field, 10,000 for notes. An invalid or
  too-long value is reported in `rejected`; the other fields still go.
- Cleared values (None, "" or only whitespace): clear_policy "skip", the only policy.
  LeadLex's handling of null/"" in a PATCH is undocumented, so a clear is never sent;
  the field is listed in `skipped`. A cleared name part still recomposes full_name
  from the remaining part.
- Notes: `notes` carries the whole current CRM text; `notes_delta` decides what to
  append (see worker.mapping.notes).
"""

from worker.mapping.config import (
    LEADLEX_FIELDS,
    MappingConfig,
    MappingError,
    NotesSpec,
    ObjectMapping,
    default_mapping,
    load_mapping,
    mapping_fields_for,
)
from worker.mapping.normalize import (
    normalize_email,
    normalize_leadlex_id,
    normalize_linkedin_url,
    normalize_phone,
)
from worker.mapping.notes import notes_delta
from worker.mapping.record import (
    REASONS,
    FieldValue,
    MappingResult,
    Rejection,
    map_record,
    unsendable,
)

__all__ = [
    "LEADLEX_FIELDS",
    "REASONS",
    "FieldValue",
    "MappingConfig",
    "MappingError",
    "MappingResult",
    "NotesSpec",
    "ObjectMapping",
    "Rejection",
    "default_mapping",
    "load_mapping",
    "map_record",
    "mapping_fields_for",
    "normalize_email",
    "normalize_leadlex_id",
    "normalize_linkedin_url",
    "normalize_phone",
    "notes_delta",
    "unsendable",
]
