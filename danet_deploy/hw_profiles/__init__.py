"""Hardware profiles, one TOML file per target, installed as ``danet_deploy.hw_profiles``."""
