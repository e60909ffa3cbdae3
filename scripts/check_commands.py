"""compose.yaml, the Procfile and the Dockerfile must start the services the same way."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

SERVICES = ("users", "orders", "payments", "notifier", "analytics", "recommender")


def main() -> int:
    compose = yaml.safe_load(Path("compose.yaml").read_text())
    procfile = dict(
        line.split(":", 1)
        for line in Path("Procfile").read_text().splitlines()
        if line and not line.startswith("#")
    )
    problems = []
    for name in SERVICES:
        expected = ["python", "-m", name]
        got = compose["services"].get(name, {}).get("command")
        if got != expected:
            problems.append(f"compose {name}: command {got!r}, expected {expected!r}")
        # `exec` so the service itself (not a shell) gets honcho's SIGTERM and its exit code
        if procfile.get(name, "").strip().removeprefix("exec ") != " ".join(expected):
            problems.append(f"Procfile {name}: {procfile.get(name)!r}")
    dockerfile = Path("Dockerfile").read_text()
    if len(re.findall(r"^FROM ", dockerfile, re.M)) < 2:
        problems.append("Dockerfile: expected a two-stage build")
    if not re.search(r"^USER (?!root)\w+", dockerfile, re.M):
        problems.append("Dockerfile: the runtime stage must not run as root")
    if "--no-dev" not in dockerfile:
        problems.append("Dockerfile: dev dependencies must stay out of the image")
    for problem in problems:
        print(problem, file=sys.stderr)
    print("compose, Procfile and Dockerfile agree" if not problems else "mismatch")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
