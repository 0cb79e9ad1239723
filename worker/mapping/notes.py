"""What to append to LeadLex notes when the CRM's notes field changes.

LeadLex `PATCH notes` *appends* (joined with "\\n"); it cannot edit or delete. The CRM
field, on the other hand, holds the whole current text. `notes_delta` turns "the CRM
text is now X, and the last text we appended from was Y" into the text to append:

- nothing (None) when X is empty or equal to Y: re-delivered or unchanged notes never
  append twice;
- only the new tail when X starts with Y (the usual case: someone added a line),
  with the whitespace/newlines that separated it stripped;
- the whole of X when it does not start with Y (the text was edited, shortened or
  rewritten): LeadLex then ends with the CRM's current text;
- the source prefix (e.g. "[HubSpot] ") in front of whatever is returned, and None
  when there is nothing but whitespace to append.

The caller stores X (not the returned delta) as the new Y once LeadLex accepted it.
"""

from __future__ import annotations


def notes_delta(last_appended: str | None, current: str | None, prefix: str = "") -> str | None:
    """Text to append given the CRM text last synced and its current text; None if nothing.

    `last_appended` is the full CRM text as of the last successful append (None if never).
    """
    if not current or current == last_appended:
        return None
    if last_appended and current.startswith(last_appended):
        text = current[len(last_appended) :]
    else:
        text = current
    text = text.strip()
    if not text:
        return None
    return f"{prefix}{text}"
