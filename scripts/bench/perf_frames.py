#!/usr/bin/env python3
"""Where copies and page zeroing come from, in a `perf script` dump of a DWARF profile.

    perf record -F 149 --call-graph dwarf -p <pid> -- sleep 6
    perf script > perf.txt
    scripts/bench/perf_frames.py perf.txt

Counts the samples whose leaf is a memory copy or the kernel's page zeroing (`clear_page_erms`,
`memcpy`, `memmove`), by the first frame that is not the copy, the allocator or std's plumbing:
the code that asked for the bytes. Prints the total, then the 15 most frequent frames.
"""

import collections
import re
import sys

LEAVES = ("clear_page_erms", "memcpy", "memmove")
SKIP = ("memcpy", "memmove", "mi_", "alloc::", "core::ptr", "RawVec", "__rust", "realloc",
        "reserve", "grow")
FRAME = re.compile(r"[0-9a-f]+ (.+?) \(")


def main(path: str) -> None:
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for sample in open(path, encoding="utf-8", errors="replace").read().split("\n\n"):
        lines = [line.strip() for line in sample.strip().split("\n")[1:]]
        if not lines or not any(leaf in lines[0] for leaf in LEAVES):
            continue
        total += 1
        for line in lines:
            if "[kernel" in line or "libc" in line:
                continue
            match = FRAME.search(line)
            if match and not any(s in match.group(1) for s in SKIP):
                counts[match.group(1)[:140]] += 1
                break
    print(f"{total} copy or zeroing samples")
    for frame, n in counts.most_common(15):
        print(f"{n:6} {frame}")


if __name__ == "__main__":
    main(sys.argv[1])
