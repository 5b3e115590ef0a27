"""Java pieces from Maven Central, fetched with ``mvn`` from the poms beside this file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from activity_settings import ActivityError

POM_DIR = Path(__file__).parent / "maven"


class JarFetchError(ActivityError, RuntimeError):
    """Maven could not fetch a set of jars; the message carries Maven's own last lines."""


def fetch_jars(pom: str, dest: Path, properties: dict[str, str]) -> list[Path]:
    """Copy the runtime jars of ``maven/<pom>/pom.xml`` into ``dest`` once, and list them.

    ``dest`` is keyed by the properties (versions), so a cached set is reused and a version
    change fetches a fresh one. Maven's own repository (~/.m2) caches the downloads.
    """
    marker = dest / ".complete"
    if marker.is_file():
        return sorted(dest.glob("*.jar"))
    mvn = shutil.which("mvn")
    if mvn is None:
        raise JarFetchError(
            "Maven (`mvn`) is not on PATH: install it (Debian: apt-get install maven) "
            "so the Kafka broker and Spark's Kafka connector can be fetched from Maven Central."
        )
    if shutil.which("java") is None:
        raise JarFetchError("Java is not on PATH: install OpenJDK 17 (apt-get install openjdk-17-jre-headless).")
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    cmd = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(POM_DIR / pom / "pom.xml"),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={partial}",
        *(f"-D{key}={value}" for key, value in properties.items()),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise JarFetchError(f"mvn failed fetching {pom} {properties}:\n{tail}")
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    marker.touch()
    return sorted(dest.glob("*.jar"))
