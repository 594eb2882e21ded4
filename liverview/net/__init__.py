"""DICOM networking with a PACS (Qt-free): verify, query, retrieve into a local cache, send.

Imports only `liverview.io`, `liverview.progress` and pynetdicom (DESIGN.md: layers).
"""
