"""Settings: environment names, refusals that name the variable, env beats stored values."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from picgate.config import EDITABLE, SECRETS, Settings, SettingsError, validate_settings

REPO = Path(__file__).resolve().parents[2]


def test_settings_defaults_match_design() -> None:
    s = Settings()
    assert (s.host, s.port) == ("0.0.0.0", 5643)
    assert s.database_url == "sqlite:///./data/db/picgate.db"
    assert s.resolved_images_dir == Path("data/images")
    assert s.local_cache_ttl_hours == 72 and s.metadata_retention_days == 365
    assert s.max_local_cache_mb == 0 and s.gateway_model_name == "picgate"
    assert not s.allow_external_image_fetch and not s.delete_r2_on_metadata_expire


def test_settings_read_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "8080")
    monkeypatch.setenv("UPSTREAM_API_BASE", "https://api.example.com/v1")
    monkeypatch.setenv("MAX_LOCAL_CACHE_MB", "500")
    s = Settings()
    assert s.port == 8080 and s.max_local_cache_mb == 500
    assert "upstream_api_base" in s.fixed_fields()


@pytest.mark.parametrize(
    "values,variable",
    [
        ({"r2_access_key_id": "a", "r2_account_id": "x"}, "R2_SECRET_ACCESS_KEY"),
        (
            {"r2_access_key_id": "a", "r2_secret_access_key": "b", "r2_bucket_name": "c"},
            "R2_ACCOUNT_ID",
        ),
        ({"upstream_api_base": "api.example.com"}, "UPSTREAM_API_BASE"),
        ({"public_base_url": "ftp://x"}, "PUBLIC_BASE_URL"),
        ({"r2_endpoint_url": "not a url"}, "R2_ENDPOINT_URL"),
        ({"gateway_api_key": "changeme"}, "GATEWAY_API_KEY"),
        ({"secret_key": "short"}, "SECRET_KEY"),
    ],
)
def test_validate_settings_unsafe_values_refused_naming_variable(
    values: dict[str, str], variable: str
) -> None:
    with pytest.raises(SettingsError, match=variable):
        validate_settings(Settings.model_validate(values))


def test_with_stored_environment_value_wins() -> None:
    s = Settings(upstream_model_name="from-env")
    merged = s.with_stored({"upstream_model_name": "from-db", "max_local_cache_mb": 7})
    assert merged.upstream_model_name == "from-env"
    assert merged.max_local_cache_mb == 7
    assert merged.fixed_fields() == s.fixed_fields()


def test_settings_are_documented_in_readme() -> None:
    """Every environment name appears in both READMEs' settings tables."""
    for readme in ("README.md", "README.en.md"):
        text = (REPO / readme).read_text()
        documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", text))
        missing = [name.upper() for name in Settings.model_fields if name.upper() not in documented]
        assert not missing, f"{readme} does not document: {missing}"


def test_editable_settings_exist() -> None:
    assert set(EDITABLE) <= set(Settings.model_fields)


def test_editable_marks_derived_sets_equal_the_former_lists() -> None:
    """The names read from the fields' marks are the lists kept by hand before the marks."""
    assert EDITABLE == (
        "upstream_api_base",
        "upstream_api_key",
        "upstream_model_name",
        "gateway_model_name",
        "gateway_api_key",
        "public_base_url",
        "chat_image_variant",
        "r2_account_id",
        "r2_access_key_id",
        "r2_secret_access_key",
        "r2_bucket_name",
        "r2_endpoint_url",
        "r2_public_base_url",
        "local_cache_ttl_hours",
        "metadata_retention_days",
        "max_local_cache_mb",
        "allow_external_image_fetch",
        "delete_r2_on_metadata_expire",
        "user_daily_image_limit",
        "max_inline_images_mb",
        "inline_full_images",
        "task_model",
        "drop_tools_for_image_models",
    )
    assert SECRETS == {
        "upstream_api_key",
        "gateway_api_key",
        "r2_secret_access_key",
        "r2_access_key_id",
    }


def test_printable_check_editable_text_fields_refuse_control_characters() -> None:
    text_fields = [n for n in EDITABLE if Settings.model_fields[n].annotation in (str, str | None)]
    assert len(text_fields) == 14
    for name in text_fields:
        with pytest.raises(ValueError, match="control character"):
            Settings.model_validate({name: "https://a.example/x\x07y"})


def test_validate_inline_cap_over_buffer_budget_refused_naming_both() -> None:
    validate_settings(Settings(max_inline_images_mb=512, max_buffered_mb=512))
    with pytest.raises(SettingsError, match=r"MAX_INLINE_IMAGES_MB.*MAX_BUFFERED_MB"):
        validate_settings(Settings(max_inline_images_mb=600, max_buffered_mb=512))
