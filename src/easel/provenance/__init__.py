"""Provenance: C2PA content credentials, the invisible watermark, the generation log, verify.

``easel.provenance.publish.publish_image`` is the one door every generated image leaves
through; ``easel.provenance.verify.verify_image`` answers where an image came from.
"""
