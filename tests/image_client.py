"""The image API v2 of the local stack as one of its Keystone users: the one client of the
functional tests and of the benchmark (bench/)."""

import time
import uuid

PATCH_TYPE = "application/openstack-images-v2.1-json-patch"


def session(stack_facts, user_name, timeout=30):
    """A keystoneauth1 session as the stack's user ``user_name`` (demo, cacheraw, ...)."""
    from keystoneauth1 import session as ks_session
    from keystoneauth1.identity import v3

    user = stack_facts["keystone"]["users"][user_name]
    auth = v3.Password(auth_url=stack_facts["keystone"]["auth_url"], username=user["username"],
                       password=user["password"], project_name=user["project_name"],
                       user_domain_name="Default", project_domain_name="Default")
    return ks_session.Session(auth=auth, timeout=timeout)


class ImageClient:
    """The bits of the image API v2 the tests and the benchmark use, as one Keystone user."""

    def __init__(self, session, url, name_prefix="test"):
        self.session = session
        self.url = url.rstrip("/") + "/v2"
        self.name_prefix = name_prefix

    def create(self, **fields):
        fields.setdefault("container_format", "bare")
        fields.setdefault("name", "%s-%s" % (self.name_prefix, uuid.uuid4().hex[:8]))
        return self.session.post(self.url + "/images", json=fields).json()

    def upload(self, image_id, path):
        with open(path, "rb") as f:
            self.session.put(self.url + "/images/%s/file" % image_id, data=f,
                             headers={"Content-Type": "application/octet-stream"})

    def get(self, image_id):
        return self.session.get(self.url + "/images/%s" % image_id).json()

    def patch(self, image_id, ops, raise_exc=True):
        return self.session.patch(self.url + "/images/%s" % image_id, json=ops,
                                  raise_exc=raise_exc, headers={"Content-Type": PATCH_TYPE})

    def remove_properties(self, image_id, names):
        return self.patch(image_id, [{"op": "remove", "path": "/" + n} for n in names])

    def delete(self, image_id, raise_exc=True):
        return self.session.delete(self.url + "/images/%s" % image_id, raise_exc=raise_exc)

    def wait(self, image_id, predicate, timeout=60, what="condition"):
        deadline = time.monotonic() + timeout
        image = None
        while time.monotonic() < deadline:
            image = self.get(image_id)
            if predicate(image):
                return image
            time.sleep(0.3)
        raise AssertionError("image %s: %s not reached in %ss; last state: %s"
                             % (image_id, what, timeout, image))
