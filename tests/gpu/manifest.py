#!/usr/bin/env python3
"""The list of checks tests/gpu/run.sh runs, read from a meson build.

Usage: manifest.py BUILD_DIR SOURCE_DIR OUT_DIR

Reads `meson introspect --tests --benchmarks BUILD_DIR` and keeps, in this
order: the test 'devices' (suite mp), every test of suite 'gpu' but the
fake ones (named *_fake*: they need no GPU), every benchmark
whose name starts with 'gpu_'.  Writes to OUT_DIR:

  manifest.json  the kept entries, for people;
  manifest.sh    the same as bash assignments, which run.sh sources (so the
                 GPU machine needs neither python nor jq to read it);
  build-files    the files and folders (ending in '/') of BUILD_DIR that
                 the kept entries name, other than BUILD_DIR itself (one
                 a line, relative to BUILD_DIR), for the bundle.

The absolute paths of BUILD_DIR and SOURCE_DIR become the placeholders
@MLRT_BUILD@ and @MLRT_SRC@ (meson writes sources as BUILD_DIR/../x; they
become @MLRT_SRC@/x), which run.sh replaces by where they are on the
machine it runs on.  Exits 1 with a message when introspection fails.
"""
import json
import os
import re
import shlex
import subprocess
import sys

BUILD_PH = "@MLRT_BUILD@"
SRC_PH = "@MLRT_SRC@"


def introspect(build):
    try:
        out = subprocess.run(
            ["meson", "introspect", "--tests", "--benchmarks", build],
            check=True, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        sys.exit(f"manifest: meson introspect {build} failed: {e}; "
                 "is it a configured meson build directory?")
    return json.loads(out)


def suites(entry):
    # meson names suites 'project:suite'; keep the part after the colon.
    return [s.split(":")[-1] for s in entry["suite"]]


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    build, src, out = (os.path.realpath(a) for a in sys.argv[1:])
    data = introspect(build)

    # A path ends at '/', ':', whitespace, a quote or the end of the string,
    # so that BUILD_DIR does not also match BUILD_DIR-bundle.
    end = r"(?=[/:\s\"'=]|$)"
    subs = []
    if os.path.dirname(build) == src:
        subs.append((re.compile(re.escape(build) + r"/\.\./"), SRC_PH + "/"))
    subs.append((re.compile(re.escape(build) + end), BUILD_PH))
    subs.append((re.compile(re.escape(src) + end), SRC_PH))

    def place(s):
        for rx, ph in subs:
            s = rx.sub(ph, s)
        return s

    kept = [("test", t) for t in data["tests"] if t["name"] == "devices" and "mp" in suites(t)]
    # The fake tests need no GPU (they run in CI): not there.
    kept += [("test", t) for t in data["tests"]
             if "gpu" in suites(t) and "_fake" not in t["name"]]
    kept += [("bench", b) for b in data["benchmarks"] if b["name"].startswith("gpu_")]

    entries = []
    build_files = set()
    for kind, t in kept:
        e = {
            "name": t["name"],
            "kind": kind,
            "suite": ",".join(suites(t)),
            "cmd": [place(a) for a in t["cmd"]],
            "env": {k: place(v) for k, v in sorted(t["env"].items())},
            "timeout": int(t["timeout"] or 0),
            "workdir": place(t["workdir"]) if t["workdir"] else BUILD_PH,
        }
        entries.append(e)
        for s in e["cmd"] + list(e["env"].values()):
            for part in s.split(":"):
                if part.startswith(BUILD_PH + "/"):
                    rel = os.path.normpath(part[len(BUILD_PH) + 1:])
                    if os.path.isfile(os.path.join(build, rel)):
                        build_files.add(rel)
                    elif rel != "." and os.path.isdir(os.path.join(build, rel)):
                        build_files.add(rel + "/")

    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(entries, f, indent=1)
        f.write("\n")
    q = shlex.quote
    with open(os.path.join(out, "manifest.sh"), "w") as f:
        f.write("# Written by tests/gpu/manifest.py; sourced by tests/gpu/run.sh.\n")
        f.write(f"MANIFEST_COUNT={len(entries)}\n")
        for i, e in enumerate(entries):
            f.write(f"T_NAME[{i}]={q(e['name'])} T_KIND[{i}]={e['kind']} "
                    f"T_SUITE[{i}]={q(e['suite'])} T_TIMEOUT[{i}]={e['timeout']} "
                    f"T_WORKDIR[{i}]={q(e['workdir'])}\n")
            f.write(f"T_CMD_{i}=(" + " ".join(q(a) for a in e["cmd"]) + ")\n")
            f.write(f"T_ENV_{i}=(" + " ".join(q(f"{k}={v}") for k, v in e["env"].items()) + ")\n")
    with open(os.path.join(out, "build-files"), "w") as f:
        for p in sorted(build_files):
            f.write(p + "\n")
    for e in entries:
        print(f"manifest: {e['kind']} {e['name']} (suite {e['suite']}, timeout {e['timeout']} s)")


if __name__ == "__main__":
    main()
