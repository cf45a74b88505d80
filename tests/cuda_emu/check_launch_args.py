"""Checks the argument order of each ``launch_X<T>(…)`` call in csrc/cuda/register.cpp
against the launcher's declaration in csrc/cuda/row_kernels.cuh. register.cpp is built only
against a CUDA torch and never runs without a GPU, and its arguments are raw pointers and
longs, so a swap would compile. Rules, by the declared parameter:
  a pointer ``T* name``   the argument is ``ptr<…>(name)``: the tensor of the same name;
  a size ``long dim``     the argument is ``t.size(j)`` for a tensor t whose declared shape
                          comment (``/*[b,k]*/``) has ``dim`` at axis j;
  ``cudaStream_t``        anything (the stream);
  anything else           the argument mentions the parameter's name (``int(kind)``).
Run: python3 tests/cuda_emu/check_launch_args.py (exit 1 and the mismatches if any)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

CSRC = Path(__file__).resolve().parents[2] / "csrc"

_DECL = re.compile(r"cudaError_t\s+(launch_\w+)\s*\((.*?)\)\s*;", re.S)
_PARAM = re.compile(r"^(?P<type>.*?)(?P<name>\w+)\s*(?:/\*\s*\[(?P<shape>[^\]]*)\][^*]*\*/)?\s*$", re.S)


def declarations(text: str) -> dict:
    """launcher name → [(type, name, shape dims or None)] from row_kernels.cuh."""
    out = {}
    for name, params in _DECL.findall(text):
        parsed = []
        for p in _split(params):
            m = _PARAM.match(p.strip())
            shape = [d.strip() for d in m.group("shape").split(",")] if m.group("shape") else None
            parsed.append((m.group("type").strip(), m.group("name"), shape))
        out[name] = parsed
    return out


def _split(args: str) -> list:
    """Top-level commas only (not those inside (), <> or comments)."""
    parts, depth, cur, i = [], 0, "", 0
    while i < len(args):
        if args.startswith("/*", i):
            j = args.index("*/", i) + 2
            cur, i = cur + args[i:j], j
            continue
        c = args[i]
        depth += 1 if c in "(<[" else -1 if c in ")>]" else 0
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    return parts + [cur] if cur.strip() else parts


def calls(text: str) -> list:
    """[(launcher name, [argument texts])] of every ``launch_X<T>(…)`` call in register.cpp."""
    out = []
    for m in re.finditer(r"(launch_\w+)<\w+>\(", text):
        depth, i = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        out.append((m.group(1), [a.strip() for a in _split(text[m.end():i - 1])]))
    return out


def mismatches(decls: dict, found: list) -> list:
    bad = []
    shapes = {}
    for launcher, args in found:
        params = decls.get(launcher)
        if params is None:
            bad.append(f"{launcher}: not declared in row_kernels.cuh")
            continue
        if len(args) != len(params):
            bad.append(f"{launcher}: {len(args)} arguments for {len(params)} parameters")
            continue
        shapes = {name: shape for _, name, shape in params if shape}
        for i, ((ptype, pname, _), arg) in enumerate(zip(params, args)):
            where = f"{launcher} argument {i + 1} ({arg}) for parameter {pname}"
            if ptype.endswith("*"):
                m = re.fullmatch(r"ptr<\w+>\((\w+)\)", arg)
                if not m or m.group(1) != pname:
                    bad.append(f"{where}: expected ptr<…>({pname})")
            elif ptype == "long":
                m = re.fullmatch(r"(\w+)\.size\((\d+)\)", arg)
                shape = shapes.get(m.group(1)) if m else None
                if not shape or int(m.group(2)) >= len(shape) or shape[int(m.group(2))] != pname:
                    bad.append(f"{where}: expected t.size(j) with {pname} at axis j of t's declared shape")
            elif ptype != "cudaStream_t" and not re.search(rf"\b{pname}\b", arg):
                bad.append(f"{where}: does not mention {pname}")
    missing = set(decls) - {launcher for launcher, _ in found}
    bad += [f"{name}: declared but never called from register.cpp" for name in sorted(missing)]
    return bad


def main() -> int:
    decls = declarations((CSRC / "cuda" / "row_kernels.cuh").read_text())
    found = calls((CSRC / "cuda" / "register.cpp").read_text())
    bad = mismatches(decls, found)
    for line in bad:
        print(line)
    print(f"register.cpp: {len(found)} launcher calls checked against row_kernels.cuh, {len(bad)} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
