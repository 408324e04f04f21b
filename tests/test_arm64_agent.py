"""The Pis' architecture in CI: the agent from the linux_aarch64 wheelhouse, installed as the
Ansible role installs it, runs on arm64 (qemu-user) and answers as on x86.

Why: every Pi is arm64 (Raspberry Pi OS bookworm 64-bit) and the aarch64 wheels
(tflite-runtime, numpy, Pillow, grpcio, Flower's deps) were only ever downloaded. Here a
Debian bookworm arm64 chroot (tests/arm64/rootfs.py, cached) gets a venv made by Debian's
python3 and every wheel of the folder pinned, offline (tests/arm64/agent_install.py); then
the same argv runs there and in the x86 agent venv: `fed-agent validate-config`, the fedapp
ClientApp serving a real artifacts message and a real train message on the shared photos
(tests/agent_serve_train.py), and `fed-agent predict --json` with a real int8 champion
(registered from the head x86 trained, installed by the agent's ModelStore), and the same
predictions with ai-edge-litert (the second TFLite backend, added to the arm64 venv from its
own wheelhouse and picked with FED_TFLITE_BACKEND; x86 runs .venv-agent-litert). Each arm64
side must agree with x86 on the same backend within the tolerances below; the side-by-side
table goes to the test output and to test-artifacts/arm64.txt. Emulated timings say nothing
about a real Pi's speed.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import time

import numpy as np
import pytest

from agent_harness import token_file, write_config
from arm64 import rootfs
from arm64.agent_install import VENV, add_interpreter, build_wheelhouse, install_agent
from arm64.chroot import arm64_chroot, missing_prerequisites, run_in
from arm64.report import comparison
from arm64.sides import Side, predict, serve_train
from champion_harness import SERVER_TEST, install_on_agent, register_champion
from conftest import AGENT_BACKENDS, REPO, SHARED, free_port, needs_shared

MISSING = missing_prerequisites()
pytestmark = [needs_shared, pytest.mark.skipif(
    not all((d / "python").exists() for d in AGENT_BACKENDS.values()),
    reason="needs both agent venvs (.venv-agent, .venv-agent-litert: made by `make test`)"),
              pytest.mark.skipif(MISSING is not None, reason=f"arm64 under qemu-user: {MISSING}")]

# Measured (the table): after 2 epochs (same seed, same photos) the trained head differs by at
# most 4.5e-08 between arm64 and x86 (float rounding in the XNNPACK kernels); 1e-5 is ~200x that.
WEIGHTS_ATOL = 1e-5
# (score atol, the x86 score from which the labels must be the same) per model kind. Measured:
# float32 scores are identical (to the 4 decimals predict prints); int8 scores differ by up to
# 0.035 (a step or two of the int8 output, widened by the calibration temperature), which
# turned one borderline photo (x86: hardhat 0.52) into a 0.50 tie on arm64: so labels must
# agree wherever x86 is at least 0.6 sure, and int8 scores within 0.05.
TOLERANCE = {"float32": (1e-4, 0.5), "int8": (0.05, 0.6)}
KINDS = ("float32", "int8")
BACKENDS = ("tflite-runtime", "ai-edge-litert")  # selected with FED_TFLITE_BACKEND (fedapp/fedapp/tflite.py)
# Measured here: the trainer's `train` signature segfaults (SIGSEGV inside the
# signature runner's __call__, right after the XNNPACK delegate is created) on arm64; the
# backbone and the int8/float32 models run. Not known whether a real Pi does the same.
LITERT_ARM64_CRASH = ("ai-edge-litert 1.4.0 aarch64 under qemu-user 7.2: the head trainer's train "
                      "signature segfaults")
ARTIFACT = REPO / "test-artifacts" / "arm64.txt"


def sides(root) -> list[Side]:
    """arm64 and x86 per backend, in the table's column order."""
    def chrooted(argv, timeout, env):
        return run_in(root, argv, timeout, env)

    def local(argv, timeout, env):
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              stdin=subprocess.DEVNULL, env=dict(os.environ, **env))

    out = []
    for backend in BACKENDS:
        out.append(Side("arm64", backend, f"{VENV}/bin/python", f"{VENV}/bin/fed-agent", chrooted))
        bin_dir = AGENT_BACKENDS[backend]
        out.append(Side("x86", backend, str(bin_dir / "python"), str(bin_dir / "fed-agent"), local))
    return out


@pytest.fixture(scope="module")
def chroot(tmp_path_factory, request):
    """The arm64 chroot with the agent installed by the role's steps from the default
    (tflite-runtime) wheelhouse, then ai-edge-litert added from its own wheelhouse. The rootfs
    (a cold one is mostly qemu-emulated dpkg, 165-250 s), the wheelhouses and the TFLite
    exports are made side by side."""
    start, took = time.monotonic(), {}

    def timed(what, make, *args):
        began = time.monotonic()
        made = make(*args)
        took[what] = time.monotonic() - began
        return made

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        lower = pool.submit(timed, "arm64 rootfs (mmdebstrap or cached)", rootfs.unpacked)
        wheels = pool.submit(lambda: {b: timed(f"aarch64 wheelhouse {b}", build_wheelhouse,
                                               rootfs.BUILD / f"wheelhouse-{b}", b) for b in BACKENDS})
        agent_artifacts = timed("TFLite exports (x86, TensorFlow)", request.getfixturevalue, "agent_artifacts")
        lower, wheels = lower.result(), wheels.result()
    took["the above, side by side"] = time.monotonic() - start
    work = tmp_path_factory.mktemp("arm64")
    binds = {work / "shared": False, agent_artifacts: True, SHARED: True, REPO / "tests": True}
    (work / "shared").mkdir()
    with arm64_chroot(lower, work / "chroot", binds) as root:
        installed = install_agent(root, wheels["tflite-runtime"])
        installed["timings"] = {**took, **installed["timings"]}
        installed["timings"]["pip install ai-edge-litert"] = add_interpreter(root, wheels["ai-edge-litert"])
        yield root, work / "shared", installed


@pytest.fixture(scope="module")
def runs(chroot, request):
    """Everything run on every side, the table printed and saved before any assertion.

    agent_artifacts through `request` (here and in `chroot`), not as a parameter: pytest sets
    up a session fixture a test names before any module fixture, so the TensorFlow export
    would run before, not beside, a cold rootfs build."""
    root, work, installed = chroot
    agent_artifacts = request.getfixturevalue("agent_artifacts")
    all_sides = sides(root)
    result = {"installed": installed, "sides": all_sides}
    no_source = work / "no-fedapp-source"  # arm64: the fedapp from the wheelhouse, not the checkout
    no_source.mkdir()
    for side in all_sides:
        result[side.name] = {}
        if side.name != "arm64 ai-edge-litert":  # crashes: test_litert_trains_on_arm64
            fedapp_dir = no_source if side.arch == "arm64" else REPO / "fedapp"
            result[side.name]["train"] = serve_train(side, work, fedapp_dir, agent_artifacts, timeout=900)
    head = result["x86 tflite-runtime"]["train"][1]
    registry, version = register_champion(work / "registry", head, ["head", "hardhat"])
    images = [str(p) for p in sorted(SERVER_TEST.glob("*/*.jpg"))]
    for kind in KINDS:
        state = work / f"state-{kind}"  # read-only to predict: one store for every side
        install_on_agent(registry, version, state, kind=kind)
        config = write_config(work / f"agent-{kind}.yaml", state, "127.0.0.1:9",
                              "http://127.0.0.1:9/api/v1/heartbeat", token_file(work), free_port())
        # float32 under emulation is slow (~1 s an image): a third of the photos for it
        shown = images if kind == "int8" else images[::3]
        for side in all_sides:
            result[side.name][kind] = predict(side, config, shown, kind, timeout=600)
    for side in all_sides[:2]:
        result[side.name]["validate"] = side.run("validate-config", [side.fed_agent, "-c", str(config),
                                                                     "validate-config"], 300)
    result["version"] = version
    report = comparison(result, KINDS, BACKENDS, f"tolerances: trained weights atol {WEIGHTS_ATOL:g}; per model "
                        f"kind (score atol, x86 score from which the label must be the same) {TOLERANCE}")
    print("\n" + report)
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(report + "\n")
    return result


def test_the_role_install_gives_an_aarch64_agent_venv(runs):
    assert runs["installed"]["machine"] == "aarch64"
    assert "tflite-runtime==2.14.0" in runs["installed"]["pins"]
    assert not any(pin.startswith("ai-edge-litert==") for pin in runs["installed"]["pins"])
    assert runs["installed"]["tensorflow"] is False


def test_validate_config_accepts_the_config_on_arm64(runs):
    proc = runs["arm64 tflite-runtime"]["validate"]
    assert proc.returncode == 0 and "valid" in proc.stdout, proc.stderr
    assert runs["x86 tflite-runtime"]["validate"].returncode == 0


def test_an_invalid_config_is_refused_on_arm64_naming_the_field(runs, chroot):
    root, work, _ = chroot
    bad = write_config(work / "bad.yaml", work / "bad-state", "127.0.0.1:9", "http://127.0.0.1:9/hb",
                       token_file(work), free_port(), heartbeat__interval="soon")
    proc = run_in(root, [f"{VENV}/bin/fed-agent", "-c", str(bad), "validate-config"], 300, {})
    assert proc.returncode == 78 and "interval" in proc.stderr, proc.stderr


@pytest.mark.parametrize("backend", ["tflite-runtime"])
def test_clientapp_trains_on_arm64_as_on_x86(runs, backend):
    (arm, arm_w, arm_err), (x86, x86_w, _) = runs[f"arm64 {backend}"]["train"], runs[f"x86 {backend}"]["train"]
    assert arm["interpreter"].startswith(backend) and x86["interpreter"].startswith(backend)
    assert arm["tensorflow_loaded"] is False and arm["missing_after_ship"] == ""
    assert arm["shapes"] == x86["shapes"] == [[1280, 128], [128], [128, 2], [2]] and arm["changed"]
    timing = {"embed-seconds", "train-seconds", "train-loss"}
    assert {k: v for k, v in arm["metrics"].items() if k not in timing} == \
        {k: v for k, v in x86["metrics"].items() if k not in timing}
    assert arm["metrics"]["train-loss"] == pytest.approx(x86["metrics"]["train-loss"], rel=1e-5)
    assert arm["metrics"]["skipped-files"] == 2
    assert '"event": "image_skipped"' in arm_err and "broken.jpg" in arm_err
    for a, b in zip(arm_w, x86_w):
        np.testing.assert_allclose(a, b, rtol=0, atol=WEIGHTS_ATOL)


# Training with ai-edge-litert runs on x86 (.venv-agent-litert) for the table: its weights are
# the x86 reference once the arm64 crash below is gone.
@pytest.mark.xfail(strict=True, raises=AssertionError, reason=LITERT_ARM64_CRASH)
def test_litert_trains_on_arm64(chroot, agent_artifacts):
    root, _, _ = chroot
    code = ("import sys, numpy as np; from fedapp.head import HeadTrainer, init_head; "
            "t = HeadTrainer(sys.argv[1]); t.set_weights(init_head(0)); "
            "x = np.random.default_rng(0).normal(size=(8, 1280)).astype(np.float32); "
            "print(t.fit(x, np.array([0, 1] * 4), epochs=1, batch_size=8, lr=0.01, momentum=0.9, seed=0))")
    proc = run_in(root, [f"{VENV}/bin/python", "-X", "faulthandler", "-c", code,
                         str(agent_artifacts / "trainer.tflite")], 600, {"FED_TFLITE_BACKEND": "ai-edge-litert"})
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_predictions_on_arm64_match_x86(runs, backend, kind):
    arm, x86 = runs[f"arm64 {backend}"][kind], runs[f"x86 {backend}"][kind]
    assert arm["interpreter"].startswith(backend) and x86["interpreter"].startswith(backend)
    assert arm["model_version"] == x86["model_version"] == runs["version"]
    assert [p["image"] for p in arm["predictions"]] == [p["image"] for p in x86["predictions"]]
    assert len(arm["predictions"]) == (27 if kind == "int8" else 9)
    score_atol, clear = TOLERANCE[kind]
    for a, b in zip(arm["predictions"], x86["predictions"]):
        assert abs(a["score"] - b["score"]) <= score_atol, (a, b)
        if b["score"] >= clear:  # a clear decision on x86 is the same decision on arm64
            assert a["label"] == b["label"], (a, b)
