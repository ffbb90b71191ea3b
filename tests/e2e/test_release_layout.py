"""The release layout's tooling: scripts/symbol-order.py reads callgrind profiles and lld link maps
the way they are written, and keeps out of the list the names that would pull a large library
section that never ran into the packed code."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from conftest import REPO_ROOT

spec = importlib.util.spec_from_file_location("symbol_order", REPO_ROOT / "scripts/symbol-order.py")
symbol_order = importlib.util.module_from_spec(spec)
spec.loader.exec_module(symbol_order)

PROFILE = """# callgrind format
version: 1
positions: line
events: Ir

ob=/usr/lib/x86_64-linux-gnu/libc.so.6
fl=???
fn=memcpy
0 500

ob={binary}
fl=???
fn=$s4Core5startyyF
0 40
cob=/usr/lib/x86_64-linux-gnu/libc.so.6
cfi=???
cfn=memcpy
calls=2 0
0 9000
0 2

fn=$s4Core6decodeyyF'2
0 7

fn=$s4Core6decodeyyF
0 3
"""


def test_profile_counts_own_instructions_per_function_of_the_binary_only(tmp_path: Path):
    binary = tmp_path / "otlp-auth-proxy"
    binary.write_bytes(b"")
    profile = tmp_path / "callgrind.out"
    profile.write_text(PROFILE.format(binary=binary))
    costs = symbol_order.self_costs(profile, binary)
    # memcpy is another object's; the 9000 after calls= is memcpy's cost, not start's; a recursion
    # level is the same function.
    assert costs == {"$s4Core5startyyF": 42, "$s4Core6decodeyyF": 10}


LINK_MAP = """             VMA              LMA     Size Align Out     In      Symbol
          2000             2000     9000    16 .text
          2000             2000    30000    16         /lib/libswiftCore.a(Swift.o):(.text)
          2000             2000       10     1                 $sSqwxx
          2010             2010       10     1                 $sSS5countSivg
          32000           32000    20000    16         /lib/libswift_RegexParser.a(_RegexParser.o):(.text)
          32000           32000       10     1                 $sSqwxx
          32010           32010       10     1                 $s12_RegexParser5parseyyF
          52000           52000       40    16         /build/ProxyCore.build/A.swift.o:(.text.$sSqwxx)
          52000           52000       40     1                 $sSqwxx
          52040           52040       40    16         /build/ProxyCore.build/A.swift.o:(.text.$s4Core5startyyF)
          52040           52040       40     1                 $s4Core5startyyF
          60000           60000      100    16 .rodata
          60000           60000      100    16         /build/ProxyCore.build/A.swift.o:(.rodata)
          60000           60000       10     1                 $s12_RegexParser5parseyyF
"""


def test_names_that_would_pull_an_idle_library_section_are_left_out(tmp_path: Path):
    link_map = tmp_path / "release-link.map"
    link_map.write_text(LINK_MAP)
    ran = {"$sSqwxx": 100, "$sSS5countSivg": 50, "$s4Core5startyyF": 10}
    kept = symbol_order.without_idle_blobs(ran, link_map)
    # Swift.o ran (a name defined only there ran), _RegexParser.o did not: $sSqwxx, also defined
    # in _RegexParser.o, would drag its 128 KiB along. A name outside .text does not count.
    assert kept == {"$sSS5countSivg": 50, "$s4Core5startyyF": 10}


def test_a_section_of_the_idle_library_that_ran_keeps_its_names(tmp_path: Path):
    link_map = tmp_path / "release-link.map"
    link_map.write_text(LINK_MAP)
    ran = {"$sSqwxx": 100, "$sSS5countSivg": 50, "$s12_RegexParser5parseyyF": 5}
    assert symbol_order.without_idle_blobs(ran, link_map) == ran


def test_checked_in_order_lists_each_function_once():
    names = (REPO_ROOT / "scripts/symbol-order.txt").read_text().split("\n")
    assert names[-1] == "" and all(names[:-1])
    assert len(set(names[:-1])) == len(names) - 1 > 1000
