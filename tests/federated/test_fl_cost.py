"""Client cost accounting: bytes sent, peak memory, the per-update ledger and its totals."""

import torch

from espnet_ext.federated.cost import ClientCost, CostLedger, PeakMemory, tensor_bytes


def test_tensor_bytes_counts_what_is_sent():
    state = {"w": torch.zeros(10, 3), "n": torch.tensor(4), "h": torch.zeros(8, dtype=torch.float16)}
    assert tensor_bytes(state) == 10 * 3 * 4 + 8 + 8 * 2


def test_peak_memory_sees_a_large_temporary_allocation():
    with PeakMemory(interval=0.001) as mem:
        x = torch.ones(64, 1024, 1024 // 4)  # 64 MiB, touched
        x.add_(1)
        del x
    assert mem.peak_rss_bytes - mem.start_rss_bytes > 32 * 2**20
    assert mem.peak_device_bytes == 0


def test_ledger_totals_resume_and_file_round_trip(tmp_path):
    path = tmp_path / "costs.tsv"
    ledger = CostLedger(path)
    ledger.add([
        ClientCost(1, 0, "spk0", num_examples=4, params_trained=50, params_full=100, bytes_down=200,
                   bytes_up=200, steps=2, train_seconds=1.0, step_seconds=0.5, peak_rss_bytes=7, loss=1.5),
        ClientCost(1, 3, "spk3", num_examples=2, params_trained=100, params_full=100, bytes_down=400,
                   bytes_up=400, steps=4, train_seconds=2.0, step_seconds=0.5, peak_rss_bytes=9),
        ClientCost(2, 1, "spk1", params_full=100, bytes_down=300, failed=True, reason="injected\tfailure"),
    ])
    ledger.save()
    s = ledger.summary()
    assert (s["updates"], s["failures"]) == (2, 1)
    assert s["params_fraction"] == 0.75
    assert s["bytes_down"] == 900 and s["bytes_up"] == 600  # a failed client downloaded, sent nothing
    assert s["bytes_per_update"] == (400 + 800) / 2
    assert s["train_seconds"] == 3.0 and s["peak_rss_bytes"] == 9

    again = CostLedger(path)
    assert again.rows[0] == ledger.rows[0] and again.rows[2].failed and again.rows[2].reason == "injected failure"
    again.truncate_after(1)  # a resumed run redoes round 2
    assert [r.round for r in CostLedger(path).rows] == [1, 1]
