"""Where an envsync row is slower than a peer's: the reason and what would close the gap, for the report."""

from __future__ import annotations

from typing import Any

# (scenario, envsync row, peer row) -> why, and what would close it.
WHY: dict[tuple[str, str, str], str] = {
    ("build", "envsync_sync", "uv_hardlink"): (
        "envsync copies every file into the env (`--link-mode copy`) and then hashes each against its "
        "wheel's RECORD, so an edit in one env can never reach uv's cache or another env. Hard links cost "
        "no copying and no disk. Closing it: reflinks (`--link-mode clone`) on a filesystem that has them "
        "(btrfs, XFS, APFS) copy in constant time; on ext4 the copy is the price of owning the files."
    ),
    ("build", "envsync_sync", "uv_copy"): (
        "envsync asks uv for the lock's wheels from its cache first (`--offline`) and asks the index only "
        "when something is missing; raw `uv pip sync` asks the index for each package's page again before "
        "it installs (here the pages came without cache headers and were downloaded again every time, "
        "0.2-0.3 s of a build; PyPI's are fresh for ten minutes, then asked for again). Where envsync is "
        "slower all the same, the reasons are those of the row against `--offline`."
    ),
    ("build", "envsync_sync", "uv_copy_offline"): (
        "beyond uv's own copying install, envsync starts its own process (imports, the manifest and the "
        "lock read and checked, an interpreter chosen: 0.1-0.2 s before uv starts, timed alone on "
        "2026-12-01), then checks every installed file against its wheel's RECORD, the work split over "
        "the cores by fork (a copy of a uv cache file that was hashed before and is unchanged since, same "
        "device, inode, size, mtime and ctime, costs two stats; any other file is hashed: 0.2-0.3 s for "
        "11,847 files, of which the stats are about half), and writes the file record, the ready marker, "
        "the kernelspec and the history record. The cache memo is read while uv installs, and RECORD rows "
        "are split without the csv module. Checking each distribution as soon as uv has installed it "
        "was tried and measured (a forked child watching site-packages, 2026-12-01): it took 42 of the 43 "
        "distributions during the install and cut the check after it from about 0.3 s to 0.16 s, but "
        "slowed uv's own install by 0.15-0.3 s on this two-core machine, even at the lowest priority, so "
        "it is not in envsync. Closing it: the stats and the RECORD parsing in compiled code, or more "
        "cores than uv keeps busy. Earlier runs of this table deleted the previous env just "
        "before each build; on this machine's ext4 without a journal, creating files within a minute or "
        "more of deleting 12,000 skips every recently freed inode (a profile of a slow `uv pip sync` had "
        "most of its time in the kernel's `recently_deleted`), which made whichever build followed a "
        "delete 2-5× slower. The harness now sets envs aside and deletes them after the last figure."
    ),
    ("build", "envsync_sync", "juv_venv"): (
        "`juv venv` takes uv's hard links and checks no file: see the row against uv's hard links."
    ),
    ("build", "envsync_sync_pip", "pip_no_bytecode"): (
        "the pip backend runs pip as pip's own default does (bytecode compiled), then hashes every file "
        "against RECORD as the uv backend does."
    ),
    ("build", "envsync_sync_pip", "pip_bytecode"): (
        "the pip backend runs the same pip install, then hashes every file against RECORD and writes "
        "the file record; the uv backend is the fast path."
    ),
    ("commands", "envsync_check", "envsync_help"): (
        "`check` reads the notebook, finds the env and stats every recorded file (about 12,000 here). "
        "The stats start with the command: a forked child stats the env this notebook's last check "
        "compared while the command imports its code and reads the notebook, and the check takes that "
        "answer only for the very env and record file it chose. A manifest this machine accepted before "
        "(kept by the sha256 of its content, of the schema and of the code that checked it) is rebuilt "
        "from what its first reading computed, so neither jsonschema nor packaging is imported, and what "
        "the lock installs in the env is read from the env's ready marker. Output that reaches no "
        "terminal is plain text, without rich, and the command exits without sweeping its heap for "
        "cycles. What is left beyond `--help` is importing envsync's own lock, drift and project "
        "modules, reading the notebook, and whatever part of the stats the imports do not cover."
    ),
    ("commands", "envsync_sync_reuse", "envsync_help"): (
        "`sync` on a built env does the same file check as `check`, started the same way, imports the "
        "sync modules (the installers, interpreters and history), takes the env's key lock and rewrites "
        "the history record (the kernelspec is left alone when unchanged)."
    ),
    ("commands", "envsync_check", "pip_freeze"): (
        "`envsync check` compares every file's size and mtime too, where `pip freeze` reads names and "
        "versions only."
    ),
    ("commands", "envsync_check", "pip_check"): (
        "`envsync check` compares every file's size and mtime too, where `pip check` reads dependency "
        "metadata only."
    ),
    ("kernels", "envsync_first", "pip_first"): (
        "pip compiles every module to bytecode while installing. envsync builds without it; `launch` "
        "compiles what a kernel start imports before the gateway starts, and the rest of the env is "
        "compiled by a background process that runs only when a CPU is idle and waits 5 s from each "
        "kernel start (at idle priority it still slowed each start by about 0.15 s on two cores: 0.76 s "
        "against 0.61 s with the compile stopped, measured on 2026-12-01). Every kernel start behind "
        "envsync's gateway also waits for the file check of the env (one stat a file of 11,847), run by "
        "a helper process that the launch forked before its threads started, so that the stats are split "
        "over the cores. Closing the rest: a check at each start that costs less than a stat a file, such "
        "as watching the env's folders (inotify) from the launch's check on; it would trust the watch "
        "where a stat would see an mmap write or a change on a network filesystem."
    ),
    ("kernels", "envsync_later", "pip_later"): (
        "each start behind envsync's gateway waits for the file check (see the first-kernel row), and "
        "right after a build the background compile still shares the disk; the rows `envsync_settled` "
        "and `kernelgateway_same_env` show a settled env behind envsync's gateway and behind a bare "
        "Kernel Gateway."
    ),
    ("launch", "envsync_launch", "marimo_sandbox"): (
        "marimo's editor server answers `GET /` before any kernel process exists; envsync's launch checks "
        "the env against its lock first (every file's size and mtime) and starts Kernel Gateway, whose "
        "imports (tornado, jupyter_server) are most of its start."
    ),
    ("launch", "envsync_launch", "juv_run"): (
        "juv starts JupyterLab through `uv run`, with uv's hard links; envsync checks the env's files and "
        "starts Kernel Gateway."
    ),
    ("launch", "envsync_launch", "kernelgateway"): (
        "a bare Kernel Gateway serves its own interpreter's kernel; envsync reads and checks the "
        "manifest, checks the env and writes a kernelspec first."
    ),
    ("launch", "envsync_launch", "python_m_kernel_gateway"): (
        "as for `jupyter kernelgateway`: the same server without the `jupyter` launcher."
    ),
}

SUBJECTS = {
    "build": ("envsync_sync", "envsync_sync_pip"),
    "commands": ("envsync_check", "envsync_sync_reuse"),
    "kernels": ("envsync_first", "envsync_later"),
    "launch": ("envsync_launch",),
}
PEERS = {
    "build": ("uv_copy", "uv_copy_offline", "uv_hardlink", "juv_venv", "pip_bytecode", "pip_no_bytecode"),
    "commands": ("envsync_help", "pip_freeze", "pip_check"),
    "kernels": ("pip_first", "pip_later"),
    "launch": ("kernelgateway", "python_m_kernel_gateway", "juv_run", "marimo_sandbox"),
}
SAME_SIDE: dict[tuple[str, str], tuple[str, ...]] = {
    ("kernels", "envsync_first"): ("pip_first",),
    ("kernels", "envsync_later"): ("pip_later",),
    ("build", "envsync_sync_pip"): ("pip_bytecode", "pip_no_bytecode"),
}


def slower(result: dict[str, Any], rows: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """One paragraph per envsync row that a peer beats in this run (envsync --help is a floor, not a peer)."""
    out: list[str] = []
    for scenario, subjects in SUBJECTS.items():
        for subject in subjects:
            mine = rows.get((scenario, subject))
            if mine is None:
                continue
            peers = PEERS[scenario]
            if (scenario, subject) in SAME_SIDE:
                peers = SAME_SIDE[(scenario, subject)]
            for peer in peers:
                theirs = rows.get((scenario, peer))
                if theirs is None or theirs["median_s"] >= mine["median_s"]:
                    continue
                ratio = mine["median_s"] / theirs["median_s"]
                why = WHY.get((scenario, subject, peer), "no explanation recorded for this pair yet.")
                if (scenario, peer) == ("commands", "envsync_help"):
                    why += breakdown(rows)
                if scenario == "kernels":
                    why += kernel_breakdown(rows)
                out.append(f"- **{mine['label']}** is {ratio:.2f}× **{theirs['label']}**: {why}")
    if not out:
        out.append("In this run, no envsync row was slower than a peer's.")
    return [*out, ""]


def breakdown(rows: dict[tuple[str, str], dict[str, Any]]) -> str:
    """Where a whole `envsync check` goes, from this run's own rows."""

    def ms(key: str) -> float | None:
        row = rows.get(("commands", key))
        return row["median_s"] * 1000 if row else None

    floor, help_, imports = ms("python_floor"), ms("envsync_help"), ms("check_imports")
    load, stat, check = ms("record_load_in_process"), ms("stat_check_in_process"), ms("envsync_check")
    if None in (floor, help_, imports, load, stat, check):
        return ""
    assert floor is not None and help_ is not None and imports is not None
    assert load is not None and stat is not None and check is not None
    rest = check - imports
    more = f"{rest:.0f} ms more than its imports" if rest >= 1 else "no longer than its imports"
    return (
        f" In this run: the interpreter alone {floor:.0f} ms, `--help` {help_:.0f} ms, importing what `check` "
        f"imports {imports:.0f} ms ({imports - help_:.0f} ms more than `--help`); reading the file record "
        f"({load:.0f} ms) and one stat a file ({stat:.0f} ms in two processes, about twice that in the one "
        f"child that starts with the command) run alongside those imports, and the whole `check` took "
        f"{more} (manifest, lock, the wait for the child, output)."
    )


def kernel_breakdown(rows: dict[tuple[str, str], dict[str, Any]]) -> str:
    """How much of the kernels' gap is the first start (bytecode) and how much each start behind the gateway."""

    def s(key: str) -> float | None:
        row = rows.get(("kernels", key))
        return row["median_s"] if row else None

    first, later, pip_first, pip_later = (
        s("envsync_first"),
        s("envsync_later"),
        s("pip_first"),
        s("pip_later"),
    )
    settled, bare = s("envsync_settled"), s("kernelgateway_same_env")
    if None in (first, later, pip_first, pip_later, settled, bare):
        return ""
    assert first is not None and later is not None and pip_first is not None and pip_later is not None
    assert settled is not None and bare is not None
    return (
        f" In this run the first kernel cost {(first - later) * 1000:.0f} ms more than a later one in the new "
        f"envsync env and {(pip_first - pip_later) * 1000:.0f} ms more in the pip venv (what bytecode is "
        f"about); in a settled env a kernel took {settled * 1000:.0f} ms behind envsync's gateway and "
        f"{bare * 1000:.0f} ms behind a bare Kernel Gateway ({settled / bare:.2f}×): the rest of the gap is "
        "each kernel start behind envsync's gateway, most of it the file check before each start (see the "
        "first-kernel row)."
    )
