"""verl platform ``cpu``: what verl's device helpers return once the local preset's set-up has run."""

try:  # tests/ is on sys.path under pytest's default import mode
    from test_local_patches import run_python
except ImportError:  # tests/ imported as a package
    from tests.test_local_patches import run_python


def test_verl_device_helpers_resolve_to_the_cpu_platform():
    state = run_python(
        """
        import json, torch
        import verl
        import verl_dgpo.local.boot  # noqa: F401  (registers platform cpu; VERL_PLATFORM defaults to it)
        from verl.utils import device
        from verl.utils.flops_counter import get_device_flops
        dev = device.get_torch_device()
        torch_dev = torch.ones(2).to(device.get_device_id())
        dev.manual_seed(3); a = torch.rand(2)
        dev.manual_seed(3); b = torch.rand(2)
        print(json.dumps({
            "name": device.get_device_name(),
            "backend": device.get_nccl_backend(),
            "ray_resource": device.get_resource_name(),
            "tensor_device": torch_dev.device.type,
            "device_name": dev.get_device_name(),
            "allocated": dev.memory_allocated(),
            "seeded": torch.equal(a, b),
            "flops_is_number": isinstance(get_device_flops(), (int, float)),
            "empty_cache": dev.empty_cache() is None,
        }))
        """
    )
    assert state == {
        "name": "cpu",
        "backend": "gloo",
        "ray_resource": "GPU",
        "tensor_device": "cpu",
        "device_name": "CPU",
        "allocated": 0,
        "seeded": True,
        "flops_is_number": True,
        "empty_cache": True,
    }
