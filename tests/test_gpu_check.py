"""bench/gpu_check.py: one line and exit 0 without CUDA; --cpu runs every part of it at tiny sizes."""
import pytest
import torch

from bench import gpu_check


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the full check would run")
def test_without_cuda_it_says_so_in_one_line(capsys):
    assert gpu_check.main([]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no CUDA GPU" in out


def test_cpu_smoke_run_prints_every_row_and_a_result_line(capsys):
    assert gpu_check.main(["--cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [line.split("|")[1].strip() for line in lines if line.startswith("| ") and "what" not in line]
    expected = {f"forward b{b} {d} {layout} eager" for b in (1, 2) for d in ("fp32", "bf16")
                for layout in ("contiguous", "channels-last")}
    assert expected <= set(rows)
    assert "app upload -> scores + heatmaps (app.page.upload)" in rows
    assert "live frame 320x240 -> overlay (app.live)" in rows        # resnet18 at 64 px
    assert {"train b2 fp32 eager", "train b2 AMP + channels-last (bf16)"} <= set(rows)
    assert lines[-1].startswith("RESULT ")
    result = dict(kv.split("=") for kv in lines[-1].split()[1:])
    assert set(result) == {"forward_b2_fp32_img_s", "forward_b2_best_img_s", "upload_s", "live_fps",
                           "train_fp32_img_s", "train_amp_cl_img_s"}
    assert all(float(v) > 0 for v in result.values())
    assert float(result["forward_b2_best_img_s"]) >= float(result["forward_b2_fp32_img_s"])
