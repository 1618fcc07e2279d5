#!/usr/bin/env python3
"""Counts individual test cases (not executables) in meson's JUnit log.

meson nests each GoogleTest case under its executable's <testsuite>; an
executable that crashed before reporting its cases counts as one failure.
Prints "N passed, N failed[, N skipped]" for the given logs together.
"""
import sys
import xml.etree.ElementTree as ET

passed = failed = skipped = 0
for path in sys.argv[1:]:
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
line = f"{passed} passed, {failed} failed"
if skipped:
    line += f", {skipped} skipped"
print(line)
