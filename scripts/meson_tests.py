#!/usr/bin/env python3
"""The tests of a configured meson tree that match some selectors, and the
build targets they need, so that a tree can build only what it runs.

  scripts/meson_tests.py BUILD_DIR --names|--targets SELECTOR...

A selector is a test name (hsm_signing) or suite:NAME (suite:integration, the
project prefix "portcullis:" implied). --names prints the matching tests'
names, --targets the files to give ninja (each test's program and its
`depends`), relative to BUILD_DIR, one a line. Unknown selectors are an error:
a renamed test must not silently drop out of a run.
"""
import json
import os
import subprocess
import sys


def introspect(build_dir, what):
    out = subprocess.run(["meson", "introspect", build_dir, what],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    if len(sys.argv) < 4 or sys.argv[2] not in ("--names", "--targets"):
        sys.exit(__doc__)
    build_dir, mode, selectors = sys.argv[1], sys.argv[2], sys.argv[3:]
    tests = introspect(build_dir, "--tests")
    chosen = []
    for selector in selectors:
        if selector.startswith("suite:"):
            suite = selector[len("suite:"):]
            found = [t for t in tests
                     if suite in t["suite"] or f"portcullis:{suite}" in t["suite"]]
        else:
            found = [t for t in tests if t["name"] == selector]
        if not found:
            sys.exit(f"meson_tests.py: no test matches {selector!r} in {build_dir}")
        chosen += [t for t in found if t not in chosen]

    if mode == "--names":
        for t in chosen:
            print(t["name"])
        return

    files_of = {target["id"]: target["filename"] for target in introspect(build_dir, "--targets")}
    root = os.path.abspath(build_dir)
    wanted = []
    for t in chosen:
        paths = [t["cmd"][0]] + [f for d in t["depends"] for f in files_of.get(d, [])]
        for path in paths:
            # A test run through an interpreter (python3, a shell script) has
            # nothing in the tree to build for its program.
            if not os.path.abspath(path).startswith(root + os.sep):
                continue
            rel = os.path.relpath(path, root)
            if rel not in wanted:
                wanted.append(rel)
    for rel in wanted:
        print(rel)


if __name__ == "__main__":
    main()
