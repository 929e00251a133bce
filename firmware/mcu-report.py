#!/usr/bin/env python3
"""Build and run the firmware's three binaries (`demo`: parity workloads and training; `half`: the same in f16
and bf16; `costs`: the cost measurements) on both targets under QEMU and print, as markdown:

1. flash, static RAM and peak stack per target and binary (sizes from the ELF's section headers; the stack from
   the binary's stack painting), against the micro:bit's 256 KiB flash and 16 KiB RAM for the M0;
2. the cost of each kernel and training step per target and format: instructions counted under QEMU with
   `-icount shift=0` (deterministic, but instructions, not cycles: QEMU models no pipeline, caches or wait
   states).

Usage: python3 firmware/mcu-report.py [--out FILE.md]   (needs what `cargo run` in firmware/ needs)
Exits non-zero if a run fails or an M0 image does not fit the micro:bit.
"""

import os
import re
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = [
    # (label, cargo args, ELF directory, flash limit, RAM limit)
    ("Cortex-M4F (mps2-an386)", ["run", "--release"], "target/thumbv7em-none-eabihf/release", None, None),
    ("Cortex-M0 (micro:bit)", ["run-m0"], "target/thumbv6m-none-eabi/m0", 256 * 1024, 16 * 1024),
]
BINARIES = ["demo", "half", "costs"]
FORMATS = ["f32", "I16F16", "I8F24", "I1F15", "f16", "bf16"]
# Multiply-accumulates per call of the kernels that are sums of products: a 16×16 matvec, and the parity CNN's
# 3×3 `same` convolution of one 8×8 channel into two (22 valid taps per row and per column at the borders:
# 2 · 22 · 22).
MACS = {"matvec16x16": 16 * 16, "conv3x3_1x8x8-2": 2 * 22 * 22}
RAM_START = 0x2000_0000
SHF_ALLOC = 0x2


def sections(path):
    """(name, addr, size, flags, type) of every section of a little-endian ELF32 file."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 1 or data[5] != 1:
        raise SystemExit(f"{path}: not a little-endian ELF32 file")
    shoff = struct.unpack_from("<I", data, 0x20)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x2E)
    headers = [struct.unpack_from("<IIIIIIIIII", data, shoff + k * shentsize) for k in range(shnum)]
    strtab_off = headers[shstrndx][4]

    def name(off):
        end = data.index(b"\0", strtab_off + off)
        return data[strtab_off + off:end].decode()

    return [(name(h[0]), h[3], h[5], h[2], h[1]) for h in headers]


def sizes(path):
    """Flash bytes (code, constants and .data's initial values) and static RAM bytes (.data, .bss, .uninit)."""
    flash = ram = 0
    for name, addr, size, flags, kind in sections(path):
        if not flags & SHF_ALLOC or size == 0:
            continue
        if addr < RAM_START:
            flash += size
        else:
            ram += size
            if kind != 8:  # not NOBITS: its initial values are stored in flash too
                flash += size
    return flash, ram


def run(args):
    env = dict(os.environ, QEMU_TIMEOUT=os.environ.get("QEMU_TIMEOUT", "300"))
    p = subprocess.run(["cargo", *args], cwd=HERE, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"firmware `cargo {' '.join(args)}` failed with status {p.returncode}")
    return p.stdout


def measure():
    """Build and run every binary on both targets: {"sizes": [...], "costs": {kernel: {target: {format: n}}},
    "units": [...], "fits": bool}."""
    cost_re = re.compile(r"^cost (\S+) (\S+) (\d+) (instructions|cycles)$")
    stack_re = re.compile(r"^stack peak (\d+) of (\d+) bytes$")
    size_rows, costs, units = [], {}, set()
    ok = True
    for label, args, elf_dir, flash_limit, ram_limit in TARGETS:
        for binary in BINARIES:
            log = run([*args, "--bin", binary])
            flash, ram = sizes(os.path.join(HERE, elf_dir, binary))
            peak = None
            for line in log.splitlines():
                m = cost_re.match(line.strip())
                if m:
                    costs.setdefault(m.group(1), {}).setdefault(label, {})[m.group(2)] = int(m.group(3))
                    units.add(m.group(4))
                m = stack_re.match(line.strip())
                if m:
                    peak = int(m.group(1))
            if peak is None:
                raise SystemExit(f"{label} {binary}: no 'stack peak' line in the log")
            fits = ""
            if flash_limit:
                total_ram = ram + peak
                good = flash <= flash_limit and total_ram <= ram_limit
                ok &= good
                fits = (f"{'fits' if good else 'DOES NOT FIT'} {flash_limit // 1024} KiB flash / "
                        f"{ram_limit // 1024} KiB RAM ({total_ram} bytes of RAM used)")
            size_rows.append({"target": label, "binary": binary, "flash": flash, "ram": ram, "stack": peak,
                              "budget": fits})
    return {"sizes": size_rows, "costs": costs, "units": sorted(units), "fits": ok}


def size_table(data):
    lines = ["| target | binary | flash (bytes) | static RAM (bytes) | peak stack (bytes) | budget |",
             "|---|---|---|---|---|---|"]
    for r in data["sizes"]:
        lines.append(f"| {r['target']} | `{r['binary']}` | {r['flash']} | {r['ram']} | {r['stack']} | {r['budget']} |")
    return "\n".join(lines) + "\n"


def cost_tables(data):
    costs = data["costs"]
    lines = [f"Cost per call in {' / '.join(data['units'])} (QEMU `-icount shift=0`: instructions, not cycles):", ""]
    head = "| kernel | " + " | ".join(f"{t.split(' ')[0]} {f}" for t, *_ in TARGETS for f in FORMATS) + " |"
    lines += [head, "|---" * (1 + len(TARGETS) * len(FORMATS)) + "|"]
    for kernel, per_target in costs.items():
        cells = [str(per_target.get(t, {}).get(f, "-")) for t, *_ in TARGETS for f in FORMATS]
        lines.append(f"| {kernel} | " + " | ".join(cells) + " |")
    macs = {k: n for k, n in MACS.items() if k in costs}
    if macs:
        lines += ["", "Instructions per multiply-accumulate (the cost divided by the kernel's MAC count: "
                  + ", ".join(f"{k} {n}" for k, n in macs.items()) + "):", ""]
        lines += [head, "|---" * (1 + len(TARGETS) * len(FORMATS)) + "|"]
        for kernel, n in macs.items():
            cells = []
            for t, *_ in TARGETS:
                for f in FORMATS:
                    v = costs[kernel].get(t, {}).get(f)
                    cells.append(f"{v / n:.1f}" if v else "-")
            lines.append(f"| {kernel} | " + " | ".join(cells) + " |")
    lines += ["", "Ratios to f32 on the same core:", ""]
    lines += ["| kernel | " + " | ".join(f"{t.split(' ')[0]} {f}/f32" for t, *_ in TARGETS for f in FORMATS[1:]) + " |",
              "|---" * (1 + len(TARGETS) * (len(FORMATS) - 1)) + "|"]
    for kernel, per_target in costs.items():
        cells = []
        for t, *_ in TARGETS:
            base = per_target.get(t, {}).get("f32")
            for f in FORMATS[1:]:
                v = per_target.get(t, {}).get(f)
                cells.append(f"{v / base:.2f}" if v and base else "-")
        lines.append(f"| {kernel} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main():
    out = None
    argv = sys.argv[1:]
    if argv[:1] == ["--out"] and len(argv) == 2:
        out = argv[1]
    elif argv:
        raise SystemExit(__doc__)
    data = measure()
    text = size_table(data) + "\n" + cost_tables(data)
    if out:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(out)) or ".")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, out)
    sys.stdout.write(text)
    if not data["fits"]:
        raise SystemExit("an M0 image does not fit the micro:bit")


if __name__ == "__main__":
    main()
