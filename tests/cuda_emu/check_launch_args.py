"""Checks the argument order of each ``launch_X<T>(…)`` call in csrc/cuda/register.cpp
against the launcher's declaration in csrc/cuda/row_kernels.cuh. register.cpp is built only
against a CUDA torch and never runs without a GPU, and its arguments are raw pointers and
longs, so a swap would compile. Rules, by the declared parameter:
  a pointer ``T* name``   the argument is ``ptr<…>(name)``: the tensor of the same name (or
                          its name in register.cpp, _TENSOR: ``eigenvalues`` for ``lam``);
  ``const long* labels``  the class indices: ``labels_of(y)``;
  a size ``long dim``     an expression in sizes ``t.size(j)`` of the tensors passed (and in
                          the locals ``const long b = …, d = …;`` declared before the call in
                          the same function) that equals ``dim``, where each tensor's sizes
                          are its declared shape comment (``/*[b,d+2k]*/``) evaluated with
                          distinct values of the dims: ``x.size(1) / 2`` for k of xwp [b,2k];
  ``cudaStream_t``        anything (the stream);
  anything else           the argument mentions the parameter's name (``int(kind)``).
Run: python3 tests/cuda_emu/check_launch_args.py (exit 1 and the mismatches if any)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

CSRC = Path(__file__).resolve().parents[2] / "csrc"

_DECL = re.compile(r"cudaError_t\s+(launch_\w+)\s*\((.*?)\)\s*;", re.S)
# A parameter whose tensor has another name in register.cpp.
_TENSOR = {"lam": "eigenvalues"}
_LOCALS = re.compile(r"const long\s+([^;]*);")
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
    """[(launcher name, [argument texts])] of every ``launch_X<T>(…)`` call in register.cpp,
    a local ``long`` of the enclosing function replaced by ``(its initialiser)``."""
    out = []
    for m in re.finditer(r"(launch_\w+)<\w+>\(", text):
        depth, i = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        local = _locals(text[text.rfind("static void", 0, m.start()) + 1:m.start()])
        out.append((m.group(1), [_substitute(a.strip(), local) for a in _split(text[m.end():i - 1])]))
    return out


def _locals(body: str) -> dict:
    """name → initialiser of each ``const long a = X, b = Y;`` in a function's text."""
    out = {}
    for decl in _LOCALS.findall(body):
        for part in _split(decl):
            name, _, init = part.partition("=")
            out[name.strip()] = _substitute(init.strip(), out)  # may use the locals before it
    return out


def _substitute(arg: str, local: dict) -> str:
    return re.sub(r"(?<![\w.])(\w+)\b(?!\s*\()", lambda m: f"({local[m.group(1)]})" if m.group(1) in local else m.group(0),
                  arg)


def _size_value(arg: str, shapes: dict, dims: dict):
    """The value of a size expression with each ``t.size(j)`` set from t's declared shape, or
    None if it names a tensor without one or anything else."""
    def size(m):
        shape = shapes.get(m.group(1))
        j = int(m.group(2))
        if not shape or j >= len(shape):
            raise KeyError(m.group(0))
        return str(_eval(re.sub(r"(\d)([a-zA-Z])", r"\1*\2", shape[j]), dims))
    try:
        return _eval(re.sub(r"(\w+)\.size\((\d+)\)", size, arg), {})
    except (KeyError, SyntaxError, ZeroDivisionError):
        return None


def _eval(expr: str, dims: dict) -> int:
    expr = re.sub(r"[A-Za-z_]\w*", lambda m: str(dims[m.group(0)]), expr)  # KeyError if not a dim
    if not re.fullmatch(r"[\d\s+\-*/()]+", expr):
        raise SyntaxError(expr)
    return eval(expr.replace("/", "//"))  # integers and + - * / ( ) only, as in C++


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
        shapes = {_TENSOR.get(name, name): shape for _, name, shape in params if shape}
        # Distinct, far-apart values of the dims, so a wrong axis or dim gives another value.
        names = [n for _, n, _ in params if re.fullmatch(r"[A-Za-z_]\w*", n)]
        dims = {n: 1009 * (i + 2) ** 2 for i, n in enumerate(names)}
        for i, ((ptype, pname, _), arg) in enumerate(zip(params, args)):
            where = f"{launcher} argument {i + 1} ({arg}) for parameter {pname}"
            if ptype == "const long*" and pname == "labels":
                if arg != "labels_of(y)":
                    bad.append(f"{where}: expected labels_of(y)")
            elif ptype.endswith("*"):
                m = re.fullmatch(r"ptr<\w+>\((\w+)\)", arg)
                if not m or m.group(1) != _TENSOR.get(pname, pname):
                    bad.append(f"{where}: expected ptr<…>({_TENSOR.get(pname, pname)})")
            elif ptype == "long":
                if _size_value(arg, shapes, dims) != dims[pname]:
                    bad.append(f"{where}: expected sizes of the declared shapes that give {pname}")
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
