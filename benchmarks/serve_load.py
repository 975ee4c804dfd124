"""Load test of ``easel serve`` on loopback: N clients sending A1111 txt2img for T seconds.

    .venv/bin/python benchmarks/serve_load.py [--clients 50] [--seconds 60] [--steps 20]
                                              [--model-dir DIR] [--jobs 1]

Starts the server as a user would (``easel serve`` in a subprocess, a fresh EASEL_HOME, the
tiny random pipeline unless ``--model-dir`` names a real one), makes an operator and an API
key, then runs ``--clients`` concurrent clients, each sending ``POST /sdapi/v1/txt2img``
(one image) back to back until ``--seconds`` have passed. Reports throughput, p50/p99
latency, responses by status (5xx must be zero), lost jobs (jobs left queued or running once
every client has its answer, or answers without their image) and the server's resident
memory sampled during the run (flat means no leak per request). Bounded: loopback only,
``--seconds`` plus the drain of at most one request per client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _client(http: object, base: str, key: str, deadline: float, steps: int, seed: int,
                  latencies: list[float], statuses: Counter[int], bad: list[str]) -> None:
    import httpx

    assert isinstance(http, httpx.AsyncClient)
    i = 0
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        try:
            r = await http.post(base + "/sdapi/v1/txt2img", timeout=600,
                                headers={"Authorization": f"Bearer {key}"},
                                json={"prompt": "fox face", "steps": steps, "seed": seed * 1000 + i,
                                      "cfg_scale": 3, "batch_size": 1})
        except httpx.HTTPError as exc:
            statuses[0] += 1
            bad.append(f"transport: {type(exc).__name__}")
            continue
        statuses[r.status_code] += 1
        if r.status_code == 200:
            latencies.append(time.perf_counter() - start)
            if len(r.json().get("images", [])) != 1:
                bad.append("200 without its image")
        elif r.status_code == 429:
            await asyncio.sleep(float(r.headers.get("retry-after", "1")))
        else:
            bad.append(f"{r.status_code}: {r.text[:200]}")
        i += 1


async def _run(base: str, key: str, clients: int, seconds: float, steps: int, pid: int) -> dict:
    import httpx

    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    bad: list[str] = []
    memory: list[tuple[float, float]] = []
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(limits=limits) as http:
        started = time.perf_counter()
        deadline = started + seconds

        async def sample() -> None:
            while time.perf_counter() < deadline:
                memory.append((round(time.perf_counter() - started, 1), round(_rss_mib(pid), 1)))
                await asyncio.sleep(max(1.0, seconds / 12))

        sampler = asyncio.create_task(sample())
        await asyncio.gather(*(_client(http, base, key, deadline, steps, c, latencies, statuses, bad)
                               for c in range(clients)))
        elapsed = time.perf_counter() - started
        sampler.cancel()
        memory.append((round(elapsed, 1), round(_rss_mib(pid), 1)))
    lat = sorted(latencies)
    return {
        "clients": clients, "seconds": round(elapsed, 1), "steps": steps,
        "completed": len(lat), "throughput_img_per_s": round(len(lat) / elapsed, 3),
        "latency_p50_s": round(statistics.median(lat), 3) if lat else None,
        "latency_p99_s": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 3) if lat else None,
        "statuses": dict(statuses), "errors_5xx": sum(n for s, n in statuses.items() if s >= 500),
        "bad_responses": bad[:10], "rss_mib": memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=1, help="EASEL_SERVER_WORKERS for the server")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    parser.add_argument("--model-dir", type=Path, default=None)
    args = parser.parse_args()

    import httpx
    from sqlalchemy import func, select

    from easel.db import session_scope
    from easel.server.models import Job

    tmp = Path(tempfile.mkdtemp(prefix="easel-load-"))
    home = tmp / "home"
    model_dir = args.model_dir
    if model_dir is None:
        from easel.diffusion.tiny import save_tiny_pipeline

        model_dir = save_tiny_pipeline(tmp / "tiny")
    env = dict(os.environ, EASEL_HOME=str(home), EASEL_MODEL_DIR=str(model_dir), OMP_NUM_THREADS="1",
               EASEL_SERVER_WORKERS=str(args.jobs), EASEL_SERVER_QUEUE=str(max(64, args.clients)),
               EASEL_OPERATOR_PASSWORD="load-test-password")
    env.pop("EASEL_DATABASE_URL", None)
    cli = [sys.executable, "-m", "easel.cli.main", "serve"]
    subprocess.run([*cli, "--add-operator", "loadop"], env=env, check=True, capture_output=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    log = (tmp / "server.log").open("w")
    server = subprocess.Popen([*cli, "--port", str(port), "--threads", str(args.threads),
                               "--log-level", "warning"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 600
        while True:
            try:
                if httpx.get(base + "/api/health", timeout=2).json().get("ok"):
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.time() > deadline:
                raise SystemExit("server did not start:\n" + (tmp / "server.log").read_text()[-2000:])
            time.sleep(0.3)
        with httpx.Client(base_url=base) as c:
            login = c.post("/api/auth/login", json={"username": "loadop", "password": "load-test-password"})
            key = c.post("/api/keys", json={"label": "load"},
                         headers={"X-CSRF-Token": login.json()["csrf_token"]}).json()["key"]
        rss_idle = _rss_mib(server.pid)
        report = asyncio.run(_run(base, key, args.clients, args.seconds, args.steps, server.pid))
        report["rss_idle_mib"] = round(rss_idle, 1)
        with session_scope(f"sqlite:///{home / 'easel.db'}") as session:
            states = dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).all())
        report["job_states"] = states
        report["lost_jobs"] = states.get("queued", 0) + states.get("running", 0) + sum(
            1 for b in report["bad_responses"] if "without its image" in b)
        report["model_dir"] = str(args.model_dir or "tiny random pipeline")
        report["server_workers"], report["server_threads"] = args.jobs, args.threads
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
