"""Docs that are generated must match the code: docs/settings.md from the Settings fields."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_settings_doc_is_current():
    run = subprocess.run([sys.executable, str(ROOT / "docs" / "gen_settings.py"), "--check"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_setting_has_its_environment_variable_documented():
    from sentiric_cli.settings import FIELDS, env_name

    text = (ROOT / "docs" / "settings.md").read_text()
    missing = [env_name(k) for k in FIELDS if env_name(k) not in text]
    assert not missing, missing
