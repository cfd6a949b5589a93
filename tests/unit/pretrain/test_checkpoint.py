import json

import pytest

from pretrain.checkpoint import MARKER, UNIVERSAL, CheckpointError, CheckpointManager, Shape


def test_only_checkpoints_with_the_marker_count(tmp_path, caplog):
    for step, done in ((10, True), (20, True), (30, False)):
        d = tmp_path / CheckpointManager.tag(step)
        d.mkdir()
        if done:
            (d / MARKER).write_text("{}")
    found = CheckpointManager(tmp_path, keep_last=2, rank=0).complete()
    assert [p.name for p in found] == ["step_00000010", "step_00000020"]
    assert "step_00000030 has no COMPLETE marker" in caplog.text
    assert CheckpointManager(tmp_path / "none", 1, 0).complete() == []


def _checkpoint(root, step, files, shape=None):
    """A checkpoint directory as save() leaves it: the files, then the marker listing them."""
    from pretrain.checkpoint import crc32_of, files_of

    d = root / CheckpointManager.tag(step)
    d.mkdir(parents=True)
    for name, data in files.items():
        (d / name).write_bytes(data)
    listed = {rel: {"size": (d / rel).stat().st_size, "crc32": crc32_of(d / rel)} for rel in files_of(d)}
    (d / MARKER).write_text(json.dumps({"step": step, "files": listed, **({"shape": vars(shape)} if shape else {})}))
    return d


def test_a_checkpoint_is_checked_for_missing_truncated_and_altered_files(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=3, rank=0)
    good = _checkpoint(tmp_path, 2, {"model.pt": b"m" * 100, "optim.pt": b"o" * 50})
    assert manager.verify(good) is None
    truncated = _checkpoint(tmp_path, 4, {"model.pt": b"m" * 100})
    (truncated / "model.pt").write_bytes(b"m" * 60)
    assert manager.verify(truncated) == "model.pt is 60 bytes, 100 were written"
    missing = _checkpoint(tmp_path, 6, {"model.pt": b"m", "optim.pt": b"o"})
    (missing / "optim.pt").unlink()
    assert manager.verify(missing) == "optim.pt is missing"
    altered = _checkpoint(tmp_path, 8, {"model.pt": b"m" * 100})
    (altered / "model.pt").write_bytes(b"n" * 100)  # same size, other bytes
    assert manager.verify(altered) == "model.pt does not match its checksum"


def test_a_damaged_checkpoint_is_set_aside_where_no_save_or_count_finds_it(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=1, rank=0)
    first = manager.set_aside(_checkpoint(tmp_path, 4, {"a": b"1"}))
    second = manager.set_aside(_checkpoint(tmp_path, 4, {"a": b"2"}))  # the same step damaged again
    assert (first.name, second.name) == ("step_00000004", "step_00000004-1")
    assert first.parent == second.parent == tmp_path / "set_aside"
    assert manager.complete() == [] and not (tmp_path / "step_00000004").exists()


@pytest.mark.parametrize("written,now,universal", [
    (Shape(2, 2), Shape(2, 2), False),  # as written
    (Shape(4, 0), Shape(1, 0), False),  # ZeRO-0: the whole state on every rank
    (Shape(2, 2), Shape(1, 2), True),
    (Shape(1, 1), Shape(2, 3), True),
])
def test_a_checkpoint_is_loaded_as_written_or_as_universal_by_the_shape_that_wrote_it(tmp_path, written, now,
                                                                                      universal):
    d = _checkpoint(tmp_path, 2, {"a": b"1"}, shape=written)
    (d / UNIVERSAL).mkdir()  # converted before: not converted again
    resume = CheckpointManager(tmp_path, 1, 0, shape=now).find()
    assert (resume.path, resume.written_by, resume.universal) == (d, written, universal)
    assert (resume.load_dir, resume.tag) == ((d, UNIVERSAL) if universal else (tmp_path, d.name))


def test_a_checkpoint_without_its_shape_is_taken_as_this_runs(tmp_path):
    d = _checkpoint(tmp_path, 2, {"a": b"1"})
    resume = CheckpointManager(tmp_path, 1, 0, shape=Shape(3, 1)).find()
    assert resume.written_by == Shape(3, 1) and not resume.universal and resume.path == d


@pytest.mark.parametrize("written,now", [(Shape(2, 0), Shape(2, 1)), (Shape(2, 3), Shape(2, 0))])
def test_zero_0_and_the_other_stages_do_not_convert(tmp_path, written, now):
    _checkpoint(tmp_path, 2, {"a": b"1"}, shape=written)
    with pytest.raises(CheckpointError, match=f"written at ZeRO-{written.zero_stage}; this run is at "
                                              f"ZeRO-{now.zero_stage}.*Resume with deepspeed.zero_stage="
                                              f"{written.zero_stage}"):
        CheckpointManager(tmp_path, 1, 0, shape=now).find()


def test_a_failed_conversion_names_the_checkpoint_and_leaves_no_universal_copy(tmp_path):
    d = _checkpoint(tmp_path, 2, {"mp_rank_00_model_states.pt": b"not a checkpoint"}, shape=Shape(2, 2))
    with pytest.raises(CheckpointError, match=f"converting checkpoint {d} to the universal format failed"):
        CheckpointManager(tmp_path, 1, 0, shape=Shape(1, 2)).find()
    assert not (d / UNIVERSAL).exists() and not (d / f"{UNIVERSAL}.partial").exists()
