"""The CUDA row kernels run on the emulator (tests/cuda_emu, see csrc/README.md): every
launcher against the CPU formulas in two schedule orders, register.cpp's launcher arguments
against row_kernels.cuh, and each planted device bug caught by its check. Needs g++ only."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "cuda_emu"))
import build  # noqa: E402
import check_launch_args  # noqa: E402
import plant  # noqa: E402

pytestmark = pytest.mark.skipif(build.compiler() is None, reason="g++ not found: the emulated CUDA kernels need it")


@pytest.fixture(scope="session")
def emulated(tmp_path_factory):
    """The driver built from csrc/ as it is: (binary, the driver's object for the plants)."""
    out = tmp_path_factory.mktemp("cuda_emu")
    driver_obj = build.compile_driver(out / "driver")
    return build.build(out / "build", driver_obj=driver_obj), driver_obj


def test_emulated_kernels_match_the_cpu(emulated):
    out = plant.run_driver(emulated[0])
    assert out.returncode == 0, out.output[-6000:]
    assert " 0 failing" in out.output


def test_register_cpp_passes_the_launchers_arguments_in_order():
    decls = check_launch_args.declarations((build.CSRC / "cuda" / "row_kernels.cuh").read_text())
    found = check_launch_args.calls((build.CSRC / "cuda" / "register.cpp").read_text())
    assert len(found) == len(decls) >= 7
    assert check_launch_args.mismatches(decls, found) == []
    swapped = [(n, [a[1], a[0], *a[2:]]) if n == "launch_loss_grad" else (n, a) for n, a in found]
    assert any("expected ptr<…>(f)" in m for m in check_launch_args.mismatches(decls, swapped))


def test_launch_args_checker_resolves_locals_and_labels():
    """Sizes passed as locals (``const long b = …, k = …;``) are checked through their
    initialisers, and class indices must be ``labels_of(y)``: a swap in either is reported."""
    decls = check_launch_args.declarations((build.CSRC / "cuda" / "row_kernels.cuh").read_text())
    src = (build.CSRC / "cuda" / "register.cpp").read_text()
    for old, new, says in [("const long b = f.size(0), k = f.size(1);", "const long b = f.size(1), k = f.size(0);",
                            "launch_vjp_scalars argument 9 ((f.size(1))) for parameter b"),
                           ("k = xwp.size(1) / 2", "k = xwp.size(1)", "launch_val_rows argument 5"),
                           ("launch_val_rows_labels<T>(ptr<T>(xwp), labels_of(y)",
                            "launch_val_rows_labels<T>(ptr<T>(xwp), labels_of(xwp)", "expected labels_of(y)")]:
        assert old in src
        bad = check_launch_args.mismatches(decls, check_launch_args.calls(src.replace(old, new)))
        assert any(says in m for m in bad), bad


def test_launch_rewrite():
    src = "if (b) k<T><<<grid_for(b), 256, 0, (s)>>>(x, f(y, z));\nq<<<1, 2>>>();"
    assert build.rewrite_launches(src) == ("if (b) emu::launch(emu::config(grid_for(b), 256, 0, (s)), k<T>, x, f(y, z));"
                                           "\nemu::launch(emu::config(1, 2), q);")


@pytest.mark.parametrize("bug", plant.PLANTS, ids=[p.name.replace(" ", "-") for p in plant.PLANTS])
def test_planted_bug_is_caught(emulated, bug, tmp_path):
    out = plant.check_plant(bug, tmp_path, emulated[1])
    assert plant.caught_by(bug, out), f"expected [{bug.check}] {bug.says!r}, got {sorted(out.failed_checks)}:\n" + \
        out.output[-4000:]
