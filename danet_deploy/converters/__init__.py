"""Format converters, installed as ``danet_deploy.converters``: NIR export and import."""
