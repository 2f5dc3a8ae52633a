"""`envsync export --format k8s`: the files a user builds a kernel image and a kernelspec from,
checked by the tools that read them.

- The Containerfile is parsed by BuildKit's own parser (the `dockerfile` package), linted by
  hadolint, and the shell lines of its env stage are run here with uv (paths moved under a
  temporary folder) against the hashed requirements.txt beside it.
- The kernelspec is compared with what gateway_provisioners' `jupyter k8s-spec install` writes;
  the real KubernetesProvisioner prepares a start from it and gateway_provisioners' launch
  script renders the kernel pod, which the official `kubernetes` client reads as a V1Pod.
No container engine runs here (the docker CLI has no daemon): no image is built.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import dockerfile
import pytest
import yaml
from kubernetes.client import ApiClient, V1Pod

from envsync.settings import Settings
from tests.manifests import edit_manifest, refresh_fingerprint
from tests.support.cli import envsync

BIN = Path(sys.executable).parent
KERNEL = "envsync-analysis"
FILES = {
    "Containerfile",
    "requirements.txt",
    "launcher-requirements.txt",
    f"kernels/{KERNEL}/kernel.json",
    "README.md",
}


def fingerprint(nb: Path) -> str:
    value: str = json.loads(nb.read_text())["metadata"]["envsync"]["lock"]["tool"]["envsync"]["fingerprint"]
    return value


def tool_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("UV_", "ENVSYNC_")) and k not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    if "UV_CACHE_DIR" in os.environ:
        env["UV_CACHE_DIR"] = os.environ["UV_CACHE_DIR"]
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def stages(path: Path) -> dict[str, list[dockerfile.Command]]:
    """Instructions per build stage, as BuildKit's parser reads them (the last stage is "final")."""
    out: dict[str, list[dockerfile.Command]] = {}
    current: list[dockerfile.Command] = []
    for c in dockerfile.parse_file(str(path)):
        if c.cmd == "FROM":
            current = []
            out[c.value[2] if len(c.value) == 3 else "final"] = current
        current.append(c)
    return out


def one(commands: list[dockerfile.Command], name: str) -> dockerfile.Command:
    found = [c for c in commands if c.cmd == name]
    assert len(found) == 1, [c.original for c in found]
    return found[0]


@pytest.fixture
def nb_locked(tmp_path: Path, locked_template: Path, settings: Settings) -> Path:
    path = tmp_path / "analysis.ipynb"
    shutil.copyfile(locked_template, path)
    return path


@pytest.fixture
def exported(nb_locked: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "k8s"
    r = envsync(capsys, "export", nb_locked, "--format", "k8s", "-o", out)
    assert r.code == 0, r.err
    return out


def test_export_prints_each_written_file_and_the_build_step_with_the_fingerprint_tag(
    nb_locked: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "k8s"
    r = envsync(capsys, "export", nb_locked, "--format", "k8s", "-o", out)
    assert r.code == 0, r.err
    tag = f"{KERNEL}:{fingerprint(nb_locked).removeprefix('sha256:')[:16]}"
    lines = r.err.splitlines()
    assert sorted(lines[:-1]) == sorted(f"wrote {out / name}" for name in FILES)
    assert lines[-1] == (
        f"next: docker build -t {tag} -f {out / 'Containerfile'} {out}, push it, "
        f"and install the kernelspec where Kernel Gateway runs ({out / 'README.md'})"
    )
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == FILES
    assert r.out == ""
    assert f"docker build -t {tag} -f Containerfile ." in (out / "README.md").read_text()


def test_requirements_txt_is_the_hashed_linux_export_and_uv_installs_it_as_the_containerfile_says(
    exported: Path, nb_locked: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = envsync(capsys, "export", nb_locked, "--format", "requirements", "--environment", "linux-x86_64")
    req = (exported / "requirements.txt").read_text()
    assert req == r.out
    for name, version in (("alpha", "2.0.0"), ("comm", "0.2.0"), ("ipykernel", "6.0.0")):
        assert re.search(
            rf"^{name}=={re.escape(version)} \\\n    --hash=sha256:[0-9a-f]{{64}}$", req, re.M
        ), name
    # The env stage's shell lines, run with this uv (the one the Containerfile pins) and paths under tmp_path.
    root = tmp_path / "image"
    run = one(stages(exported / "Containerfile")["env"][3:], "RUN").value[0]
    steps = [s.strip() for s in run.split(" && ") if "launcher-requirements" not in s]  # that one needs PyPI
    for step in steps:
        step = (
            step.replace("/usr/local/bin/python3.11", sys.executable)
            .replace("/opt/envsync", str(root / "opt/envsync"))
            .replace("/tmp/envsync/", f"{exported}/")
        )
        res = subprocess.run(["sh", "-c", step], capture_output=True, text=True, env=tool_env(), timeout=300)
        assert res.returncode == 0, f"{step}\n{res.stderr}"
    python = root / "opt/envsync/env/bin/python"
    res = subprocess.run(
        [
            str(python),
            "-c",
            "import alpha, comm, ipykernel; print(alpha.__version__, comm.__version__, ipykernel.__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert res.stdout.split() == ["2.0.0", "0.2.0", "6.0.0"]


def test_containerfile_as_buildkit_reads_it(exported: Path, nb_locked: Path) -> None:
    path = exported / "Containerfile"
    fp = fingerprint(nb_locked)
    tag = f"{KERNEL}:{fp.removeprefix('sha256:')[:16]}"
    st = stages(path)
    assert list(st) == ["launchers", "env", "final"]
    assert {c.value[0] for s in st.values() for c in s if c.cmd == "FROM"} == {"python:3.11-slim"}
    assert f"# Tag: {tag}" in path.read_text()
    launchers = one(st["launchers"], "RUN").value[0]
    assert f"gateway_provisioners=={importlib.metadata.version('gateway_provisioners')} " in launchers
    assert "jupyter-image-bootstrap install --languages Python" in launchers
    env = [c for c in st["env"] if c.cmd in ("RUN", "COPY")]
    assert env[0].value[0] == f"python -m pip install --no-cache-dir uv=={importlib.metadata.version('uv')}"
    assert env[1].value == ("requirements.txt", "launcher-requirements.txt", "/tmp/envsync/")
    assert all((exported / src).is_file() for src in env[1].value[:-1])
    assert "uv pip sync --no-config --no-python-downloads --require-hashes" in env[2].value[0]
    final = st["final"]
    labels = dict(
        zip(
            one(final, "LABEL").value[::2],
            (v.strip('"') for v in one(final, "LABEL").value[1::2]),
            strict=True,
        )
    )
    assert labels["io.envsync.fingerprint"] == fp
    assert labels["org.opencontainers.image.version"] == tag.split(":")[1]
    assert labels["org.opencontainers.image.title"] == KERNEL
    user = one(final, "USER").value[0]
    uid, gid = (int(x) for x in user.split(":"))  # numeric, so a runAsNonRoot pod can check it
    assert uid != 0 and gid != 0
    assert final.index(one(final, "USER")) > max(i for i, c in enumerate(final) if c.cmd == "RUN")
    cmd = one(final, "CMD")
    assert cmd.json
    assert cmd.value[-1] == "/usr/local/bin/bootstrap-kernel.sh"
    assert (
        "PATH=/opt/envsync/env/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in cmd.value
    )
    assert "PYTHONPATH=/opt/envsync/launcher" in cmd.value
    assert (exported / "launcher-requirements.txt").read_text().splitlines()[1:] == [
        "pycryptodomex==3.24.2 \\",
        "    --hash=sha256:e340408a601003f235b50117cd16f87b2a5b4760765aafe93340eeaadeb0414d",
    ]


def test_hadolint_finds_nothing_in_the_containerfile(exported: Path) -> None:
    res = subprocess.run(
        [str(BIN / "hadolint"), "--format", "json", str(exported / "Containerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(res.stdout) == [], res.stdout
    assert res.returncode == 0


def test_jupyter_image_bootstrap_writes_what_the_containerfile_copies_and_runs(
    exported: Path, tmp_path: Path
) -> None:
    st = stages(exported / "Containerfile")
    run = one(st["launchers"], "RUN").value[0]
    args = re.search(r"jupyter-image-bootstrap (install[^&]*)", run)
    assert args
    # gateway_provisioners' own installer, with its fixed /usr/local/bin moved under tmp_path.
    local = tmp_path / "usr-local-bin"
    local.mkdir()
    code = (
        "import sys; from gateway_provisioners.cli import image_bootstrapapp as m; m.BOOTSTRAP_DIR = sys.argv[1]; "
        "m.ImageBootstrapApp.launch_instance(sys.argv[2:])"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(local), *args.group(1).split()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    for c in st["final"]:
        if c.cmd == "COPY" and "--from=launchers" in c.flags:
            assert Path(c.value[0].replace("/usr/local/bin", str(local))).exists(), c.original
    assert (local / "kernel-launchers/python/scripts/launch_ipykernel.py").is_file()
    bootstrap = (local / "bootstrap-kernel.sh").read_text()
    assert bootstrap.startswith("#!/bin/bash\n")
    assert f"KERNEL_LAUNCHERS_DIR=${{KERNEL_LAUNCHERS_DIR:-{local}/kernel-launchers}}" in bootstrap


def test_kernelspec_is_the_one_jupyter_k8s_spec_install_writes_plus_envsync_metadata(
    exported: Path, nb_locked: Path, tmp_path: Path, settings: Settings
) -> None:
    text = (exported / "kernels" / KERNEL / "kernel.json").read_text()
    ours = json.loads(text)
    image = ours["metadata"]["kernel_provisioner"]["config"]["image_name"]
    assert image == f"{KERNEL}:{fingerprint(nb_locked).removeprefix('sha256:')[:16]}"
    provisioners = {
        ep.name for ep in importlib.metadata.entry_points(group="jupyter_client.kernel_provisioners")
    }
    assert ours["metadata"]["kernel_provisioner"]["provisioner_name"] in provisioners
    assert ours["metadata"]["envsync"] == {
        "fingerprint": fingerprint(nb_locked),
        "project": "analysis",
        "notebook": "analysis.ipynb",
        "image": image,
    }
    for local in (str(tmp_path), str(settings.home), sys.prefix, str(Path.home())):
        assert local not in text
    theirs = installed_kernelspec(tmp_path / "prefix", image, ours["display_name"])
    kernels = tmp_path / "prefix/share/jupyter/kernels"
    assert theirs.pop("argv") == [
        *ours["argv"][:1],
        ours["argv"][1].replace("/usr/local/share/jupyter/kernels", str(kernels)),
        *ours["argv"][2:],
    ]
    assert ours.pop("argv")[1] == f"/usr/local/share/jupyter/kernels/{KERNEL}/scripts/launch_kubernetes.py"
    theirs.pop("kernel_protocol_version")
    del ours["metadata"]["envsync"]
    assert theirs["metadata"]["kernel_provisioner"]["config"].pop("launch_timeout") == 30
    assert ours["metadata"]["kernel_provisioner"]["config"].pop("launch_timeout") == 120
    assert ours == theirs


def installed_kernelspec(prefix: Path, image: str, display_name: str) -> dict[str, Any]:
    """What gateway_provisioners' `jupyter k8s-spec install` writes (with its launch script) under `prefix`."""
    subprocess.run(
        [
            str(BIN / "jupyter-k8s-spec"),
            "install",
            f"--prefix={prefix}",
            f"--kernel-name={KERNEL}",
            f"--image-name={image}",
            f"--display-name={display_name}",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    value: dict[str, Any] = json.loads((prefix / f"share/jupyter/kernels/{KERNEL}/kernel.json").read_text())
    return value


# Run in a child: gateway_provisioners reads GP_* at import, and its response manager is a singleton.
PRE_START = """
import asyncio, json, sys
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

async def main():
    km = AsyncKernelManager(kernel_name=sys.argv[2], kernel_spec_manager=KernelSpecManager(kernel_dirs=[sys.argv[1]]))
    cmd, kw = await km.pre_start_kernel(env={"PATH": sys.argv[3], "KERNEL_USERNAME": "alice"})
    print(json.dumps({"cmd": cmd, "env": kw["env"], "provisioner": type(km.provisioner).__name__}))

asyncio.run(main())
"""

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: none, user: {token: unused}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_the_kubernetes_provisioner_and_its_launch_script_make_a_valid_pod_of_the_image(
    exported: Path, tmp_path: Path
) -> None:
    ours = json.loads((exported / "kernels" / KERNEL / "kernel.json").read_text())
    image = ours["metadata"]["kernel_provisioner"]["config"]["image_name"]
    installed_kernelspec(tmp_path / "prefix", image, ours["display_name"])
    kernels = tmp_path / "prefix/share/jupyter/kernels"
    # Installed as README.md says (with the kernelspec's folder under tmp_path instead of /usr/local/share).
    ours["argv"][1] = str(kernels / KERNEL / "scripts/launch_kubernetes.py")
    (kernels / KERNEL / "kernel.json").write_text(json.dumps(ours))
    env = tool_env(GP_RESPONSE_IP="127.0.0.1", GP_RESPONSE_PORT=str(free_port()), PYTEST_CURRENT_TEST="1")
    res = subprocess.run(
        [sys.executable, "-c", PRE_START, str(kernels), KERNEL, env["PATH"]],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    start = json.loads(res.stdout)
    assert start["provisioner"] == "KubernetesProvisioner"
    assert start["cmd"][:2] == ["python", ours["argv"][1]]
    assert not [a for a in start["cmd"] if re.fullmatch(r"\{\w+\}", a)]  # every field filled in
    # The launch script as the provisioner runs it; --pod-template renders the pod without a cluster.
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    pod_file = tmp_path / "pod.yaml"
    launch_env = {**start["env"], "KUBECONFIG": str(tmp_path / "kubeconfig")}
    res = subprocess.run(
        [*start["cmd"], "--pod-template", str(pod_file)],
        capture_output=True,
        text=True,
        env=launch_env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    # The client's models check each field's type and the required ones (client-side validation).
    pod = ApiClient().deserialize(
        json.dumps(yaml.safe_load(pod_file.read_text())), "V1Pod", "application/json"
    )
    assert isinstance(pod, V1Pod)
    assert pod.kind == "Pod" and pod.spec.restart_policy == "Never"
    (container,) = pod.spec.containers
    assert container.image == image
    user = one(stages(exported / "Containerfile")["final"], "USER").value[0]
    assert f"{pod.spec.security_context.run_as_user}:{pod.spec.security_context.run_as_group}" == user
    # No command or args: the image's CMD starts the kernel, so it must reset what the pod's env overrides.
    assert container.command is None and container.args is None
    pod_env = {e.name: e.value for e in container.env}
    assert pod_env["PATH"] == env["PATH"]  # Kernel Gateway's PATH, not the image's
    assert pod_env["KERNEL_LANGUAGE"] == "python"
    assert {"KERNEL_ID", "RESPONSE_ADDRESS", "PUBLIC_KEY"} <= set(pod_env)


def test_registry_goes_into_the_tag_the_containerfile_and_the_kernelspec(
    nb_locked: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "k8s"
    r = envsync(
        capsys,
        "export",
        nb_locked,
        "--format",
        "k8s",
        "-o",
        out,
        "--registry",
        "registry.example.com:5000/team",
    )
    assert r.code == 0, r.err
    image = f"registry.example.com:5000/team/{KERNEL}:{fingerprint(nb_locked).removeprefix('sha256:')[:16]}"
    assert (
        json.loads((out / "kernels" / KERNEL / "kernel.json").read_text())["metadata"]["kernel_provisioner"][
            "config"
        ]["image_name"]
        == image
    )
    assert f"# Tag: {image}" in (out / "Containerfile").read_text()
    assert f"-t {image} " in r.err.splitlines()[-1]


def drop_ipykernel(manifest: dict[str, Any]) -> None:
    manifest["lock"]["packages"] = [
        p for p in manifest["lock"]["packages"] if p["name"] not in ("ipykernel", "comm")
    ]
    refresh_fingerprint(manifest)


@pytest.mark.parametrize(
    ("case", "argv", "code", "error"),
    [
        (
            "no -o",
            [],
            2,
            "--format k8s writes a Containerfile, requirements and a kernelspec: name their folder with -o DIR",
        ),
        (
            "registry elsewhere",
            ["--format", "binder", "--registry", "ghcr.io/acme", "-o", "{out}"],
            2,
            "--registry applies to --format k8s only",
        ),
        (
            "bad registry",
            ["-o", "{out}", "--registry", "https://ghcr.io"],
            2,
            "--registry 'https://ghcr.io' is not a registry host with an optional path",
        ),
        ("no lock", ["-o", "{out}"], 3, "{nb} has no lock yet"),
        (
            "no ipykernel",
            ["-o", "{out}"],
            1,
            "the lock has no ipykernel for linux-x86_64 with Python 3.11: gateway_provisioners' launcher starts "
            "the kernel from the image's env, so the lock must carry it",
        ),
    ],
)
def test_refusals_say_why_and_write_nothing(
    nb_locked: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    argv: list[str],
    code: int,
    error: str,
) -> None:
    out = tmp_path / "k8s"
    if case == "no lock":
        edit_manifest(nb_locked, lambda m: m.pop("lock"))
    if case == "no ipykernel":
        edit_manifest(nb_locked, drop_ipykernel)
    fmt = [] if "--format" in argv else ["--format", "k8s"]
    r = envsync(capsys, "export", nb_locked, *fmt, *(a.format(out=out) for a in argv))
    assert r.code == code
    assert r.errors == ["ERROR " + error.format(nb=nb_locked)]
    assert not out.exists()


def test_a_lock_without_linux_x86_64_is_refused(
    tmp_path: Path, settings: Settings, local_index: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    nb = tmp_path / "mac.ipynb"
    r = envsync(
        capsys,
        "init",
        nb,
        "alpha",
        "--index",
        local_index.url,
        "--python",
        "3.11",
        "--environment",
        "macos-arm64",
    )
    assert r.code == 0, r.err
    r = envsync(capsys, "export", nb, "--format", "k8s", "-o", tmp_path / "k8s")
    assert r.code == 1
    assert r.errors == [
        "ERROR the lock does not cover linux-x86_64, the platform the kernel image is built for"
    ]
    assert "hint: covered: macos-arm64" in r.err
    assert not (tmp_path / "k8s").exists()


def test_output_that_is_a_file_is_refused(
    nb_locked: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "k8s"
    target.write_text("mine\n")
    r = envsync(capsys, "export", nb_locked, "--format", "k8s", "-o", target)
    assert r.code == 2
    assert r.errors == [f"ERROR -o {target} is a file: --format k8s writes into a folder"]
    assert target.read_text() == "mine\n"


def test_a_lock_below_python_3_10_builds_on_the_lowest_python_gateway_provisioners_runs_on(
    tmp_path: Path, settings: Settings, local_index: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    nb = tmp_path / "wide.ipynb"
    assert envsync(capsys, "init", nb, "alpha", "--index", local_index.url, "--python", ">=3.9").code == 0
    r = envsync(capsys, "export", nb, "--format", "k8s", "-o", tmp_path / "k8s")
    assert r.code == 0, r.err
    assert (
        "note: the image runs Python 3.10, not 3.9 (the lowest the lock covers): "
        "gateway_provisioners 0.5.0 needs 3.10 or later"
    ) in r.err.splitlines()
    assert {
        c.value[0] for c in dockerfile.parse_file(str(tmp_path / "k8s/Containerfile")) if c.cmd == "FROM"
    } == {"python:3.10-slim"}
    assert "# for linux-x86_64, CPython 3.10\n" in (tmp_path / "k8s/requirements.txt").read_text()
    nb2 = tmp_path / "old.ipynb"
    assert envsync(capsys, "init", nb2, "alpha", "--index", local_index.url, "--python", "3.9").code == 0
    r = envsync(capsys, "export", nb2, "--format", "k8s", "-o", tmp_path / "old")
    assert r.code == 1
    assert r.errors == [
        "ERROR the lock covers Python 3.9 only: gateway_provisioners 0.5.0, whose kernel launcher "
        "runs in the image, needs Python 3.10 or later"
    ]
    assert not (tmp_path / "old").exists()


# What the pod's container does, here without a container engine: the Containerfile's CMD with the
# pod's environment, answered by the provisioner that prepared the start (one child, one response manager).
POD = """
import asyncio, json, os, signal, subprocess, sys, time
import yaml
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

kernels, name, path, kubeconfig, pod_yaml, image_env, image_cmd, log = sys.argv[1:9]

async def main():
    km = AsyncKernelManager(kernel_name=name, kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernels]))
    cmd, kw = await km.pre_start_kernel(env={"PATH": path, "KERNEL_USERNAME": "alice"})
    launch = subprocess.run([*cmd, "--pod-template", pod_yaml], env={**kw["env"], "KUBECONFIG": kubeconfig},
                            capture_output=True, text=True, timeout=120)
    assert launch.returncode == 0, launch.stderr
    pod = yaml.safe_load(open(pod_yaml))
    env = {**json.loads(image_env), **{e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}}
    with open(log, "w") as out:
        container = subprocess.Popen(json.loads(image_cmd), env=env, stdout=out, stderr=out, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                info = await km.provisioner.response_manager.get_connection_info(km.kernel_id)
                break
            except asyncio.TimeoutError:
                assert container.poll() is None and time.monotonic() < deadline, "no connection info"
        client = BlockingKernelClient()
        client.load_connection_info({**info, "ip": "127.0.0.1"})
        client.start_channels()
        client.wait_for_ready(timeout=60)
        lines = []
        def hook(msg):
            if msg["msg_type"] == "stream":
                lines.extend(msg["content"]["text"].splitlines())
        code = "import sys, Cryptodome, ipykernel; print(sys.prefix); print(Cryptodome.__file__); print(ipykernel.__file__)"
        reply = client.execute_interactive(code, timeout=60, output_hook=hook)
        client.stop_channels()
        print(json.dumps({"status": reply["content"]["status"], "lines": lines}))
    finally:
        os.killpg(container.pid, signal.SIGKILL)
        container.wait(30)

asyncio.run(main())
"""


@pytest.mark.network
@pytest.mark.slow
def test_the_images_cmd_with_the_pods_env_starts_a_kernel_that_answers_the_provisioner(
    public: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The image's files laid out under tmp_path as the Containerfile builds them, from PyPI with hashes."""
    nb = public / "analysis.ipynb"
    assert envsync(capsys, "init", nb, "--python", "3.11").code == 0
    out = tmp_path / "k8s"
    assert envsync(capsys, "export", nb, "--format", "k8s", "-o", out).code == 0
    st = stages(out / "Containerfile")
    root = tmp_path / "image"
    local = root / "usr-local-bin"
    local.mkdir(parents=True)
    home = root / "home-jovyan"
    home.mkdir()

    def moved(text: str) -> str:
        return (
            text.replace("/usr/local/bin/python3.11", sys.executable)
            .replace("/opt/envsync", str(root / "opt/envsync"))
            .replace("/tmp/envsync/", f"{out}/")
            .replace("/usr/local/bin/bootstrap-kernel.sh", str(local / "bootstrap-kernel.sh"))
            .replace("/home/jovyan", str(home))
        )

    # env stage: every shell step, the launcher's pycryptodomex included.
    for step in one(st["env"][3:], "RUN").value[0].split(" && "):
        res = subprocess.run(
            ["sh", "-c", moved(step.strip())], capture_output=True, text=True, env=tool_env(), timeout=600
        )
        assert res.returncode == 0, f"{step}\n{res.stderr}"
    # launchers stage: gateway_provisioners' installer, its /usr/local/bin moved.
    args = re.search(r"jupyter-image-bootstrap (install[^&]*)", one(st["launchers"], "RUN").value[0])
    assert args
    code = (
        "import sys; from gateway_provisioners.cli import image_bootstrapapp as m; m.BOOTSTRAP_DIR = sys.argv[1]; "
        "m.ImageBootstrapApp.launch_instance(sys.argv[2:])"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(local), *args.group(1).split()],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (local / "bootstrap-kernel.sh").chmod(0o755)
    # The kernelspec installed as README.md says, with its folder under tmp_path.
    ours = json.loads((out / "kernels" / KERNEL / "kernel.json").read_text())
    installed_kernelspec(
        tmp_path / "prefix",
        ours["metadata"]["kernel_provisioner"]["config"]["image_name"],
        ours["display_name"],
    )
    kernels = tmp_path / "prefix/share/jupyter/kernels"
    ours["argv"][1] = str(kernels / KERNEL / "scripts/launch_kubernetes.py")
    (kernels / KERNEL / "kernel.json").write_text(json.dumps(ours))
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    final = st["final"]
    image_env = {
        "PATH": moved(one(final, "ENV").value[1]).replace("$PATH", "/usr/local/bin:/usr/bin:/bin"),
        "KERNEL_LANGUAGE": "python",
    }
    image_cmd = [moved(a) for a in one(final, "CMD").value]
    env = tool_env(GP_RESPONSE_IP="127.0.0.1", GP_RESPONSE_PORT=str(free_port()), PYTEST_CURRENT_TEST="1")
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            POD,
            str(kernels),
            KERNEL,
            env["PATH"],
            str(tmp_path / "kubeconfig"),
            str(tmp_path / "pod.yaml"),
            json.dumps(image_env),
            json.dumps(image_cmd),
            str(tmp_path / "container.log"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
    )
    log = (tmp_path / "container.log").read_text() if (tmp_path / "container.log").exists() else ""
    assert res.returncode == 0, f"{res.stderr}\n--- container:\n{log}"
    result = json.loads(res.stdout.splitlines()[-1])
    assert result["status"] == "ok"
    prefix, cryptodome, ipykernel = result["lines"]
    assert prefix == str(root / "opt/envsync/env")
    assert cryptodome.startswith(str(root / "opt/envsync/launcher") + "/")
    assert ipykernel.startswith(str(root / "opt/envsync/env") + "/")
