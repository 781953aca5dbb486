"""Typed configs on OmegaConf: YAML and overrides merged over dataclass defaults, every value checked
against its field's type, and every refusal one line naming the key and what it expects."""

from dataclasses import dataclass, field

import pytest

from model.typed_config import ConfigError, from_dict, load_config, parse_override, to_dict
from train.config import TrainConfig


@dataclass
class Inner:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)
    paths: tuple[str, ...] = ()


@dataclass
class Outer:
    name: str = "x"
    steps: int = 10
    verbose: bool = False
    limit: int | None = None
    optim: Inner = field(default_factory=Inner)


@dataclass(frozen=True)
class Frozen:
    steps: int = 5
    lr: float = 0.1


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 20\noptim:\n  lr: 2e-4\n  paths: [/a, /b]\n")  # PyYAML alone reads 2e-4 as a string
    cfg = load_config(Outer, path, ["optim.lr=3e-4", "name=run", "limit=null", "optim.betas=[0.5, 0.6]"])
    assert cfg == Outer(name="run", steps=20, optim=Inner(lr=3e-4, betas=(0.5, 0.6), paths=("/a", "/b")))
    assert isinstance(cfg.optim, Inner) and isinstance(cfg.optim.lr, float)
    # A YAML section merges key by key: the YAML's optim.lr leaves optim.betas at its default.
    assert load_config(Outer, path).optim.betas == (0.9, 0.95)


def test_round_trip_through_dict_and_base():
    cfg = Outer(steps=3, optim=Inner(lr=0.1, paths=("/a",)))
    assert from_dict(Outer, to_dict(cfg)) == cfg
    assert from_dict(Outer, {"optim": {"lr": 0.5}}, base=cfg) == Outer(steps=3, optim=Inner(lr=0.5, paths=("/a",)))
    # Frozen dataclasses (read-only in OmegaConf) work as bases too.
    assert load_config(Frozen, None, ["steps=7"], base=Frozen(lr=0.2)) == Frozen(steps=7, lr=0.2)


@pytest.mark.parametrize("override,message", [
    ("log.tensorboard=maybe", "log.tensorboard must be true or false, got 'maybe'"),
    ("optim.batch_size=2.5", "optim.batch_size must be an integer, got 2.5"),
    ("data.paths=/x", "data.paths must be a list in brackets, such as data.paths=[/x], got '/x'"),
    ("optim.betas=[0.9]", "optim.betas must be a list of 2 values such as optim.betas=[..., ...], got [0.9]"),
    ("optim.lr=fast", "optim.lr must be a number, got 'fast'"),
    ("optim.global_batch_size=many", "optim.global_batch_size must be an integer or null, got 'many'"),
    ("optim=3", "optim must be a section (set its keys, such as optim.lr=...), got 3"),
    ("run_dir=", "run_dir must be a string, got None"),
    ("optim.lrr=1", "unknown config key optim.lrr (did you mean optim.lr?); valid keys of optim: ["),
    ("log.every.x=1", "unknown config key log.every.x: log.every is an integer, not a section"),
    ("steps", "override 'steps' must look like key.sub=value"),
    ("data.paths=[/a", "override 'data.paths=[/a': the value is not valid YAML"),
])
def test_wrong_overrides_are_refused_naming_key_and_type(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(TrainConfig, None, [override])
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_yaml_mistakes_name_the_file_and_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: [1\n")
    with pytest.raises(ConfigError, match=r"c.yaml is not valid YAML at line 3, column 1"):
        load_config(Outer, path)
    path.write_text("steps: 2\nsteps: 3\n")  # PyYAML alone would keep the last one silently
    with pytest.raises(ConfigError, match="duplicate key"):
        load_config(Outer, path)
    path.write_text("optim:\n  paths: /data\n")
    with pytest.raises(ConfigError, match=r"optim.paths must be a list in brackets.*got '/data' \(in .*c.yaml\)"):
        load_config(Outer, path)
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(Outer, path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "nope.yaml")


def test_dict_values_are_checked_with_their_prefix():
    with pytest.raises(ConfigError, match=r"unknown config key model.overrides.optim.lrr \(did you mean"):
        from_dict(Outer, {"optim": {"lrr": 1}}, where="model.overrides")
    with pytest.raises(ConfigError, match="verbose must be true or false, got 'sometimes'"):
        from_dict(Outer, {"verbose": "sometimes"})


def test_override_values_parse_like_yaml():
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override("x=2e-4") == ("x", 2e-4)
    assert parse_override("x=a=b") == ("x", "a=b")
    assert parse_override("x={k: 1}") == ("x", {"k": 1})
