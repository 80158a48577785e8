"""Render the shipped kustomizations and validate every object against the Kubernetes
schemas, strictly (unknown fields are errors).

CI has no kustomize binary, so this renders the subset of kustomize the manifests use:
``resources`` (files, or directories with their own kustomization), ``secretGenerator``
with ``envs`` and ``disableNameSuffixHash`` (from ``secrets.env.example`` when the real
``secrets.env`` is absent), and ``patches`` that merge into a ConfigMap's ``data``. A
kustomization that uses anything else is refused here, so the renderer never guesses.
Rendered with kustomize itself, the same directories give the same objects.

    python -m tests.kustomize deploy/kubernetes/base deploy/kubernetes/overlays/sasl-ssl
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

__all__ = ["KUBERNETES_VERSION", "main", "render", "validate"]

#: The Kubernetes release the manifests are checked against.
KUBERNETES_VERSION = "1.37"

_KNOWN = {"apiVersion", "kind", "resources", "secretGenerator", "patches"}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _env_file(path: Path) -> dict[str, str]:
    if not path.exists():
        path = path.with_name(path.name + ".example")
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects of a kustomization directory, in resource order."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - _KNOWN
    if unknown:
        raise ValueError(f"{directory}: this renderer does not implement {sorted(unknown)}")
    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        objects += render(path) if path.is_dir() else _documents(path)
    for generator in kustomization.get("secretGenerator", []):
        if generator.get("options", {}).get("disableNameSuffixHash") is not True:
            raise ValueError(f"{directory}: name-suffix hashes are not implemented")
        data: dict[str, str] = {}
        for env in generator.get("envs", []):
            data.update(_env_file(directory / env))
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": generator["name"]},
                "type": "Opaque",
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
            }
        )
    for entry in kustomization.get("patches", []):
        for patch in _documents(directory / entry["path"]):
            if patch["kind"] != "ConfigMap" or set(patch) - {
                "apiVersion",
                "kind",
                "metadata",
                "data",
            }:
                raise ValueError(f"{directory}: only ConfigMap data patches are implemented")
            (target,) = [
                o
                for o in objects
                if o["kind"] == "ConfigMap" and o["metadata"]["name"] == patch["metadata"]["name"]
            ]
            _merge(target.setdefault("data", {}), patch.get("data") or {})
    return objects


def validate(objects: list[dict[str, Any]]) -> list[str]:
    """Schema errors of the objects (empty when every one is valid)."""
    errors = []
    for o in objects:
        try:
            kubernetes_validate.validate(o, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{o['kind']}/{o['metadata']['name']}: {exc.message}")
    return errors


def main(argv: list[str]) -> int:
    failed = 0
    for name in argv:
        objects = render(Path(name))
        errors = validate(objects)
        for error in errors:
            sys.stderr.write(f"{name}: {error}\n")
        failed += bool(errors)
        kinds = ", ".join(f"{o['kind']}/{o['metadata']['name']}" for o in objects)
        sys.stdout.write(f"{name}: {'INVALID' if errors else 'valid'} ({kinds})\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
