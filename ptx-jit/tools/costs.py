#!/usr/bin/env python3
"""Where a launch's host instructions go in compiled code: per region and per PTX line.

Reads callgrind's counts per machine instruction and the JIT's `trace` log of a run of
`ptx-jit/examples/launch.rs` (its documentation has the settings; the regions' addresses
and the machine-code ranges of each PTX line are in the log):

    RUST_LOG=vgpu_ptx_jit=trace JIT_DUMP=/tmp/jd EAGER=1 REPS=1 \\
      valgrind --tool=callgrind --dump-instr=yes --callgrind-out-file=/tmp/cg.out \\
      target/release/examples/launch > /tmp/jit.log 2>&1
    ptx-jit/tools/costs.py /tmp/cg.out /tmp/jit.log                 # regions, top lines
    ptx-jit/tools/costs.py /tmp/cg.out /tmp/jit.log --region 0x... --per 32768
    ptx-jit/tools/costs.py /tmp/cg.out /tmp/jit.log --region 0x... --code /tmp/jd

A launch's total, the same in every process, from the dumps callgrind writes after each
launch (the first holds the compiling; `summary` of the others). (Two processes' totals
of different launch counts, subtracted, move by a few parts in a hundred with what the
compiling cost in each.)

    THREADS=1 REPS=4 EAGER=1 valgrind --tool=callgrind \\
      --dump-after='vgpu_ptx::exec::run' --callgrind-out-file=/tmp/cg.out \\
      target/release/examples/launch; grep -h summary /tmp/cg.out.3

Timed rather than counted: `perf record -e cpu-clock` (a clock, where the host has no
hardware counters) of the same run with `JIT_DUMP` and the `trace` log, its samples' addresses
given in place of callgrind's file, one `0xADDRESS COUNT` a line, and `--samples` to print
them as counts:

    perf script -i perf.data -F ip | awk '{c[$1]++} END {for (a in c) printf "0x%s %d\\n", a, c[a]}' > /tmp/samples
    ptx-jit/tools/costs.py /tmp/samples /tmp/jit.log --samples

`--region` lists that region's PTX lines in order (with `--per N`, also the count per N:
the number of groups of four lanes a launch runs, warps times eight); `--code DIR` prints
the region's machine code (from `JIT_DUMP`'s DIR, by `objdump`) with each instruction's
count and PTX line, `U` marking code that is no PTX line's own. Counts are of one
process: compiled code differs a little from one process to the next.

The three kernels of the ggml ops bench, from the modules `ptx/examples/coverage.rs
--dump DIR` writes of the registry ggml-cuda library `ci/ggml-ops.sh` fetches:
  rms_norm: PTX=DIR/module_41.ptx KERN=_Z12rms_norm_f32ILi1024ELb0ELb0ELb0E GRID=32
    BLOCK=1024 SHARED=128 BUFS=131072,131072 FILL=f,0
    PARAMS=p0,p1,1024,1,1,1024,32768,32768,f1e-6
  q8_0 mat-vec: PTX=DIR/module_39.ptx KERN=_Z13mul_mat_vec_qIL9ggml_type8ELi1ELb0ELb0ELb0E
    GRID=1024 BLOCK=32,4 BUFS=1114112,1152,4096 FILL=q0,q1,0
    PARAMS=p0,p1,0,0,p2,1024,0,32,32,1024,0,32768,32,1024,0,32768,32,1024,0,@116=1,@124=1,@140=1,@148=1,@164=1,@172=1
  soft_max: PTX=DIR/module_57.ptx KERN=_Z12soft_max_f32ILb1ELi1024ELi1024EfEv GRID=32
    BLOCK=1024 SHARED=4224 BUFS=131072,131072 FILL=f,0
    PARAMS=p0,0,0,p1,@32=1,@40=0,@48=1024,@56=32,@64=32,@72=1024,@80=32,@88=1,@96=1,@128=1,@136=1,@144=f1.0,@148=f0,@152=f1,@156=f1
(The module numbers are those of inferna-cuda12 0.7.0's library.)
"""
import argparse
import collections
import re
import subprocess


def counts(path):
    """Instructions executed, by machine-code address (self counts; calls' costs left out)."""
    out = collections.Counter()
    addr, call = 0, False
    for line in open(path, errors="replace"):
        if line.startswith("calls="):
            call = True
            continue
        if not line or line[0] not in "0123456789+-*":
            continue
        parts = line.split()
        a = parts[0]
        if a.startswith("0x"):
            addr = int(a, 16)
        elif a[0] == "+":
            addr += int(a[1:])
        elif a[0] == "-":
            addr -= int(a[1:])
        if call:
            call = False
        elif len(parts) > 1:
            out[addr] += int(parts[-1])
    return out


def regions(path):
    """The regions of the log: (address, bytes, kind, runs), and each one's line ranges."""
    regs, lines = [], {}
    for l in open(path, errors="replace"):
        m = re.search(r"(lanes|vector) region (\S+) at (0x[0-9a-f]+), (\d+) bytes", l)
        if m:
            regs.append((int(m.group(3), 16), int(m.group(4)), m.group(1), m.group(2)))
        m = re.search(r"lines of the region at (0x[0-9a-f]+): (.*)", l)
        if m:
            base = int(m.group(1), 16)
            lines[base] = [(base + int(s, 16), base + int(e, 16), int(n))
                           for s, e, n in re.findall(r"([0-9a-f]+)-([0-9a-f]+):(\d+)", m.group(2))]
    return regs, lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("callgrind")
    ap.add_argument("log")
    ap.add_argument("--top", type=int, default=25, help="lines to list by cost")
    ap.add_argument("--region", help="a region's address: its lines in order")
    ap.add_argument("--per", type=float, help="also give each line's count per this many")
    ap.add_argument("--code", help="JIT_DUMP's directory: the region's machine code")
    ap.add_argument("--samples", action="store_true",
                    help="the counts are samples (of perf), printed as they are, not in millions")
    a = ap.parse_args()
    scale, unit = (1, "") if a.samples else (1e6, " M")
    cost = counts(a.callgrind)
    regs, lines = regions(a.log)

    def between(s, e):
        return sum(v for k, v in cost.items() if s <= k < e)

    by_line = collections.Counter()
    for base, size, kind, runs in regs:
        own = 0
        for s, e, n in lines.get(base, []):
            c = between(s, e)
            by_line[n] += c
            own += c
        print(f"{kind:6} {runs:55} {between(base, base + size) / scale:8.3f}{unit}"
              f"  of which a PTX line's {own / scale:8.3f}{unit}  at {base:#x}")
    if not a.region:
        for n, c in by_line.most_common(a.top):
            print(f"  line {n}: {c / scale:.3f}{unit}")
        return
    base = int(a.region, 16)
    mine = collections.Counter()
    for s, e, n in lines.get(base, []):
        mine[n] += between(s, e)
    for n in sorted(mine):
        per = f"  {mine[n] / a.per:7.1f} each" if a.per else ""
        print(f"  line {n}: {mine[n] / scale:.3f}{unit}{per}")
    if a.code:
        owned = {}
        for s, e, n in lines.get(base, []):
            owned.update((k, n) for k in range(s, e))
        dis = subprocess.run(["objdump", "-D", "-b", "binary", "-m", "i386:x86-64",
                              f"--adjust-vma={base:#x}", f"{a.code}/{base:x}.bin"],
                             capture_output=True, text=True, check=True).stdout
        for l in dis.splitlines():
            m = re.match(r"\s*([0-9a-f]+):\s", l)
            if m:
                at = int(m.group(1), 16)
                print(f"{cost.get(at, 0):10} {owned.get(at, 'U'):>6} {l.strip()}")


if __name__ == "__main__":
    main()
