import pytest

from cove.common.errors import ConfigurationError
from cove.common.settings import load_settings


def test_defaults_live_in_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("COVE_CONFIG", raising=False)
    s = load_settings(data_dir=tmp_path)
    assert s.database_url == f"sqlite:///{tmp_path}/cove.sqlite"
    assert s.transport_url == f"redis+socket://{tmp_path}/run/bus.sock"
    assert s.embedded_bus
    assert s.api_port == 8779


def test_file_then_environment(tmp_path, monkeypatch):
    (tmp_path / "cove.toml").write_text('api_port = 9000\nregion = "north"\n')
    monkeypatch.setenv("COVE_DATA_DIR", str(tmp_path))
    assert load_settings().api_port == 9000
    monkeypatch.setenv("COVE_API_PORT", "9100")
    s = load_settings()
    assert s.api_port == 9100
    assert s.region == "north"


def test_config_path_must_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("COVE_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_settings(data_dir=tmp_path)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("address_pool", "10.0.0.0/8"),
        ("address_pool", "127.0.0.0/8"),
        ("address_pool", "nonsense"),
        ("api_port", 0),
        ("auth_strategy", "magic"),
        ("unknown_key", 1),
        ("auth_strategy", "noauth"),
        ("auth_strategy", "keystone"),
        ("public_url", "ftp://x"),
        ("token_ttl", 10),
    ],
)
def test_bad_values_are_refused(tmp_path, monkeypatch, key, value):
    monkeypatch.delenv("COVE_CONFIG", raising=False)
    with pytest.raises(ConfigurationError):
        load_settings(data_dir=tmp_path, **{key: value})


def test_errors_never_quote_values(tmp_path):
    with pytest.raises(ConfigurationError) as info:
        load_settings(data_dir=tmp_path, databse_url="postgresql://u:S3CRET@db/cove")
    assert "databse_url" in info.value.message
    assert "S3CRET" not in info.value.message


def test_keystone_mode_needs_its_url_and_service_credentials(tmp_path, monkeypatch):
    monkeypatch.delenv("COVE_CONFIG", raising=False)
    with pytest.raises(ConfigurationError) as err:
        load_settings(data_dir=tmp_path, auth_strategy="keystone", keystone_password="s3cret")
    assert "keystone_url" in str(err.value) and "keystone_username" in str(err.value)
    assert "s3cret" not in str(err.value)
    st = load_settings(
        data_dir=tmp_path,
        auth_strategy="keystone",
        keystone_url="http://id.example:5000/v3",
        keystone_username="cove",
        keystone_password="s3cret",
    )
    assert st.keystone_project == "service"


def test_api_url_and_public_url(tmp_path, monkeypatch):
    monkeypatch.delenv("COVE_CONFIG", raising=False)
    st = load_settings(data_dir=tmp_path, api_host="0.0.0.0", api_port=9000)
    assert st.api_url == "http://127.0.0.1:9000"
    st = load_settings(data_dir=tmp_path, public_url="https://db.example.com/")
    assert st.api_url == "https://db.example.com"
