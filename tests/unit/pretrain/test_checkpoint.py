from pretrain.checkpoint import MARKER, CheckpointManager


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


def _checkpoint(root, step, files):
    """A checkpoint directory as save() leaves it: the files, then the marker listing them."""
    import json

    from pretrain.checkpoint import crc32_of, files_of

    d = root / CheckpointManager.tag(step)
    d.mkdir(parents=True)
    for name, data in files.items():
        (d / name).write_bytes(data)
    listed = {rel: {"size": (d / rel).stat().st_size, "crc32": crc32_of(d / rel)} for rel in files_of(d)}
    (d / MARKER).write_text(json.dumps({"step": step, "files": listed}))
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
