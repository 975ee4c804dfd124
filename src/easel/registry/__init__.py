"""The registry: artists, works, licences and the consent ledger.

Modules, one concept each:

- ``models``      SQLAlchemy tables (artists, works, consent events, datasets, models).
- ``store``       opening the database and running the Alembic migrations (``upgrade``).
- ``ledger``      the append-only, hash-chained consent events and ``verify_log``.
- ``policy``      the one function that decides consent (``may_use``).
- ``validate``    checking uploaded images (formats, bombs, truncation, SVG scripts).
- ``fingerprint`` PDQ hashes of an image and of its eight rotations/mirrors.
- ``index``       the FAISS binary index of PDQ hashes beside the database.
- ``service``     artists, ingest with match checks, consent changes, look-ups.
- ``importer``    ``import-corpus``: the seven emoji sets as seven artists.
- ``lineage``     datasets and models built from works, and ``affected``.
- ``descriptors`` the slot for learned descriptors of works (filled by the audit stage).
"""
