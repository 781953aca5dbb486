from dataclasses import dataclass, field

import pytest

from model.typed_config import from_dict, load_config, to_dict


@dataclass
class Inner:
    lr: float = 1e-3
    betas: tuple = (0.9, 0.95)


@dataclass
class Outer:
    name: str = "x"
    steps: int = 10
    optim: Inner = field(default_factory=Inner)


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 20\noptim:\n  lr: 0.5\n")
    cfg = load_config(Outer, path, ["optim.lr=2e-4", "name=run"])
    assert cfg == Outer(name="run", steps=20, optim=Inner(lr=2e-4))
    assert isinstance(cfg.optim, Inner)


def test_round_trip_through_dict():
    cfg = Outer(steps=3, optim=Inner(lr=0.1))
    assert from_dict(Outer, to_dict(cfg)) == cfg


def test_unknown_keys_and_bad_overrides_are_clear(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['lrr'\] in Inner.optim"):
        from_dict(Outer, {"optim": {"lrr": 1}})
    with pytest.raises(ValueError, match="key=value"):
        load_config(Outer, None, ["steps"])
    with pytest.raises(ValueError, match="not a config section"):
        load_config(Outer, None, ["steps.x=1"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(Outer, tmp_path / "nope.yaml")


def test_scalars_are_coerced_to_declared_types():
    cfg = load_config(Outer, None, ["optim.lr=2e-4", "steps='7'", "optim.betas=[0.5, 0.6]"])
    assert cfg.optim.lr == 2e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.steps == 7 and cfg.optim.betas == (0.5, 0.6)
    with pytest.raises(ValueError, match="Inner.optim.lr='fast' is not a valid float"):
        load_config(Outer, None, ["optim.lr=fast"])
