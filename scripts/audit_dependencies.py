"""Check the installed dependencies against the advisory database (pip-audit), for CI.

Fails when a dependency has a known vulnerability. When the database cannot be reached, or
answers for none of the dependencies (a package mirror without advisories), it says so
plainly and passes: an unreachable database is reported, never taken for a clean audit.

    .venv/bin/python scripts/audit_dependencies.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def main() -> int:
    audit = Path(sys.executable).with_name("pip-audit")
    try:
        done = subprocess.run(
            [str(audit), "--skip-editable", "--progress-spinner", "off", "-f", "json"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"dependency audit NOT DONE: pip-audit did not run ({exc})")
        return 0
    try:
        report = json.loads(done.stdout)
    except ValueError:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        print(f"dependency audit NOT DONE: the advisory database was not reached ({tail[0]})")
        return 0
    dependencies = report.get("dependencies", [])
    vulnerable = [d for d in dependencies if d.get("vulns")]
    skipped = [d for d in dependencies if "skip_reason" in d]
    audited = len(dependencies) - len(skipped)
    for dependency in vulnerable:
        ids = ", ".join(v["id"] for v in dependency["vulns"])
        print(f"VULNERABLE: {dependency['name']} {dependency.get('version')}: {ids}")
    if not audited:
        print(f"dependency audit NOT DONE: the advisory database answered for none of the "
              f"{len(dependencies)} dependencies (an index without advisories?)")  # fmt: skip
    else:
        print(f"dependency audit: {audited} audited, {len(skipped)} not found in the "
              f"database, {len(vulnerable)} vulnerable")  # fmt: skip
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main())
