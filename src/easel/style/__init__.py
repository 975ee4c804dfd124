"""The style studio: consent-gated personal style models (LoRA adapters on the base model).

- ``models``   the tables: personal styles, the works each was trained from, shares, and the
               append-only credit ledger (one row per output made with a style).
- ``service``  who may train, use, share and withdraw a style; credits; withdrawal on consent
               changes. Consent itself is asked only of ``easel.registry.policy``.
- ``adapter``  training a LoRA adapter (peft, through diffusers' PEFT integration) on the base
               model's UNet attention projections, its manifest, and loading it onto a pipeline.
"""
