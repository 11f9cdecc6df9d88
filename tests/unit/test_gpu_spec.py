"""GpuSpec / StepSpec / SecretEnvRef validation: valid specs construct, every invalid value is a SpecError.

A SpecError's message must name the offending field and the allowed values, because it is what a DAG author
reads at parse time.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_mlops.core.errors import SpecError
from airflow_mlops.core.gpu import (
    GPU_FEATURE_DISCOVERY,
    KARPENTER,
    CapacityType,
    GpuSpec,
    NodeLabelProfile,
    is_dns_label,
    resolve_profile,
)
from airflow_mlops.core.quantity import parse_quantity
from airflow_mlops.core.step import RUNTIMES, SecretEnvRef, StepSpec, check_runtime

PROFILES = {"karpenter": KARPENTER, "gpu-feature-discovery": GPU_FEATURE_DISCOVERY}


def expect_spec_error(exc: pytest.ExceptionInfo[SpecError], field: str, *fragments: str) -> None:
    """The error names the field (attribute and message prefix) and says what is allowed."""
    err = exc.value
    assert err.field == field
    assert str(err).startswith(f"{field}: ")
    for fragment in fragments:
        assert fragment in str(err), f"{fragment!r} not in {str(err)!r}"


# --- strategies ---------------------------------------------------------------------------------------------

def _cpu(millis: int, draw: st.DrawFn) -> str | int | float:
    """Render a CPU amount (in millicores) in one of the forms a DAG author may write."""
    forms: list[str | int | float] = [f"{millis}m", millis / 1000]
    if millis % 1000 == 0:
        forms += [str(millis // 1000), millis // 1000]
    return draw(st.sampled_from(forms))


def _mem(mebibytes: int, draw: st.DrawFn) -> str:
    forms = [f"{mebibytes}Mi", f"{mebibytes * 1024}Ki", str(mebibytes * 2**20)]
    if mebibytes % 1024 == 0:
        forms.append(f"{mebibytes // 1024}Gi")
    return draw(st.sampled_from(forms))


dns_subdomains = st.from_regex(r"\A[a-z0-9]([-a-z0-9.]{0,40}[a-z0-9])?\Z", fullmatch=True)
label_values = st.from_regex(r"\A[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?\Z", fullmatch=True)


@st.composite
def gpu_spec_kwargs(draw: st.DrawFn) -> dict[str, Any]:
    """Keyword arguments for a valid GpuSpec, spanning every option."""
    profile_name = draw(st.sampled_from(sorted(PROFILES)))
    gpus = draw(st.integers(0, 8))
    kwargs: dict[str, Any] = {"gpus": gpus, "node_labels": profile_name}
    if gpus and draw(st.booleans()):
        gpu_type = draw(st.sampled_from(PROFILES[profile_name].gpu_types))
        kwargs["gpu_type"] = draw(st.sampled_from([gpu_type, gpu_type.upper()]))
    cpu_millis = draw(st.integers(100, 96_000))
    kwargs["cpu_request"] = _cpu(cpu_millis, draw)
    if draw(st.booleans()):
        kwargs["cpu_limit"] = _cpu(cpu_millis + draw(st.integers(0, 8_000)), draw)
    mem = draw(st.integers(64, 512 * 1024))
    kwargs["memory_request"] = _mem(mem, draw)
    limit = mem
    if draw(st.booleans()):
        limit = mem + draw(st.integers(0, 64 * 1024))
        kwargs["memory_limit"] = _mem(limit, draw)
    if draw(st.booleans()):
        kwargs["shm_size"] = f"{draw(st.integers(1, limit))}Mi"
    kwargs["capacity_type"] = draw(st.sampled_from([None, "spot", "on-demand", CapacityType.SPOT,
                                                     CapacityType.ON_DEMAND]))
    kwargs["priority_class"] = draw(st.none() | dns_subdomains)
    kwargs["queue_name"] = draw(st.none() | label_values)
    kwargs["service_account"] = draw(st.none() | dns_subdomains)
    kwargs["active_deadline_seconds"] = draw(st.none() | st.integers(1, 30 * 24 * 3600))
    kwargs["num_workers"] = draw(st.integers(1, 16))
    if draw(st.booleans()):
        kwargs["extra_tolerations"] = [{"key": "dedicated", "operator": "Equal", "value": "ml",
                                        "effect": "NoSchedule"}]
    return kwargs


# --- valid specs --------------------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(gpu_spec_kwargs())
def test_valid_gpu_specs_construct_and_normalise(kwargs: dict[str, Any]) -> None:
    spec = GpuSpec(**kwargs)
    assert spec.profile is PROFILES[kwargs["node_labels"]]
    assert spec.gpus == kwargs["gpus"]
    if "gpu_type" in kwargs:
        assert spec.gpu_type == kwargs["gpu_type"].lower()
        assert spec.gpu_type in spec.profile.gpu_values
    else:
        assert spec.gpu_type is None
    if kwargs["capacity_type"] is None:
        assert spec.capacity_type is None
    else:
        assert isinstance(spec.capacity_type, CapacityType)
        assert spec.capacity_type.value == CapacityType(kwargs["capacity_type"]).value
    assert spec.effective_memory_limit == kwargs.get("memory_limit", kwargs["memory_request"])
    assert spec.distributed == (kwargs["num_workers"] > 1)
    assert all(isinstance(t, dict) for t in spec.extra_tolerations)
    assert isinstance(spec.extra_tolerations, tuple)


@settings(max_examples=100, deadline=None)
@given(gpu_spec_kwargs())
def test_from_dict_accepts_rendered_template_strings(kwargs: dict[str, Any]) -> None:
    """Templated params arrive as strings: "2" for ints and "None"/"" for unset optional fields."""
    rendered = dict(kwargs)
    for name in ("gpus", "num_workers", "active_deadline_seconds"):
        if rendered.get(name) is not None:
            rendered[name] = str(rendered[name])
    for name in ("capacity_type", "priority_class", "queue_name", "service_account"):
        if rendered.get(name) is None:
            rendered[name] = "None"
    assert GpuSpec.from_dict(rendered) == GpuSpec(**kwargs)


def test_defaults_are_a_small_cpu_step() -> None:
    spec = GpuSpec()
    assert (spec.gpus, spec.gpu_type, spec.num_workers) == (0, None, 1)
    assert spec.profile is KARPENTER
    assert spec.effective_memory_limit == "2Gi"
    assert spec.describe() == "no GPU, 1 worker(s), cpu 1, memory 2Gi"


def test_describe_names_gpus_workers_and_capacity() -> None:
    spec = GpuSpec(gpus=2, gpu_type="A100", num_workers=4, cpu_request="8", memory_request="64Gi",
                   capacity_type="spot")
    assert spec.describe() == "2x a100, 4 worker(s), cpu 8, memory 64Gi, spot"
    assert GpuSpec(gpus=1).describe().startswith("1x any GPU")


def test_shm_equal_to_memory_limit_is_allowed() -> None:
    assert GpuSpec(memory_request="8Gi", memory_limit="16Gi", shm_size="16Gi").shm_size == "16Gi"
    assert GpuSpec(memory_request="8Gi", shm_size="8192Mi").shm_size == "8192Mi"


def test_custom_node_label_profile() -> None:
    profile = NodeLabelProfile(
        name="gke", gpu_label="cloud.google.com/gke-accelerator", gpu_values={"l4": ("nvidia-l4",)},
        capacity_label="cloud.google.com/gke-spot", capacity_values={"spot": "true", "on-demand": "false"},
    )
    spec = GpuSpec(gpus=1, gpu_type="l4", node_labels=profile)
    assert spec.profile is profile
    assert resolve_profile(profile) is profile
    assert resolve_profile("gpu-feature-discovery") is GPU_FEATURE_DISCOVERY
    with pytest.raises(SpecError) as exc:
        GpuSpec(gpus=1, gpu_type="a100", node_labels=profile)
    expect_spec_error(exc, "GpuSpec.gpu_type", "['l4']", "'gke'")


@pytest.mark.parametrize(
    ("kwargs", "field", "fragment"),
    [
        ({"gpu_values": {}}, "NodeLabelProfile(p).gpu_values", "at least one GPU type"),
        ({"gpu_values": {"A100": ("x",)}}, "NodeLabelProfile(p).gpu_values['A100']", "lower-case GPU type"),
        ({"gpu_values": {"a100": ()}}, "NodeLabelProfile(p).gpu_values['a100']", "non-empty tuple"),
        ({"capacity_values": {"spot": "s"}}, "NodeLabelProfile(p).capacity_values", "'on-demand'"),
    ],
)
def test_invalid_node_label_profile(kwargs: dict[str, Any], field: str, fragment: str) -> None:
    base: dict[str, Any] = {"name": "p", "gpu_label": "g", "gpu_values": {"a100": ("A100",)},
                            "capacity_label": "c", "capacity_values": {"spot": "s", "on-demand": "o"}}
    with pytest.raises(SpecError) as exc:
        NodeLabelProfile(**{**base, **kwargs})
    expect_spec_error(exc, field, fragment)


def test_profiles_are_immutable() -> None:
    with pytest.raises(TypeError):
        KARPENTER.gpu_values["x100"] = ("x100",)  # type: ignore[index]


# --- invalid GpuSpec values ---------------------------------------------------------------------------------

@given(st.integers(max_value=-1))
def test_negative_gpus(gpus: int) -> None:
    with pytest.raises(SpecError) as exc:
        GpuSpec(gpus=gpus)
    expect_spec_error(exc, "GpuSpec.gpus", "an integer >= 0", repr(gpus))


@given(st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer())
       | st.sampled_from([1.5, 0.5, "2", "1.5", None, True, False]))
def test_non_integer_gpus(gpus: Any) -> None:
    with pytest.raises(SpecError) as exc:
        GpuSpec(gpus=gpus)
    expect_spec_error(exc, "GpuSpec.gpus", "an integer >= 0")


@pytest.mark.parametrize("gpus", [True, False])
def test_bool_gpus_rejected(gpus: bool) -> None:
    """bool is an int subclass: True must not silently mean one GPU."""
    with pytest.raises(SpecError) as exc:
        GpuSpec(gpus=gpus)
    expect_spec_error(exc, "GpuSpec.gpus", "an integer >= 0", f"(got {gpus!r})")


@given(st.integers(max_value=0) | st.sampled_from([True, 1.0, "2"]))
def test_num_workers_below_one(num_workers: Any) -> None:
    with pytest.raises(SpecError) as exc:
        GpuSpec(num_workers=num_workers)
    expect_spec_error(exc, "GpuSpec.num_workers", "an integer >= 1")


@given(st.text(max_size=20).filter(lambda s: s not in ("spot", "on-demand")))
def test_unknown_capacity_type(capacity: str) -> None:
    with pytest.raises(SpecError) as exc:
        GpuSpec(capacity_type=capacity)
    expect_spec_error(exc, "GpuSpec.capacity_type", "['spot', 'on-demand']", repr(capacity))


@pytest.mark.parametrize("capacity", ["SPOT", "ON_DEMAND", "ondemand", "preemptible"])
def test_capacity_type_is_case_sensitive(capacity: str) -> None:
    with pytest.raises(SpecError) as exc:
        GpuSpec(capacity_type=capacity)
    expect_spec_error(exc, "GpuSpec.capacity_type", "'spot'", "'on-demand'")


@pytest.mark.parametrize("profile_name", sorted(PROFILES))
@given(gpu_type=st.text(min_size=1, max_size=12))
def test_gpu_type_unknown_for_profile_lists_known_types(profile_name: str, gpu_type: str) -> None:
    profile = PROFILES[profile_name]
    if gpu_type.lower() in profile.gpu_values:
        return
    with pytest.raises(SpecError) as exc:
        GpuSpec(gpus=1, gpu_type=gpu_type, node_labels=profile_name)
    expect_spec_error(exc, "GpuSpec.gpu_type", str(profile.gpu_types), repr(profile_name))


def test_gpu_type_known_to_one_profile_only() -> None:
    """b200 is in the Karpenter profile but not in the GPU feature discovery one."""
    assert GpuSpec(gpus=1, gpu_type="b200").gpu_type == "b200"
    with pytest.raises(SpecError) as exc:
        GpuSpec(gpus=1, gpu_type="b200", node_labels="gpu-feature-discovery")
    expect_spec_error(exc, "GpuSpec.gpu_type", "'a100'", "'h100'", "'t4'", "'gpu-feature-discovery'")
    assert "b200" not in str(exc.value).split("(got")[0]


@pytest.mark.parametrize("gpu_type", ["a100", "H100", "t4"])
def test_gpu_type_needs_gpus(gpu_type: str) -> None:
    with pytest.raises(SpecError) as exc:
        GpuSpec(gpus=0, gpu_type=gpu_type)
    expect_spec_error(exc, "GpuSpec.gpu_type", "gpus == 0", "gpus >= 1")


@given(st.text(max_size=30).filter(lambda s: s not in PROFILES))
def test_unknown_node_labels_profile(name: str) -> None:
    with pytest.raises(SpecError) as exc:
        GpuSpec(node_labels=name)
    expect_spec_error(exc, "GpuSpec.node_labels", "['gpu-feature-discovery', 'karpenter']")


@given(mem=st.integers(1, 256), extra=st.integers(1, 64 * 1024))
def test_shm_larger_than_memory_limit(mem: int, extra: int) -> None:
    with pytest.raises(SpecError) as exc:
        GpuSpec(memory_request=f"{mem}Gi", shm_size=f"{mem * 1024 + extra}Mi")
    expect_spec_error(exc, "GpuSpec.shm_size", f"<= the memory limit ({mem}Gi)", "/dev/shm")
    with pytest.raises(SpecError) as exc:
        GpuSpec(memory_request="1Gi", memory_limit=f"{mem}Gi", shm_size=f"{mem * 1024 + extra}Mi")
    expect_spec_error(exc, "GpuSpec.shm_size", f"({mem}Gi)")


@pytest.mark.parametrize("shm", ["0", "0Mi", "-1Gi", "lots"])
def test_shm_must_be_a_positive_quantity(shm: str) -> None:
    with pytest.raises(SpecError) as exc:
        GpuSpec(shm_size=shm)
    assert exc.value.field == "GpuSpec.shm_size"


@given(req=st.integers(2, 10**6), less=st.integers(1, 10**6))
def test_memory_limit_below_request(req: int, less: int) -> None:
    limit = max(req - less, 1)
    with pytest.raises(SpecError) as exc:
        GpuSpec(memory_request=f"{req}Mi", memory_limit=f"{limit}Mi")
    expect_spec_error(exc, "GpuSpec.memory_limit", f">= memory_request ({req}Mi)", f"'{limit}Mi'")


def test_memory_limit_compares_units_not_strings() -> None:
    """'1Gi' < '512Mi' as strings; as quantities 1Gi is the larger."""
    assert GpuSpec(memory_request="512Mi", memory_limit="1Gi").memory_limit == "1Gi"
    with pytest.raises(SpecError):
        GpuSpec(memory_request="1Gi", memory_limit="1000Mi")
    with pytest.raises(SpecError):
        GpuSpec(memory_request="1Gi", memory_limit="1G")  # 10**9 < 2**30


@pytest.mark.parametrize(("request_", "limit"), [("2", "1"), ("1", "500m"), (4, 3.5), ("1500m", 1)])
def test_cpu_limit_below_request(request_: Any, limit: Any) -> None:
    with pytest.raises(SpecError) as exc:
        GpuSpec(cpu_request=request_, cpu_limit=limit)
    expect_spec_error(exc, "GpuSpec.cpu_limit", f">= cpu_request ({request_})")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cpu_request": "one"}, "GpuSpec.cpu_request"),
        ({"cpu_request": "0"}, "GpuSpec.cpu_request"),
        ({"cpu_request": 0}, "GpuSpec.cpu_request"),
        ({"cpu_request": -1}, "GpuSpec.cpu_request"),
        ({"cpu_request": True}, "GpuSpec.cpu_request"),
        ({"cpu_limit": "2 cores"}, "GpuSpec.cpu_limit"),
        ({"memory_request": "16GB"}, "GpuSpec.memory_request"),
        ({"memory_request": "16gi"}, "GpuSpec.memory_request"),
        ({"memory_request": "0Gi"}, "GpuSpec.memory_request"),
        ({"memory_limit": "-4Gi"}, "GpuSpec.memory_limit"),
        ({"shm_size": "1 Gi"}, "GpuSpec.shm_size"),
    ],
)
def test_bad_quantities_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as exc:
        GpuSpec(**kwargs)
    assert exc.value.field == field
    assert str(exc.value).startswith(field)


@pytest.mark.parametrize("name", ["High", "high_priority", "-high", "high-", "a" * 254, "", "high priority"])
def test_bad_priority_class(name: str) -> None:
    with pytest.raises(SpecError) as exc:
        GpuSpec(priority_class=name)
    expect_spec_error(exc, "GpuSpec.priority_class", "DNS-1123 subdomain")


@pytest.mark.parametrize("name", ["", "a" * 64, "-q", "team queue", "q/1"])
def test_bad_queue_name(name: str) -> None:
    with pytest.raises(SpecError) as exc:
        GpuSpec(queue_name=name)
    expect_spec_error(exc, "GpuSpec.queue_name", "label value")


@pytest.mark.parametrize("name", ["Trainer", "trainer_sa", "", "sa/x"])
def test_bad_service_account(name: str) -> None:
    with pytest.raises(SpecError) as exc:
        GpuSpec(service_account=name)
    expect_spec_error(exc, "GpuSpec.service_account", "DNS-1123 subdomain")


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "60"])
def test_bad_active_deadline(value: Any) -> None:
    with pytest.raises(SpecError) as exc:
        GpuSpec(active_deadline_seconds=value)
    expect_spec_error(exc, "GpuSpec.active_deadline_seconds", "an integer >= 1")


# --- from_dict ----------------------------------------------------------------------------------------------

def test_from_dict_unknown_keys_are_named() -> None:
    with pytest.raises(SpecError) as exc:
        GpuSpec.from_dict({"gpus": 1, "gpu": 2, "memory": "4Gi"})
    err = exc.value
    assert err.field == "GpuSpec"
    assert err.got == ["gpu", "memory"]
    assert "'gpus'" in err.allowed and "'memory_request'" in err.allowed


def test_from_dict_string_ints() -> None:
    spec = GpuSpec.from_dict({"gpus": "2", "num_workers": " 3 ", "active_deadline_seconds": "3600",
                              "gpu_type": "A100", "capacity_type": "", "extra_tolerations": []})
    assert (spec.gpus, spec.num_workers, spec.active_deadline_seconds) == (2, 3, 3600)
    assert spec.gpu_type == "a100"
    assert spec.capacity_type is None
    assert spec.extra_tolerations == ()


@pytest.mark.parametrize(("data", "field"), [
    ({"gpus": "1.5"}, "GpuSpec.gpus"),
    ({"gpus": "two"}, "GpuSpec.gpus"),
    ({"gpus": "-1"}, "GpuSpec.gpus"),
    ({"num_workers": "0"}, "GpuSpec.num_workers"),
    ({"active_deadline_seconds": "0"}, "GpuSpec.active_deadline_seconds"),
])
def test_from_dict_bad_string_ints(data: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as exc:
        GpuSpec.from_dict(data)
    assert exc.value.field == field


@pytest.mark.parametrize("gpus", ["--1", "²"])
def test_from_dict_malformed_int_strings_raise_spec_error(gpus: str) -> None:
    """Regression: "--1" and "²" once passed an isdigit() guard and int() raised a ValueError naming no field."""
    with pytest.raises(SpecError) as exc:
        GpuSpec.from_dict({"gpus": gpus})
    assert exc.value.field == "GpuSpec.gpus"


# --- runtimes -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", RUNTIMES)
def test_known_runtimes(name: str) -> None:
    assert check_runtime(name) == name


@given(st.text(max_size=20).filter(lambda s: s not in RUNTIMES))
def test_unknown_runtime_lists_the_known_ones(name: str) -> None:
    with pytest.raises(SpecError) as exc:
        check_runtime(name)
    expect_spec_error(exc, "runtime", "'local'", "'kubernetes'")
    with pytest.raises(SpecError) as exc:
        check_runtime(name, "Variable mlops_runtime")
    assert exc.value.field == "Variable mlops_runtime"


# --- StepSpec -----------------------------------------------------------------------------------------------

def make_step(**kwargs: Any) -> StepSpec:
    base: dict[str, Any] = {"name": "train", "image": "ghcr.io/acme/trainer:1.0", "module": "acme.train"}
    base.update(kwargs)
    return StepSpec(**base)


def test_step_argv_module_and_command() -> None:
    step = make_step(args=["--epochs", "3"])
    assert step.argv() == ["python", "-m", "acme.train", "--epochs", "3"]
    assert step.argv("/venv/bin/python")[0] == "/venv/bin/python"
    assert step.args == ("--epochs", "3")
    cmd = make_step(module=None, command=["torchrun", "--nproc-per-node=8"], args=("train.py",))
    assert cmd.argv() == ["torchrun", "--nproc-per-node=8", "train.py"]
    assert cmd.command == ("torchrun", "--nproc-per-node=8")


@pytest.mark.parametrize(("module", "command"), [(None, None), ("m", ["run"])])
def test_step_module_xor_command(module: str | None, command: list[str] | None) -> None:
    with pytest.raises(SpecError) as exc:
        make_step(module=module, command=command)
    expect_spec_error(exc, "StepSpec.module/command", "exactly one of module or command")


@pytest.mark.parametrize(("command", "fragment"), [
    ([], "non-empty"), ("python train.py", "a list of strings"), (["python", 3], "a list of strings"),
])
def test_step_bad_command(command: Any, fragment: str) -> None:
    with pytest.raises(SpecError) as exc:
        make_step(module=None, command=command)
    expect_spec_error(exc, "StepSpec.command", fragment)


def test_step_args_must_be_strings() -> None:
    with pytest.raises(SpecError) as exc:
        make_step(args="--epochs 3")
    expect_spec_error(exc, "StepSpec.args", "a list of strings")
    with pytest.raises(SpecError):
        make_step(args=["--epochs", 3])


@given(st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?\Z", fullmatch=True))
def test_step_valid_names(name: str) -> None:
    assert make_step(name=name).name == name
    assert is_dns_label(name)


@pytest.mark.parametrize("name", ["Train", "train_model", "-train", "train-", "", "a" * 41, "tr ain", "trä",
                                  3])
def test_step_bad_name(name: Any) -> None:
    with pytest.raises(SpecError) as exc:
        make_step(name=name)
    expect_spec_error(exc, "StepSpec.name", "DNS label of at most 40 chars")


@pytest.mark.parametrize("image", ["", "trainer latest", None])
def test_step_bad_image(image: Any) -> None:
    with pytest.raises(SpecError) as exc:
        make_step(image=image)
    assert exc.value.field == "StepSpec.image"


@pytest.mark.parametrize("key", ["1ABC", "A B", "A=B", "", "Ä"])
def test_step_bad_env_names(key: str) -> None:
    with pytest.raises(SpecError) as exc:
        make_step(env={key: "v"})
    expect_spec_error(exc, f"StepSpec.env[{key!r}]", "an environment variable name")


def test_step_env_values_must_be_strings() -> None:
    with pytest.raises(SpecError) as exc:
        make_step(env={"EPOCHS": 3})
    expect_spec_error(exc, "StepSpec.env['EPOCHS']", "a string value")


def test_step_env_is_frozen() -> None:
    source = {"A": "1"}
    step = make_step(env=source)
    source["A"] = "2"
    assert step.env["A"] == "1"
    with pytest.raises(TypeError):
        step.env["B"] = "3"  # type: ignore[index]


def test_secret_env_clash_with_plain_env() -> None:
    ref = SecretEnvRef("MLFLOW_TRACKING_TOKEN", "mlflow-credentials", "token")
    with pytest.raises(SpecError) as exc:
        make_step(env={"MLFLOW_TRACKING_TOKEN": "plain", "OTHER": "x"}, secret_env=(ref,))
    expect_spec_error(exc, "StepSpec.secret_env", "names not also set in env")
    assert exc.value.got == ["MLFLOW_TRACKING_TOKEN"]


def test_secret_env_items_must_be_refs() -> None:
    with pytest.raises(SpecError) as exc:
        make_step(secret_env=({"env": "X", "secret_name": "s", "key": "k"},))
    expect_spec_error(exc, "StepSpec.secret_env", "SecretEnvRef")


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"env": "1TOKEN"}, "SecretEnvRef.env"),
    ({"secret_name": "MLflow"}, "SecretEnvRef.secret_name"),
    ({"secret_name": "mlflow_creds"}, "SecretEnvRef.secret_name"),
    ({"key": ""}, "SecretEnvRef.key"),
    ({"key": "a/b"}, "SecretEnvRef.key"),
])
def test_bad_secret_env_ref(kwargs: dict[str, str], field: str) -> None:
    base = {"env": "TOKEN", "secret_name": "mlflow-credentials", "key": "token"}
    with pytest.raises(SpecError) as exc:
        SecretEnvRef(**{**base, **kwargs})
    assert exc.value.field == field


@pytest.mark.parametrize("timeout", [0, -1, True, 1.5, "3600", None])
def test_step_timeout_must_be_positive_int(timeout: Any) -> None:
    with pytest.raises(SpecError) as exc:
        make_step(timeout_seconds=timeout)
    expect_spec_error(exc, "StepSpec.timeout_seconds", "an integer > 0")


def test_step_compute_must_be_gpu_spec() -> None:
    with pytest.raises(SpecError) as exc:
        make_step(compute={"gpus": 1})
    expect_spec_error(exc, "StepSpec.compute", "a GpuSpec")


def test_step_image_pull_policy() -> None:
    assert make_step(image_pull_policy="Always").image_pull_policy == "Always"
    with pytest.raises(SpecError) as exc:
        make_step(image_pull_policy="always")
    expect_spec_error(exc, "StepSpec.image_pull_policy", "'IfNotPresent'")


def test_quantity_helper_matches_gpu_spec_comparisons() -> None:
    """The request/limit comparisons above rely on exact binary/decimal scaling."""
    assert parse_quantity("1Gi", "f") == Decimal(1024) * parse_quantity("1Mi", "f")
    assert parse_quantity("1G", "f") < parse_quantity("1Gi", "f")
