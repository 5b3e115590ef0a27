"""One settings object: env over YAML over defaults; a bad setting fails naming itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from activity_settings import SettingsError, load_settings

pytestmark = pytest.mark.usefixtures("clean_env")


def test_defaults_use_the_embedded_broker() -> None:
    settings = load_settings()
    assert settings.kafka.embedded
    assert settings.kafka.bootstrap == "127.0.0.1:19092"


def test_environment_overrides_yaml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "custom.yaml"
    config.write_text("kafka:\n  partitions: 6\n  port: 29092\nspark:\n  master: local[2]\n")
    monkeypatch.setenv("ACTIVITY_CONFIG", str(config))
    monkeypatch.setenv("ACTIVITY_KAFKA__PARTITIONS", "8")
    settings = load_settings()
    assert settings.kafka.partitions == 8  # env wins
    assert settings.kafka.port == 29092  # from YAML
    assert settings.spark.master == "local[2]"


def test_activity_yaml_in_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / "activity.yaml").write_text("simulation:\n  customers: 77\n")
    assert load_settings().simulation.customers == 77


def test_external_cluster_means_nothing_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTIVITY_KAFKA__BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    settings = load_settings()
    assert not settings.kafka.embedded
    assert settings.kafka.client_config()["bootstrap.servers"] == "kafka-1:9092,kafka-2:9092"


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("ACTIVITY_KAFKA__PARTITIONS", "0", "kafka.partitions"),
        ("ACTIVITY_KAFKA__PORT", "http", "kafka.port"),
        ("ACTIVITY_KAFKA__BOOTSTRAP_SERVERS", "no-port-here", "kafka.bootstrap_servers"),
        ("ACTIVITY_SPARK__DRIVER_MEMORY", "lots", "spark.driver_memory"),
        ("ACTIVITY_LOG_LEVEL", "LOUD", "log_level"),
    ],
)
def test_invalid_setting_fails_naming_it(monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert named in str(error.value)
    assert env in str(error.value)


def test_unknown_key_in_yaml_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "activity.yaml").write_text("kafka:\n  partitoins: 3\n")
    with pytest.raises(SettingsError, match="kafka.partitoins"):
        load_settings()


def test_missing_config_file_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTIVITY_CONFIG", "/nonexistent/activity.yaml")
    with pytest.raises(SettingsError, match="ACTIVITY_CONFIG"):
        load_settings()


def test_settings_environment_reproduces_the_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from activity_settings import settings_environment

    original = load_settings(data_dir=tmp_path / "data", kafka={"port": 29999, "topics": {"dlq": "bad-events"}},
                             streaming={"fail_on_data_loss": False, "trigger_interval_s": 0.5})
    for name, value in settings_environment(original).items():
        monkeypatch.setenv(name, value)
    assert load_settings() == original


def test_the_readme_reference_lists_every_setting_as_generated() -> None:
    from pathlib import Path

    from activity_settings import settings_reference

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start, end = "<!-- settings-reference:start -->\n", "<!-- settings-reference:end -->"
    documented = readme[readme.index(start) + len(start):readme.index(end)]
    assert documented == settings_reference(), "run: activity settings --reference, and paste it into README.md"
    assert "`monitoring.drift_share_threshold` | `ACTIVITY_MONITORING__DRIFT_SHARE_THRESHOLD` | `0.3`" in documented


def test_test_modules_have_unique_names() -> None:
    """The test folders are not packages: two modules with one name would stop collection."""
    from collections import Counter
    from pathlib import Path

    names = Counter(path.name for path in (Path(__file__).parents[1]).glob("*/test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []
