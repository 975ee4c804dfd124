"""Curation at scale: stage functions over batches of manifest rows, run in-process or on Ray Data.

``stages`` decides per item (consent, integrity, safety, attribution) and fingerprints it;
``duplicates`` clusters the fingerprints of the whole input in one deterministic global step;
``run`` drives both passes with either engine and writes the curated manifest; ``datasheet``
describes the result; ``lookup`` answers "was my work in this model?".
"""
