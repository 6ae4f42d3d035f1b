"""`make release-pins`: the prod overlay pinned to images that exist on this machine.

``overlays/prod/pins/kustomization.yaml`` carries all-zero digests until a
release, and ``deploy/validate.sh --release`` refuses them. This writes a copy
of that component to ``.var/images/prod-pins.yaml`` — never into deploy/ and
never committed: the digests are this machine's — naming the images
`make images` built (``localhost/breachmatch/<service>``) and the dev NATS
image by their local manifest digests, checks that every pinned reference
resolves in local storage, and with ``--validate`` runs
``deploy/validate.sh --release --prod-pins`` against it.

A real release does the same with the registry's names and the digests the
registry reports after the push (``podman push --digestfile``): a push
recompresses the layers, so the pushed manifest's digest is not the local one.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import yaml

from podman_cli import (
    NATS_REPOSITORY,
    ROOT,
    SERVICES,
    PodmanError,
    ensure_nats_image,
    image_digest,
    image_exists,
    service_image,
)

PINS = ROOT / ".var" / "images" / "prod-pins.yaml"
_HEADER = """\
# Written by deploy/smoke/release_pins.py (make release-pins): the prod images
# pinned to the local images of this machine. Not a release: a release pins the
# registry's names and the digests the registry reports after the push.
"""


def local_pins() -> list[dict[str, str]]:
    """One kustomize image entry per prod image: local name and manifest digest."""
    images = [(f"breachmatch/{s}", service_image(s).rsplit(":", 1)[0], service_image(s))
              for s in SERVICES]  # fmt: skip
    images.append(("nats", NATS_REPOSITORY, ensure_nats_image()))
    pins = []
    for name, repository, reference in images:
        if not image_exists(reference):
            raise PodmanError(f"{reference} missing: run `make images` first")
        digest = image_digest(reference)
        if not image_exists(f"{repository}@{digest}"):
            raise PodmanError(f"{repository}@{digest} does not resolve in local storage")
        pins.append({"name": name, "newName": repository, "digest": digest})
    return pins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--validate", action="store_true",
                        help="then run deploy/validate.sh --release against the pins")  # fmt: skip
    args = parser.parse_args()
    try:
        pins = local_pins()
    except PodmanError as error:
        sys.exit(f"release-pins: {error}")
    component = {"apiVersion": "kustomize.config.k8s.io/v1alpha1", "kind": "Component",
                 "images": pins}  # fmt: skip
    PINS.parent.mkdir(parents=True, exist_ok=True)
    PINS.write_text(_HEADER + yaml.safe_dump(component, sort_keys=False))
    for pin in pins:
        print(f"    {pin['name']:<22} -> {pin['newName']}@{pin['digest']}")
    print(f"wrote {PINS.relative_to(ROOT)}")
    if args.validate:
        validate = [str(ROOT / "deploy" / "validate.sh"), "--release", "--prod-pins", str(PINS)]
        sys.exit(subprocess.run(validate, check=False).returncode)


if __name__ == "__main__":
    main()
