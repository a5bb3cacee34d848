"""bench/scale.py's interface (`--json` with the keys the issue names), on the stage times
committed in bench/stage-times.json; its figures are measured, not asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCALE = REPO / "bench" / "scale.py"


def run_scale(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCALE), *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO)


def test_json_names_the_job_and_its_stage_times() -> None:
    result = run_scale("--json", "--seeds", "1")
    assert result.returncode == 0, result.stderr
    headline = json.loads(result.stdout)
    assert headline["config"] == "6x16" and headline["workers"] == 3600
    assert headline["chunks"] == 3552  # 21,312 frames in chunks of 6
    assert headline["latency_s"] > 0 and headline["cost_usd"] > 0
    assert set(headline["shares"]) == {"chain", "ramp_up", "stragglers"}
    assert "bbb1080 1920x1080" in headline["stage_times_s"]["source"]


def test_a_file_that_is_not_a_saved_result_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "times.json"
    bogus.write_text("[1, 2]")
    result = run_scale("--json", "--stage-times", str(bogus))
    assert result.returncode != 0
    assert "not a result bench/excamera.py saved" in result.stderr
    assert "Traceback" not in result.stderr
