from cove.guestagent.config import GuestConfig
from cove.guestagent.datastores.postgresql import conf


def config(ram=2048):
    return GuestConfig(
        instance_id="i1",
        datastore="postgresql",
        datastore_version="15",
        bin_dir="/x",
        address="127.42.0.9",
        port=5432,
        ram_mb=ram,
        vcpus=2,
        volume_gb=1,
        transport_url="redis+socket:///x",
        heartbeat_interval=5,
        instance_dir="/d/i1",
    )


def test_memory_follows_the_flavor():
    small = conf.memory_settings(512, 1)
    large = conf.memory_settings(8192, 4)
    assert small["shared_buffers"] == "128MB"
    assert large["shared_buffers"] == "2048MB"
    assert int(large["max_connections"]) > int(small["max_connections"])


def test_server_listens_on_its_own_address_and_socket_dir():
    text = conf.postgresql_conf(config())
    assert "listen_addresses = '127.42.0.9'" in text
    assert "unix_socket_directories = '/d/i1/run'" in text
    assert "shared_buffers = 512MB" in text
    assert "password_encryption = 'scram-sha-256'" in text


def test_hba_only_allows_password_logins_and_the_agent():
    hba = conf.pg_hba_conf()
    assert "trust" not in hba
    assert "local all os_admin peer map=cove" in hba
