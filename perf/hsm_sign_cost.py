#!/usr/bin/env python3
"""One ECDSA P-256 signature through each way OpenSSL 3.5 reaches a key on a
PKCS#11 token: PEM (no token, the floor), the libp11 engine,
pkcs11-provider, and hsm/'s module path. Makes a SoftHSM2 token of its own,
imports one key (so every path signs with the same key), runs
portcullis-hsm-sign-cost ROUNDS times and prints the median per path.

  python3 perf/hsm_sign_cost.py --build build --signatures 3000 --rounds 3 --json FILE
"""
import argparse
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--signatures", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    tool = Path(args.build).resolve() / "hsm" / "portcullis-hsm-sign-cost"

    with tempfile.TemporaryDirectory(prefix="portcullis-sign-cost.") as tmp:
        work = Path(tmp)
        (work / "tokens").mkdir()
        conf = work / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {work}/tokens\nobjectstore.backend = file\n"
                        "log.level = ERROR\n")
        env = {"SOFTHSM2_CONF": str(conf), "PATH": "/usr/bin:/bin"}
        pin = "246810"
        (work / "pin").write_text(pin + "\n")

        def run(*cmd):
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)

        run("softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin", pin,
            "--so-pin", pin)
        run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", str(work / "key.pem"))
        run("openssl", "pkcs8", "-topk8", "-nocrypt", "-in", str(work / "key.pem"), "-out",
            str(work / "key8.pem"))
        run("softhsm2-util", "--import", str(work / "key8.pem"), "--token", "bench", "--label",
            "server-ec", "--id", "01", "--pin", pin)

        rounds = []
        for i in range(args.rounds):
            out = work / f"round{i}.json"
            subprocess.run([str(tool), "--module", SOFTHSM, "--token", "bench", "--pin-file",
                            str(work / "pin"), "--key",
                            "pkcs11:token=bench;object=server-ec;type=private", "--pem",
                            str(work / "key.pem"), "--signatures", str(args.signatures),
                            "--json", str(out)], check=True, env=env,
                           stdout=subprocess.DEVNULL)
            rounds.append(json.loads(out.read_text())["results"])

    paths = [r["path"] for r in rounds[0]]
    summary = []
    print(f"{'path':18} {'wall us/sig':>12} {'cpu us/sig':>11} {'failures':>9}"
          f"   (median of {args.rounds} rounds, {args.signatures} signatures each)")
    for path in paths:
        per_round = [next(r for r in rnd if r["path"] == path) for rnd in rounds]
        row = {"path": path,
               "wall_us": statistics.median(r["wall_us"] for r in per_round),
               "cpu_us": statistics.median(r["cpu_us"] for r in per_round),
               "failures": sum(r["failures"] for r in per_round),
               "rounds_cpu_us": [r["cpu_us"] for r in per_round]}
        summary.append(row)
        print(f"{path:18} {row['wall_us']:12.1f} {row['cpu_us']:11.1f} {row['failures']:9d}")
    if args.json:
        Path(args.json).write_text(json.dumps({"signatures": args.signatures,
                                               "rounds": args.rounds, "results": summary},
                                              indent=2) + "\n")


if __name__ == "__main__":
    main()
