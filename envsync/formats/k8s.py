"""A kernel image and kernelspec for gateway_provisioners' KubernetesProvisioner (a pod a kernel).

`export --format k8s -o DIR` writes a Containerfile that builds the lock's linux-x86_64 env
with uv and --require-hashes, the hashed requirements.txt it installs, the kernelspec that
Kernel Gateway (with gateway_provisioners) starts the image's pods from, and a README.

The image follows what gateway_provisioners asks of a kernel image (docs: "Custom Kernel
Images"): its `bootstrap-kernel.sh` as CMD, its Python kernel launcher beside it, and a
Python on PATH that imports ipykernel (the lock's) and Cryptodome (the launcher's). The
kernelspec is the one `jupyter k8s-spec install` writes, plus envsync's metadata.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from packaging.version import Version

from envsync import rules
from envsync.errors import EnvsyncError, LockError, UsageError
from envsync.formats.requirements import export_requirements
from envsync.lock.model import Lock, packages_for
from envsync.lock.targets import TARGETS, marker_environment, pythons_in_range
from envsync.uv import SHARED_FLAGS

TARGET = "linux-x86_64"
PROVISIONER = "kubernetes-provisioner"
# gateway_provisioners' version: its launcher runs in the pod and must speak the same
# protocol as the provisioner in Kernel Gateway, so both sides use this one.
GATEWAY_PROVISIONERS = "0.5.0"
MIN_PYTHON = "3.10"  # gateway_provisioners 0.5.0 requires-python
# The launcher's one import beyond ipykernel; the abi3 wheel for manylinux2014 x86_64.
CRYPTODOME = ("pycryptodomex", "3.24.2", "e340408a601003f235b50117cd16f87b2a5b4760765aafe93340eeaadeb0414d")
# gateway_provisioners' default KERNEL_UID/KERNEL_GID (jovyan:users); the pod runs as them.
UID, GID = 1000, 100
ENV_DIR = "/opt/envsync/env"
HOME = "/home/jovyan"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LAUNCHER_LIB = "/opt/envsync/launcher"
BOOTSTRAP = "/usr/local/bin/bootstrap-kernel.sh"
LAUNCHERS = "/usr/local/bin/kernel-launchers"
# Where `jupyter k8s-spec install` puts a kernelspec by default, beside its launch script.
KERNELS_DIR = "/usr/local/share/jupyter/kernels"
LAUNCH_TIMEOUT = 120  # seconds: the first kernel on a node waits for the image to be pulled
_REGISTRY = re.compile(r"[a-z0-9]+(?:[.-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")


@dataclass(frozen=True)
class K8sExport:
    files: dict[str, str]  # relative path → text
    image: str
    python: str
    notes: list[str] = field(default_factory=list)


def image_name(project: str, fingerprint: str, registry: str | None = None) -> str:
    """`[REGISTRY/]envsync-<project>:<first 16 hex of the fingerprint>` (a tag cannot hold `sha256:`)."""
    algo, _, digest = fingerprint.partition(":")
    if algo != "sha256" or not rules.is_sha256(digest):
        raise LockError(f"lock fingerprint {rules.shown(fingerprint)!r} is not sha256:<64 hex digits>")
    if registry is not None and not _REGISTRY.fullmatch(registry):
        raise UsageError(
            f"--registry {rules.shown(registry)!r} is not a registry host with an optional path",
            hint="for example: ghcr.io/acme or registry.example.com:5000/kernels",
        )
    repo = f"envsync-{rules.check_project(project)}"
    return f"{registry + '/' if registry else ''}{repo}:{digest[:16]}"


def choose_python(lock: Lock) -> tuple[str, list[str]]:
    """The lowest Python the lock covers that gateway_provisioners runs on, and a note if not the lowest."""
    pythons = pythons_in_range(lock.requires_python)
    usable = [p for p in pythons if Version(p) >= Version(MIN_PYTHON)]
    if not usable:
        raise EnvsyncError(
            f"the lock covers Python {', '.join(pythons)} only: gateway_provisioners {GATEWAY_PROVISIONERS}, "
            f"whose kernel launcher runs in the image, needs Python {MIN_PYTHON} or later",
            hint=f"widen requires-python to include {MIN_PYTHON} or later and run `envsync lock`",
        )
    notes = (
        []
        if usable[0] == pythons[0]
        else [
            f"the image runs Python {usable[0]}, not {pythons[0]} (the lowest the lock covers): "
            f"gateway_provisioners {GATEWAY_PROVISIONERS} needs {MIN_PYTHON} or later"
        ]
    )
    return usable[0], notes


def export_k8s(
    lock: Lock,
    *,
    project: str,
    kernel_name: str,
    display_name: str,
    notebook: str,
    uv_version: str,
    registry: str | None = None,
) -> K8sExport:
    """Every file of the export, or the one reason there can be none (nothing is written before)."""
    if TARGET not in lock.environments:
        raise EnvsyncError(
            f"the lock does not cover {TARGET}, the platform the kernel image is built for",
            hint="covered: " + ", ".join(lock.environments),
        )
    if not rules.is_kernel_name(kernel_name):
        raise EnvsyncError(f"cannot make a kernel name from {rules.shown(kernel_name)!r}")
    python, notes = choose_python(lock)
    keys = {p.key for p in packages_for(lock, marker_environment(TARGETS[TARGET], python))}
    if "ipykernel" not in keys:
        raise EnvsyncError(
            f"the lock has no ipykernel for {TARGET} with Python {python}: gateway_provisioners' launcher "
            "starts the kernel from the image's env, so the lock must carry it",
            hint="envsync locks ipykernel with every notebook: run `envsync lock` to lock it again",
        )
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*([a-z0-9.+-]*)", uv_version):
        raise EnvsyncError(f"cannot pin uv to version {rules.shown(uv_version)!r}")
    image = image_name(project, lock.fingerprint, registry)
    launcher_reqs = "pycryptodomex" not in keys
    files = {
        "Containerfile": containerfile(
            lock,
            project=project,
            image=image,
            python=python,
            uv_version=uv_version,
            launcher_reqs=launcher_reqs,
        ),
        "requirements.txt": export_requirements(lock, target=TARGET, python=python),
    }
    if launcher_reqs:
        files["launcher-requirements.txt"] = launcher_requirements()
    spec = kernelspec(
        kernel_name=kernel_name,
        display_name=display_name,
        image=image,
        project=project,
        fingerprint=lock.fingerprint,
        notebook=notebook,
    )
    files[f"kernels/{kernel_name}/kernel.json"] = json.dumps(spec, indent=2) + "\n"
    files["README.md"] = readme(project=project, image=image, kernel_name=kernel_name, python=python)
    return K8sExport(files, image, python, notes)


def launcher_requirements() -> str:
    name, version, sha = CRYPTODOME
    return (
        f"# gateway_provisioners {GATEWAY_PROVISIONERS}'s kernel launcher imports Cryptodome; the lock has no {name}.\n"
        f"{name}=={version} \\\n    --hash=sha256:{sha}\n"
    )


def containerfile(
    lock: Lock, *, project: str, image: str, python: str, uv_version: str, launcher_reqs: bool
) -> str:
    base = f"python:{python}-slim"
    uv = " ".join(SHARED_FLAGS)
    tag = image.rsplit(":", 1)[1]
    sync = (
        f"RUN uv venv {uv} --python /usr/local/bin/python{python} {ENV_DIR} \\\n"
        f" && uv pip sync {uv} --require-hashes --compile-bytecode --python {ENV_DIR}/bin/python /tmp/envsync/requirements.txt"
    )
    copy = "COPY requirements.txt /tmp/envsync/"
    cmd = ["/usr/bin/env", "-u", "PYTHONPATH", f"HOME={HOME}", f"PATH={ENV_DIR}/bin:{SYSTEM_PATH}"]
    if launcher_reqs:
        copy = "COPY requirements.txt launcher-requirements.txt /tmp/envsync/"
        sync += (
            f" \\\n && uv pip install {uv} --require-hashes --compile-bytecode --python {ENV_DIR}/bin/python \\\n"
            f"      --target {LAUNCHER_LIB} -r /tmp/envsync/launcher-requirements.txt"
        )
        cmd.append(f"PYTHONPATH={LAUNCHER_LIB}")
    cmd.append(BOOTSTRAP)
    launcher_note = (
        f"# Cryptodome (pycryptodomex, pinned with its hash) is the launcher's own import, not the notebook's:\n"
        f"# it goes to {LAUNCHER_LIB}, on the kernel's PYTHONPATH, so {ENV_DIR} stays exactly the lock.\n"
        if launcher_reqs
        else "# The lock carries pycryptodomex, which the launcher imports: nothing else is installed.\n"
    )
    return f"""\
# syntax=docker/dockerfile:1
# Kernel image of the envsync project {project} for gateway_provisioners' KubernetesProvisioner.
# Written by `envsync export --format k8s` from the lock {lock.fingerprint}.
# Tag: {image}  (the fingerprint's first 16 hex digits: a tag cannot hold "sha256:")
# Build: docker build -t {image} -f Containerfile .   (or: podman build -t {image} -f Containerfile .)

# gateway_provisioners' bootstrap script and Python kernel launcher, which a kernel pod starts.
# gateway_provisioners and what it depends on (paramiko, tornado, ...) stay in this stage:
# the image takes only the files `jupyter-image-bootstrap install` writes.
FROM {base} AS launchers
RUN python -m pip install --no-cache-dir gateway_provisioners=={GATEWAY_PROVISIONERS} \\
 && jupyter-image-bootstrap install --languages Python \\
 && chmod 0755 {BOOTSTRAP}

# The lock's env for {TARGET}, CPython {python}: the same requirements.txt as
# `envsync export --format requirements --environment {TARGET} --python {python}`, every
# package pinned with its hashes, installed by uv (the version envsync ran) with --require-hashes.
{launcher_note}FROM {base} AS env
RUN python -m pip install --no-cache-dir uv=={uv_version}
{copy}
{sync}

FROM {base}
LABEL org.opencontainers.image.title="envsync-{project}" \\
      org.opencontainers.image.description="Jupyter kernel of the envsync project {project}, for gateway_provisioners' KubernetesProvisioner" \\
      org.opencontainers.image.version="{tag}" \\
      org.opencontainers.image.base.name="docker.io/library/{base}" \\
      io.envsync.project="{project}" \\
      io.envsync.fingerprint="{lock.fingerprint}" \\
      io.envsync.python="{python}" \\
      io.envsync.gateway-provisioners="{GATEWAY_PROVISIONERS}"
COPY --from=env /opt/envsync /opt/envsync
COPY --from=launchers {BOOTSTRAP} {BOOTSTRAP}
COPY --from=launchers {LAUNCHERS} {LAUNCHERS}
ENV PATH={ENV_DIR}/bin:$PATH \\
    KERNEL_LANGUAGE=python
# gateway_provisioners runs kernel pods as uid {UID}, gid {GID} (KERNEL_UID, KERNEL_GID); a numeric
# USER lets a pod with runAsNonRoot check the image. The env is root's: the kernel cannot change it.
RUN useradd --no-log-init --uid {UID} --gid {GID} --create-home --shell /bin/bash jovyan
USER {UID}:{GID}
WORKDIR {HOME}
# gateway_provisioners' launcher copies Kernel Gateway's whole environment into the pod, PATH and
# HOME included, and those override ENV: the CMD sets them again, so bootstrap-kernel.sh's `python`
# is the env's, before it starts the launcher.
CMD {json.dumps(cmd)}
"""


def kernelspec(
    *, kernel_name: str, display_name: str, image: str, project: str, fingerprint: str, notebook: str
) -> dict[str, object]:
    """The kernel.json `jupyter k8s-spec install` writes for this image, with envsync's metadata.

    argv[1] names the launch script that command installs beside the kernelspec in Kernel
    Gateway's host; the provisioner fills in the `{...}` fields at each start.
    """
    return {
        "argv": [
            "python",
            f"{KERNELS_DIR}/{kernel_name}/scripts/launch_kubernetes.py",
            "--kernel-id",
            "{kernel_id}",
            "--port-range",
            "{port_range}",
            "--response-address",
            "{response_address}",
            "--public-key",
            "{public_key}",
            "--transport-encryption",
            "{transport_encryption}",
            "--kernel-class-name",
            "ipykernel.ipkernel.IPythonKernel",
        ],
        "env": {},
        "display_name": display_name,
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": {
            "supported_encryption": ["curve"],
            "debugger": True,
            "kernel_provisioner": {
                "provisioner_name": PROVISIONER,
                "config": {"image_name": image, "launch_timeout": LAUNCH_TIMEOUT},
            },
            "envsync": {"fingerprint": fingerprint, "project": project, "notebook": notebook, "image": image},
        },
    }


def readme(*, project: str, image: str, kernel_name: str, python: str) -> str:
    return f"""\
# Kernel image of {project} for Kubernetes

Written by `envsync export --format k8s`. The notebook's kernels run as pods of the image
`{image}`, started by Jupyter Kernel Gateway through gateway_provisioners'
KubernetesProvisioner (gateway_provisioners {GATEWAY_PROVISIONERS} on both sides).

1. Build the image (CPython {python}, the lock's {TARGET} packages with their hashes):

       docker build -t {image} -f Containerfile .
       # or: podman build -t {image} -f Containerfile .

2. Push it where the cluster pulls images from (`--registry` on the export puts that
   registry into the tag and the kernelspec), e.g. `docker push {image}`.

3. Where Kernel Gateway runs, with `gateway_provisioners[k8s]=={GATEWAY_PROVISIONERS}` installed:

       jupyter k8s-spec install --kernel-name {kernel_name} --image-name {image} --display-name '{project}'
       cp kernels/{kernel_name}/kernel.json {KERNELS_DIR}/{kernel_name}/kernel.json

   The first command installs the launch script and pod template this kernelspec's argv
   names; the copy adds envsync's metadata (project, lock fingerprint) and the display name
   the notebook expects. Installed elsewhere (`--user`, `--prefix`), argv[1] of kernel.json
   must name that folder's `scripts/launch_kubernetes.py`.

The kernel runs as uid {UID}, gid {GID} (gateway_provisioners' default KERNEL_UID/KERNEL_GID);
`metadata.kernel_provisioner.config.launch_timeout` ({LAUNCH_TIMEOUT} s) covers the image pull
of a node's first kernel.
"""
