"""axe-core in the browser tests: inject the axe script bundled with axe-playwright-python (read from disk, never the
network) and list the violations of a page.

    from a11y import assert_no_serious_violations
    assert_no_serious_violations(page, "generate, dark")
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

BLOCKING = ("critical", "serious")


def axe_script() -> str:
    """The text of axe.min.js as installed with axe-playwright-python (the `test-e2e` extra)."""
    spec = importlib.util.find_spec("axe_playwright_python")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("axe-playwright-python is not installed (pip install -e '.[test-e2e]').")
    return (Path(next(iter(spec.submodule_search_locations))) / "axe.min.js").read_text(encoding="utf-8")


def violations(page, impacts: tuple[str, ...] = BLOCKING) -> list[dict]:
    """axe's violations on the page as it is now, with an impact in `impacts`.

    The script is evaluated rather than added as a <script> tag, so the studio's Content-Security-Policy (script-src
    'self') does not block it.
    """
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(axe_script())
    found = page.evaluate("""async () => (await axe.run(document, {resultTypes: ['violations']})).violations
        .map(v => ({id: v.id, impact: v.impact, help: v.help,
                    nodes: v.nodes.slice(0, 5).map(n => ({target: n.target.join(' '), summary: n.failureSummary}))}))""")
    return [v for v in found if v["impact"] in impacts]


def describe(found: list[dict]) -> str:
    lines = []
    for v in found:
        lines.append(f"[{v['impact']}] {v['id']}: {v['help']}")
        lines.extend(f"    {n['target']}: {(n['summary'] or '').splitlines()[-1].strip()}" for n in v["nodes"])
    return "\n".join(lines)


def assert_no_serious_violations(page, where: str) -> None:
    found = violations(page)
    assert not found, f"axe found critical or serious problems on {where}:\n{describe(found)}"
