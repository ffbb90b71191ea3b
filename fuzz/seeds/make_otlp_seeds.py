#!/usr/bin/env python3
"""Makes the seed corpus of the fuzz-otlp target: export request bodies as exporters write them.

Run with the end-to-end venv (it has opentelemetry-proto), after `swift build`:
    .venv/bin/python fuzz/seeds/make_otlp_seeds.py
Writes random requests of every signal made with the official classes (tests/e2e/otlp_payloads.py),
in protobuf and OTLP/JSON, and the hand-built fixtures of Tests/OTLPFixtures (through
`otlp-payload-tool seeds`), to fuzz/corpus/otlp.
"""
import pathlib
import random
import subprocess
import sys

from google.protobuf import json_format

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from otlp_payloads import SIGNALS, random_request  # noqa: E402

OUT = ROOT / "fuzz" / "corpus" / "otlp"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = random.Random("fuzz-otlp seeds")
    for signal in SIGNALS:
        for index in range(4):
            request, _ = random_request(signal, rng)
            (OUT / f"{signal}-{index}.pb").write_bytes(request.SerializeToString())
        request, _ = random_request(signal, rng)
        (OUT / f"{signal}.json").write_text(json_format.MessageToJson(request, indent=None))
    subprocess.run([str(ROOT / ".build" / "debug" / "otlp-payload-tool"), "seeds", str(OUT)], check=True)


if __name__ == "__main__":
    main()
