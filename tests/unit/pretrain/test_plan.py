"""``python -m pretrain plan``: the recipes, its arithmetic and its refusals."""

import json

import pytest

from pretrain.plan import main

pytestmark = pytest.mark.integration  # each plan traces several steps: seconds

RECIPE = {"configs/bert-large-phase1.yaml": ("128", "20"), "configs/bert-large-phase2.yaml": ("512", "80")}


@pytest.mark.parametrize("recipe", sorted(RECIPE))
def test_each_recipe_fits_an_80_gb_card_as_its_comment_says(recipe, capsys):
    seq, predictions = RECIPE[recipe]
    code = main(["--config", recipe, "--gpus", "512", "--gpu", "h100", "--max-seq-length", seq,
                 "--max-predictions-per-seq", predictions, "--json"])
    plan = json.loads(capsys.readouterr().out)
    assert code == 0 and plan["fits"]
    memory = plan["memory"]
    assert sum(p["bytes"] for p in memory["parts"]) == pytest.approx(memory["total"])  # the parts add up
    largest = memory["largest_micro_batch"]
    comment = open(recipe).read()
    assert f"{memory['total'] / 2**30:.0f} GiB" in comment and f"largest micro-batch that fits: {largest}" in comment
    t = plan["time"]
    assert t["hours"] == pytest.approx(t["step_s"] * t["steps"] / 3600) and t["mfu_assumed"]


def test_a_micro_batch_too_large_does_not_fit_and_the_largest_that_fits_is_named(capsys):
    args = ["--config", "configs/bert-large-phase2.yaml", "--gpus", "8", "--max-seq-length", "512",
            "--max-predictions-per-seq", "80"]
    code = main([*args, "data.micro_batch_size=512", "--gpu", "a100-40gb"])
    out = capsys.readouterr().out
    assert code == 1 and "verdict: does not fit" in out
    largest = int(out.split("largest micro-batch that fits: ")[1].split()[0])
    assert main([*args, f"data.micro_batch_size={largest}", "--gpu", "a100-40gb"]) == 0
    capsys.readouterr()
    allowed = [m for m in range(largest + 1, 4097) if 4096 % m == 0]  # 32,768 over 8 ranks
    assert main([*args, f"data.micro_batch_size={allowed[0]}", "--gpu", "a100-40gb"]) == 1


def test_without_a_dataset_or_its_shape_the_plan_says_what_to_give(capsys):
    assert main(["--config", "configs/bert-large-phase1.yaml", "--gpus", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data.path data/seq128 has no dataset yet") and "--max-seq-length" in err


def test_a_dataset_gives_the_shape_and_the_epochs(dataset, capsys):
    assert main(["--config", "configs/tiny-cpu.yaml", f"data.path={dataset}", "--gpus", "1", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["recipe"]["seq_len"] == 64 and plan["time"]["epochs"] > 0
    # micro_batch_size auto (measured at the run's start on a GPU): the plan shows the largest that fits
    assert main(["--config", "configs/tiny-cpu.yaml", f"data.path={dataset}", "data.micro_batch_size=auto",
                 "--gpus", "1"]) == 0
    out = capsys.readouterr().out
    largest = int(out.split("largest micro-batch that fits: ")[1].split()[0])
    assert "micro-batch auto" in out and f"the run measures it on the GPU (the plan's largest: {largest})" in out
