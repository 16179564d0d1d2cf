#!/usr/bin/env python3
"""Self cost per function of a callgrind dump, highest first (instructions per request when
given the request count). For dumps kept by `tern-bench --scenario callgrind --callgrind-keep DIR`:
callgrind_annotate 3.19 attributes all of such a dump to one function, so this sums the self
cost lines (those not following a `calls=` line) itself.

Usage: scripts/callgrind-top.py DUMP [REQUESTS] [TOP]
"""
import collections
import sys

path = sys.argv[1]
requests = int(sys.argv[2]) if len(sys.argv) > 2 else 1
top = int(sys.argv[3]) if len(sys.argv) > 3 else 30
costs = collections.Counter()
function, after_calls = None, False
for line in open(path):
    if line.startswith("fn="):
        function = line[3:].strip()
    elif line.startswith("calls="):
        after_calls = True
    elif line[:1].isdigit() or line[:1] in "+-*":
        fields = line.split()
        if len(fields) >= 2:
            if after_calls:  # the inclusive cost of the call just named
                after_calls = False
            else:
                costs[function] += int(fields[1])
total = sum(costs.values())
print(f"{total / requests:10.0f}  100.0%  total (self costs summed)")
for function, cost in costs.most_common(top):
    print(f"{cost / requests:10.0f}  {100 * cost / total:5.1f}%  {function}")
