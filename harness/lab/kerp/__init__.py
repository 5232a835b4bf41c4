"""Reference K-ERP app of the embedded lab: schema, seed data, the ASGI app and the Popbill stub."""
