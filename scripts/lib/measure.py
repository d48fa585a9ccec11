"""Run commands side by side and report their median wall time, CPU time and peak memory.

Used by scripts/bench.sh. Each run goes through `runone` (scripts/lib/runone.c), which forks,
execs and reaps the command with wait4: the wall time covers fork to exit, the CPU time is the
command's user + system time, the peak RSS its own maximum resident set. The commands of a group
run in turns (one run of each, then the next round, starting one later each round), so that a
change in the machine's load falls on all of them alike. A run that fails stops the benchmark:
no figure is reported for a tool that did not connect.

Usage: measure.py <runone> <runs> <warmup> <label> <tool> <success-text|-> <argv...> [--- ...]
Prints one line per tool: `<label>\t<tool>\t<wall ms>\t<cpu ms>\t<rss KiB>` (medians)."""

import os
import statistics
import sys
import subprocess
import tempfile


def parse(args):
    tools = []
    current = []
    for a in args + ["---"]:
        if a == "---":
            if current:
                name, success, *argv = current
                tools.append((name, None if success == "-" else success, argv))
            current = []
        else:
            current.append(a)
    return tools


def run_once(runone, argv, success, out):
    done = subprocess.run([runone, out, *argv], stdout=subprocess.PIPE, check=False)
    with open(out, encoding="utf-8", errors="replace") as f:
        text = f.read()
    if done.returncode != 0 or (success and success not in text):
        sys.exit(f"{argv[0]} failed (exit status {done.returncode}):\n{text}")
    wall_ns, cpu_us, rss_kib = (int(x) for x in done.stdout.split())
    return wall_ns / 1e6, cpu_us / 1e3, rss_kib


def main():
    runone, runs, warmup, label = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    tools = parse(sys.argv[5:])
    results = {name: [] for name, _, _ in tools}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "output")
        for round_ in range(warmup + runs):
            shift = round_ % len(tools)
            for name, success, argv in tools[shift:] + tools[:shift]:
                figures = run_once(runone, argv, success, out)
                if round_ >= warmup:
                    results[name].append(figures)
    for name, _, _ in tools:
        walls, cpus, rsss = zip(*results[name])
        print(
            f"{label}\t{name}\t{statistics.median(walls):.2f}\t"
            f"{statistics.median(cpus):.2f}\t{statistics.median(rsss):.0f}"
        )


if __name__ == "__main__":
    main()
