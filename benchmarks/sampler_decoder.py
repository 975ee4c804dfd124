"""Fine-tune the shipped model's decoder on latents its own sampler makes, and write a copy of
the model with that decoder (BENCHMARKS.md, session 18; measured, not adopted).

Each step draws a batch of training icons, encodes them, noises each latent to its own level
σ ~ U(0, ``--smax``) (a share ``--p-clean`` left at 0) and brings it back to σ 0 with ``--chain``
Euler steps of the shipped denoiser at classifier-free guidance ``--guidance`` on the icon's
prompt, as img2img does. The decoder (the encoder and latent space frozen) learns to turn those
latents into the icon (L1 + gradient L1, the loss of ``easel train autoencoder``), so that it
would undo what the sampler leaves in a latent. Score the copy with ``easel eval model --model
OUT``.

    EASEL_HOME=<registry home> nice -n 5 python -m benchmarks.sampler_decoder \
        --manifest <consented 64 px build> --out DIR --steps 1200 [--smax 0.5 --chain 2]

Slow (about 45 minutes for 1,200 steps on one core): not a test.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", type=Path, required=True, help="consented 64 px build")
    p.add_argument("--out", type=Path, required=True, help="where to write the model copy")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--smax", type=float, default=0.5, help="highest noise level of a chain's start")
    p.add_argument("--p-clean", type=float, default=0.25, help="share of each batch left at σ 0")
    p.add_argument("--chain", type=int, default=2, help="Euler steps from the start back to σ 0")
    p.add_argument("--guidance", type=float, default=6.0)
    p.add_argument("--lr", type=float, default=2e-4, help="peak rate; 50 warm-up steps, linear decay")
    a = p.parse_args()

    import torch

    from easel.corpus.sources import HELD_OUT_SET
    from easel.diffusion.data import load_training_set, to_unit
    from easel.diffusion.pipeline import SHIPPED_MODEL_DIR, load_pipeline
    from easel.diffusion.text_encoder import PromptEmbeddings
    from easel.diffusion.training import autoencoder_psnr, encode_prompt_sets, reconstruction_loss

    torch.set_num_threads(1)
    torch.manual_seed(0)
    pipe = load_pipeline(None)
    unet, vae0 = pipe.unet.eval(), pipe.vae.eval()
    sf = vae0.config.scaling_factor
    data = load_training_set(a.manifest, ("train",), (HELD_OUT_SET,))
    val = load_training_set(a.manifest, ("val",), (HELD_OUT_SET,), progress=False)
    full, _caption, _index, empty = encode_prompt_sets(data, a.out.parent)
    with torch.no_grad():
        lat = torch.cat([vae0.encode(to_unit(data.images[i:i + 256])).latent_dist.mode()
                         for i in range(0, len(data.images), 256)]) * sf
    print("latents", lat.shape, flush=True)
    vae = copy.deepcopy(vae0)
    for m in (vae.encoder, vae.quant_conv):
        m.requires_grad_(False)
    opt = torch.optim.AdamW([q for q in vae.parameters() if q.requires_grad], lr=a.lr, weight_decay=0.0)
    print("psnr before", autoencoder_psnr(vae, val.images, torch.device("cpu")), flush=True)

    @torch.no_grad()
    def chain(z0: torch.Tensor, idx: torch.Tensor, sig: torch.Tensor) -> torch.Tensor:
        n = z0.shape[0]
        cond = PromptEmbeddings.cat([empty.index([0] * n), full.index(idx)])
        x = (1 - sig.view(-1, 1, 1, 1)) * z0 + sig.view(-1, 1, 1, 1) * torch.randn_like(z0)
        levels = [sig * (1 - k / a.chain) for k in range(a.chain + 1)]
        for s_now, s_next in zip(levels[:-1], levels[1:], strict=True):
            v = unet(torch.cat([x, x]), torch.cat([s_now, s_now]) * 1000.0, encoder_hidden_states=cond.tokens,
                     encoder_attention_mask=cond.mask, class_labels=cond.pooled).sample
            vu, vc = v.chunk(2)
            x = x + (s_next - s_now).view(-1, 1, 1, 1) * (vu + a.guidance * (vc - vu))
        return x

    vae.train()
    vae.encoder.eval()
    t0 = time.monotonic()
    for step in range(a.steps):
        idx = torch.randint(0, lat.shape[0], (a.batch,))
        x = to_unit(data.images[idx])
        sig = torch.rand(a.batch) * a.smax
        sig[torch.rand(a.batch) < a.p_clean] = 0.0
        z = chain(lat[idx], idx, sig.clamp(min=1e-4))
        for g in opt.param_groups:
            g["lr"] = a.lr * min(1.0, (step + 1) / 50) * (1 - step / a.steps)
        rec = vae.decode(z / sf).sample
        loss = reconstruction_loss(rec, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 25 == 0:
            print(f"step {step} loss {loss.item():.4f} {time.monotonic() - t0:.0f}s", flush=True)
    vae.eval()
    print("psnr after", autoencoder_psnr(vae, val.images, torch.device("cpu")), flush=True)
    if a.out.exists():
        shutil.rmtree(a.out)
    shutil.copytree(SHIPPED_MODEL_DIR, a.out)
    vae.save_pretrained(str(a.out / "vae"))
    print("wrote", a.out, flush=True)


if __name__ == "__main__":
    main()
