"""HTTP throughput and latency of ``POST /orders`` and ``GET /orders/{id}``: eventshop's
orders service (with users, SecantusDB and RabbitMQ behind it) against a bare FastAPI app
with the same request/response models on the same uvicorn settings, loaded in the same
run by wrk (an external load generator, one thread, keep-alive connections).

    uv run python -m bench.http            # 3 rounds of 10 s per target, results saved
    uv run python -m bench.http --smoke    # 1 round of 2 s, nothing saved (CI-sized)
    uv run python -m bench.http --baseline ../before   # also another commit's services

Prints req/s, p50, p99 and the ratio ours/bare (the goal for POST is >= 0.5). With
``--baseline TREE`` (e.g. ``git worktree add ../before <commit>``) that tree's users and
orders run beside ours, on their own database, in the same rounds: before/after figures
taken under the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench._system import (
    Services,
    cpu_seconds,
    free_port,
    machine,
    missing_services,
    register,
    save_json,
    secantus,
    vhost,
    wait_for_port,
    workdir,
)

WRK_INSTALL = "sudo apt-get install -y wrk   (Debian/Ubuntu; macOS: brew install wrk)"

# wrk calls done() once at the end; it prints one JSON line we parse.
DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "status_errors": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.status, e.connect, e.read, e.write, e.timeout))
end
"""


@dataclass
class Run:
    target: str  # "POST /orders" or "GET /orders/{id}"
    server: str  # "eventshop" or "bare"
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int
    #: CPU seconds per request of the processes behind the server during the run
    cpu_ms_per_request: dict[str, float]


def lua(method: str, token: str | None, body: dict[str, Any] | None) -> str:
    lines = [f'wrk.method = "{method}"']
    if body is not None:
        lines.append(f"wrk.body = {json.dumps(json.dumps(body))}")
        lines.append('wrk.headers["Content-Type"] = "application/json"')
    if token is not None:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {token}"')
    return "\n".join(lines) + "\n" + DONE


def wrk(url: str, script: Path, *, duration: float, connections: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s",
            "--timeout", "10s", "-s", str(script), url,
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            result: dict[str, Any] = json.loads(line[len("WRKJSON ") :])
            return result
    raise RuntimeError(f"wrk printed no summary:\n{out.stdout}\n{out.stderr}")


def measure(
    target: str,
    server: str,
    url: str,
    script: Path,
    pids: dict[str, int],
    *,
    duration: float,
    connections: int,
) -> Run:
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    raw = wrk(url, script, duration=duration, connections=connections)
    after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    requests = max(1, raw["requests"])
    errors = sum(
        raw[k]
        for k in ("status_errors", "connect_errors", "read_errors", "write_errors", "timeouts")
    )
    return Run(
        target=target,
        server=server,
        rps=raw["requests"] / (raw["duration_us"] / 1e6),
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        requests=raw["requests"],
        errors=errors,
        cpu_ms_per_request={
            name: round((after[name] - before[name]) * 1000 / requests, 3) for name in pids
        },
    )


def median_run(runs: list[Run]) -> Run:
    """The round with the median throughput (its latencies belong to the same round)."""
    ordered = sorted(runs, key=lambda r: r.rps)
    return ordered[len(ordered) // 2]


def table(summary: list[Run]) -> str:
    rows = [
        "| endpoint | server | req/s | p50 ms | p99 ms | errors | CPU ms/request |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in summary:
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in r.cpu_ms_per_request.items())
        rows.append(
            f"| {r.target} | {r.server} | {r.rps:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} "
            f"| {r.errors} | {cpu} |"
        )
    return "\n".join(rows)


def ratios(summary: list[Run], versus: str = "bare") -> dict[str, float]:
    """req/s of eventshop divided by that of ``versus`` ("bare" or "baseline")."""
    by = {(r.target, r.server): r for r in summary}
    out = {}
    for target in dict.fromkeys(r.target for r in summary):
        ours, other = by.get((target, "eventshop")), by.get((target, versus))
        if ours and other and other.rps:
            out[target] = ours.rps / other.rps
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http", description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32, help="wrk keep-alive connections")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the median is reported")
    parser.add_argument("--smoke", action="store_true", help="1 round of 2 s; saves nothing")
    parser.add_argument("--out", type=str, default=None, help="results file in docs/bench-results")
    parser.add_argument("--keep", action="store_true", help="keep the logs folder")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="also run users and orders from this source tree (another commit), same rounds",
    )
    parser.add_argument(
        "--label", default="", help="a note saved with the results (e.g. 'before: no uvloop')"
    )
    args = parser.parse_args(argv)
    # A SIGTERM (or a CI timeout) still stops the services and removes the vhost.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.smoke:
        args.duration, args.rounds = 2.0, 1
    out_name = args.out or (None if args.smoke else "http.json")

    if shutil.which("wrk") is None:
        print(f"wrk is not installed; install it with:\n  {WRK_INSTALL}", file=sys.stderr)
        return 2
    if missing := missing_services(("users", "orders")):
        print(f"services not built yet: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.baseline and (missing := missing_services(("users", "orders"), args.baseline)):
        print(f"not in {args.baseline}: {', '.join(missing)}", file=sys.stderr)
        return 2

    host = machine()
    print(
        f"machine: {host['nproc']} cores, {host['cpu']}, {host['memory_gib']} GiB, "
        f"load {host['loadavg']}"
    )
    with workdir(keep=args.keep) as wd, secantus(wd) as (mongodb_url, db_pid), vhost() as amqp:
        services = Services(amqp, mongodb_url, wd)
        services.start(("users", "orders"))
        targets = {"eventshop": services}
        if args.baseline:
            (wd / "baseline").mkdir()
            base = Services(amqp, mongodb_url, wd / "baseline", tree=args.baseline.resolve())
            base.start(("users", "orders"))
            targets["baseline"] = base
        bare_port = free_port()
        bare = Services(amqp, mongodb_url, wd, extra_env={"BARE_PORT": str(bare_port)})
        bare.start(("bare",), module="bench.bare_app")
        try:
            for svc in targets.values():
                svc.wait_ready()
            wait_for_port(bare_port)
            summary = run_all(args, wd, targets, bare_port, bare.pids()["bare"], db_pid)
        finally:
            for svc in targets.values():
                svc.stop_all()
            bare.stop_all()
            if args.keep:
                print(f"logs in {wd}")

    print()
    print(table(summary))
    print()
    found = ratios(summary)
    for target, ratio in found.items():
        goal = " (goal >= 0.5)" if target.startswith("POST") else ""
        verdict = "" if not goal else ("  MET" if ratio >= 0.5 else "  NOT MET")
        print(f"ratio ours/bare, {target}: {ratio:.2f}{goal}{verdict}")
    against_base = ratios(summary, versus="baseline")
    for target, ratio in against_base.items():
        print(f"ratio ours/baseline, {target}: {ratio:.2f}  (baseline: {args.baseline})")
    if out_name:
        path = save_json(
            out_name,
            {
                "bench": "http",
                "label": args.label,
                "machine": host,
                "load_after": [round(x, 2) for x in os.getloadavg()],
                "settings": {
                    "duration_s": args.duration,
                    "connections": args.connections,
                    "rounds": args.rounds,
                    "wrk_threads": 1,
                },
                "baseline": str(args.baseline) if args.baseline else None,
                "results": [asdict(r) for r in summary],
                "ratios": found,
                "ratios_vs_baseline": against_base,
            },
        )
        print(f"saved {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


def _first_order(services: Services) -> tuple[str, dict[str, Any], str]:
    """Register a user on ``services``, place one order; (token, order body, order id)."""
    token = register(services.users_url, f"bench_http_{int(time.time())}")
    with httpx.Client(timeout=30) as client:
        products = client.get(f"{services.orders_url}/products").json()
        body = {
            "items": [
                {"product_id": products[0]["id"], "quantity": 1},
                {"product_id": products[1]["id"], "quantity": 2},
            ]
        }
        placed = client.post(
            f"{services.orders_url}/orders", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        if placed.status_code != 201:
            raise SystemExit(f"POST /orders answered {placed.status_code}: {placed.text}")
    return token, body, str(placed.json()["id"])


def run_all(
    args: argparse.Namespace,
    wd: Path,
    targets: dict[str, Services],
    bare_port: int,
    bare_pid: int,
    db_pid: int,
) -> list[Run]:
    one_order = {target: _first_order(svc) for target, svc in targets.items()}
    body = next(iter(one_order.values()))[1]
    paths: dict[str, Path] = {}
    for method in ("POST", "GET"):
        paths[f"{method}-bare"] = wd / f"{method.lower()}-bare.lua"
        paths[f"{method}-bare"].write_text(lua(method, None, body if method == "POST" else None))
        for name, (token, order_body, _) in one_order.items():
            paths[f"{method}-{name}"] = wd / f"{method.lower()}-{name}.lua"
            paths[f"{method}-{name}"].write_text(
                lua(method, token, order_body if method == "POST" else None)
            )

    def path(method: str, order_id: str) -> str:
        return "/orders" if method == "POST" else f"/orders/{order_id}"

    bare = f"http://127.0.0.1:{bare_port}"
    ours_id = one_order["eventshop"][2]
    plan: list[tuple[str, str, str, Path, dict[str, int]]] = []
    for method, target in (("POST", "POST /orders"), ("GET", "GET /orders/{id}")):
        bare_url = bare + path(method, ours_id)
        plan.append((target, "bare", bare_url, paths[f"{method}-bare"], {"bare": bare_pid}))
        for name, svc in targets.items():
            url = svc.orders_url + path(method, one_order[name][2])
            pids = {"orders": svc.pids()["orders"], "secantusdb": db_pid}
            plan.append((target, name, url, paths[f"{method}-{name}"], pids))

    runs: dict[tuple[str, str], list[Run]] = {}
    warm = min(2.0, args.duration)
    for round_ in range(args.rounds):
        for target, server, url, script, pids in plan:
            if round_ == 0:
                wrk(url, script, duration=warm, connections=args.connections)  # warm-up
            run = measure(
                target, server, url, script, pids,
                duration=args.duration, connections=args.connections,
            )  # fmt: skip
            print(
                f"round {round_ + 1}/{args.rounds}  {target:<17} {server:<9} "
                f"{run.rps:8,.0f} req/s  p50 {run.p50_ms:6.1f} ms  p99 {run.p99_ms:6.1f} ms"
                f"  errors {run.errors}",
                flush=True,
            )
            runs.setdefault((target, server), []).append(run)
    return [median_run(r) for r in runs.values()]


if __name__ == "__main__":
    sys.exit(main())
