#!/usr/bin/env python3
"""List the module-level import graph of src/ and its cycles.

A top-level module is src/x.rs or src/x/ (everything under it counts as x). An edge x -> y
exists when a file of x names `crate::y` (in a `use` or a path). Prints each module's imports
and then the strongly connected components with more than one module (the import circles).
Usage: scripts/dev/module-cycles.py [src-dir]
"""
import os
import re
import sys

src = sys.argv[1] if len(sys.argv) > 1 else "src"
mods = set()
for name in os.listdir(src):
    if name.endswith(".rs") and name not in ("lib.rs", "main.rs"):
        mods.add(name[:-3])
    elif os.path.isdir(os.path.join(src, name)) and name != "cli":
        mods.add(name)

def module_of(path):
    rel = os.path.relpath(path, src).split(os.sep)
    head = rel[0][:-3] if rel[0].endswith(".rs") else rel[0]
    return head if head in mods else None

edges = {m: set() for m in mods}
# `crate::x` anywhere, and `crate::{x, y::z}` groups (first segment of each item).
path_re = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
group_re = re.compile(r"\bcrate::\{([^}]*(?:\{[^}]*\}[^}]*)*)\}", re.S)
for root, _, files in os.walk(src):
    for f in files:
        if not f.endswith(".rs"):
            continue
        path = os.path.join(root, f)
        m = module_of(path)
        if m is None:
            continue
        text = open(path).read()
        text = re.sub(r"//[^\n]*", "", text)
        names = set(path_re.findall(text))
        for g in group_re.findall(text):
            depth = 0
            item = ""
            for ch in g + ",":
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                if ch == "," and depth == 0:
                    first = re.match(r"\s*([a-z_][a-z0-9_]*)", item)
                    if first:
                        names.add(first.group(1))
                    item = ""
                else:
                    item += ch
        for n in names:
            if n in mods and n != m:
                edges[m].add(n)

for m in sorted(mods):
    print(f"{m} -> {', '.join(sorted(edges[m])) or '-'}")

# Tarjan's strongly connected components.
index, low, stack, on, sccs = {}, {}, [], set(), []
counter = [0]
sys.setrecursionlimit(10000)
def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges[v]:
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        sccs.append(comp)
for v in sorted(mods):
    if v not in index:
        visit(v)
circles = [sorted(c) for c in sccs if len(c) > 1]
print()
if not circles:
    print("no import circles")
for c in circles:
    print(f"circle of {len(c)}: {', '.join(c)}")
    # one shortest cycle through each member's edges inside the component, for reading
    inside = set(c)
    for m in c:
        print(f"  {m} -> {', '.join(sorted(edges[m] & inside))}")
sys.exit(1 if circles else 0)
