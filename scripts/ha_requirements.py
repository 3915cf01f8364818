"""Print the pip requirements of the Home Assistant integrations the tests start, one a line.

Run with a Home Assistant venv's own python. Home Assistant installs an integration's requirements
with pip at its first start; the tests start it with --skip-pip instead (no download during a test,
and a quick start), so scripts/ha-venv.sh installs them beforehand from this list. It follows the
integrations' manifests the way homeassistant.requirements does: dependencies, after_dependencies,
and the discovery integrations a manifest asks for (an "mqtt" key pulls in mqtt, "zeroconf" zeroconf...).
"""

import json
import sys
from importlib.resources import files

from homeassistant import bootstrap, requirements


def manifest(domain: str) -> dict[str, object] | None:
    path = files("homeassistant.components").joinpath(domain, "manifest.json")
    return json.loads(path.read_text()) if path.is_file() else None


def main(domains: list[str]) -> None:
    todo = set(domains)
    for name in (
        "CORE_INTEGRATIONS",
        "LOGGING_AND_HTTP_DEPS_INTEGRATIONS",
        "LOGGING_INTEGRATIONS",
        "FRONTEND_INTEGRATIONS",
        "DEFAULT_INTEGRATIONS",
    ):
        todo |= set(getattr(bootstrap, name, ()))
    seen: set[str] = set()
    reqs: set[str] = set()
    while todo:
        domain = todo.pop()
        seen.add(domain)
        found = manifest(domain)
        if found is None:
            continue
        reqs.update(found.get("requirements", []))  # type: ignore[arg-type]
        nxt = set(found.get("dependencies", [])) | set(found.get("after_dependencies", []))  # type: ignore[arg-type]
        for check, keys in requirements.DISCOVERY_INTEGRATIONS.items():
            if any(key in found for key in keys):
                nxt.add(check)
        todo |= nxt - seen
    print("\n".join(sorted(reqs)))
    print(f"{len(seen)} integrations, {len(reqs)} requirements", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
