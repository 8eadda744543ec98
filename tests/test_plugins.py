import textwrap

import pytest

from jerc_eval.errors import PluginError, UnknownNameError
from jerc_eval.plugins import PluginLoadWarning, create_host
from jerc_eval.registry import Registry


def test_builtins_register_through_hooks():
    host = create_host()
    assert {"mae", "dino", "byol", "zoo-mae", "zoo-dino", "zoo-byol"} <= set(host.registry("encoders").names())
    assert host.registry("suites").names() == ["cifar10-c", "imagenet-c", "imagenet-c-folder"]
    assert "photodigits" in host.registry("datasets").names()
    assert host.registry("encoders").entry("mae").plugin == "jerc_eval.default_plugins.encoders"
    info = {p["name"]: p for p in host.plugin_info()}
    assert info["jerc_eval.default_plugins.encoders"]["hooks"] == ["register_encoders"]


def test_unknown_name_suggests():
    host = create_host()
    with pytest.raises(UnknownNameError, match=r"Did you mean: mae\?.*Available: .*zoo-mae"):
        host.registry("encoders").get("maee")


def test_collision_names_both_plugins():
    reg = Registry("encoder")
    reg.register(object(), name="x", plugin="a")
    with pytest.raises(PluginError, match="'b' collides with the one from plugin 'a'"):
        reg.register(object(), name="x", plugin="b")


def test_misspelled_hook_fails_fast(tmp_path):
    f = tmp_path / "bad.py"
    f.write_text(textwrap.dedent("""
        from jerc_eval.hookspecs import hookimpl
        @hookimpl
        def register_encoder(register):
            pass
    """))
    with pytest.raises(PluginError, match="register_encoder"):
        create_host(plugin_files=[str(f)])


def test_one_file_plugin_registers_encoder(tmp_path):
    f = tmp_path / "myplug.py"
    f.write_text(textwrap.dedent("""
        from jerc_eval.hookspecs import hookimpl
        from jerc_eval.api import EncoderAdapter
        class Mine(EncoderAdapter):
            name = "mine"
            def load(self):
                raise NotImplementedError
        @hookimpl
        def register_encoders(register):
            register(Mine, aliases=("my-encoder",))
    """))
    host = create_host(plugin_files=[str(f)])
    assert host.registry("encoders").get("my-encoder").name == "mine"
    assert host.registry("encoders").entry("mine").plugin == f"file:{f}"


def _install_dist(site, name, module_src):
    """An installed distribution as importlib.metadata sees it: a module plus a dist-info with an entry point."""
    (site / f"{name}.py").write_text(module_src)
    dist = site / f"{name}-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text(f"[jerc_eval]\n{name} = {name}\n")


GOOD = textwrap.dedent("""
    from jerc_eval.hookspecs import hookimpl
    from jerc_eval.api import Probe
    class Nearest(Probe):
        name = "third-party-probe"
        def fit(self, features, labels, num_classes, seed, device):
            raise NotImplementedError
    @hookimpl
    def register_probes(register):
        register(Nearest)
""")


@pytest.fixture
def site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return site


def test_entry_point_plugin_loads_with_version(site, monkeypatch):
    _install_dist(site, "jerc_eval_tp_good", GOOD)
    monkeypatch.setenv("JERC_EVAL_PLUGINS", "jerc_eval_tp_good")
    host = create_host()
    assert "third-party-probe" in host.registry("probes")
    info = {p["name"]: p for p in host.plugin_info()}
    assert info["jerc_eval_tp_good"] == {"name": "jerc_eval_tp_good", "version": "1.2.3", "hooks": ["register_probes"]}


def test_allow_list_excludes_plugins(site, monkeypatch):
    _install_dist(site, "jerc_eval_tp_good2", GOOD.replace("third-party-probe", "tp2"))
    monkeypatch.setenv("JERC_EVAL_PLUGINS", "something_else")
    assert "tp2" not in create_host().registry("probes")


def test_broken_plugin_is_skipped_with_warning_or_fails_strict(site, monkeypatch):
    _install_dist(site, "jerc_eval_tp_broken", "import a_module_that_does_not_exist\n")
    monkeypatch.setenv("JERC_EVAL_PLUGINS", "jerc_eval_tp_broken")
    with pytest.warns(PluginLoadWarning, match="jerc_eval_tp_broken"):
        host = create_host()
    assert "jerc_eval_tp_broken" in host.skipped
    assert len(host.registry("encoders")) >= 6  # the tool still works
    with pytest.raises(PluginError, match="jerc_eval_tp_broken"):
        create_host(strict=True)
