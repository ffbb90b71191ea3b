"""testssl.sh (the Debian package `testssl.sh`, command `testssl`) against a running proxy:
protocols, every cipher per protocol, forward secrecy (and the key exchange groups) and the
vulnerability checks, read back from its JSON file. One scan (about 25 s) is shared by the tests.

The certificate checks (-S) are left out on purpose: the proxy serves a certificate from a
throw-away dev CA that testssl cannot trust, which says nothing about the proxy."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

BAD_SEVERITIES = {"MEDIUM", "HIGH", "CRITICAL"}
# A scan that could not do a check reports WARN or FATAL; a clean result must not hide one.
SCAN_PROBLEMS = {"WARN", "FATAL"}
# Notes testssl makes about the machine's own openssl build, not about the server scanned: they are
# reported with no target address (ip "/"). Only these ids are tolerated, and only there.
LOCAL_TOOL_NOTES = {"engine_problem"}
# The checks that must have run, each with a verdict: every protocol, forward secrecy and its groups,
# and every vulnerability check. A check that is missing or ended in WARN/FATAL fails the scan.
REQUIRED_CHECKS = (
    "SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3",
    "PFS", "PFS_ECDHE_curves",
    "heartbleed", "CCS", "ticketbleed", "ROBOT", "secure_renego", "secure_client_renego", "CRIME_TLS",
    "BREACH", "POODLE_SSL", "fallback_SCSV", "SWEET32", "FREAK", "DROWN", "LOGJAM", "BEAST", "LUCKY13", "RC4",
)
TLS13_SUITES = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
INTENDED_GROUPS = {"X25519", "prime256v1", "secp384r1"}


def find_testssl() -> str | None:
    return shutil.which("testssl") or shutil.which("testssl.sh")


@pytest.fixture(scope="module")
def findings(shared_proxy, tmp_path_factory) -> list[dict]:
    command = find_testssl()
    if command is None:
        pytest.skip("testssl.sh is not installed (Debian package `testssl.sh`); the Makefile's dependency step must install it")
    directory = tmp_path_factory.mktemp("testssl")
    report = directory / "findings.json"
    result = subprocess.run(
        [
            command, "--quiet", "--color", "0", "--warnings", "off", "--nodns", "none",
            "--connect-timeout", "5", "--openssl-timeout", "5",
            "--jsonfile", str(report),
            "--protocols", "--cipher-per-proto", "--fs", "--vulnerable",
            f"127.0.0.1:{shared_proxy.port}",
        ],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180, cwd=directory,
    )
    (directory / "testssl.out").write_text(result.stdout + result.stderr)
    assert report.exists(), f"testssl wrote no JSON (exit {result.returncode}):\n{result.stdout[-3000:]}{result.stderr[-2000:]}"
    return json.loads(report.read_text())


def by_id(findings: list[dict]) -> dict[str, str]:
    return {finding["id"]: finding["finding"] for finding in findings}


def summary(findings: list[dict]) -> str:
    return "\n".join(f"{f['severity']:8} {f['id']}: {f['finding']}" for f in findings)


def test_testssl_no_finding_medium_or_above(findings):
    bad = [f for f in findings if f["severity"] in BAD_SEVERITIES]
    assert bad == [], f"findings at MEDIUM or above:\n{summary(bad)}"


def is_local_tool_note(finding: dict) -> bool:
    return finding["id"] in LOCAL_TOOL_NOTES and finding.get("ip") == "/"


def scan_problems(findings: list[dict]) -> list[dict]:
    return [f for f in findings if f["severity"] in SCAN_PROBLEMS and not is_local_tool_note(f)]


def missing_checks(findings: list[dict]) -> list[str]:
    ids = {f["id"] for f in findings}
    return [check for check in REQUIRED_CHECKS if check not in ids]


def test_testssl_scan_complete_no_warnings(findings):
    problems = scan_problems(findings)
    assert problems == [], f"testssl could not complete some checks:\n{summary(problems)}"
    missing = missing_checks(findings)
    assert missing == [], f"checks the scan did not report: {missing}\n{summary(findings)}"


def test_testssl_completeness_rule_reads_finding_ids():
    """The rule above on made-up findings: a note about the local openssl passes, the same id about the
    server does not, a WARN from a real check fails, and a check that did not run is missing."""
    complete = [{"id": check, "ip": "127.0.0.1/127.0.0.1", "severity": "OK", "finding": "ok"} for check in REQUIRED_CHECKS]
    engine_note = {"id": "engine_problem", "ip": "/", "severity": "WARN", "finding": "No engine or GOST support"}
    assert scan_problems(complete + [engine_note]) == []
    assert missing_checks(complete) == []
    about_server = dict(engine_note, ip="127.0.0.1/127.0.0.1")
    assert scan_problems(complete + [about_server]) == [about_server]
    robot_warn = {"id": "ROBOT", "ip": "127.0.0.1/127.0.0.1", "severity": "WARN", "finding": "check failed"}
    assert scan_problems(complete[:-1] + [robot_warn]) == [robot_warn]
    other_local = {"id": "old_fart", "ip": "/", "severity": "WARN", "finding": "openssl too old"}
    assert scan_problems(complete + [other_local]) == [other_local]
    without_lucky13 = [f for f in complete if f["id"] != "LUCKY13"]
    assert missing_checks(without_lucky13) == ["LUCKY13"]


def test_testssl_only_tls12_and_tls13_offered(findings):
    ids = by_id(findings)
    for old in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert ids.get(old) == "not offered", f"{old}: {ids.get(old)}"
    assert ids.get("TLS1_2") == "offered", ids.get("TLS1_2")
    assert ids.get("TLS1_3", "").startswith("offered"), ids.get("TLS1_3")


def test_testssl_tls12_suites_only_ecdhe_aead(findings):
    suites = [f["finding"].split()[3] for f in findings if f["id"].startswith("cipher-tls1_2_")]
    assert suites, f"no TLS 1.2 suite reported:\n{summary(findings)}"
    not_intended = [
        suite for suite in suites
        if not suite.startswith("ECDHE-") or not ("-GCM-" in suite or suite.endswith("CHACHA20-POLY1305"))
    ]
    assert not_intended == [], f"TLS 1.2 suites that are not ECDHE with an AEAD: {not_intended}"
    older = [f["id"] for f in findings if f["id"].startswith(("cipher-tls1_", "cipher-ssl")) and
             not f["id"].startswith(("cipher-tls1_2_", "cipher-tls1_3_"))]
    assert older == [], f"suites offered for protocols before TLS 1.2: {older}"


def test_testssl_tls13_suites_are_the_standard_aead_set(findings):
    suites = {f["finding"].split()[3] for f in findings if f["id"].startswith("cipher-tls1_3_")}
    assert suites and suites <= TLS13_SUITES, suites


def test_testssl_key_exchange_groups_x25519_p256_p384_only(findings):
    groups = set(by_id(findings).get("PFS_ECDHE_curves", "").split())
    assert groups == INTENDED_GROUPS, f"groups offered: {sorted(groups)}"
