"""The AUTOMATIC1111-compatible routes: same paths, field names and response shape."""

from __future__ import annotations

import base64
import io
import json

from PIL import Image

from tests.server.conftest import png_bytes
from tests.server.helpers import api_key, bearer, signup


def _basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def test_txt2img_and_img2img_in_a1111_shape(client) -> None:
    key = api_key(client, "scripter")
    auth = _basic("scripter", key)  # as `--api-auth` clients send it
    r = client.post("/sdapi/v1/txt2img", headers=auth, json={
        "prompt": "fox face", "negative_prompt": "blurry", "seed": 42, "steps": 2, "cfg_scale": 5,
        "batch_size": 2, "n_iter": 1, "width": 512, "height": 512, "sampler_name": "Euler",
        "some_future_field": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"images", "parameters", "info"}
    assert len(body["images"]) == 2 and body["parameters"]["prompt"] == "fox face"
    info = json.loads(body["info"])
    assert info["all_seeds"] == [42, 43] and info["seed"] == 42 and info["sampler_name"] == "Euler"
    assert info["negative_prompt"] == "blurry" and len(info["infotexts"]) == 2
    png = base64.b64decode(body["images"][0])
    assert Image.open(io.BytesIO(png)).format == "PNG"

    # the returned bytes are the published file: they verify, with credentials
    r = client.post("/api/verify", files={"file": ("a.png", png, "image/png")})
    assert r.json()["found"] == "credentials"
    assert r.json()["generation_id"] == info["easel"]["generation_ids"][0]

    # password basic auth works too; img2img with a mask
    init = base64.b64encode(png_bytes(5, size=64)).decode()
    mask_img = Image.new("L", (64, 64), 0)
    mask_img.paste(255, (0, 0, 32, 64))
    buf = io.BytesIO()
    mask_img.save(buf, format="PNG")
    r = client.post("/sdapi/v1/img2img", headers=_basic("scripter", "correct horse"), json={
        "prompt": "fox face", "init_images": [init], "mask": base64.b64encode(buf.getvalue()).decode(),
        "denoising_strength": 0.5, "steps": 4, "seed": 3})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["denoising_strength"] == 0.5 and len(r.json()["images"]) == 1
    assert r.json()["parameters"]["init_images"] is None  # not echoed back


def test_a1111_read_routes_and_options(client) -> None:
    h = bearer(api_key(client, "reader"))
    models = client.get("/sdapi/v1/sd-models", headers=h).json()
    assert len(models) == 1 and {"title", "model_name", "hash", "sha256", "filename"} <= set(models[0])
    samplers = client.get("/sdapi/v1/samplers", headers=h).json()
    assert samplers[0]["name"] == "Euler"
    progress = client.get("/sdapi/v1/progress", headers=h).json()
    assert progress["progress"] == 0.0 and progress["state"]["job_count"] == 0

    options = client.get("/sdapi/v1/options", headers=h).json()
    assert options["sd_model_checkpoint"] == models[0]["title"]
    # re-sending current values is fine for anyone; changing needs an operator
    assert client.post("/sdapi/v1/options", headers=h,
                       json={"sd_model_checkpoint": models[0]["title"]}).status_code == 200
    r = client.post("/sdapi/v1/options", headers=h, json={"easel_include_prompt": True})
    assert r.status_code == 403
    r = client.post("/sdapi/v1/options", headers=h, json={"no_such_option": 1})
    assert r.status_code == 400 and "no_such_option" in r.json()["error"]


def test_a1111_errors(client) -> None:
    signup(client, "nokey")
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "fox"})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    assert client.get("/sdapi/v1/sd-models", headers=_basic("nokey", "wrong")).status_code == 401
    h = bearer(api_key(client, "errs"))
    cases = [
        ({"prompt": "fox", "sampler_name": "DPM++ 2M Karras"}, 400, "sampler_name"),
        ({"prompt": ""}, 400, "prompt"),
        ({"prompt": "fox", "batch_size": 4, "n_iter": 4}, 400, "batch_size"),
        ({"prompt": "fox", "steps": 1000}, 422, "steps"),
    ]
    for body, status, words in cases:
        r = client.post("/sdapi/v1/txt2img", headers=h, json=body)
        assert r.status_code == status and words in r.json()["error"], (body, r.text)
    r = client.post("/sdapi/v1/img2img", headers=h, json={"prompt": "fox", "init_images": []})
    assert r.status_code == 400 and "init_images" in r.json()["error"]
