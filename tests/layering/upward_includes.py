#!/usr/bin/env python3
"""The build's layering holds: with a layer's include directory (what its
meson library compiles with), a header of a higher layer cannot be found,
and a header of the layer itself or below can. Each case compiles a one-line
file with the project's C++ compiler (-fsyntax-only).

  upward_includes.py LAYERS_DIR COMPILER [ARGS...]
"""
import subprocess
import sys
import tempfile
from pathlib import Path

# (layer, header, must compile): below or own compiles, above does not.
CASES = [
    ("base", "base/unique_fd.hpp", True),
    ("base", "crypto/reject_reason.hpp", False),
    ("crypto", "crypto/reject_reason.hpp", True),
    ("crypto", "dataplane/byte_stream.hpp", False),
    ("crypto", "hsm/pkcs11_uri.hpp", False),
    ("crypto", "mgmt/config.hpp", False),
    ("tcp", "dataplane/tcp/tcp_segment.hpp", True),
    ("tcp", "crypto/reject_reason.hpp", False),
    ("tcp", "dataplane/connection.hpp", False),
    ("dataplane", "dataplane/byte_stream.hpp", True),
    ("dataplane", "crypto/reject_reason.hpp", True),
    ("dataplane", "hsm/signing_service.hpp", False),
    ("dataplane", "mgmt/config.hpp", False),
    ("hsm", "hsm/pkcs11_uri.hpp", True),
    ("hsm", "dataplane/byte_stream.hpp", False),
    ("mgmt", "mgmt/config.hpp", True),
]


def main():
    layers, compiler = Path(sys.argv[1]), sys.argv[2:]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for layer, header, allowed in CASES:
            source = Path(tmp) / "probe.cpp"
            source.write_text(f'#include "{header}"\n')
            result = subprocess.run(
                compiler + ["-std=c++20", "-fsyntax-only", f"-I{layers / layer}", str(source)],
                capture_output=True, text=True)
            compiled = result.returncode == 0
            missing = "No such file or directory" in result.stderr
            ok = compiled if allowed else (not compiled and missing)
            verdict = "ok" if ok else "FAIL"
            print(f"{verdict}: layer {layer:9} #include \"{header}\" "
                  f"{'compiles' if compiled else 'does not compile'}"
                  f" (expected {'to compile' if allowed else 'not found'})")
            if not ok:
                failures += 1
                print(result.stderr[:2000])
    print(f"{len(CASES) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
