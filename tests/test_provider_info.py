"""Airflow discovers the package as a provider: metadata, connection type, hook, triggers."""

from __future__ import annotations

from importlib.metadata import distribution, entry_points

from airflow_batchwork.get_provider_info import get_provider_info


def test_entry_point_and_package_name() -> None:
    names = {e.value for e in entry_points(group="apache_airflow_provider")}
    assert "airflow_batchwork.get_provider_info:get_provider_info" in names
    assert get_provider_info()["package-name"] == distribution("airflow-batchwork").metadata["Name"]


def test_providers_manager_sees_connection_type_and_modules() -> None:
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    assert "airflow-batchwork" in ProvidersManager().providers
    hook = ProvidersManagerTaskRuntime().hooks["batchwork"]  # where workers and triggerers look hooks up
    assert hook is not None and hook.hook_class_name == "airflow_batchwork.hooks.batchwork.BatchworkHook"
    modules = {m for entry in get_provider_info()["triggers"] for m in entry["python-modules"]}
    assert {"airflow_batchwork.triggers.batch", "airflow_batchwork.triggers.webhook"} <= modules


def test_connection_form_is_declarative() -> None:
    conn = get_provider_info()["connection-types"][0]
    assert conn["connection-type"] == "batchwork"
    assert conn["ui-field-behaviour"]["relabeling"] == {"password": "API Key", "host": "Base URL"}
    assert set(conn["conn-fields"]) >= {"provider", "headers"}
