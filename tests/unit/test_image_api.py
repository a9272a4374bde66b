"""The core's decisions, with fakes that keep the real exception names."""

from cacheraw import image_api


def test_patch_ops_add_replace_remove():
    image = {"a": "1", "b": "2"}
    ops = image_api.patch_ops(image, {"a": "1", "b": "3", "c": "4", "d": None, "a2": None})
    assert ops == [{"op": "replace", "path": "/b", "value": "3"},
                   {"op": "add", "path": "/c", "value": "4"}]
    assert image_api.patch_ops({"e": "x"}, {"e": None}) == [{"op": "remove", "path": "/e"}]
