"""Every `bash` and `python` block of the README runs as written, in order, on the bundled demo data, so the
README cannot go stale. A block that cannot run here (GPUs, Slurm, the suite itself, hours of training) says
why in an HTML comment on the line before it: `<!-- not run: REASON -->`. Command synopses are `text`
blocks. Paths in the blocks are relative to the repository root; the blocks run in a scratch copy of the
parts they read (demo/, tests/fixtures/, recipes/), with this environment's `midmix` first on PATH."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from conftest import ROOT

README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\s*$")
NOT_RUN = re.compile(r"^<!-- not run: (.+) -->\s*$")


@dataclass
class Block:
    line: int
    lang: str
    text: str
    not_run: str | None


def blocks() -> list[Block]:
    lines = README.read_text().splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        note = NOT_RUN.match(lines[start - 1]) if start else None
        out.append(Block(start + 1, lang, "\n".join(lines[start + 1 : j]) + "\n", note.group(1) if note else None))
        i = j + 1
    return out


def test_every_code_block_is_run_or_says_why_not() -> None:
    found = blocks()
    assert found, "no code blocks found"
    for b in found:
        assert b.lang in ("bash", "python", "text", "yaml", ""), f"README line {b.line}: a ```{b.lang} block"
        if b.not_run is not None:
            assert len(b.not_run) > 10, f"README line {b.line}: say why the block is not run"


def test_the_readme_blocks_run_on_the_demo_data(tmp_path: Path) -> None:
    """The runnable blocks, in README order, in one scratch directory (later blocks read what earlier ones
    made). A failure names the block's line and shows its output."""
    work = tmp_path / "readme"
    work.mkdir()
    for part in ("demo", "recipes"):
        shutil.copytree(ROOT / part, work / part)
    (work / "tests").mkdir()
    shutil.copytree(ROOT / "tests" / "fixtures", work / "tests" / "fixtures")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MIDMIX_CACHE_DIR": str(work / "cache"),
    }
    env.pop("MIDMIX_DATA_ROOT", None)  # the README's default data root: ./data
    ran = 0
    for b in blocks():
        if b.not_run is not None or b.lang not in ("bash", "python"):
            continue
        cmd = ["bash", "-euo", "pipefail", "-c", b.text] if b.lang == "bash" else [sys.executable, "-c", b.text]
        r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, (
            f"README line {b.line} ({b.lang}) failed:\n{b.text}\n--- output\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        )
        ran += 1
    assert ran >= 6, f"only {ran} blocks ran"
    # The README's first command, `make demo`, is demo/run.sh in a fresh .venv; here with this environment's.
    shutil.copytree(ROOT / "demo", work / "fresh" / "demo")
    shutil.copytree(ROOT / "tests" / "fixtures", work / "fresh" / "tests" / "fixtures")
    r = subprocess.run(
        ["bash", "demo/run.sh"], cwd=work / "fresh", env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0 and (work / "fresh" / "demo-out" / "mix-mds" / "index.json").exists(), (
        r.stdout[-3000:] + r.stderr[-3000:]
    )
