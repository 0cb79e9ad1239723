"""Pure CRM event parsers shared by every source of one CRM (webhook receiver and pull
sources): raw CRM JSON in, `ChangeEvent`s out, no I/O. One module per CRM."""
