"""docs/configuration.md is what the code says: every field described once, the file generated."""

from pydantic import BaseModel

from preprocess.config import PreprocessConfig
from pretrain import config_doc
from pretrain.__main__ import main
from pretrain.config import TrainConfig


def fields(model: type[BaseModel], prefix: str = "") -> dict[str, object]:
    out = {}
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out.update(fields(field.annotation, f"{prefix}{name}."))
        else:
            out[prefix + name] = field
    return out


def test_every_field_and_option_has_a_description():
    undocumented = [n for n, f in {**fields(TrainConfig), **fields(PreprocessConfig)}.items() if not f.description]
    assert not undocumented, undocumented


def test_the_committed_reference_matches_the_code():
    # when this fails: python -m pretrain config-doc, and commit docs/configuration.md
    assert config_doc.DOC.read_text() == config_doc.render()


def test_the_reference_names_every_field_with_its_default_and_bounds():
    text = config_doc.render()
    for name in fields(TrainConfig):
        assert f"| `{name}` |" in text, name
    assert "| `optim.total_steps` | int (>= 1) | required |" in text
    assert "| `data.micro_batch_size` | int (>= 1), or auto | `8` |" in text
    assert "| `--max-seq-length` | int (>= 8, <= 65535) | `128` |" in text
    assert "| `--whole-word-mask / --no-whole-word-mask` | bool | `false` |" in text


def test_check_reports_a_stale_file(tmp_path, capsys):
    stale = tmp_path / "configuration.md"
    stale.write_text("old\n")
    assert main(["config-doc", "--check", "--output", str(stale)]) == 1
    assert main(["config-doc", "--output", str(stale)]) == 0
    assert main(["config-doc", "--check", "--output", str(stale)]) == 0
    assert stale.read_text() == config_doc.render()


def test_help_lists_the_sections_and_points_to_the_reference(capsys):
    try:
        main(["--help"])
    except SystemExit:
        pass
    shown = capsys.readouterr().out
    assert "docs/configuration.md" in shown
    for section in ("model", "data", "optim", "deepspeed", "checkpoint", "logging", "eval"):
        assert f"\n  {section} " in shown, section
