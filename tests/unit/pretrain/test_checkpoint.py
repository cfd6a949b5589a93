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
