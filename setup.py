"""Package discovery that cannot forget a folder.

Every package under ``danet_deploy/`` is found automatically, and ``converters/`` and
``hw_profiles/`` (top-level folders, installed inside the package so that no generic
top-level name like ``converters`` reaches a user's environment) are mapped with all
their sub-packages. Everything else is declared in pyproject.toml.
"""

from setuptools import find_packages, setup

MAPPED = {"danet_deploy.converters": "converters", "danet_deploy.hw_profiles": "hw_profiles"}

packages = find_packages(include=["danet_deploy", "danet_deploy.*"])
package_dir = {"danet_deploy": "danet_deploy"}
for package, folder in MAPPED.items():
    package_dir[package] = folder
    packages += [package] + [f"{package}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=package_dir)
