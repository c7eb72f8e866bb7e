"""Validate Kubernetes manifests offline; run by the deploy tools' python (tests/deploy/tools.py).

    python validate_manifests.py KUBERNETES_VERSION CRD_SCHEMA_DIR FILE...

Built-in kinds: kubernetes-validate in strict mode (unknown fields are errors). Custom kinds: the vendored
openAPIV3Schema (deploy/k8s/crds) with jsonschema. Prints one JSON object per document: kind, name, validator
("kubernetes" | "crd" | "none") and error (null when valid).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

# (apiVersion, kind) -> vendored schema file
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_v1alpha1_scaledobject.schema.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh_v1alpha1_triggerauthentication.schema.json",
    ("ray.io/v1", "RayService"): "ray.io_v1_rayservice.schema.json",
}


def check(doc: dict[str, Any], version: str, crd_dir: Path) -> tuple[str, str | None]:
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CRD_SCHEMAS:
        schema = json.loads((crd_dir / CRD_SCHEMAS[key]).read_text(encoding="utf-8"))  # type: ignore[index]
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
        return "crd", "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors) or None
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.utils.SchemaNotFoundError:
        return "none", f"no schema for {key} (neither built in nor vendored)"
    except kubernetes_validate.utils.ValidationError as e:
        return "kubernetes", str(e).split("\n", 1)[0]  # the rest is the whole schema
    return "kubernetes", None


def main(argv: list[str]) -> int:
    version, crd_dir, *files = argv
    for name in files:
        for doc in yaml.safe_load_all(Path(name).read_text(encoding="utf-8")):
            if not doc:
                continue
            validator, error = check(doc, version, Path(crd_dir))
            meta = doc.get("metadata", {})
            print(
                json.dumps(
                    {
                        "file": name,
                        "kind": doc.get("kind"),
                        "name": meta.get("name"),
                        "validator": validator,
                        "error": error,
                    }
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
