"""Sweep expansion: counts, values, units, located errors, invalid points as rows."""

from __future__ import annotations

import pytest

from clustersim.config.yamlio import load_yaml, load_yaml_file
from clustersim.errors import InputError, InputErrors, unknown_name
from clustersim.experiment import scenario as scenario_module
from clustersim.experiment.sweep import expand, key_path

from .conftest import BASE_YAML

SWEEP_LINE = BASE_YAML.count("\n") + 1  # the line where an appended `sweep:` starts


def tp(s):
    return s.config.training.parallelism.tp


def test_no_sweep_is_one_scenario(write_experiment):
    sweep = expand(load_yaml_file(write_experiment()))
    assert [s.name for s in sweep.scenarios] == ["demo/0000"]
    assert sweep.swept_keys == () and sweep.invalid == ()
    assert sweep.scenarios[0].config.sweep.grid == {}


def test_grid_is_the_cartesian_product_last_key_fastest(write_experiment):
    sweep = expand(load_yaml_file(write_experiment("""\
sweep:
  grid:
    training.parallelism.tp: [1, 2, 4]
    cluster.overrides.scale_out.bandwidth: [25 GB/s, 50 GB/s]
""")))
    assert len(sweep.scenarios) == 6
    assert [tp(s) for s in sweep.scenarios] == [1, 1, 2, 2, 4, 4]
    assert [s.config.cluster.overrides for s in sweep.scenarios[:2]] == [
        {"scale_up.bandwidth": "450 GB/s", "scale_out.bandwidth": "25 GB/s"},
        {"scale_up.bandwidth": "450 GB/s", "scale_out.bandwidth": "50 GB/s"}]
    assert sweep.swept_keys == ("training.parallelism.tp",
                                "cluster.overrides.scale_out.bandwidth")
    assert sweep.scenarios[5].swept == {"training.parallelism.tp": 4,
                                        "cluster.overrides.scale_out.bandwidth": "50 GB/s"}
    assert [s.index for s in sweep.scenarios] == list(range(6))
    assert len({s.name for s in sweep.scenarios}) == 6
    assert sweep.scenarios[3].name.startswith("demo/0003 ")


def test_zip_takes_lists_row_by_row(write_experiment):
    sweep = expand(load_yaml_file(write_experiment("""\
sweep:
  zip:
    training.parallelism.tp: [2, 4, 8]
    cluster.devices: [32, 64, 128]
""")))
    assert [(tp(s), s.config.cluster.devices) for s in sweep.scenarios] == [
        (2, 32), (4, 64), (8, 128)]


def test_cases_fill_missing_keys_from_the_base(write_experiment):
    sweep = expand(load_yaml_file(write_experiment("""\
sweep:
  cases:
    - {training.parallelism.tp: 2}
    - {training.parallelism.pp: 2, model.preset: llama3-70b}
""")))
    first, second = sweep.scenarios
    assert (tp(first), first.config.training.parallelism.pp, first.config.model.preset) == (
        2, 1, "llama3-8b")
    assert (tp(second), second.config.training.parallelism.pp) == (8, 2)
    # `model: llama3-8b` (a name) became a mapping so its preset could be replaced
    assert second.config.model.preset == "llama3-70b"
    assert second.swept == {"training.parallelism.tp": 8, "training.parallelism.pp": 2,
                            "model.preset": "llama3-70b"}
    assert first.swept["model.preset"] == "llama3-8b"


def test_grid_zip_and_cases_combine_as_a_product(write_experiment):
    sweep = expand(load_yaml_file(write_experiment("""\
sweep:
  grid:
    training.micro_batch: [1, 2]
  zip:
    training.parallelism.tp: [2, 4, 8]
    cluster.devices: [32, 64, 128]
  cases:
    - {simulation.fidelity: analytic}
    - {simulation.fidelity: flow}
""")))
    assert len(sweep.scenarios) == 2 * 3 * 2
    points = [(s.config.simulation.fidelity, tp(s), s.config.training.micro_batch)
              for s in sweep.scenarios]
    assert points[:3] == [("analytic", 2, 1), ("analytic", 2, 2), ("analytic", 4, 1)]
    assert points[-1] == ("flow", 8, 2)
    assert len(set(points)) == 12
    assert sweep.swept_keys == ("training.micro_batch", "training.parallelism.tp",
                                "cluster.devices", "simulation.fidelity")


def test_values_keep_their_units_and_numbers_read_as_yaml_1_2(write_experiment):
    sweep = expand(load_yaml_file(write_experiment("""\
sweep:
  grid:
    cluster.overrides.scale_out.latency: [1.5 us, 2e-6]
    model.layers: [1e1]
""")))
    values = [s.config.cluster.overrides["scale_out.latency"] for s in sweep.scenarios]
    assert values == ["1.5 us", 2e-6]
    assert sweep.scenarios[0].config.model.layers == 10
    assert sweep.scenarios[0].config.model.preset == "llama3-8b"


def test_dotted_keys_resolve_into_sections_and_free_form_mappings():
    assert key_path("training.parallelism.tp") == ("training", "parallelism", "tp")
    assert key_path("cluster.overrides.pod.scale_out.bw") == ("cluster", "overrides",
                                                               "pod.scale_out.bw")
    assert key_path("model") == ("model",)
    with pytest.raises(InputError, match="single value; it has no key 'x'"):
        key_path("training.global_batch.x")
    with pytest.raises(InputError, match="swept keys start with one of"):
        key_path("output.dir")


def test_unknown_keys_and_unequal_zip_lengths_are_located_and_listed_together(
        write_experiment):
    path = write_experiment("""\
sweep:
  grid:
    training.parallelism.tq: [1, 2]
  zip:
    training.micro_batch: [1, 2, 3]
    cluster.devices: [8, 16]
""")
    with pytest.raises(InputErrors) as caught:
        expand(load_yaml_file(path))
    messages = [str(e) for e in caught.value.errors]
    assert len(messages) == 2
    assert messages[0] == (f"{path}:{SWEEP_LINE + 2}:5: sweep.grid: unknown key 'tq' in "
                           "training.parallelism; did you mean 'tp'?")
    assert messages[1].startswith(f"{path}:{SWEEP_LINE + 3}:3: sweep.zip lists")
    assert "equal lengths; got training.micro_batch: 3, cluster.devices: 2" in messages[1]


def test_a_key_swept_twice_or_inside_another_is_an_error(write_experiment):
    path = write_experiment("""\
sweep:
  grid:
    model: [llama3-8b]
    training.micro_batch: [1]
  zip:
    training.micro_batch: [2]
  cases:
    - {model.layers: 4}
""")
    with pytest.raises(InputErrors) as caught:
        expand(load_yaml_file(path))
    text = str(caught.value)
    assert "'training.micro_batch' is swept in both sweep.grid and sweep.zip" in text
    assert "'model' and 'model.layers' overlap" in text


def test_a_bad_value_in_one_case_is_an_invalid_scenario_located_at_that_value(
        write_experiment):
    path = write_experiment("""\
sweep:
  cases:
    - {training.parallelism.tp: 2}
    - {training.parallelism.tp: -4}
    - {training.precision: fp7, training.parallelism.tp: 4}
""")
    sweep = expand(load_yaml_file(path))
    assert [tp(s) for s in sweep.scenarios] == [2]
    assert [s.index for s in sweep.invalid] == [1, 2]
    bad = sweep.invalid[0]
    assert bad.error.startswith(f"{path}:{SWEEP_LINE + 3}:8: training.parallelism.tp: "
                                "Input should be greater than 0")
    assert bad.error.endswith(f"[scenario {bad.name}]")
    assert bad.swept == {"training.parallelism.tp": -4, "training.precision": None}
    assert sweep.scenarios[0].swept == {"training.parallelism.tp": 2,
                                        "training.precision": "bf16"}  # what it runs with
    assert sweep.invalid[1].error.startswith(f"{path}:{SWEEP_LINE + 4}:8: training.precision:")


def test_a_cross_field_error_points_at_the_swept_value_that_caused_it(write_experiment):
    base = BASE_YAML.replace("model: llama3-8b", "model: {preset: mixtral-8x7b, "
                                                 "moe: {experts: 8, top_k: 2}}")
    path = write_experiment("""\
sweep:
  grid:
    model.moe.experts: [8, 1]
""", base=base)
    sweep = expand(load_yaml_file(path))
    assert len(sweep.scenarios) == 1
    assert sweep.invalid[0].error.startswith(f"{path}:{SWEEP_LINE + 2}:28: ")
    assert "top_k (2) cannot exceed moe.experts (1)" in sweep.invalid[0].error


def test_an_invalid_base_file_raises_every_error(write_experiment):
    base = BASE_YAML.replace("global_batch: 64", "global_batch: 0").replace(
        "topology: dgx-h100", "topolgy: dgx-h100")
    with pytest.raises(InputErrors) as caught:
        expand(load_yaml_file(write_experiment(base=base)))
    assert len(caught.value.errors) >= 2
    assert all(e.line is not None for e in caught.value.errors)


def test_check_scenario_errors_point_at_the_swept_value_they_quote(write_experiment,
                                                                    monkeypatch):
    def check(config):
        if config.model.preset not in ("llama3-8b", "llama3-70b"):
            raise unknown_name("model preset", config.model.preset, ["llama3-8b", "llama3-70b"])

    monkeypatch.setattr(scenario_module, "check_scenario", check)
    path = write_experiment("""\
sweep:
  grid:
    training.micro_batch: [1, 2]
    model.preset: [llama3-8b, llama9]
""")
    sweep = expand(load_yaml_file(path))
    assert len(sweep.scenarios) == 2 and len(sweep.invalid) == 2
    assert sweep.invalid[0].error.startswith(f"{path}:{SWEEP_LINE + 3}:31: unknown model "
                                             "preset 'llama9'")


def test_nothing_valid_to_run_is_bad_input(write_experiment):
    path = write_experiment("""\
sweep:
  grid:
    training.parallelism.tp: [0, -1]
""")
    with pytest.raises(InputErrors) as caught:
        expand(load_yaml_file(path))
    assert len(caught.value.errors) == 2
    assert str(caught.value.errors[0]).startswith(f"{path}:{SWEEP_LINE + 2}:31:")


def test_a_loaded_mapping_expands_without_positions():
    data = load_yaml(BASE_YAML + "sweep: {grid: {training.parallelism.tp: [2, 0]}}\n").data
    from clustersim.experiment.runner import load_document

    sweep = expand(load_document(data))
    assert [tp(s) for s in sweep.scenarios] == [2]
    assert sweep.invalid[0].error.startswith("training.parallelism.tp: Input should be")


def test_a_problem_every_scenario_shares_is_reported_once(write_experiment, monkeypatch):
    def check(config):
        raise unknown_name("topology preset", config.cluster.topology, ["dgx-a100"])

    monkeypatch.setattr(scenario_module, "check_scenario", check)
    path = write_experiment("sweep:\n  grid:\n    training.micro_batch: [1, 2, 4]\n")
    with pytest.raises(InputErrors) as caught:
        expand(load_yaml_file(path))
    [error] = caught.value.errors
    assert "unknown topology preset 'dgx-h100'" in str(error)
    assert str(error).endswith("[3 scenarios]")
    assert str(error).startswith(f"{path}:4:3: ")  # at the base key whose value it names
