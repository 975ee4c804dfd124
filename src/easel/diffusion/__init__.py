"""The model stage: text encoder, autoencoder, denoiser, upscaler and the Easel pipeline.

Nothing is loaded at import; use ``easel.diffusion.pipeline.load_pipeline``.
"""
