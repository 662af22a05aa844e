import time
from tests.test_webhooks_intake import *  # noqa

def test_dbg(intake, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_BATCHWORK_TEST_OUTPUT", f"file://{tmp_path}")
    with Emulator(processing_seconds=3, webhooks={"openai": (f"{intake}/batchwork/webhooks/openai", SECRET)}) as emu:
        for key, value in connection_env(emu).items():
            monkeypatch.setenv(key, value)
        orig = emu.store.record_request
        def rec(r):
            print("REQ", round(time.time(),3), r.method, r.path, r.status_code, r.fault)
            orig(r)
        emu.store.record_request = rec
        load_dag("test_webhook_wake_openai").test()
