#!/usr/bin/env python3
"""Counts individual test cases (not executables) in meson's JUnit log.

meson nests each GoogleTest case under its executable's <testsuite>; an
executable that crashed before reporting its cases counts as one failure.
Prints "N passed, N failed[, N skipped]" for the given logs together.
"""
import sys
import xml.etree.ElementTree as ET

args = sys.argv[1:]
# --min-failed N: meson saw N failing test programs; a program that crashed
# before writing its cases must not vanish from the count.
min_failed = 0
if args and args[0] == "--min-failed":
    min_failed = int(args[1])
    args = args[2:]
passed = failed = skipped = 0
for path in args:
    root = ET.parse(path).getroot()
    for suite in root.iter("testsuite"):
        cases = suite.findall("testcase")
        for case in cases:
            if case.find("failure") is not None or case.find("error") is not None:
                failed += 1
            elif case.find("skipped") is not None:
                skipped += 1
            else:
                passed += 1
failed = max(failed, min_failed)
line = f"{passed} passed, {failed} failed"
if skipped:
    line += f", {skipped} skipped"
print(line)
