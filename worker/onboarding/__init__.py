"""Onboarding: link thousands of existing records for a couple of LeadLex calls.

Pure (no I/O): `keys` (match keys: normalized email, E.164 phone, name + company),
`crm_export` (read a HubSpot contacts export / Salesforce report export, column names by
profile, configurable), `matching` (CRM rows against LeadLex contacts: matched / ambiguous /
unmatched / already linked). I/O: `directory` (LeadLex's contacts with one export call, or
the paged list as a fallback, every call budgeted through the workers' Runtime).

`leadlex-sync links match` (cli/onboarding.py) puts them together; links are written only
through `worker.pipeline.link_records`, so parked events replay.
"""
